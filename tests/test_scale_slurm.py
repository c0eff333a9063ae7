"""The slurm sweep backend against a real one-node SLURM cluster on localhost (munged, slurmctld, slurmd), through submitit."""
import json
import os
import subprocess
import sys
import time

import pytest

from scale_services import SlurmCluster, Unavailable, tiny_project
from neuronb import scale, sweep

NEURONB = os.path.join(os.path.dirname(sys.executable), 'neuronb')  # the console script

SPEC = """\
backend: slurm
slurm: {partition: debug, time_min: 5, cpus_per_task: 1, mem_gb: 0.5}
grid: {x: [1.0, 2.0, 3.0]}
timeout: 120
"""


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    try: cluster = SlurmCluster(tmp_path_factory.mktemp('slurm')).start()
    except Unavailable as e: pytest.skip(str(e))
    old = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    yield cluster
    cluster.stop()
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v


def _wait_states(spec_path, want: set, timeout: float = 300.0):
    t0 = time.monotonic()
    while True:
        table = sweep.status(spec_path)
        if set(table['state']) <= want: return table
        assert time.monotonic() - t0 < timeout, f"runs did not reach {want}:\n{table.to_string()}"
        time.sleep(1.0)


def test_job_array_submit_and_return_then_status_and_collect(slurm):
    "Three runs as one job array; the driver returns at once; states and the table come from the run folders."
    spec_path = tiny_project(SPEC)
    res = scale.run(spec_path, wait=False)
    assert res.ok and res.executed == [] and res.table is None
    submitted = json.loads((res.spec.output_dir / '.slurm' / 'submitted.json').read_text())
    assert sorted(submitted) == ['x=1.0', 'x=2.0', 'x=3.0']
    assert len({j.split('_')[0] for j in submitted.values()}) == 1  # one array
    first = sweep.status(spec_path)
    assert set(first['state']) <= {'queued', 'running', 'completed'}, first.to_string()
    table = _wait_states(spec_path, {'completed'})
    assert list(table['run']) == ['x=1.0', 'x=2.0', 'x=3.0']
    out = subprocess.run([NEURONB, 'sweep', 'collect', str(spec_path)],
                         capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    results = sweep.collect(spec_path)
    assert list(results['y']) == [2.0, 4.0, 6.0]
    ids = {json.loads((res.spec.run_dir(n) / 'status.json').read_text())['slurm_job_id'] for n in submitted}
    assert len(ids) == 3 and None not in ids  # each run ran in its own SLURM job
    # a second run submits nothing: every run is completed
    again = scale.run(spec_path, wait=False)
    assert again.skipped == ['x=1.0', 'x=2.0', 'x=3.0']


def test_waiting_driver_failed_run_and_resume(slurm):
    "With wait (the default) the driver returns when every run has a status; a failed run keeps its traceback."
    spec_path = tiny_project(SPEC.replace("grid: {x: [1.0, 2.0, 3.0]}", "runs:\n  - {name: ok}\n  - {name: bad, parameters: {fail: true}}"))
    res = scale.run(spec_path)
    assert sorted(res.executed) == ['bad', 'ok'] and res.failed == ['bad']
    st = json.loads((res.spec.run_dir('bad') / 'status.json').read_text())
    assert st['error'].startswith('ValueError: planned failure for x=1.0') and 'raise ValueError' in st['traceback']
    assert st['backend'] == 'slurm'
    assert list(res.table['status']) == ['completed', 'failed']
    out = subprocess.run([NEURONB, 'sweep', 'run', str(spec_path), '--only', 'ok'],
                         capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0 and 'skipping 1 completed run(s): ok' in out.stdout, out.stdout + out.stderr


def test_nonexistent_partition_is_refused_before_anything_runs(slurm):
    spec_path = tiny_project(SPEC.replace('partition: debug', 'partition: gpu-nope'))
    with pytest.raises(scale.BackendError, match=r"partition 'gpu-nope' does not exist \(partitions: debug\)"):
        scale.run(spec_path)
    spec = sweep.load_spec(spec_path)
    assert not any(spec.run_dir(n).exists() for n in spec.run_names())
    out = subprocess.run([NEURONB, 'sweep', 'run', str(spec_path)], capture_output=True,
                         text=True, env=os.environ)
    assert out.returncode == 2 and 'gpu-nope' in out.stderr and out.stderr.count('\n') == 1, out.stderr
