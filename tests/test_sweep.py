"""neuronb.sweep: spec parsing, refusals before any run, parallel papermill runs, failure, resume, timeout, collect,
provenance and staleness, process safety (SIGKILL of the sweep, then resume).

Papermill executions are few (15 in this file): each one starts a Python process and a Jupyter kernel.
Bad-input cases are in test_bad_input_sweep.py.
"""
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

from neuronb import cli, sweep
from neuronb.sweep import SpecError

PARAMS_CELL = """x = 1  # the input
fail_flag = ''  # the notebook fails while this file exists
sleep = 0.0  # seconds to sleep
log_file = ''  # each execution appends its run name here
pid_file = ''  # the kernel writes its process id here
spawn = False  # start a sleeping child process (its id in pid_file + '.child' and in log_file)
hold_file = ''  # the notebook waits while this file exists"""

BODY_CELL = """import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']) if spawn else None
if pid_file and spawn:
    with open(pid_file + '.child', 'w') as f: f.write(str(child.pid))
if pid_file:
    with open(pid_file, 'w') as f: f.write(str(os.getpid()))
if log_file:  # one line per attempt: start <run> <kernel pid> <child pid or 0>
    with open(log_file, 'a') as f: f.write(f"start {os.environ.get('NEURONB_RUN_NAME', '?')} {os.getpid()} {child.pid if child else 0}\\n")
while hold_file and os.path.exists(hold_file): time.sleep(0.1)
t0 = time.time(); time.sleep(sleep); t1 = time.time()"""

REPORT_CELL = """import sys
from neuronb.sweep import log_metrics, output_dir
if fail_flag and os.path.exists(fail_flag): raise ValueError('boom: the flag file exists')
log_metrics({'y': x * 2, 'cm': [[1, 0], [0, 1]], 't0': t0, 't1': t1, 'run_dir': str(output_dir()),
             'cuda': os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), 'python': sys.executable, 'pid': os.getpid()})
if log_file:  # the attempt reached its end
    with open(log_file, 'a') as f: f.write(f"end {os.environ.get('NEURONB_RUN_NAME', '?')} {os.getpid()} 0\\n")
if child: child.kill()"""


def make_project(root: Path, spec: str, name: str = 'exp') -> Path:
    "A project folder: settings.ini, nbs/t.ipynb (the test notebook), papermill_runs/<name>.yaml; returns the spec."
    (root / 'settings.ini').write_text('[DEFAULT]\n')
    (root / 'nbs').mkdir(exist_ok=True)
    (root / 'papermill_runs').mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMS_CELL, metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell(BODY_CELL), nbformat.v4.new_code_cell(REPORT_CELL)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, root / 'nbs' / 't.ipynb')
    path = root / 'papermill_runs' / f'{name}.yaml'
    path.write_text(spec)
    return path


def read_status(spec_path: Path, run: str) -> dict:
    return json.loads((sweep.load_spec(spec_path).run_dir(run) / 'status.json').read_text())


def read_metrics(spec_path: Path, run: str) -> dict:
    return json.loads((sweep.load_spec(spec_path).run_dir(run) / 'metrics.json').read_text())


def attempts(log: Path) -> list[tuple[str, str, int]]:
    "The notebook's log: (start|end, run, kernel pid) per line."
    return [(w[0], w[1], int(w[2])) for w in (line.split() for line in log.read_text().splitlines())]


def starts(log: Path) -> list[str]:
    return [run for what, run, _ in attempts(log) if what == 'start']


# ---------------------------------------------------------------------------------------------- spec parsing

def test_expansion_names_and_precedence(tmp_path):
    spec = sweep.load_spec(make_project(tmp_path, """
notebook: nbs/t.ipynb
parameters: {x: 0, sleep: 0.5}
runs:
  - {name: small, parameters: {x: 1}}
  - {name: big, parameters: {x: 2, sleep: 0.1}}
grid: {log_file: [a/b.txt, c], pid_file: ['']}
"""))
    assert spec.name == 'exp' and spec.workers == 1 and spec.kernel == 'python3' and spec.timeout is None
    assert spec.output_dir == (tmp_path / 'papermill_runs' / 'exp').resolve() and spec.root == tmp_path.resolve()
    assert spec.run_names() == ['small__log_file=a-b.txt__pid_file=empty', 'small__log_file=c__pid_file=empty',
                                'big__log_file=a-b.txt__pid_file=empty', 'big__log_file=c__pid_file=empty']
    assert spec.runs[2].parameters == {'x': 2, 'sleep': 0.1, 'log_file': 'a/b.txt', 'pid_file': ''}
    assert spec.runs[0].parameters == {'x': 1, 'sleep': 0.5, 'log_file': 'a/b.txt', 'pid_file': ''}
    assert [r.name for r in sweep._select(spec, ['big'])] == spec.run_names()[2:]  # a named run: all its grid points
    assert [r.name for r in sweep._select(spec, ['small__log_file=c__pid_file=empty'])] == [spec.run_names()[1]]
    # neither runs nor grid: one run; negative numbers keep their sign in names
    one = sweep.load_spec(make_project(tmp_path, "notebook: nbs/t.ipynb\nname: solo\n", name='one'))
    assert one.run_names() == ['default'] and one.output_dir.name == 'solo'
    neg = sweep.load_spec(make_project(tmp_path, "notebook: nbs/t.ipynb\ngrid: {x: [1, -1]}\n", name='neg'))
    assert neg.run_names() == ['x=1', 'x=-1']


MALFORMED = [
    ("notebook: nbs/t.ipynb\nepochs: 3", "unknown field(s) ['epochs']"),
    ("parameters: {x: 1}", "field 'notebook'"),
    ("notebook: nbs/t.ipynb\nworkers: two", "field 'workers': expected a positive integer"),
    ("notebook: nbs/t.ipynb\nworkers: 0", "field 'workers'"),
    ("notebook: nbs/t.ipynb\ntimeout: -5", "field 'timeout'"),
    ("notebook: nbs/t.ipynb\ngpus: 0", "field 'gpus'"),
    ("notebook: nbs/t.ipynb\nparameters: [1, 2]", "field 'parameters'"),
    ("notebook: nbs/t.ipynb\ngrid: {x: []}", "field 'grid.x': expected a non-empty list"),
    ("notebook: nbs/t.ipynb\ngrid: {x: 3}", "field 'grid.x'"),
    ("notebook: nbs/t.ipynb\nruns: [{name: a}, {name: a}]", "field 'runs[1].name': expected a unique run name"),
    ("notebook: nbs/t.ipynb\nruns: [{name: ../up}]", "field 'runs[0].name'"),
    ("notebook: nbs/t.ipynb\nruns: [{name: a, params: {x: 1}}]", "field 'runs[0]'"),
    ("notebook: nbs/t.ipynb\nruns: [{name: a, parameters: {x: 1}}]\ngrid: {x: [1, 2]}", "field 'runs[0].parameters'"),
    ("notebook: nbs/t.ipynb\ngrid: {log_file: [a/b, a-b]}", "field 'grid': expected values that give distinct run names"),
    ("notebook: nbs/t.ipynb\nname: 'my sweep'", "field 'name'"),
    ("notebook: [", "not valid YAML"),
]


@pytest.mark.parametrize('text,expected', MALFORMED)
def test_malformed_spec_names_the_field(tmp_path, text, expected):
    with pytest.raises(SpecError) as e: sweep.load_spec(make_project(tmp_path, text))
    assert expected in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.parametrize('out', ['../elsewhere', '/tmp/abs', 'a/../../x', 'link/x', '.', '~/x'])
def test_output_dir_outside_papermill_runs_refused(tmp_path, out):
    spec = make_project(tmp_path, f"notebook: nbs/t.ipynb\noutput_dir: '{out}'\n")
    (tmp_path / 'outside').mkdir()
    (tmp_path / 'papermill_runs' / 'link').symlink_to(tmp_path / 'outside')
    with pytest.raises(SpecError, match="field 'output_dir'"): sweep.run(spec)
    assert sorted(p.name for p in (tmp_path / 'papermill_runs').iterdir()) == ['exp.yaml', 'link']
    assert list((tmp_path / 'outside').iterdir()) == []


def test_spec_outside_papermill_runs_refused(tmp_path):
    make_project(tmp_path, "")
    (tmp_path / 'stray.yaml').write_text("notebook: nbs/t.ipynb\n")
    with pytest.raises(SpecError, match='must be inside'): sweep.load_spec(tmp_path / 'stray.yaml')


def test_bad_notebook_or_parameter_fails_before_any_run(tmp_path):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\nparameters: {x: 1}\nruns: [{name: a, parameters: {lerning_rate: 0.1}}]\n")
    with pytest.raises(SpecError) as e: sweep.run(spec)
    assert "['lerning_rate']" in str(e.value) and 'declared: x, fail_flag, sleep, log_file, pid_file, spawn, hold_file' in str(e.value)
    spec.write_text("notebook: nbs/missing.ipynb\n")
    with pytest.raises(SpecError, match="field 'notebook': nbs/missing.ipynb does not exist"): sweep.run(spec)
    spec.write_text("notebook: nbs/t.ipynb\nkernel: no-such-kernel\n")
    with pytest.raises(SpecError, match="field 'kernel'"): sweep.run(spec)
    spec.write_text("notebook: nbs/t.ipynb\ngrid: {x: [1, 2]}\n")
    with pytest.raises(SpecError, match="no run named 'x=3'"): sweep.run(spec, only=['x=3'])
    nb = nbformat.read(tmp_path / 'nbs' / 't.ipynb', as_version=4)
    nb.cells[0].metadata['tags'] = []
    nbformat.write(nb, tmp_path / 'nbs' / 't.ipynb')
    with pytest.raises(SpecError, match="exactly one cell tagged 'parameters'"): sweep.run(spec)
    assert sorted(p.name for p in (tmp_path / 'papermill_runs').iterdir()) == ['exp.yaml']  # nothing was created


# ------------------------------------------------------------------------------------- status and collect

def fake_run(spec, name, parameters, state, metrics=None, duration=1.0, **provenance):
    "Write a run folder as the runner would leave it (no papermill), with today's provenance unless given."
    d = spec.run_dir(name)
    d.mkdir(parents=True)
    if metrics is not None: (d / 'metrics.json').write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    if state in ('completed', 'failed'):
        (d / 'status.json').write_text(json.dumps(dict(
            run=name, status=state, parameters=parameters, duration_s=duration, started='2026-01-01T00:00:00+00:00',
            finished='2026-01-01T00:00:01+00:00', error=None if state == 'completed' else 'ValueError: bad',
            traceback=None if state == 'completed' else 'Traceback ...', **{**sweep.provenance(spec), **provenance})))


def test_status_and_collect_from_run_folders(tmp_path):
    path = make_project(tmp_path, "notebook: nbs/t.ipynb\nparameters: {sleep: 0}\ngrid: {x: [1, 2, 3, 4, 5]}\n"
                                  "summary_metric: y\n")
    spec = sweep.load_spec(path)
    fake_run(spec, 'x=1', {'sleep': 0, 'x': 1}, 'completed', {'y': 2.0, 'cm': [[1, 0], [0, 1]], 'tag': 'ok'}, 3.5)
    fake_run(spec, 'x=2', {'sleep': 0, 'x': 2}, 'failed', {'y': 4.0})
    fake_run(spec, 'x=3', {'sleep': 0, 'x': 30}, 'completed', {'y': 60.0, 'cm': [[2, 0], [1, 1]]})  # other parameters
    fake_run(spec, 'x=4', None, 'interrupted')  # a folder without status.json
    st = sweep.status(path)
    assert list(st.columns) == ['run', 'state', 'why', 'duration_s', 'finished']
    assert list(st['run']) == ['x=1', 'x=2', 'x=3', 'x=4', 'x=5']
    assert list(st['state']) == ['completed', 'failed', 'stale', 'interrupted', 'missing']
    assert st['duration_s'][0] == 3.5 and st['why'][1] == 'ValueError: bad'
    assert st['why'][2] == 'parameters changed (x: 30 -> 3)'
    assert st['why'][0] == '' and 'no status.json' in st['why'][3]
    with sweep._sweep_lock(spec.output_dir):  # while a `run` holds the sweep, a folder without status is running
        assert sweep.status(path)['state'][3] == 'running'

    df = sweep.collect(path)
    assert list(df.columns) == ['run', 'param.sleep', 'param.x', 'y', 'cm', 'tag', 'status', 'why', 'duration_s']
    assert list(df['param.x']) == [1, 2, 30, 4, 5]  # stale row: the parameters its metrics came from
    assert list(df['status']) == ['completed', 'failed', 'stale', 'interrupted', 'missing']
    assert df['y'].tolist()[:3] == [2.0, 4.0, 60.0] and pd.isna(df['y'][4])
    assert json.loads(df['cm'][0]) == [[1, 0], [0, 1]] and json.loads(df['cm'][2]) == [[2, 0], [1, 1]]  # kept, as JSON
    assert pd.isna(df['cm'][1])
    out = spec.output_dir
    assert pd.read_parquet(out / 'results.parquet').equals(df)
    csv = pd.read_csv(out / 'results.csv')
    assert list(csv.columns) == list(df.columns) and len(csv) == 5 and json.loads(csv['cm'][0]) == [[1, 0], [0, 1]]
    assert (out / 'summary.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not [p for p in out.iterdir() if '.tmp-' in p.name]


def test_collect_mixed_types_and_no_metrics(tmp_path):
    path = make_project(tmp_path, "notebook: nbs/t.ipynb\nruns:\n  - {name: a, parameters: {log_file: 'x'}}\n"
                                  "  - {name: b, parameters: {log_file: 3}}\n  - {name: c, parameters: {log_file: [1, 2]}}\n")
    spec = sweep.load_spec(path)
    for r in spec.runs: fake_run(spec, r.name, r.parameters, 'failed')
    df = sweep.collect(path)
    assert list(df['param.log_file']) == ['x', '3', '[1, 2]']  # storable in parquet
    assert list(df.columns) == ['run', 'param.log_file', 'status', 'why', 'duration_s']
    assert (spec.output_dir / 'summary.png').exists()


@pytest.mark.parametrize('text,problem', [('{"y": 1.0', 'is not valid JSON'), ('[1, 2]', 'holds list, expected a JSON object'),
                                          ('"done"', 'holds str'), (b'{"y": "caf\xe9"}', 'is not valid JSON')])
def test_unusable_metrics_make_a_completed_run_failed(tmp_path, text, problem):
    path = make_project(tmp_path, "notebook: nbs/t.ipynb\ngrid: {x: [1, 2]}\n")
    spec = sweep.load_spec(path)
    fake_run(spec, 'x=1', {'x': 1}, 'completed', {'y': 2.0})
    fake_run(spec, 'x=2', {'x': 2}, 'completed', {'y': 3.0})
    metrics = spec.run_dir('x=2') / 'metrics.json'
    metrics.write_bytes(text if isinstance(text, bytes) else text.encode())
    st = sweep.status(path)
    assert list(st['state']) == ['completed', 'failed']
    assert str(metrics) in st['why'][1] and problem in st['why'][1]
    df = sweep.collect(path)
    assert list(df['status']) == ['completed', 'failed'] and list(df['y'][:1]) == [2.0] and pd.isna(df['y'][1])
    assert str(metrics) in df['why'][1]


# ------------------------------------------------------------------------------------ provenance and staleness

def test_provenance_and_stale_on_notebook_or_library_change(tmp_path):
    path = make_project(tmp_path, "notebook: nbs/t.ipynb\ngrid: {x: [1, 2, 3]}\n")
    spec = sweep.load_spec(path)
    now = sweep.provenance(spec)
    assert set(now) == {'notebook_hash', 'neuronb_version', 'library_hash', 'git_commit', 'git_dirty'}
    assert now['git_commit'] is None and now['git_dirty'] is None  # tmp_path is no git repository: None, no error
    fake_run(spec, 'x=1', {'x': 1}, 'completed', {'y': 2})
    fake_run(spec, 'x=2', {'x': 2}, 'completed', {'y': 4}, library_hash='0' * 64)  # ran with another neuronb
    fake_run(spec, 'x=3', {'x': 3}, 'completed', {'y': 6}, notebook_hash=None)  # ran before provenance was recorded
    st = sweep.status(path)
    assert list(st['state']) == ['completed', 'stale', 'stale']
    assert st['why'][1] == 'the neuronb library changed' and 'no notebook_hash' in st['why'][2]

    nb_path = tmp_path / 'nbs' / 't.ipynb'
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell('# The test notebook'))  # prose, outputs and counts do not count
    nb.cells[2].outputs = [nbformat.v4.new_output('stream', name='stdout', text='hello\n')]
    nb.cells[2].execution_count = 3
    nbformat.write(nb, nb_path)
    assert sweep.notebook_hash(nb_path) == now['notebook_hash'] and sweep.status(path)['state'][0] == 'completed'
    nb.cells[2].source += '\nz = 1'  # code does
    nbformat.write(nb, nb_path)
    st = sweep.status(path)
    assert list(st['state']) == ['stale'] * 3 and st['why'][0] == 'the notebook changed'
    assert st['why'][1] == 'the notebook changed; the neuronb library changed'
    assert list(sweep.collect(path)['status']) == ['stale'] * 3


def test_library_hash_follows_the_package_source(tmp_path):
    import neuronb
    package = Path(neuronb.__file__).parent
    copy = tmp_path / 'neuronb'
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns('__pycache__'))
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from neuronb.sweep import library_hash; print(library_hash())"
    def hash_of_copy():
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
        return r.stdout.strip()
    assert hash_of_copy() == sweep.library_hash()  # the same source, the same hash
    (copy / '_modidx.py').write_text('d = {}\n')  # nbdev's documentation index does not count
    assert hash_of_copy() == sweep.library_hash()
    (copy / 'core.py').write_text((copy / 'core.py').read_text() + '\n# an edit\n')
    assert hash_of_copy() != sweep.library_hash()


def test_library_hash_of_a_notebook_covers_what_it_imports_and_nothing_else(tmp_path):
    "A notebook's library hash follows the modules it imports (and theirs, relative imports too), not the others."
    import neuronb
    copy = tmp_path / 'pkg' / 'neuronb'
    shutil.copytree(Path(neuronb.__file__).parent, copy, ignore=shutil.ignore_patterns('__pycache__'))
    nb = tmp_path / 'uses_lfp_models.ipynb'
    cells = [{'cell_type': 'markdown', 'metadata': {}, 'source': 'import neuronb.encoding'},  # prose does not count
             {'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None,
              'source': ['%matplotlib inline\n', 'import numpy as np\n', 'from neuronb.lfp.models import MODELS\n',
                         'from neuronb import sweep as S\n']}]
    nb.write_text(json.dumps({'cells': cells, 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    code = (f"import sys, json; sys.path.insert(0, {str(copy.parent)!r}); from neuronb.sweep import library_hash, "
            f"library_modules; print(json.dumps([library_hash({str(nb)!r}), "
            f"[p.relative_to({str(copy)!r}).as_posix() for p in library_modules({str(nb)!r})]]))")
    def hash_and_modules():
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
        return json.loads(r.stdout)
    first, modules = hash_and_modules()
    # direct imports, what they import relatively (lfp.models -> ..nn.attention), package __init__ files
    for expected in ('lfp/models.py', 'sweep.py', 'nn/attention.py', 'lfp/__init__.py', '__init__.py', 'core.py'):
        assert expected in modules, (expected, modules)
    assert not any(m.startswith(('encoding/', 'temporal/')) for m in modules), modules
    (copy / 'encoding' / 'models.py').write_text((copy / 'encoding' / 'models.py').read_text() + '\n# an edit\n')
    assert hash_and_modules()[0] == first  # a module the notebook never runs
    (copy / 'nn' / 'attention.py').write_text((copy / 'nn' / 'attention.py').read_text() + '\n# an edit\n')
    assert hash_and_modules()[0] != first  # reached through lfp.models' relative import


@pytest.mark.skipif(shutil.which('git') is None, reason='git is not installed')
def test_git_state(tmp_path, monkeypatch):
    repo = tmp_path / 'repo'
    repo.mkdir()
    git = lambda *a: subprocess.run(['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t', *a],
                                    check=True, capture_output=True)
    git('init', '-q')
    (repo / 'a.txt').write_text('1')
    git('add', 'a.txt')
    git('commit', '-q', '-m', 'one')
    head = subprocess.run(['git', '-C', str(repo), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    assert sweep.git_state(repo) == (head, False)
    (repo / 'untracked.txt').write_text('x')  # untracked files do not make the tree dirty
    assert sweep.git_state(repo) == (head, False)
    (repo / 'a.txt').write_text('2')
    assert sweep.git_state(repo) == (head, True)
    assert sweep.git_state(tmp_path) == (None, None)  # not a repository
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))  # git absent: None, never an error
    assert sweep.git_state(repo) == (None, None)


# ---------------------------------------------------------------------------------------------- log_metrics

@pytest.fixture
def fresh_sweep_module(monkeypatch):
    monkeypatch.setattr(sweep, '_METRICS', {})
    monkeypatch.setattr(sweep, '_TEMP_DIR', None)
    monkeypatch.delenv(sweep.RUN_DIR_ENV, raising=False)


def test_log_metrics_by_hand(fresh_sweep_module, capsys, caplog):
    import numpy as np
    import torch
    m = sweep.log_metrics({'accuracy': np.float32(0.5), 'cm': torch.eye(2)}, prefix='test')
    m = sweep.log_metrics({'loss': float('nan')})
    assert m == {'test/accuracy': 0.5, 'test/cm': [[1.0, 0.0], [0.0, 1.0]], 'loss': None}
    assert 'test/accuracy: 0.5' in capsys.readouterr().out  # shown (printed outside Jupyter)
    with caplog.at_level('INFO', logger='neuronb.sweep'):
        d = sweep.output_dir()
        assert d.is_dir() and sweep.output_dir() == d and not (d / 'metrics.json').exists()
    assert str(d) not in capsys.readouterr().out  # never printed: stored notebook outputs hold no machine path
    assert sum(str(d) in r.getMessage() for r in caplog.records) == 1  # logged once, at INFO
    with pytest.raises(TypeError, match='dict'): sweep.log_metrics([('a', 1)])
    with pytest.raises(TypeError, match='non-empty strings'): sweep.log_metrics({1: 2.0})


def test_log_metrics_under_sweep(fresh_sweep_module, monkeypatch, tmp_path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    run_dir = tmp_path / 'runs' / 'a'
    monkeypatch.setenv(sweep.RUN_DIR_ENV, str(run_dir))
    sweep.log_metrics({'loss': 1.0, 'epoch': 1}, show=False)
    sweep.log_metrics({'loss': 0.5}, prefix='val', show=False)
    assert json.loads((run_dir / 'metrics.json').read_text()) == {'loss': 1.0, 'epoch': 1, 'val/loss': 0.5}
    assert sweep.output_dir() == run_dir
    fig, ax = plt.subplots(); ax.plot([0, 1])
    p = sweep.save_figure(fig, 'curve'); plt.close(fig)
    assert p == run_dir / 'curve.png' and p.read_bytes()[:4] == b'\x89PNG'
    with pytest.raises(ValueError, match='plain file name'): sweep.save_figure(fig, '../x')
    assert sorted(os.listdir(run_dir)) == ['curve.png', 'metrics.json']


# -------------------------------------------------------------------------------- papermill executions (15)

def test_failure_resume_and_stale_rerun(tmp_path, capsys):
    log, flag = tmp_path / 'executions.txt', tmp_path / 'flag'
    flag.touch()
    text = f"""notebook: nbs/t.ipynb
parameters: {{log_file: '{log}'}}
runs:
  - {{name: a, parameters: {{x: 1}}}}
  - {{name: b, parameters: {{x: 2, fail_flag: '{flag}'}}}}
workers: 2
"""
    path = make_project(tmp_path, text)
    # 1. b fails, a completes; the CLI exits non-zero
    assert cli.main(['sweep', 'run', str(path)]) == 1
    a, b = read_status(path, 'a'), read_status(path, 'b')
    assert a['status'] == 'completed' and a['error'] is None and a['parameters'] == {'log_file': str(log), 'x': 1}
    assert b['status'] == 'failed' and 'ValueError: boom: the flag file exists' in b['error']
    assert 'raise ValueError' in b['traceback'] and '\x1b[' not in b['traceback']
    assert read_metrics(path, 'a')['y'] == 2 and not (sweep.load_spec(path).run_dir('b') / 'metrics.json').exists()
    assert (sweep.load_spec(path).run_dir('b') / 'notebook.ipynb').exists()
    out = capsys.readouterr().out
    assert 'results.parquet' in out and 'summary.png' in out and 'notebook.ipynb' in out
    assert sorted(starts(log)) == ['a', 'b']
    now = sweep.provenance(sweep.load_spec(path))
    for key in ('notebook_hash', 'neuronb_version', 'library_hash', 'git_commit', 'git_dirty'):
        assert a[key] == b[key] == now[key], key  # what the runs ran with
    assert a['notebook_hash'] == sweep.notebook_hash(tmp_path / 'nbs' / 't.ipynb') and len(a['library_hash']) == 64

    # 2. after fixing the cause, run again: a is skipped, b re-runs
    flag.unlink()
    (sweep.load_spec(path).run_dir('b') / 'stale-file.txt').write_text('from the failed attempt')
    a_mtime = (sweep.load_spec(path).run_dir('a') / 'status.json').stat().st_mtime_ns
    res = sweep.run(path)
    assert res.ok and res.skipped == ['a'] and res.executed == ['b'] and res.failed == []
    assert (sweep.load_spec(path).run_dir('a') / 'status.json').stat().st_mtime_ns == a_mtime
    assert starts(log)[2:] == ['b'] and read_status(path, 'b')['status'] == 'completed'
    assert not (sweep.load_spec(path).run_dir('b') / 'stale-file.txt').exists()  # the failed folder was cleared
    assert list(res.table['status']) == ['completed', 'completed'] and list(res.table['y']) == [2, 4]

    # 3. change a's parameters: a is stale, re-run with a message; nothing else runs
    path.write_text(text.replace('{x: 1}', '{x: 5}'))
    assert list(sweep.status(path)['state']) == ['stale', 'completed']
    capsys.readouterr()
    res = sweep.run(path)
    assert res.executed == ['a'] and res.skipped == ['b']
    assert 're-running a: it is stale, parameters changed (x: 1 -> 5)' in capsys.readouterr().out
    assert read_metrics(path, 'a')['y'] == 10 and starts(log)[3:] == ['a']

    # 4. all completed: the CLI runs nothing and exits 0
    assert cli.main(['sweep', 'run', str(path)]) == 0
    assert len(starts(log)) == 4

    # 5. executing the notebook by hand (outputs) or editing its prose changes nothing; editing its code makes
    #    every completed run stale: both re-run, saying why
    nb_path = tmp_path / 'nbs' / 't.ipynb'
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell('Notes on the result.'))
    nb.cells[1].outputs = [nbformat.v4.new_output('stream', name='stdout', text='hello\n')]
    nbformat.write(nb, nb_path)
    assert list(sweep.status(path)['state']) == ['completed', 'completed']
    nb.cells[2].source += '\nprint(x)'
    nbformat.write(nb, nb_path)
    assert list(sweep.status(path)['why']) == ['the notebook changed'] * 2
    capsys.readouterr()
    assert cli.main(['sweep', 'run', str(path)]) == 0
    assert 're-running a: it is stale, the notebook changed' in capsys.readouterr().out
    assert starts(log)[4:] == ['a', 'b'] or starts(log)[4:] == ['b', 'a']
    assert read_status(path, 'a')['notebook_hash'] == sweep.notebook_hash(nb_path) != a['notebook_hash']


def _overlap(i, j): return max(i[0], j[0]) < min(i[1], j[1])


def test_two_workers_run_in_parallel_each_on_its_gpu(tmp_path):
    path = make_project(tmp_path, "notebook: nbs/t.ipynb\nparameters: {sleep: 4.0}\ngrid: {x: [1, 2]}\n"
                                  "workers: 2\ngpus: ['7', '9']\n")
    res = sweep.run(path)
    assert res.ok and res.executed == ['x=1', 'x=2']
    st = [read_status(path, r) for r in res.executed]
    m = [read_metrics(path, r) for r in res.executed]
    # the notebooks' own sleep intervals overlap: the kernels ran at the same time
    assert _overlap((m[0]['t0'], m[0]['t1']), (m[1]['t0'], m[1]['t1'])), m
    t = [(dt.datetime.fromisoformat(s['started']), dt.datetime.fromisoformat(s['finished'])) for s in st]
    assert _overlap(*t)
    assert {x['cuda'] for x in m} == {'7', '9'} and {s['cuda_visible_devices'] for s in st} == {'7', '9'}
    assert [x['run_dir'] for x in m] == [str(sweep.load_spec(path).run_dir(r)) for r in res.executed]
    assert {x['python'] for x in m} == {sys.executable}  # the kernel runs the sweep's interpreter


def _alive(pid: int) -> bool:
    try: return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return False


def test_timeout_kills_the_run_and_its_kernel(tmp_path):
    pid_file = tmp_path / 'kernel.pid'
    for timeout in (10, 30):  # the longer timeout only if the machine was too busy to start the kernel in 10 s
        path = make_project(tmp_path, f"notebook: nbs/t.ipynb\nparameters: {{sleep: 300, pid_file: '{pid_file}', spawn: true}}\n"
                                      f"timeout: {timeout}\n")
        t0 = time.monotonic()
        res = sweep.run(path, rerun=True)
        assert res.failed == ['default'] and time.monotonic() - t0 < 120
        st = read_status(path, 'default')
        assert st['status'] == 'failed' and st['error'] == f'timed out after {timeout} s'
        assert timeout <= st['duration_s'] < timeout + 15
        if pid_file.exists(): break
    assert pid_file.exists(), 'the kernel had started before the timeout'
    kernel, child = int(pid_file.read_text()), int(Path(f'{pid_file}.child').read_text())
    deadline = time.monotonic() + 10
    while (_alive(kernel) or _alive(child)) and time.monotonic() < deadline: time.sleep(0.2)
    assert not _alive(kernel), 'the kernel survived the timeout'
    assert not _alive(child), "a process started by the notebook survived the timeout"
    
    run_dir = str(sweep.load_spec(path).run_dir('default'))
    for p in psutil.process_iter():  # nothing started for this run is left
        try: env = p.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess): continue
        assert env.get(sweep.RUN_DIR_ENV) != run_dir or p.status() == psutil.STATUS_ZOMBIE, p


# ---------------------------------------------------------------------------------------------- process safety

def _processes_of(run_dirs: list[str]) -> list:
    "Every live (non-zombie) process whose environment names one of the run folders: drivers, kernels, children."
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(sweep.RUN_DIR_ENV) in run_dirs and p.status() != psutil.STATUS_ZOMBIE: found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess): continue
    return found


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)


def test_sigkill_of_the_sweep_leaves_no_process_and_resume_runs_each_once(tmp_path):
    log, hold = tmp_path / 'attempts.txt', tmp_path / 'hold'
    hold.touch()  # the notebooks wait while it exists
    path = make_project(tmp_path, f"notebook: nbs/t.ipynb\nparameters: {{log_file: '{log}', hold_file: '{hold}', "
                                  f"spawn: true}}\ngrid: {{x: [1, 2]}}\nworkers: 2\n")
    spec = sweep.load_spec(path)
    run_dirs = [str(spec.run_dir(r)) for r in spec.run_names()]
    code = f"import sys; from neuronb import cli; sys.exit(cli.main(['sweep', 'run', {str(path)!r}]))"  # 1: a run failed
    first = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (log.exists() and len(starts(log)) == 2) and time.monotonic() < deadline: time.sleep(0.2)
        assert len(starts(log)) == 2, 'both kernels started'
        for d in run_dirs:  # the driver's watchdog records the kernel and its child
            while len(json.loads((Path(d) / 'processes.json').read_text())['processes']) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
        drivers = [json.loads((Path(d) / 'driver.json').read_text())['processes'][0]['pid'] for d in run_dirs]
        kernels = [pid for _, _, pid in attempts(log)]
        children = [int(line.split()[3]) for line in log.read_text().splitlines()]
        tree = _processes_of(run_dirs)
        assert {p.pid for p in tree} >= set(drivers + kernels + children)  # what we are about to orphan
    finally:
        first.kill()  # SIGKILL: the sweep gets no chance to clean up
        first.wait()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes of the killed sweep survived it: {alive}"
    assert not _processes_of(run_dirs)
    assert [w for w, _, _ in attempts(log)] == ['start', 'start']  # no attempt got to its end
    assert list(sweep.status(path)['state']) == ['interrupted', 'interrupted']

    # a process recorded for run x=1 that is still alive (as if its watchdog had failed) is stopped before the
    # folder is cleared; a record of a live pid with another start time is another process and is left alone
    leftover, unrelated = _sleeper(), _sleeper()
    try:
        records = json.loads((Path(run_dirs[0]) / 'processes.json').read_text())
        records['processes'].append(dict(pid=leftover.pid, create_time=psutil.Process(leftover.pid).create_time()))
        records['processes'].append(dict(pid=unrelated.pid, create_time=psutil.Process(unrelated.pid).create_time() - 50))
        (Path(run_dirs[0]) / 'processes.json').write_text(json.dumps(records))
        hold.unlink()
        out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"stopping 1 process(es) left by an earlier attempt of x=1: pid {leftover.pid}" in out.stdout
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert unrelated.poll() is None, 'a process that merely reuses a recorded pid was killed'
    finally:
        for p in (leftover, unrelated): p.kill(); p.wait()

    # each run executed exactly once in its final output: per run, the killed attempt's start, then one start
    # and its end from the same kernel, with no other attempt of that run in between
    lines = attempts(log)
    for run in spec.run_names():
        mine = [(w, pid) for w, r, pid in lines if r == run]
        assert [w for w, _ in mine] == ['start', 'start', 'end'], mine
        assert mine[1][1] == mine[2][1] != mine[0][1]
        assert read_metrics(path, run)['pid'] == mine[2][1]  # the results come from the completed attempt
        assert read_status(path, run)['status'] == 'completed'
    assert not _processes_of(run_dirs)

