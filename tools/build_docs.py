#!/usr/bin/env python
"""Build neuronb's documentation site and README.md from the notebooks, offline and without Quarto.

    python tools/build_docs.py                 # README.md + the static site in _site/
    python tools/build_docs.py --readme-only   # README.md only (fast: no Sphinx)
    python tools/build_docs.py --nbs DIR --out DIR --readme PATH   # other sources / destinations (tests)

Pipeline (one process, notebooks in order):
1. every notebook under `nbs_path` (recursively; names starting with '_' or '.' skipped) goes through nbdev's own
   notebook processors (`add_show_docs`, `exec_show_docs`, `hide_line`, ...): `show_doc` cells are added after each
   exported definition and executed; each API entry is then written from the object itself (`api_markdown`): a
   Sphinx Python-domain description (so the search, the general index and intersphinx know every symbol), the
   signature as declared, the docstring and a parameter table (name, type, default, description) from the docments;
2. nbdev/Quarto cell directives become myst-nb cell tags (`#| hide` -> remove-cell, `#| echo: false` ->
   remove-input, `#| output: false` -> remove-output, ...) and the `#|` lines leave the displayed code; exported
   code is folded (one click shows it): its API entry follows it;
3. links between notebooks (`[data](01_data.ipynb)`) and backticked symbols (`` `group_split` ``) become links to
   the pages, which are named as nbdev names them (`00_core.ipynb` -> `core.html`, like `_modidx.py`'s links);
4. Sphinx + myst-nb (execution off: the outputs stored in the notebooks, figures included, are rendered) + furo
   write the site; `docs/conf.py` holds the Sphinx configuration, a warning fails the build.

README.md is nbs/index.ipynb after the same processing, written as GitHub markdown (markdown cells as they are, code
and text outputs fenced; nbconvert's markdown export, minus its import time); links to notebooks point to
`nbs/...ipynb`.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

# jsonschema (imported by nbformat, which myst-nb uses) loads the optional IRI checker rfc3987_syntax when it is
# installed; that module compiles a grammar at import, ~3 s of CPU for a format check the docs never need.
sys.modules.setdefault('rfc3987_syntax', None)

ROOT = Path(__file__).resolve().parents[1]
DOCS_CONF = ROOT / 'docs'
README_HEADER = ('<!-- Generated from {src} by `make readme` (tools/build_docs.py --readme-only). '
                 'Do not edit: edit the notebook. -->\n\n')


class DocsError(Exception):
    "A problem with the notebooks that stops the build; the message names the notebook."


# ------------------------------------------------------------------ notebooks and their page names

def _section_rank(folder: Path) -> tuple[int, str]:
    "Sub-folders in the order of `SECTION_TITLES` (building blocks, then the tracks, then interpretability), then by name."
    order = list(SECTION_TITLES)
    name = re.sub(r'^\d+_', '', folder.name)
    return (order.index(name) if name in order else len(order), folder.name)


def find_notebooks(nbs: Path) -> list[Path]:
    "Notebooks under `nbs`, in reading order: index first, then files, then sub-folders, each sorted by name."
    def walk(d: Path) -> list[Path]:
        entries = sorted(p for p in d.iterdir() if not p.name.startswith(('_', '.')))
        files = [p for p in entries if p.is_file() and p.suffix == '.ipynb']
        files.sort(key=lambda p: (p.name != 'index.ipynb', p.name))
        dirs = sorted((p for p in entries if p.is_dir()), key=_section_rank)
        return files + [f for sub in dirs for f in walk(sub)]
    if not nbs.is_dir(): raise DocsError(f"notebook folder not found: {nbs}")
    return walk(nbs)


def page_name(rel: Path) -> str:
    "nbdev's page name for a notebook path relative to nbs: `lfp/01_simulate.ipynb` -> `lfp/simulate`."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(rel)).with_suffix('').as_posix()


def page_names(nbs: Path, notebooks: list[Path]) -> dict[Path, str]:
    names, seen = {}, {}
    for nb in notebooks:
        rel = nb.relative_to(nbs)
        name = page_name(rel)
        if name in seen:
            raise DocsError(f"{rel} and {seen[name]} would both become the page {name}.html: rename one of them")
        seen[name], names[nb] = rel, name
    return names


def rel_url(from_page: str, to_page: str, fragment: str = '') -> str:
    "Relative URL from page `from_page` to `to_page` (page names without .html)."
    up = '../' * from_page.count('/')
    url = up + to_page + '.html' if to_page != from_page else ''
    return url + (f'#{fragment}' if fragment else '') or '#'


# ------------------------------------------------------------------ nbdev processing

_IMPORTS = (ast.Import, ast.ImportFrom)


def _exec_show_docs_cls():
    "nbdev's `exec_show_docs`, running only what `show_doc` needs."
    from nbdev.processors import _do_eval, exec_show_docs

    class ExecShowDocs(exec_show_docs):
        # nbdev also executes any cell that contains an import, even when the same cell trains a model or uses a
        # variable of a cell it does not run (see nbdev's FAQ). Here such mixed demonstration cells are left
        # alone: exported cells, cells made only of imports and `show_doc` calls are what the API docs need.
        def __call__(self, cell):
            if cell.cell_type == 'code' and _do_eval(cell):
                d = cell.directives_ or {}
                trees = cell.parsed_() or []
                exported = {'export', 'exports', 'exporti', 'exec_doc'} & set(d)
                only_imports = all(isinstance(t, _IMPORTS) for t in trees)
                is_show_doc = any(isinstance(t, ast.Expr) and isinstance(t.value, ast.Call)
                                  and getattr(t.value.func, 'id', None) == 'show_doc' for t in trees)
                if not (exported or only_imports or is_show_doc): return
            try: return super().__call__(cell)
            except Exception as e:
                self.end()
                err = e.__cause__ or e
                raise DocsError(f"{os.path.relpath(self.nb.path_)}: cell {cell.idx_} failed while rendering the API "
                                f"docs:\n{cell.source}\n{type(err).__name__}: {err}") from None
        def end(self):
            super().end()
            # Each notebook gets its own IPython shell. Close it now: IPython's exit hook would otherwise run a full
            # garbage collection per shell when the interpreter exits (seconds each, with torch loaded).
            k = getattr(self, 'k', None)
            if k is None: return
            atexit.unregister(k.atexit_operations)
            if k.history_manager is not None:
                k.history_manager.end_session()
                k.history_manager.close()
                k.history_manager = None
            del self.k
    return ExecShowDocs


def _frontmatter(nb) -> dict:
    "nbdev's frontmatter of a notebook (raw YAML cell and/or title cell), read without removing anything."
    from nbdev.frontmatter import _fm2dict, _md2dict
    fm = {}
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.strip().startswith('---'): fm.update(_fm2dict(c.source))
        elif c.cell_type == 'markdown' and 'title' not in fm:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                d = _md2dict(c.source)
            if d: fm.update(d)
    return fm


def nbdev_process(path: Path, run_show_docs: bool = True):
    "Read and run nbdev's processors over a notebook; returns execnb's notebook object."
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import (add_show_docs, clean_magics, clean_show_doc, filter_stream_, hide_line,
                                  populate_language, rm_header_dash, strip_ansi, strip_hidden_metadata)
    nb = read_nb(path)
    nb.frontmatter_ = _frontmatter(nb)
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'raw' and c.source.strip().startswith('---'))]
    for i, c in enumerate(nb.cells): c.idx_ = i
    procs = [populate_language, add_show_docs, strip_ansi, hide_line, filter_stream_, rm_header_dash, clean_show_doc]
    if run_show_docs: procs.append(_exec_show_docs_cls())
    procs += [clean_magics, strip_hidden_metadata]
    os.environ['IN_TEST'] = '1'  # as nbdev's own docs processing does (cwd: the repository, as there)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            NBProcessor(nb=nb, procs=procs).process()
    finally:
        os.environ.pop('IN_TEST', None)
    _order_show_docs(nb)
    return nb


def _order_show_docs(nb) -> None:
    "nbdev inserts the show_doc cells of one exported cell in reverse order; put them in definition order."
    cells, i = nb.cells, 0
    while i < len(cells):
        j = i
        while j < len(cells) and getattr(cells[j], 'has_sd', False): j += 1
        if j - i > 1: cells[i:j] = cells[i:j][::-1]
        i = max(j, i + 1)


# ------------------------------------------------------------------ directives -> myst-nb tags

_re_dir_line = re.compile(r'^\s*#\s*\|')


def _directives(cell) -> dict:
    "All nbdev/Quarto directives of a cell: those nbdev already took out plus the Quarto-style lines left in."
    from nbdev.process import extract_directives
    d = dict(getattr(cell, 'directives_', None) or {})
    d.update(extract_directives(cell, remove=False))
    return {k.rstrip(':'): [str(a).strip().lower() for a in v] for k, v in d.items()}


def tags_for(d: dict) -> list[str]:
    "myst-nb tags for nbdev/Quarto directives."
    val = lambda k: d[k][0] if d.get(k) else None
    tags = []
    if 'hide' in d or 'default_exp' in d or val('include') == 'false': tags.append('remove-cell')
    if val('echo') == 'false': tags.append('remove-input')
    if val('output') == 'false': tags.append('remove-output')
    if val('code-fold') == 'true': tags.append('hide-input')
    # exported code is documented by its API entry (signature, docstring, parameter table) right below it: its
    # source is folded, one click away, instead of being shown twice
    if {'export', 'exports', 'exporti'} & set(d) and 'hide-input' not in tags: tags.append('hide-input')
    return tags


def strip_directive_lines(source: str) -> str:
    "Drop the leading `#|` lines of a code cell."
    lines = source.splitlines()
    while lines and (_re_dir_line.match(lines[0]) or not lines[0].strip()): lines.pop(0)
    return '\n'.join(lines)


def to_myst(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type != 'code': continue
        d = _directives(cell)
        tags = list(cell.metadata.get('tags', []))
        tags += [t for t in tags_for(d) if t not in tags]
        cell.source = strip_directive_lines(cell.source)
        if not cell.source.strip() and not cell.get('outputs'): tags.append('remove-cell')
        if tags: cell.metadata['tags'] = list(dict.fromkeys(tags))


# ------------------------------------------------------------------ show_doc output and links

_re_showdoc_src = re.compile(r'^\[source\]\([^)]*\)\{[^}]*\}\s*$', re.M)
_re_showdoc_head = re.compile(r'^(#{1,6}) (\S.*?)[ \t]*$', re.M)


def tidy_show_doc(md: str, taken: set[str], body: str | None = None) -> tuple[str, list[str]]:
    """Make nbdev's show_doc markdown render in Sphinx: drop Quarto-only attribute syntax and turn the symbol
    heading into an anchored title. Its id is the symbol's name (`TaskModule`, `ArrayDataset.__len__`), plus the
    lower-case alias nbdev's `_modidx.py` links use (`#taskmodule`) unless `taken` (ids already on the page) has it.
    `body` (from `api_markdown`) replaces nbdev's signature and table under the title; without it, nbdev's own
    rendering stays, minus the `NoneType` fastcore invents for an unannotated parameter whose default is None."""
    md = _re_showdoc_src.sub('', md)  # '[source](github){target=...}': the exported code is shown above
    md = re.sub(r'^---\s*\n', '', md, count=1)
    md = re.sub(r':NoneType(?==None)', '', md)
    if body is not None:
        title = _re_showdoc_head.search(md)
        md = (title.group(0) + '\n\n' if title else '') + body
    anchors = []
    def head(m):
        name = m.group(2)
        esc = lambda t: t.replace('&', '&amp;').replace('<', '&lt;').replace('"', '&quot;')
        alias = name.lower()
        ids = [name] + ([alias] if alias != name and alias not in taken else [])
        taken.update(ids)
        anchors.extend(ids)
        extra = ''.join(f'<span id="{esc(a)}"></span>' for a in ids[1:])
        return (f'<p class="nb-api-name" id="{esc(name)}" role="heading" aria-level="{len(m.group(1))}">'
                f'{extra}<code>{esc(name)}</code></p>\n')
    md = _re_showdoc_head.sub(head, md, count=1)
    return md, anchors


_re_showdoc_call = re.compile(r'^\s*show_doc\(\s*([A-Za-z_][\w.]*)\s*[,)]')


def _short_repr(value) -> str:
    "A default value as a reader wants it in a table: the repr, functions by name, long reprs cut."
    import types
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)): return value.__name__
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _annotation(annotation) -> str:
    "An annotation as written (strings under `from __future__ import annotations`), '' when there is none."
    import inspect
    if annotation is inspect.Parameter.empty: return ''
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _cell(text: str) -> str:
    "Text safe inside one markdown table cell."
    return ' '.join(str(text).split()).replace('|', '\\|')


def resolve_symbol(expr: str, module_name: str | None):
    "The object a `show_doc(expr)` cell documents, looked up in the notebook's exported module (None if not found)."
    import importlib
    if not module_name: return None
    try: namespace = vars(importlib.import_module(module_name))
    except Exception: return None
    head, *rest = expr.split('.')
    obj = namespace.get(head)
    for attr in rest:
        if obj is None: return None
        obj = getattr(obj, attr, None)
    return obj


def api_markdown(obj, name: str, module_name: str, index: bool) -> str:
    """An API entry written from the object itself: a Sphinx Python-domain description (so the site's search, the
    general index and intersphinx know the symbol) with the signature as declared (no type is invented for an
    unannotated parameter), the docstring, and a parameter table from the docments (name, type, default, what it is)."""
    import inspect
    from fastcore.docments import docments
    target = obj.__init__ if inspect.isclass(obj) else obj
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError): sig = None
    try: docs = docments(obj) or {}
    except Exception: docs = {}
    kind = 'class' if inspect.isclass(obj) else ('method' if '.' in name else 'function')
    args, rows = [], []
    params = list(sig.parameters.values()) if sig is not None else []
    for p in params:
        star = {inspect.Parameter.VAR_POSITIONAL: '*', inspect.Parameter.VAR_KEYWORD: '**'}.get(p.kind, '')
        anno, default = _annotation(p.annotation), p.default
        shown = star + p.name + (f': {anno}' if anno else '')
        if default is not inspect.Parameter.empty: shown += f' = {_short_repr(default)}'
        args.append(shown)
        rows.append((star + p.name, anno, '' if default is inspect.Parameter.empty else _short_repr(default),
                     docs.get(p.name) or ''))
    returns = _annotation(sig.return_annotation) if sig is not None else ''
    if kind == 'class': returns = ''
    return_doc = docs.get('return') or ''
    # fastcore gives the comment of a trailing `**kwargs,  # ...` line to 'return' when `) -> X:` follows it
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD and not rows[-1][3] and return_doc:
        try: source = inspect.getsource(target)
        except (OSError, TypeError): source = ''
        if re.search(rf'\*\*{params[-1].name}\s*,?\s*#\s*' + re.escape(return_doc[:20]), source):
            rows[-1] = (*rows[-1][:3], return_doc)
            return_doc = ''
    short = name.rsplit('.', 1)[-1]
    signature = f"{name if kind == 'method' else short}({', '.join(args)})" + (f' -> {returns}' if returns else '')
    # the current module first, so that names in annotations resolve to this module's classes (two modules may both
    # define a `WindowDataset`)
    lines = [f'```{{py:currentmodule}} {module_name}', '```', '', f'```{{py:{kind}}} {signature}', f':module: {module_name}']
    if not index: lines.append(':no-index:')
    lines.append('')
    doc = inspect.getdoc(obj) or ''
    if doc: lines += [doc, '']
    if any(r[3] or r[1] for r in rows):
        lines += ['| Parameter | Type | Default | Description |', '|:--|:--|:--|:--|']
        lines += [f'| `{_cell(n)}` | {("`" + _cell(t) + "`") if t else ""} | {("`" + _cell(d) + "`") if d else ""} '
                  f'| {_cell(c)} |' for n, t, d, c in rows]
        lines.append('')
    if returns or return_doc:
        lines += [f"**Returns** {('`' + _cell(returns) + '`') if returns else ''}"
                  f"{(': ' + _cell(return_doc)) if return_doc else ''}", '']
    lines.append('```')
    return '\n'.join(lines) + '\n'


def exported_module(nb_path: Path) -> str | None:
    "The module a notebook exports to (`#| default_exp lfp.models` -> 'neuronb.lfp.models'), or None."
    from nbdev.config import get_config
    m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb_path.read_text(encoding='utf-8'))
    return f'{get_config().lib_name}.{m.group(1)}' if m else None


def heading_ids(nb) -> set[str]:
    "The ids Sphinx gives the sections of a notebook's markdown headings."
    from docutils.nodes import make_id
    return {make_id(m.group(1)) for c in nb.cells if c.cell_type == 'markdown'
            for m in re.finditer(r'^#{1,6}\s+(.+?)\s*$', c.source or '', re.M)}


def _is_show_doc_output(cell) -> bool:
    return cell.cell_type == 'code' and bool(re.match(r'\s*show_doc\(', strip_directive_lines(cell.source or '')))


_re_md_link = re.compile(r'(\]\()([^)\s]+?\.ipynb)(#[^)\s]*)?(\))')


def rewrite_nb_links(md: str, nb_path: Path, nbs: Path, pages: dict[Path, str], target) -> str:
    "Rewrite markdown links to notebooks with `target(path, page, fragment)`; links to missing notebooks are errors."
    def sub(m):
        href = m.group(2)
        if '://' in href: return m.group(0)
        dest = (nb_path.parent / href).resolve()
        if dest not in pages:
            raise DocsError(f"{nb_path.relative_to(nbs.parent)} links to {href}, which is not a notebook under "
                            f"{nbs.name}/ (notebooks starting with '_' or '.' are not published)")
        return m.group(1) + target(dest, pages[dest], (m.group(3) or '')[1:]) + m.group(4)
    return _re_md_link.sub(sub, md)


class SymbolLinker:
    "Backticked symbols of the library -> links to their anchors on the site (nbdev's `_modidx.py` index)."
    def __init__(self, anchors: dict[str, set[str]]):
        from nbdev.doclinks import NbdevLookup
        from nbdev.config import get_config
        cfg = get_config()
        self.lookup = NbdevLookup(incl_libs=cfg.lib_name)
        self.base = f"{cfg.doc_host.rstrip('/')}/{cfg.doc_baseurl.strip('/')}/".replace('//', '/').replace(':/', '://')
        self.anchors = anchors

    def local(self, url: str, sym: str = ''):
        "(page, anchor) on this site for one of nbdev's doc URLs of `sym`, or None if the page is not part of it."
        if not url.startswith(self.base): return None
        page, _, frag = url[len(self.base):].partition('#')
        page = page.removesuffix('.html')
        if page not in self.anchors: return None
        while frag:  # nbdev's anchors are lower case; ours are the names, plus lower-case aliases where free
            found = [a for a in self.anchors[page] if a.lower() == frag]
            if found: return page, next((a for a in found if sym.endswith(a)), found[0])
            frag = frag.rpartition('.')[0]  # a method without show_doc: link to its class
        return page, ''

    def linkify(self, md: str, page: str) -> str:
        def fix(m):
            loc = self.local(m.group(2), m.group(1).strip('`').removesuffix('()'))
            if loc is None: return m.group(1)  # not on this site: plain code
            return f'[{m.group(1)}]({rel_url(page, *loc)})'
        lines, in_fence = md.splitlines(), False
        for i, line in enumerate(lines):  # nbdev's linkify, minus headings (their links would crowd the contents)
            if line.lstrip().startswith(('```', '~~~')): in_fence = not in_fence
            elif not (in_fence or line.startswith('    ') or line.lstrip().startswith('#')):
                lines[i] = re.sub(r'\[(`[^`]+`)\]\(([^)\s]+)\)', fix, self.lookup.link_line(line))
        return '\n'.join(lines)


# ------------------------------------------------------------------ the site

def _toctree(entries: list[str], caption: str | None = None) -> str:
    opts = ':hidden:\n:maxdepth: 2\n' + (f':caption: {caption}\n' if caption else '')
    return '```{toctree}\n' + opts + '\n' + '\n'.join(entries) + '\n```\n'


# Sidebar sections: one per sub-package (a folder of nbs/ is a sub-package of the library), named for readers with
# the package next to it; a folder not listed here gets its own name.
# Their order is the sidebar's: the layer of building blocks, the tracks, then interpretability (which uses them all).
SECTION_TITLES = {'nn': 'Building blocks', 'lfp': 'LFP', 'temporal': 'Temporal encoders', 'encoding': 'fMRI encoding',
                  'video': 'Video', 'eeg': 'EEG', 'neurofm': 'NeuroFMx', 'interpret': 'Interpretability'}


def section_caption(folder: str) -> str:
    from nbdev.config import get_config
    name = re.sub(r'^\d+_', '', folder)
    return f"{SECTION_TITLES.get(name, name)} ({get_config().lib_name}.{name})"


def navigation(pages: list[str]) -> str:
    "Hidden toctrees in reading order: top-level pages (the foundation), then one captioned section per sub-folder."
    top = [p for p in pages if '/' not in p and p != 'index']
    groups: dict[str, list[str]] = {}
    for p in pages:
        if '/' in p: groups.setdefault(p.split('/', 1)[0], []).append(p)
    parts = [_toctree(top, caption='Foundation')] if top else []
    for folder, entries in groups.items():
        parts.append(_toctree(entries, caption=section_caption(folder)))
    return '\n'.join(parts)


# ------------------------------------------------------------------ landing page: gallery and model table

def gallery(notebooks: list[Path], pages: dict[Path, str], src: Path, titles: dict[Path, str]) -> str:
    """A figure per chapter that tags one figure cell `gallery` (cell metadata tags), linking to the chapter: the
    landing page's gallery, built from the figures stored in the notebooks so it cannot drift from them."""
    import base64
    import json as _json
    cards = []
    for nb_path in notebooks:
        cells = _json.loads(nb_path.read_text(encoding='utf-8'))['cells']
        for cell in cells:
            if 'gallery' not in cell.get('metadata', {}).get('tags', []): continue
            png = next((o['data']['image/png'] for o in cell.get('outputs', []) if 'image/png' in o.get('data', {})),
                       None)
            if png is None:
                raise DocsError(f"{nb_path.name}: a cell tagged 'gallery' has no stored PNG figure (run the notebook)")
            page = pages[nb_path]
            image = src / '_gallery' / (page.replace('/', '__') + '.png')
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(base64.b64decode(''.join(png) if isinstance(png, list) else png))
            cards.append(f"[![{titles[nb_path]}](_gallery/{image.name})]({page}.html)\n\n"
                         f"[{titles[nb_path]}]({page}.html)\n")
            break
    if not cards: return ''
    body = '\n'.join(f':::{{container}} nb-gallery-card\n{c}:::\n' for c in cards)
    return f"## Gallery\n\nOne figure from each track's experiment; click through to the chapter.\n\n" \
           f"::::{{container}} nb-gallery\n{body}::::\n"


def _shapes(value) -> str:
    "Shapes of a tensor, a tuple of tensors, or a dataclass/dict of them, for the model table."
    import dataclasses
    import torch
    if isinstance(value, torch.Tensor): return '(' + ', '.join(str(n) for n in value.shape) + ')'
    if dataclasses.is_dataclass(value): value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return ', '.join(f'{k}: {_shapes(v)}' for k, v in value.items() if isinstance(v, (torch.Tensor, dict, tuple, list)))
    if isinstance(value, (tuple, list)): return ', '.join(_shapes(v) for v in value)
    return type(value).__name__


def model_table() -> str:
    """The models registered in the library's model registries (`MODELS = Registry('<track> model')`), each built
    from its defaults and run on its own `example_input()`: name, track, input and output shapes, trainable
    parameters and the chapter that defines it. Generated at build time, so it cannot drift from the code."""
    import importlib
    import torch
    from nbdev.config import get_config
    from neuronb._modidx import d
    from neuronb.nn.registry import Registry, n_params
    lib = get_config().lib_name
    rows, seen = [], set()
    for module_name in sorted(d['syms']):
        try: module = importlib.import_module(module_name)
        except Exception as e: raise DocsError(f"model table: importing {module_name} failed: {type(e).__name__}: {e}")
        registry = getattr(module, 'MODELS', None)
        if not isinstance(registry, Registry) or id(registry) in seen: continue
        seen.add(id(registry))
        for name in registry.names():
            builder = registry[name]
            where = f"model table: {registry.kind} {name!r} ({module_name})"
            try:
                torch.manual_seed(0)
                model = registry.build(name).eval()
                example = model.example_input(batch_size=2)
                with torch.no_grad():
                    output = model(*example) if isinstance(example, tuple) else model(example)
            except Exception as e:
                raise DocsError(f"{where}: building it from its defaults and running its example_input() failed "
                                f"({type(e).__name__}: {e}); every registered model must build from its defaults and "
                                f"define example_input(batch_size)")
            home = d['syms'].get(builder.__module__, {}).get(f'{builder.__module__}.{builder.__qualname__}')
            page = home[0].rsplit('/', 1)[-1] if home else ''
            url = home[0] if home else ''
            chapter = url.split(get_config().doc_baseurl.strip('/') + '/', 1)[-1].partition('#')[0] if url else ''
            track = module_name.split('.')[1] if module_name.count('.') >= 1 else module_name
            rows.append((name, track, _shapes(example), _shapes(output), f'{n_params(model):,}', chapter,
                         builder.__qualname__))
    if not rows: return ''
    lines = ['## Models', '',
             'Every model registered in the library, built from its defaults (small CPU sizes; the chapters and the '
             'sweep specs give the full sizes) and run on its example input. Generated when the site is built.', '',
             '| model | track | input (batch 2) | output | trainable parameters | chapter |', '|:--|:--|:--|:--|--:|:--|']
    for name, track, inp, out, params, chapter, qualname in rows:
        link = f'[{chapter.removesuffix(".html")}]({chapter}#{qualname})' if chapter else ''
        lines.append(f'| `{name}` | {track} | {_cell(inp)} | {_cell(out)} | {params} | {link} |')
    return '\n'.join(lines) + '\n'


def stage(nbs: Path, src: Path, log) -> dict[str, str]:
    "Process every notebook into `src` as `<page>.ipynb`; returns {page: notebook path relative to nbs' parent}."
    from execnb.nbio import write_nb, mk_cell
    from nbdev.config import get_config
    notebooks = find_notebooks(nbs)
    if not notebooks: raise DocsError(f"no notebooks under {nbs}")
    pages = page_names(nbs, notebooks)
    resolved = {p.resolve(): name for p, name in pages.items()}
    processed, anchors, documented = {}, {}, set()
    for nb_path in notebooks:
        t0 = time.time()
        try: nb = nbdev_process(nb_path)
        except DocsError: raise
        except Exception as e:
            raise DocsError(f"{nb_path.relative_to(nbs.parent)}: {type(e).__name__}: {e}") from None
        page = pages[nb_path]
        found, taken = set(), heading_ids(nb)
        module_name = exported_module(nb_path)
        for cell in nb.cells:
            if not _is_show_doc_output(cell): continue
            call = _re_showdoc_call.match(strip_directive_lines(cell.source or ''))
            obj = resolve_symbol(call.group(1), module_name) if call else None
            body = None
            if obj is not None:
                qualified = f'{module_name}.{call.group(1)}'
                body = api_markdown(obj, call.group(1), module_name, index=qualified not in documented)
                documented.add(qualified)
            for out in cell.get('outputs', []):
                md = out.get('data', {}).get('text/markdown')
                if md is None: continue
                text, a = tidy_show_doc(''.join(md), taken, body)
                out['data']['text/markdown'] = text
                found.update(a)
            cell.metadata.setdefault('tags', []).append('nb-api')  # styled as an API entry (docs/_static)
        processed[nb_path], anchors[page] = nb, found
        log(f"  {nb_path.relative_to(nbs)} -> {page}.html ({time.time() - t0:.1f}s)")
    linker = SymbolLinker(anchors)
    for nb_path, nb in processed.items():
        page = pages[nb_path]
        link = lambda dest, to, frag, page=page: rel_url(page, to, frag)
        for cell in nb.cells:
            if cell.cell_type == 'markdown':
                cell.source = linker.linkify(rewrite_nb_links(cell.source, nb_path, nbs, resolved, link), page)
            for out in cell.get('outputs', []):
                md = out.get('data', {}).get('text/markdown')
                if md is not None: out['data']['text/markdown'] = linker.linkify(''.join(md), page)
        to_myst(nb)
        if page == 'index':
            titles = {p: (_frontmatter(processed[p]).get('title') or pages[p]) for p in notebooks}
            landing = gallery(notebooks, pages, src, titles) + '\n' + model_table()
            if landing.strip(): nb.cells.append(mk_cell(landing, 'markdown'))
            nb.cells.append(mk_cell(navigation(list(pages.values())), 'markdown'))
        dest = src / f'{page}.ipynb'
        dest.parent.mkdir(parents=True, exist_ok=True)
        nb.metadata.pop('widgets', None)
        write_nb(nb, dest)
    if 'index' not in pages.values():
        title = get_config().get('title', get_config().lib_name)
        (src / 'index.md').write_text(f'# {title}\n\n' + navigation(list(pages.values())))
    # images referenced from markdown cells (e.g. nbs/images/x.png) travel with the pages
    for f in nbs.rglob('*'):
        rel = f.relative_to(nbs)
        if f.is_file() and f.suffix.lower() in {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'} \
                and not any(part.startswith(('_', '.')) for part in rel.parts):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, src / rel)
    return {page: nb.relative_to(nbs.parent).as_posix() for nb, page in pages.items()}


def build_site(nbs: Path, out: Path, log=print) -> None:
    from sphinx.cmd.build import build_main
    with tempfile.TemporaryDirectory(prefix='neuronb-docs-') as tmp:
        src = Path(tmp) / 'src'
        src.mkdir()
        log(f"processing notebooks in {nbs}")
        sources = stage(nbs, src, log)
        log(f"rendering with Sphinx into {out}")
        stage_out = Path(tmp) / 'html'
        warn_file = Path(tmp) / 'warnings.txt'
        args = ['-b', 'html', '-q', '-W', '--keep-going', '-w', str(warn_file), '-c', str(DOCS_CONF),
                '-d', str(Path(tmp) / 'doctrees'), '-j', '1', str(src), str(stage_out)]
        with contextlib.redirect_stderr(io.StringIO()):
            rc = build_main(args)
        warns = warn_file.read_text().strip() if warn_file.exists() else ''
        if rc != 0 or warns:
            warns = warns.replace(str(src) + '/', '')
            for page, source in sources.items():  # name the notebooks, not their processed copies
                warns = re.sub(rf'(?m)^{re.escape(page)}\.ipynb\b', source, warns)
            raise DocsError('Sphinx reported problems:\n'
                            + (warns or f'sphinx-build exited with {rc}'))
        (stage_out / '.nojekyll').touch()
        shutil.rmtree(stage_out / '.doctrees', ignore_errors=True)
        with contextlib.suppress(OSError): (stage_out / '_sources').rmdir()  # empty: sources are not copied
        if out.exists(): shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(stage_out, out)


# ------------------------------------------------------------------ README

def render_readme(nbs: Path, readme_nb: str = 'index.ipynb', root: Path = ROOT) -> str:
    "README.md's text: `nbs/index.ipynb` processed like a page, as markdown; links to notebooks -> nbs/...ipynb."
    path = nbs / readme_nb
    if not path.exists(): raise DocsError(f"README notebook not found: {path}")
    notebooks = find_notebooks(nbs)
    resolved = {p.resolve(): page_name(p.relative_to(nbs)) for p in notebooks}
    nb = nbdev_process(path, run_show_docs=False)
    nbs_rel = os.path.relpath(nbs.resolve(), root.resolve())
    def link(dest, page, frag):  # the notebook itself, as GitHub shows it: nbs/lfp/01_simulate.ipynb#...
        return f"{nbs_rel}/{Path(os.path.relpath(dest, nbs.resolve())).as_posix()}" + (f'#{frag}' if frag else '')
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            cell.source = rewrite_nb_links(cell.source, path, nbs, resolved, link)
        if cell.cell_type == 'code':
            tags = tags_for(_directives(cell))
            if 'remove-cell' in tags: continue
            cell.source = strip_directive_lines(cell.source)
            if 'remove-input' in tags: cell.source = ''
            if 'remove-output' in tags: cell.outputs = []
            if not cell.source.strip() and not cell.get('outputs'): continue
        cells.append(cell)
    body = '\n\n'.join(filter(None, (_cell_markdown(c, path) for c in cells)))
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return README_HEADER.format(src=f'{nbs_rel}/{readme_nb}') + body


def _fence(text: str, lang: str = '') -> str:
    ticks = '```' if '```' not in text else '````'
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _cell_markdown(cell, path: Path) -> str:
    "One processed cell as GitHub markdown (what nbconvert's markdown exporter gives, without images)."
    if cell.cell_type == 'markdown': return cell.source.strip()
    if cell.cell_type == 'raw': return ''
    parts = [_fence(cell.source, 'python')] if cell.source.strip() else []
    for out in cell.get('outputs', []):
        kind = out.get('output_type')
        if kind == 'stream': parts.append(_fence(''.join(out.get('text', ''))))
        elif kind == 'error': raise DocsError(f"{path}: cell {cell.idx_} has an error output")
        else:
            data = out.get('data', {})
            if any(k.startswith('image/') for k in data):
                raise DocsError(f"{path}: README notebooks must not have image outputs (README.md is one file)")
            if 'text/markdown' in data: parts.append(''.join(data['text/markdown']).strip())
            elif 'text/html' in data: parts.append(''.join(data['text/html']).strip())
            elif 'text/plain' in data: parts.append(_fence(''.join(data['text/plain'])))
    return '\n\n'.join(parts)


def write_readme(nbs: Path, dest: Path, readme_nb: str = 'index.ipynb') -> bool:
    "Write README.md if its text changed; returns whether it did."
    text = render_readme(nbs, readme_nb, root=dest.parent)
    if dest.exists() and dest.read_text() == text: return False
    tmp = dest.with_name(f'.{dest.name}.tmp')
    tmp.write_text(text)
    tmp.replace(dest)
    return True


# ------------------------------------------------------------------ command line

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--readme-only', action='store_true', help='only (re)write README.md from the index notebook')
    p.add_argument('--nbs', type=Path, help='notebook folder (default: nbs_path of settings.ini)')
    p.add_argument('--out', type=Path, help='site folder (default: _site/ in the repository)')
    p.add_argument('--readme', type=Path, help='README path (default: README.md in the repository)')
    p.add_argument('--no-readme', action='store_true', help='build the site only')
    a = p.parse_args(argv)
    given = {k: getattr(a, k).resolve() for k in ('nbs', 'out', 'readme') if getattr(a, k) is not None}
    os.chdir(ROOT)  # nbdev reads settings.ini from the working directory; notebooks' cells run from here too
    from nbdev.config import get_config
    cfg = get_config()
    nbs = given.get('nbs', cfg.nbs_path.resolve())
    readme = given.get('readme', ROOT / 'README.md')
    readme_nb = cfg.get('readme_nb', 'index.ipynb')
    out = given.get('out', ROOT / '_site')
    t0 = time.time()
    try:
        if not a.no_readme:
            changed = write_readme(nbs, readme, readme_nb)
            print(f"{readme.relative_to(ROOT) if readme.is_relative_to(ROOT) else readme}: "
                  f"{'written' if changed else 'up to date'} (from {nbs.name}/{readme_nb})")
        if a.readme_only: return 0
        build_site(nbs, out)
    except DocsError as e:
        print(f"docs build failed: {e}", file=sys.stderr)
        return 1
    print(f"site written to {out}/index.html in {time.time() - t0:.0f}s "
          f"(open it in a browser, or: python -m http.server -d {os.path.relpath(out)} 8000)")
    return 0


if __name__ == '__main__':
    rc = main()
    # Everything is written and closed. Skip the interpreter's teardown of torch, Sphinx and the notebook shells,
    # which takes longer than some of the build.
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(rc)
