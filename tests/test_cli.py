"""The `neuronb` command line: registry, exit codes, one-line errors. No papermill execution here (see test_sweep)."""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from neuronb import cli


@pytest.fixture
def project(tmp_path):
    (tmp_path / 'settings.ini').write_text('[DEFAULT]\n')
    (tmp_path / 'papermill_runs').mkdir()
    (tmp_path / 'nbs').mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1', metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell('print(x)')])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, tmp_path / 'nbs' / 't.ipynb')
    spec = tmp_path / 'papermill_runs' / 'demo.yaml'
    spec.write_text('notebook: nbs/t.ipynb\ngrid: {x: [1, 2]}\n')
    return spec


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith('neuronb: error: ')
    return err[0]


def test_status_lists_runs(project, capsys):
    assert cli.main(['sweep', 'status', str(project)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ['run', 'state', 'why', 'duration_s', 'finished']
    assert [l.split()[:2] for l in out[1:]] == [['x=1', 'missing'], ['x=2', 'missing']]


def test_collect_writes_results(project, capsys):
    assert cli.main(['sweep', 'collect', str(project)]) == 0
    out = project.parent / 'demo'
    assert {p.name for p in out.iterdir()} >= {'results.parquet', 'results.csv', 'summary.png'}
    printed = capsys.readouterr().out
    assert 'results.parquet' in printed and printed.splitlines()[0].split() == ['run', 'param.x', 'status', 'duration_s']


def test_user_errors_exit_2_with_one_line(project, capsys):
    assert cli.main(['sweep', 'status', str(project.parent / 'nope.yaml')]) == 2
    assert 'sweep spec not found' in one_error_line(capsys)
    project.write_text('notebook: nbs/t.ipynb\ngrid: {x: []}\n')
    assert cli.main(['sweep', 'run', str(project)]) == 2
    assert "field 'grid.x'" in one_error_line(capsys)
    project.write_text('notebook: nbs/t.ipynb\nparameters: {y: 1}\n')
    assert cli.main(['sweep', 'run', str(project)]) == 2
    assert "['y'] are not declared" in one_error_line(capsys)
    project.write_text('notebook: nbs/t.ipynb\ngrid: {x: [1, 2]}\n')
    assert cli.main(['sweep', 'run', str(project), '--only', 'x=7']) == 2
    assert "no run named 'x=7'" in one_error_line(capsys)
    project.write_text('notebook: nbs/t.ipynb\ngrid: {x: [1, 2.5]}\n')  # x = 1 in the notebook: an integer
    assert cli.main(['sweep', 'run', str(project)]) == 2
    assert "parameter 'x' = 2.5 (float) in run(s) x=2.5: expected an integer" in one_error_line(capsys)
    assert not (project.parent / 'demo').exists()  # nothing ran, nothing written


def test_usage_errors_and_help(capsys):
    assert cli.main([]) == 2
    assert cli.main(['sweep']) == 2
    assert cli.main(['sweep', 'run', 'x.yaml', '--workers', '0']) == 2
    assert cli.main(['nosuch']) == 2
    capsys.readouterr()
    assert cli.main(['--help']) == 0 and 'sweep' in capsys.readouterr().out
    assert cli.main(['sweep', 'run', '--help']) == 0 and '--rerun' in capsys.readouterr().out


def test_registry_adds_commands(monkeypatch, capsys):
    monkeypatch.setattr(cli, 'COMMANDS', dict(cli.COMMANDS))
    @cli.command('hello', 'say hello')
    def _build(p: argparse.ArgumentParser):
        p.add_argument('--name', default='world')
        p.set_defaults(handler=lambda a: print(f'hello {a.name}') or 0)
    assert cli.main(['hello', '--name', 'lfp']) == 0 and capsys.readouterr().out == 'hello lfp\n'
    with pytest.raises(ValueError, match='registered twice'): cli.command('hello', 'again')(_build)


def test_console_script(project):
    exe = Path(sys.executable).parent / 'neuronb'
    if not exe.exists(): exe = shutil.which('neuronb')
    assert exe, 'the neuronb console script is installed with the package'
    r = subprocess.run([str(exe), 'sweep', 'status', str(project)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'missing' in r.stdout, r.stderr
    r = subprocess.run([str(exe), 'sweep', 'status', str(project.parent / 'nope.yaml')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith('neuronb: error: sweep spec not found') and 'Traceback' not in r.stderr


def test_busy_sweep_exits_2_with_one_line(project, capsys):
    from neuronb import sweep
    out = sweep.load_spec(project).output_dir
    with sweep._sweep_lock(out):
        assert cli.main(['sweep', 'run', str(project)]) == 2
        assert f'{out} is in use by another `neuronb sweep run`' in one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ['.sweep.lock']
