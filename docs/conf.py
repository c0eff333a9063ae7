"""Sphinx configuration of neuronb's documentation site.

Used by `tools/build_docs.py` (`make docs`), which first turns the notebooks of nbs/ into processed notebooks
(nbdev's show_doc API docs added, cell directives turned into myst-nb tags) and then runs Sphinx on them with
this configuration: myst-nb renders the outputs stored in the notebooks (no execution), furo is the theme.
Project metadata comes from settings.ini, the one place for it.
"""
from configparser import ConfigParser
from pathlib import Path

_ini = ConfigParser(delimiters=['='])
_ini.read(Path(__file__).resolve().parents[1] / 'settings.ini', encoding='utf-8')
_cfg = _ini['DEFAULT']

project = _cfg.get('title', _cfg['lib_name'])
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

# sphinx-mathjax-offline serves a copy of MathJax with the site (the site must work offline; Sphinx's default
# loads MathJax from a CDN)
extensions = ['myst_nb', 'sphinx-mathjax-offline']
html_static_path = [str(Path(__file__).parent / '_static')]
html_css_files = ['neuronb.css']
root_doc = 'index'
exclude_patterns = ['**/.ipynb_checkpoints', '**/_*']
source_suffix = {'.ipynb': 'myst-nb', '.md': 'myst-nb'}

# myst-nb: render what the committed notebooks store, never execute them here.
nb_execution_mode = 'off'
nb_render_markdown_format = 'myst'  # show_doc's output is markdown with tables and a little HTML
nb_output_stderr = 'show'
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'colon_fence', 'html_image']
# API entries are Python-domain objects (for the search and the index); they stay out of the page contents and the
# sidebar, where the notebook's own headings are
toc_object_entries = False
# Links are written by build_docs.py as final relative URLs (page.html#anchor): keep them as they are.
myst_all_links_external = True
# build_docs.py turns every Sphinx warning into an error, except these cosmetic ones: a heading level skipped in a
# notebook, and outputs in a format no HTML renderer exists for (e.g. a widget without a text fallback).
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type']

html_theme = 'furo'
html_title = project
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    'navigation_with_keys': True,
    'top_of_page_buttons': [],
}
