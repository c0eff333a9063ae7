"""The documentation site, looked at in a real browser (headless Chromium).

The site is built by tools/build_docs.py from a copy of nbs/ plus one fixture notebook (in a sub-folder, with
cell directives, a stored figure and a documented function), served on 127.0.0.1, and crawled:
every notebook has a page in the navigation, in notebook order; every exported function or class has its API
documentation on its notebook's page; every image loaded; every internal link and #fragment resolves; cell
directives took effect and no `#|` line is displayed. Also: nbdev's Quarto configuration (for nbdev_docs on
machines with Quarto) is still valid.
"""
import ast
import base64
import functools
import http.server
import importlib.util
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CHROMIUM = os.environ.get('NEURONB_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('NEURONB_CHROMEDRIVER', '/usr/bin/chromedriver')
FIXTURE_DIR = 'zz_docs_check'
FIXTURE_PAGE = f'{FIXTURE_DIR}/fixture'

sys.path.insert(0, str(ROOT / 'tools'))
import build_docs  # noqa: E402  (the tool under test: notebook discovery and page names)


# ------------------------------------------------------------------ the fixture notebook

def _png() -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.plot([0, 1, 2], [0, 1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _some_symbol() -> tuple[str, str]:
    "An exported top-level symbol of the library and the page#anchor nbdev's index gives for it."
    from neuronb._modidx import d
    for mod, syms in d['syms'].items():
        for full, (url, _) in syms.items():
            name = full[len(mod) + 1:]
            if '.' not in name and not name.startswith('_'): return name, url
    pytest.fail('neuronb/_modidx.py lists no symbol')


def fixture_notebook(symbol: str) -> dict:
    "A notebook (as JSON) with cell directives, a documented function and a stored figure."
    md = lambda src: {'cell_type': 'markdown', 'metadata': {}, 'source': src}
    code = lambda src, outputs=(): {'cell_type': 'code', 'execution_count': None, 'metadata': {},
                                    'outputs': list(outputs), 'source': src}
    out = lambda text: {'output_type': 'stream', 'name': 'stdout', 'text': text}
    cells = [
        md('# docs check fixture\n\n> A notebook that only the docs test adds.\n\n'
           f'Back [home](../index.ipynb); the library\'s `{symbol}` is linked to its docs.'),
        code('#| hide\nhidden = "HIDDEN-CELL-MARKER"'),
        code('#| echo: false\nprint("ECHO-OUTPUT-MARKER")  # ECHO-INPUT-MARKER', [out('ECHO-OUTPUT-MARKER\n')]),
        code('#| output: false\nprint("OUTPUT-FALSE-INPUT-MARKER")', [out('OUTPUT-FALSE-OUTPUT-MARKER\n')]),
        md('## A documented function\n\nEuler, typeset: $e^{i\\pi} + 1 = 0$ (MATH-MARKER).'),
        code('#| exec_doc\ndef docs_check_fn(x: int,  # DOCMENT-MARKER\n                 ) -> int:\n'
             '    "DOCSTRING-MARKER"\n    return x'),
        code('import matplotlib.pyplot as plt\nplt.plot([0, 1, 2], [0, 1, 0]); plt.show()',
             [{'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png(), 'text/plain': '<Figure>'}}]),
    ]
    cells[-1]['metadata']['tags'] = ['gallery']  # its figure goes to the landing page's gallery
    for i, c in enumerate(cells): c['id'] = f'fx{i:02d}'
    return {'cells': cells, 'nbformat': 4, 'nbformat_minor': 5,
            'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}}


# ------------------------------------------------------------------ expectations from the notebooks and library

def exported_symbols() -> dict[str, dict[str, str]]:
    "{page: {symbol: anchor}} for the top-level functions and classes in each module's __all__ (nbdev's index)."
    from neuronb._modidx import d
    res = {}
    for mod, syms in d['syms'].items():
        py = ROOT / (mod.replace('.', '/') + '.py')
        tree = ast.parse(py.read_text())
        names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, 'id', None) == '__all__' for t in n.targets)), [])
        for full, (url, _) in syms.items():
            name = full[len(mod) + 1:]
            if '.' in name or name not in names: continue
            page, _, anchor = url.partition('#')
            res.setdefault(page.removesuffix('.html'), {})[name] = anchor
    return res


def exported_by_module() -> dict[str, list[str]]:
    "{module: [top-level names in its __all__ that nbdev's index documents]}."
    from neuronb._modidx import d
    res = {}
    for mod, syms in d['syms'].items():
        tree = ast.parse((ROOT / (mod.replace('.', '/') + '.py')).read_text())
        names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, 'id', None) == '__all__' for t in n.targets)), [])
        res[mod] = [full[len(mod) + 1:] for full in syms if full[len(mod) + 1:] in names]
    return res


def visible_images(path: Path) -> int:
    "Image outputs of a notebook in cells that are not hidden."
    nb = json.loads(path.read_text())
    n = 0
    for c in nb['cells']:
        src = ''.join(c.get('source', ''))
        if c['cell_type'] != 'code' or re.search(r'^#\|\s*(hide|output:\s*false|include:\s*false)', src, re.M):
            continue
        n += sum(any(k.startswith('image/') for k in o.get('data', {})) for o in c.get('outputs', []))
    return n


def h1_of(path: Path) -> str:
    for c in json.loads(path.read_text())['cells']:
        m = c['cell_type'] == 'markdown' and re.search(r'^#\s+(.+?)\s*$', ''.join(c['source']), re.M)
        if m: return m.group(1)
    return ''


# ------------------------------------------------------------------ fixtures: site, server, browser

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('docs')
    nbs = tmp / 'nbs'
    shutil.copytree(ROOT / 'nbs', nbs, ignore=shutil.ignore_patterns('.ipynb_checkpoints', '__pycache__'))
    symbol, symbol_url = _some_symbol()
    (nbs / FIXTURE_DIR).mkdir()
    (nbs / FIXTURE_DIR / '01_fixture.ipynb').write_text(json.dumps(fixture_notebook(symbol), indent=1))
    site = tmp / 'site'
    r = subprocess.run([PY, str(ROOT / 'tools/build_docs.py'), '--nbs', str(nbs), '--out', str(site), '--no-readme'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"docs build failed:\n{r.stdout}\n{r.stderr}"
    notebooks = build_docs.find_notebooks(nbs)
    pages = {nb: build_docs.page_name(nb.relative_to(nbs)) for nb in notebooks}
    return dict(site=site, nbs=nbs, pages=pages, symbol=symbol, symbol_url=symbol_url)


@pytest.fixture(scope='module')
def server(built):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(built['site'])))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope='module')
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f"headless Chromium is needed for the docs test but {', '.join(missing)} is missing: "
                    "run `make browser` (apt-get install chromium chromium-driver)")
    os.environ['SE_OFFLINE'] = 'true'  # selenium-manager must never try to download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix='neuronb-chromium-')
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--disable-quic', '--disable-dev-shm-usage',
              '--window-size=1280,1000', f'--user-data-dir={profile}'):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


_PAGE_JS = """
const imgs = [...document.querySelectorAll('img')].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
              in_output: !!i.closest('.cell_output')}));
return {
  title: document.title,
  h1: [...document.querySelectorAll('article h1')].map(h => h.textContent.replace(/[#¶]/g, '').trim()),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id).concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  nav: [...document.querySelectorAll('.sidebar-tree a.reference')].map(a => a.href),
  imgs: imgs,
  code_inputs: [...document.querySelectorAll('.cell_input pre')].map(p => p.textContent),
  api: [...document.querySelectorAll('.nb-api-name[id]')].map(e => ({id: e.id, name: e.innerText,
        shown: e.offsetParent !== null && e.getBoundingClientRect().height > 0,
        sig: e.nextElementSibling ? e.nextElementSibling.innerText : ''})),
  text: (document.querySelector('article') || document.body).innerText,
  output_text: [...document.querySelectorAll('.cell_output')].map(e => e.innerText).join('\\n'),
  wide_code: [...document.querySelectorAll('article pre')].filter(p => p.scrollWidth > p.clientWidth + 1)
             .map(p => p.textContent.slice(0, 80)),
  scripts: [...document.querySelectorAll('script[src]')].map(s => s.src),
};"""


@pytest.fixture(scope='module')
def crawl(built, server, browser):
    "Visit every internal HTML page reachable from the home page; fetch every other internal resource."
    pages, others, queue = {}, {}, deque([server + 'index.html'])
    while queue:
        url = queue.popleft()
        if url in pages: continue
        browser.get(url)
        browser.execute_script("return document.readyState")  # page loaded (get waits for the load event)
        info = browser.execute_script(_PAGE_JS)
        info['status'] = _status(url)
        pages[url] = info
        for link in info['links']:
            target, _ = urldefrag(link)
            if not target.startswith(server): continue
            if target.endswith('/'): target += 'index.html'
            if target.endswith('.html'):
                if target not in pages: queue.append(target)
            elif target not in others: others[target] = _status(target)
    return dict(pages=pages, others=others)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r: return r.status
    except urllib.error.HTTPError as e: return e.code


def page_url(server: str, page: str) -> str: return f'{server}{page}.html'


# ------------------------------------------------------------------ tests

def test_every_notebook_has_a_page_in_the_navigation_in_order(built, server, crawl):
    pages, expected = crawl['pages'], built['pages']
    for nb, page in expected.items():
        url = page_url(server, page)
        assert url in pages, f"{nb.relative_to(built['nbs'])}: no page {page}.html reachable from the home page"
        info = pages[url]
        assert info['status'] == 200, f"{page}.html: HTTP {info['status']}"
        title = h1_of(nb)
        typographic = lambda t: t.replace("'", '\u2019').replace('"', '\u201c')  # Sphinx's smart quotes
        shown = [typographic(h).replace('\u201d', '\u201c') for h in info['h1']]
        assert title and typographic(title) in shown, f"{page}.html: expected the notebook's title {title!r}, got {info['h1']}"
    home = pages[server + 'index.html']
    nav = [urlparse(u).path.lstrip('/').removesuffix('.html') for u in home['nav']]
    order = [p for p in expected.values() if p != 'index']
    assert nav == order, f"navigation order {nav} != notebook order {order}"


def test_api_docs_for_every_exported_symbol(built, server, crawl):
    expected = exported_symbols()
    assert expected, 'no exported symbols found in neuronb/_modidx.py'
    pages, site_pages = crawl['pages'], set(built['pages'].values())
    missing = []
    for page, syms in expected.items():
        assert page in site_pages, f"nbdev's index links symbols to {page}.html, which the site does not have"
        info = pages[page_url(server, page)]
        api = {a['id']: a for a in info['api']}
        for name, anchor in syms.items():
            a = api.get(name)
            if not a or not a['shown'] or a['name'] != name or name not in a['sig']:
                missing.append(f'{page}.html: {name}: {a}')
            elif anchor not in info['ids']:
                missing.append(f"{page}.html: #{anchor} (nbdev's link to {name}) is not on the page")
    assert not missing, 'API documentation missing or incomplete:\n' + '\n'.join(missing)
    # the fixture's `#| exec_doc` function: signature, docment and docstring
    text = pages[page_url(server, FIXTURE_PAGE)]['text']
    assert 'docs_check_fn' in text and 'DOCMENT-MARKER' in text and 'DOCSTRING-MARKER' in text, text


def test_figures_are_shown_and_loaded(built, server, crawl):
    pages = crawl['pages']
    broken = [f"{u}: {i['src'][:80]}" for u, p in pages.items() for i in p['imgs'] if not i['ok']]
    assert not broken, 'images that did not load:\n' + '\n'.join(broken)
    with_figures = 0
    for nb, page in built['pages'].items():
        want = visible_images(nb)
        if not want: continue
        with_figures += 1
        got = sum(i['in_output'] for i in pages[page_url(server, page)]['imgs'])
        assert got >= want, f"{page}.html shows {got} figures, its notebook stores {want}"
    assert with_figures >= 1  # at least the fixture's figure


def test_no_broken_internal_links(crawl, server):
    pages, others = crawl['pages'], crawl['others']
    ids = {u: set(p['ids']) for u, p in pages.items()}
    broken = [f'{u} (HTTP {s})' for u, s in others.items() if s != 200]
    broken += [f'{u} (HTTP {p["status"]})' for u, p in pages.items() if p['status'] != 200]
    for src, p in pages.items():
        for link in p['links']:
            target, frag = urldefrag(link)
            if not target.startswith(server) or not frag: continue
            if target.endswith('/'): target += 'index.html'
            if target in ids and frag not in ids[target]:
                broken.append(f'{link} (no #{frag} on the page; linked from {src})')
    assert not broken, 'broken internal links:\n' + '\n'.join(sorted(set(broken)))
    assert len(pages) >= 2


def test_directives_and_symbol_links(built, server, crawl):
    pages = crawl['pages']
    fx = pages[page_url(server, FIXTURE_PAGE)]
    text = fx['text']
    for hidden in ('HIDDEN-CELL-MARKER', 'ECHO-INPUT-MARKER', 'OUTPUT-FALSE-OUTPUT-MARKER'):
        assert hidden not in text, f'{hidden} is displayed although its cell directive hides it'
    for shown in ('ECHO-OUTPUT-MARKER', 'OUTPUT-FALSE-INPUT-MARKER'):
        assert shown in text, f'{shown} is missing from the fixture page'
    shown_directives = [f'{u}: {line}' for u, p in pages.items() for code in p['code_inputs']
                        for line in code.splitlines() if re.match(r'\s*#\s*\|', line)]
    assert not shown_directives, 'directive lines displayed:\n' + '\n'.join(shown_directives)
    # the backticked library symbol links to its API docs on its page
    page = built['symbol_url'].partition('#')[0]
    want = urljoin(page_url(server, FIXTURE_PAGE), f"../{page}#{built['symbol']}")
    assert want in fx['links'], f"`{built['symbol']}` is not linked to {want}: {fx['links']}"


def test_nbdev_quarto_configuration_is_valid(tmp_path):
    "nbdev_docs (on machines with Quarto) reads settings.ini, nbs/_quarto.yml and the sidebar nbdev generates."
    import yaml
    shutil.copy2(ROOT / 'settings.ini', tmp_path)
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    code = ('from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar\n'
            'refresh_quarto_yml(); nbdev_sidebar.__wrapped__(force=True)')
    r = subprocess.run([PY, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    nbs = tmp_path / 'nbs'
    quarto = yaml.safe_load((nbs / '_quarto.yml').read_text())
    assert (nbs / '_quarto.yml').read_text() == (ROOT / 'nbs/_quarto.yml').read_text(), 'nbdev rewrote _quarto.yml'
    assert quarto['project']['type'] == 'website'
    assert set(quarto['metadata-files']) == {'nbdev.yml', 'sidebar.yml'}
    nbdev_yml = yaml.safe_load((nbs / 'nbdev.yml').read_text())
    from configparser import ConfigParser
    ini = ConfigParser(delimiters=['=']); ini.read(ROOT / 'settings.ini')
    cfg = ini['DEFAULT']
    assert nbdev_yml['project']['output-dir'] == cfg['doc_path']
    assert nbdev_yml['website']['site-url'] == cfg['doc_host'] + cfg['doc_baseurl']
    assert nbdev_yml['website']['title'] == cfg['title']
    sidebar = yaml.safe_load((nbs / 'sidebar.yml').read_text())

    def hrefs(items):
        for it in items:
            if isinstance(it, str): yield it
            else:
                if 'href' in it: yield it['href']
                yield from hrefs(it.get('contents', []))
    listed = sorted(hrefs(sidebar['website']['sidebar']['contents']))
    ours = sorted(p.relative_to(nbs).as_posix() for p in build_docs.find_notebooks(nbs))
    assert listed == ours, f"nbdev's sidebar {listed} and the Sphinx site {ours} list different notebooks"


def _tiny_nbs(tmp_path: Path, markdown: str) -> Path:
    nbs = tmp_path / 'nbs'
    nbs.mkdir()
    nb = fixture_notebook('x')
    nb['cells'] = [{'cell_type': 'markdown', 'metadata': {}, 'id': 'c0', 'source': f'# broken\n\n{markdown}'}]
    (nbs / '01_broken.ipynb').write_text(json.dumps(nb))
    return nbs


@pytest.mark.parametrize('markdown, message', [
    ('See [the missing chapter](02_missing.ipynb).', '02_missing.ipynb'),
    ('![a figure](figures/missing.png)', 'missing.png'),
])
def test_a_broken_notebook_fails_the_build_and_is_named(tmp_path, markdown, message):
    nbs = _tiny_nbs(tmp_path, markdown)
    r = subprocess.run([PY, str(ROOT / 'tools/build_docs.py'), '--nbs', str(nbs), '--out', str(tmp_path / 'site'),
                        '--no-readme'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'docs build failed' in r.stderr and message in r.stderr and '01_broken.ipynb' in r.stderr, r.stderr
    assert not (tmp_path / 'site').exists(), 'a failed build must not leave a site behind'


# ------------------------------------------------------------------ what a reader sees

def _check_outputs_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('check_outputs', ROOT / 'tools/check_outputs.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_invented_types_machine_paths_or_warnings_on_any_page(crawl):
    "No `NoneType` from fastcore's guess; no machine path or warning text in any published output."
    check = _check_outputs_module()
    found = []
    for url, page in crawl['pages'].items():
        if 'NoneType' in page['text']: found.append(f"{url}: 'NoneType' in the page")
        for pattern in (check.MACHINE_PATH, check.WARNING_TEXT):
            m = pattern.search(page['output_text'])
            if m: found.append(f"{url}: {page['output_text'][max(0, m.start() - 40): m.end() + 40]!r}")
    assert not found, '\n'.join(found)


def test_no_code_block_is_wider_than_its_column(crawl):
    "Code and text outputs wrap inside the column (wide tables scroll inside their own box, by design)."
    wide = [f"{url}: {code!r}" for url, page in crawl['pages'].items() for code in page['wide_code']]
    assert not wide, 'code blocks that scroll sideways:\n' + '\n'.join(wide[:20])


def test_math_is_typeset_offline(built, server, crawl, browser):
    "MathJax is served with the site (no CDN) and typesets the fixture's formula."
    remote = sorted({s for p in crawl['pages'].values() for s in p['scripts'] if not s.startswith(server)})
    assert not remote, f"scripts loaded from outside the site: {remote}"
    assert (built['site'] / '_static' / 'mathjax' / 'tex-chtml.js').is_file()
    browser.get(page_url(server, FIXTURE_PAGE))
    for _ in range(100):
        n = browser.execute_script("return document.querySelectorAll('mjx-container').length")
        if n: break
        time.sleep(0.1)
    assert n >= 1, 'MathJax did not typeset the fixture page formula'


def _search_objects(site: Path) -> dict[str, set[str]]:
    "{module: {object names}} from Sphinx's search index (what the site's search box finds)."
    text = (site / 'searchindex.js').read_text()
    index = json.loads(text[text.index('(') + 1: text.rindex(')')])
    return {module: {entry[-1] for entry in entries} for module, entries in index['objects'].items()}


def test_search_and_general_index_know_every_exported_symbol(built, server, browser):
    objects = _search_objects(built['site'])
    genindex = (built['site'] / 'genindex.html').read_text()
    missing = []
    for module, names in exported_by_module().items():
        for name in names:
            if name not in objects.get(module, set()): missing.append(f'search: {module}.{name}')
            if f'{module}.{name}' not in genindex: missing.append(f'general index: {module}.{name}')
    assert not missing, 'exported symbols the site cannot find:\n' + '\n'.join(missing)
    # and the search page itself, in the browser, finds one and links to its entry
    symbol, url = built['symbol'], built['symbol_url']
    browser.get(f"{server}search.html?q={symbol}")
    links = []
    for _ in range(100):
        links = browser.execute_script("return [...document.querySelectorAll('#search-results a')].map(a => a.href)")
        if links: break
        time.sleep(0.1)
    page = url.partition('#')[0]
    assert any(page in link for link in links), f"searching {symbol!r} did not find {page}: {links}"


def _gallery_notebooks(nbs: Path) -> dict[Path, int]:
    "Notebooks with a cell tagged `gallery`."
    found = {}
    for nb in build_docs.find_notebooks(nbs):
        cells = json.loads(nb.read_text())['cells']
        if any('gallery' in c.get('metadata', {}).get('tags', []) for c in cells): found[nb] = 1
    return found


def test_gallery_on_the_landing_page(built, server, browser):
    "Each chapter that tags a figure `gallery` has a card on the home page: its figure, loaded, linking to it."
    tagged = _gallery_notebooks(built['nbs'])
    assert any(FIXTURE_DIR in str(nb) for nb in tagged)
    browser.get(server + 'index.html')
    cards = browser.execute_script("""return [...document.querySelectorAll('.nb-gallery-card')].map(c => ({
        links: [...c.querySelectorAll('a[href]')].map(a => a.href),
        img: !!c.querySelector('img') && c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0}))""")
    for nb in tagged:
        page = page_url(server, built['pages'][nb])
        card = next((c for c in cards if page in c['links']), None)
        assert card is not None, f"no gallery card links to {page}: {cards}"
        assert card['img'], f"the gallery figure of {page} did not load"
    assert len(cards) == len(tagged)


def test_model_table_lists_every_registered_model(built, server, browser):
    "The home page's model table is generated from the registries: every registered model, with its parameters."
    import importlib
    from neuronb._modidx import d
    from neuronb.nn.registry import Registry, n_params
    registries = {}
    for module_name in d['syms']:
        registry = getattr(importlib.import_module(module_name), 'MODELS', None)
        if isinstance(registry, Registry): registries[id(registry)] = registry
    browser.get(server + 'index.html')
    rows = browser.execute_script("""const t = document.getElementById('models');
        return t ? [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim())) : null""")
    assert rows is not None, 'no Models section on the home page'
    table = {r[0]: r for r in rows}
    expected = [(reg, name) for reg in registries.values() for name in reg.names()]
    assert expected, 'no model registry found in the library'
    for reg, name in expected:
        assert name in table, f"{reg.kind} {name!r} is not in the model table: {sorted(table)}"
        assert table[name][4] == f"{n_params(reg.build(name)):,}", (name, table[name])
    assert len(rows) == len(expected)


def test_screenshots_of_the_built_site_land_outside_the_repository(built, tmp_path):
    "tools/screenshots.py: one PNG per page at the window width asked for; never into the repository."
    spec = importlib.util.spec_from_file_location('screenshots', ROOT / 'tools/screenshots.py')
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    with pytest.raises(ValueError, match='outside the repository'):
        shots.screenshots(ROOT / 'screenshots', site=built['site'])
    with pytest.raises(FileNotFoundError, match='no page'):
        shots.screenshots(tmp_path, site=built['site'], pages=('no-such-page',))
    paths = shots.screenshots(tmp_path / 'shots', site=built['site'], pages=('index', 'train'), width=1200,
                              max_height=1400)
    assert [p.name for p in paths] == ['index.png', 'train.png']
    for path in paths:
        width, height = struct.unpack('>II', path.read_bytes()[16:24])
        assert width == 1200 and 1000 <= height <= 1400, (path, width, height)
