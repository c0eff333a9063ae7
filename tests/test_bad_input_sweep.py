"""The sweep layer's bad-input catalogue (issue 8, section 4, "Sweeps"): each case gives a clear error naming the
file, parameter or run, and nothing is written. No papermill execution here: every refusal comes before any run."""
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from neuronb import cli, sweep
from neuronb.sweep import SpecError, SweepBusyError

PARAMETERS = """lr = 0.001  # learning rate
epochs = 3  # passes over the data
name = 'base'  # a label
use_gpu = False  # whether to ask for a GPU
extra = None  # anything
layers = [16, 16]  # widths
shape = tuple(range(2))  # an expression: no type is inferred"""


def make_project(root: Path, spec: str, settings: bool = True, name: str = 'exp') -> Path:
    "nbs/t.ipynb (a parameters cell) and papermill_runs/<name>.yaml; returns the spec."
    if settings: (root / 'settings.ini').write_text('[DEFAULT]\n')
    (root / 'nbs').mkdir(exist_ok=True)
    (root / 'papermill_runs').mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMETERS, metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell('print(lr * epochs)')])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, root / 'nbs' / 't.ipynb')
    path = root / 'papermill_runs' / f'{name}.yaml'
    path.write_bytes(spec if isinstance(spec, bytes) else spec.encode())
    return path


def nothing_written(root: Path, specs=('exp.yaml',)) -> None:
    "papermill_runs/ holds the spec files only: no output folder, lock file, run folder or results table."
    assert sorted(p.name for p in (root / 'papermill_runs').iterdir()) == sorted(specs)


def refused(spec: Path, *fragments: str) -> str:
    "`sweep.run` refuses the spec with a SpecError holding every fragment; returns the message."
    with pytest.raises(SpecError) as e: sweep.run(spec)
    message = str(e.value)
    for f in fragments: assert f in message, (f, message)
    return message


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('neuronb: error: '), err
    assert 'Traceback' not in err[0]
    return err[0]


# ---------------------------------------------------------------- parameter types from the notebook's defaults

def test_yaml_1_1_exponent_is_a_string_and_refused_before_anything_runs(tmp_path, capsys):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\nruns:\n  - {name: small, parameters: {epochs: 1}}\n"
                                  "  - {name: big, parameters: {epochs: 9}}\ngrid: {lr: [1e-3, 0.01]}\n")
    message = refused(spec, str(spec), "parameter 'lr' = '1e-3' (str)", 'small__lr=1e-3', 'big__lr=1e-3',
                      'expected a number', '`lr = 0.001`', 'nbs/t.ipynb', 'YAML 1.1 reads 1e-3 as a string', '1.0e-03')
    assert 'small__lr=0.01' not in message  # the runs with a good value are not blamed
    nothing_written(tmp_path)
    assert cli.main(['sweep', 'run', str(spec)]) == 2
    assert "parameter 'lr'" in one_error_line(capsys)
    nothing_written(tmp_path)


@pytest.mark.parametrize('value,expected', [
    ("{epochs: 2.5}", "parameter 'epochs' = 2.5 (float) in run(s) default: expected an integer"),
    ("{epochs: true}", "parameter 'epochs' = True (bool) in run(s) default: expected an integer"),
    ("{use_gpu: 1}", "parameter 'use_gpu' = 1 (int) in run(s) default: expected a bool (true or false)"),
    ("{name: 3}", "parameter 'name' = 3 (int) in run(s) default: expected a string"),
    ("{layers: 16}", "parameter 'layers' = 16 (int) in run(s) default: expected a list"),
    ("{lr: null}", "parameter 'lr' = None (NoneType) in run(s) default: expected a number"),
])
def test_wrong_type_names_parameter_run_and_default(tmp_path, value, expected):
    spec = make_project(tmp_path, f"notebook: nbs/t.ipynb\nparameters: {value}\n")
    refused(spec, str(spec), expected, 'parameters cell of nbs/t.ipynb')
    nothing_written(tmp_path)


def test_accepted_types(tmp_path):
    "An int for a float; anything for a None default or an expression; lists for lists; the right scalar types."
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\nparameters: {lr: 1, epochs: 4, name: x, use_gpu: true, "
                                  "extra: [1, a], layers: [8], shape: 'anything'}\ngrid: {extra: [null, 3, {a: 1}]}\n")
    declared = sweep.check_notebook(sweep.load_spec(spec))
    assert list(declared) == ['lr', 'epochs', 'name', 'use_gpu', 'extra', 'layers', 'shape']
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------- YAML itself

@pytest.mark.parametrize('text,key,line,first', [
    ("notebook: nbs/t.ipynb\nparameters:\n  lr: 0.1\n  epochs: 2\n  lr: 0.01\n", 'lr', 5, 3),
    ("notebook: nbs/t.ipynb\nworkers: 1\nworkers: 2\n", 'workers', 3, 2),
    ("notebook: nbs/t.ipynb\nruns:\n  - {name: a, parameters: {epochs: 1, epochs: 2}}\n", 'epochs', 3, 3),
])
def test_duplicate_keys_name_the_key_and_lines(tmp_path, capsys, text, key, line, first):
    spec = make_project(tmp_path, text)
    refused(spec, str(spec), f"line {line}: key {key!r} is given twice", f"first on line {first}")
    nothing_written(tmp_path)
    assert cli.main(['sweep', 'status', str(spec)]) == 2
    assert f"key {key!r} is given twice" in one_error_line(capsys)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\nruns:\n  - &base {name: a, parameters: {epochs: 1}}\n"
                                  "  - {<<: *base, name: b}\n")
    assert sweep.load_spec(spec).run_names() == ['a', 'b']


def test_non_utf8_spec_names_the_file(tmp_path, capsys):
    spec = make_project(tmp_path, b"notebook: nbs/t.ipynb\ndescription: caf\xe9\n")
    refused(spec, str(spec), 'not UTF-8 text', 'byte 0xe9 on line 2, at offset 38')
    nothing_written(tmp_path)
    assert cli.main(['sweep', 'run', str(spec)]) == 2
    assert str(spec) in one_error_line(capsys)


# ----------------------------------------------------------------------------------------- the notebook file

@pytest.mark.parametrize('content,fragment', [
    (b'{"cells": [', 'not a Jupyter notebook (NotJSONError'),
    (b'this is not json', 'not a Jupyter notebook (NotJSONError'),
    (b'{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {"title": "caf\xe9"}}', 'not UTF-8 text'),
    (b'[1, 2, 3]', 'not a Jupyter notebook'),
])
def test_notebook_that_is_not_a_notebook_is_named(tmp_path, capsys, content, fragment):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\n")
    notebook = tmp_path / 'nbs' / 't.ipynb'
    notebook.write_bytes(content)
    refused(spec, str(notebook.resolve()), fragment, str(spec))
    nothing_written(tmp_path)
    assert cli.main(['sweep', 'run', str(spec)]) == 2
    assert str(notebook.resolve()) in one_error_line(capsys)


def test_notebook_without_kernel_name_is_named(tmp_path):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\n")
    notebook = tmp_path / 'nbs' / 't.ipynb'
    nb = nbformat.read(notebook, as_version=4)
    del nb.metadata['kernelspec']
    nbformat.write(nb, notebook)
    refused(spec, str(notebook.resolve()), 'papermill cannot read its parameters', 'No kernel name found')
    nothing_written(tmp_path)


# ------------------------------------------------------------------------------- messages that say true things

def test_root_message_says_how_the_root_was_found(tmp_path):
    # no settings.ini anywhere above: the message must not claim the root holds one
    project = tmp_path / 'project'
    project.mkdir()
    make_project(project, "notebook: nbs/t.ipynb\n", settings=False)
    stray = project / 'nbs' / 'stray.yaml'
    stray.write_text("notebook: nbs/t.ipynb\n")
    with pytest.raises(SpecError) as e: sweep.load_spec(stray)
    message = str(e.value)
    assert 'must be inside' in message and str(stray) in message
    assert 'no folder above the spec holds settings.ini' in message and 'holds settings.ini)' not in message
    # with settings.ini the message says so; with root= it says it was given
    (project / 'settings.ini').write_text('[DEFAULT]\n')
    with pytest.raises(SpecError, match='the nearest folder above the spec holding settings.ini'): sweep.load_spec(stray)
    with pytest.raises(SpecError, match=r'given as root='): sweep.load_spec(stray, root=project)
    assert sorted(p.name for p in (project / 'papermill_runs').iterdir()) == ['exp.yaml']


def test_missing_notebook_message_without_settings_ini(tmp_path):
    spec = make_project(tmp_path, "notebook: nbs/missing.ipynb\n", settings=False)
    message = refused(spec, str(spec), "field 'notebook': nbs/missing.ipynb does not exist",
                      "no folder above the spec holds settings.ini, so the spec's grandparent")
    assert 'holds settings.ini)' not in message
    nothing_written(tmp_path)


# ------------------------------------------------------------------------------------------ shared output

@pytest.mark.parametrize('first,second', [
    ("notebook: nbs/t.ipynb\noutput_dir: common\n", "notebook: nbs/t.ipynb\noutput_dir: common\n"),
    ("notebook: nbs/t.ipynb\nname: other\n", "notebook: nbs/t.ipynb\n"),  # 'other' is second.yaml's default name...
    ("notebook: nbs/t.ipynb\n", "notebook: nbs/t.ipynb\noutput_dir: ./exp\n"),
])
def test_two_specs_sharing_an_output_folder_are_refused(tmp_path, capsys, first, second):
    one = make_project(tmp_path, first)
    two = tmp_path / 'papermill_runs' / ('other.yaml' if 'name: other' in first else 'second.yaml')
    two.write_text(second)
    for spec, other in ((one, two), (two, one)):
        message = refused(spec, str(spec), "field 'output_dir'", str(other.resolve()), "overwrite each other's")
        assert cli.main(['sweep', 'collect', str(spec)]) == 2
        assert str(other.resolve()) in one_error_line(capsys)
    nothing_written(tmp_path, specs=('exp.yaml', two.name))


def test_other_yaml_files_do_not_count_as_specs(tmp_path):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\n")
    (tmp_path / 'papermill_runs' / 'notes.yaml').write_text("output_dir: exp\n")  # no notebook: not a spec
    (tmp_path / 'papermill_runs' / 'broken.yaml').write_text("notebook: [\n")  # unreadable: its own load says why
    (tmp_path / 'papermill_runs' / 'exp').mkdir()
    (tmp_path / 'papermill_runs' / 'exp' / '.sweep.lock').touch()  # an output folder: not searched
    (tmp_path / 'papermill_runs' / 'exp' / 'hparams.yaml').write_text("notebook: nbs/t.ipynb\noutput_dir: exp\n")
    assert sweep.load_spec(spec).output_dir.name == 'exp'


# ------------------------------------------------------------------------------------------ concurrent sweeps

def test_second_concurrent_sweep_is_refused_with_one_line_and_exit_2(tmp_path, capsys):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\ngrid: {epochs: [1, 2]}\n")
    out = sweep.load_spec(spec).output_dir
    with sweep._sweep_lock(out):  # as a running `neuronb sweep run` holds it
        with pytest.raises(SweepBusyError) as e: sweep.run(spec)
        assert str(out) in str(e.value) and 'in use by another `neuronb sweep run`' in str(e.value)
        assert cli.main(['sweep', 'run', str(spec)]) == 2
        line = one_error_line(capsys)
        assert str(out) in line and 'pid' in line
        exe = Path(sys.executable).parent / 'neuronb'
        if not exe.exists(): exe = shutil.which('neuronb')
        r = subprocess.run([str(exe), 'sweep', 'run', str(spec)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == '', (r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
        assert r.stderr.startswith(f'neuronb: error: {out} is in use by another `neuronb sweep run` (pid ')
    assert sorted(p.name for p in out.iterdir()) == ['.sweep.lock']  # no run folder, no results table


# ---------------------------------------------------------------- backends and object storage (neuronb.scale)
def test_unknown_backend_in_spec_and_on_the_command_line(tmp_path, capsys):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\nbackend: kubernetes\n")
    with pytest.raises(SpecError, match=r"field 'backend': expected one of local, ray, slurm, got 'kubernetes'"):
        sweep.run(spec)
    spec.write_text("notebook: nbs/t.ipynb\n")
    with pytest.raises(ValueError, match=r"unknown sweep backend 'dask': expected one of local, ray, slurm"):
        sweep.run(spec, backend='dask')
    assert cli.main(['sweep', 'run', str(spec), '--backend', 'dask']) == 2
    assert "invalid choice: 'dask'" in capsys.readouterr().err
    nothing_written(tmp_path)


def test_backend_options_are_checked_by_name(tmp_path):
    from neuronb import scale
    cases = {"backend: ray\nray: {num_gpu: 1}\n": r"field 'ray': unknown option\(s\) \['num_gpu'\]",
             "backend: ray\nray: {num_cpus: 0}\n": r"field 'ray.num_cpus': expected a number of CPUs per run \(> 0\), got 0",
             "backend: slurm\nslurm: {time_min: 10}\n": r"field 'slurm.partition': backend slurm needs a partition",
             "backend: slurm\nslurm: {partition: gpu, mem_gb: -1}\n": r"field 'slurm.mem_gb': expected a number of GB > 0, got -1",
             "backend: slurm\nslurm: {partition: gpu, setup: module load cuda}\n": r"field 'slurm.setup': expected a list of shell lines",
             "ray: [1]\n": r"field 'ray': expected a mapping of option name -> value",
             "storage_options: {anon: true}\n": r"field 'storage_options': expected an output_dir URL to apply to"}
    for text, message in cases.items():
        spec = make_project(tmp_path, "notebook: nbs/t.ipynb\n" + text)
        with pytest.raises(SpecError, match=message): sweep.run(spec)
        nothing_written(tmp_path)


def test_ray_address_that_does_not_answer(tmp_path, monkeypatch):
    import socket
    from neuronb import scale
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    spec = make_project(tmp_path, f"notebook: nbs/t.ipynb\nbackend: ray\nray: {{address: '127.0.0.1:{port}'}}\n")
    with pytest.raises(scale.BackendError, match=rf"no Ray cluster answers at 127.0.0.1:{port} \(ConnectionRefusedError"):
        sweep.run(spec)
    nothing_written(tmp_path)
    spec.write_text("notebook: nbs/t.ipynb\nbackend: ray\n")
    monkeypatch.setenv('RAY_ADDRESS', f'ray://127.0.0.1:{port}')
    assert cli.main(['sweep', 'run', str(spec)]) == 2
    nothing_written(tmp_path)


def test_url_output_dir_needs_a_bucket_and_an_fsspec_protocol(tmp_path):
    spec = make_project(tmp_path, "notebook: nbs/t.ipynb\noutput_dir: 's3://'\n")
    with pytest.raises(SpecError, match=r"field 'output_dir': expected a URL naming a bucket and folder"):
        sweep.run(spec)
    from neuronb import scale
    spec.write_text("notebook: nbs/t.ipynb\noutput_dir: nosuchproto://bucket/x\n")
    with pytest.raises(scale.StorageError, match=r"field 'output_dir': cannot open nosuchproto://bucket/x"):
        sweep.run(spec)
    nothing_written(tmp_path)
