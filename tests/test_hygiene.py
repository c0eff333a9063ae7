"""tools/check_hygiene.sh: passes on the tree as it is, and names what is wrong when the library, a notebook or
README.md does not match what the notebooks give. Every run works on a copy of the tree in tmp_path."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / '.venv'
CHECK = 'tools/check_hygiene.sh'


def copy_tree(dest: Path) -> Path:
    "The files a commit would hold (tracked plus untracked, not ignored), copied to `dest`."
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split('\0')
    files = [f for f in files if f and (ROOT / f).is_file()]
    assert CHECK in files and 'settings.ini' in files, f"{CHECK} or settings.ini is not in the tree"
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest


def run_check(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, 'NEURONB_VENV': str(VENV)}
    return subprocess.run(['bash', str(tree / CHECK)], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=300)


def git_init(tree: Path) -> None:
    "Make the copy a git checkout with everything staged, like a fresh clone (the check's git code path)."
    subprocess.run(['git', 'init', '-q'], cwd=tree, check=True)
    subprocess.run(['git', 'add', '-A'], cwd=tree, check=True)


def files_under(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob('*'))
            if p.is_file() and '.git' not in p.relative_to(tree).parts}


@pytest.fixture(scope='module')
def clean_tree(tmp_path_factory) -> Path:
    "A copy of the tree brought into sync the way a developer would (export, clean, readme)."
    tree = copy_tree(tmp_path_factory.mktemp('clean') / 'repo')
    for cmd in ([str(VENV / 'bin/nbdev_export')], [str(VENV / 'bin/nbdev_clean')],
                [str(VENV / 'bin/python'), 'tools/build_docs.py', '--readme-only']):
        r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return tree


def test_check_passes_on_the_tree_as_it_is(tmp_path):
    tree = copy_tree(tmp_path / 'repo')
    git_init(tree)
    before = files_under(tree)
    r = run_check(tree)
    assert r.returncode == 0, f"hygiene check fails on the current tree:\n{r.stdout}\n{r.stderr}"
    assert 'hygiene: ok' in r.stdout
    assert files_under(tree) == before, "the check modified the tree it checked"


def _exported_notebook(tree: Path) -> tuple[Path, str]:
    "A notebook with an exported cell and the module file nbdev writes from it."
    for nb in sorted((tree / 'nbs').rglob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        src = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
        exp = [re.search(r'^#\|\s*default_exp\s+(\S+)', s, re.M) for s in src]
        exp = next((m.group(1) for m in exp if m), None)
        if exp and any(re.match(r'#\|\s*export\s*$', s, re.M) for s in src):
            return nb, 'neuronb/' + exp.replace('.', '/') + '.py'
    pytest.fail("no notebook with `#| default_exp` and an exported cell under nbs/")


def test_check_names_what_is_out_of_sync(clean_tree, tmp_path):
    "Three independent defects in a copy that was in sync, checked without .git (an unpacked archive)."
    tree = tmp_path / 'repo'
    shutil.copytree(clean_tree, tree)

    # 1. an exported cell edited without nbdev_export
    nb_path, module = _exported_notebook(tree)
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb['cells'] if c['cell_type'] == 'code'
                and re.match(r'#\|\s*export\s*$', ''.join(c['source']), re.M))
    cell['source'] = ''.join(cell['source']) + '\n\ndef hygiene_probe(): return 1\n'
    nb_path.write_text(json.dumps(nb, indent=1) + '\n')
    # 2. another notebook left unclean: execution counts and editor metadata
    other = next(p for p in sorted((tree / 'nbs').rglob('*.ipynb')) if p != nb_path and p.name != 'index.ipynb')
    nb2 = json.loads(other.read_text())
    code = [c for c in nb2['cells'] if c['cell_type'] == 'code']
    assert code, f"{other} has no code cell"
    code[0]['execution_count'] = 7
    code[0]['metadata']['collapsed'] = True
    nb2['metadata']['language_info'] = {'name': 'python', 'version': '3.11.7'}
    other.write_text(json.dumps(nb2, indent=1) + '\n')
    # 3. README.md edited by hand
    with open(tree / 'README.md', 'a') as f: f.write('\nedited by hand\n')
    snapshot = files_under(tree)

    r = run_check(tree)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    rel = lambda p: p.relative_to(tree).as_posix()
    lib_part = out.split('library is out of sync')[1].split('hygiene:')[0]
    assert module in lib_part and rel(nb_path).removeprefix('nbs/') in lib_part, out
    clean_part = out.split('notebooks not clean')[1].split('hygiene:')[0]
    assert rel(other) in clean_part and rel(nb_path) not in clean_part, out
    assert 'README.md is out of date' in out, out
    assert files_under(tree) == snapshot, "the check modified the tree it checked"


def _notebook_with_outputs(path: Path, outputs: list[dict]) -> Path:
    "A minimal notebook whose one code cell stored `outputs`."
    cell = {'cell_type': 'code', 'execution_count': None, 'id': '0001', 'metadata': {}, 'outputs': outputs,
            'source': 'print(1)'}
    path.write_text(json.dumps({'cells': [cell], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    return path


def _png(width: int, height: int) -> str:
    "A real PNG of the given size, base64 as notebooks store it."
    import base64, io
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize('output, what', [
    ({'output_type': 'stream', 'name': 'stderr', 'text': 'GPU available: False\n'}, 'output on stderr'),
    ({'output_type': 'stream', 'name': 'stdout', 'text': 'saved to /tmp/neuronb-run-x1/metrics.json\n'},
     'a machine path'),
    ({'output_type': 'execute_result', 'execution_count': None, 'metadata': {},
      'data': {'text/plain': "PosixPath('/work/main/nbs/data')"}}, 'a machine path'),
    ({'output_type': 'stream', 'name': 'stdout', 'text': 'x.py:3: UserWarning: bad thing\n'}, 'warning text'),
    ({'output_type': 'error', 'ename': 'ValueError', 'evalue': 'boom', 'traceback': []}, 'an error output'),
    ({'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png(1400, 300)}}, '1400 px wide'),
])
def test_output_check_names_each_kind_of_leak(tmp_path, output, what):
    "tools/check_outputs.py: each leak is named with its notebook and cell; a clean output passes."
    import importlib.util
    spec = importlib.util.spec_from_file_location('check_outputs', ROOT / 'tools/check_outputs.py')
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    leaky = _notebook_with_outputs(tmp_path / 'leaky.ipynb', [output])
    problems = check.problems_in(leaky)
    assert len(problems) == 1 and what in problems[0] and 'cell 0' in problems[0], problems
    clean = _notebook_with_outputs(tmp_path / 'clean.ipynb', [
        {'output_type': 'stream', 'name': 'stdout', 'text': 'test/accuracy: 0.812 (relative path runs/a)\n'},
        {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png(1000, 300)}}])
    assert check.problems_in(clean) == []
    assert check.main([str(tmp_path / 'clean.ipynb')]) == 0
    assert check.main([str(leaky)]) == 1
