"""The ray sweep backend on a Ray cluster started by the test (2 CPUs on localhost): a 4-run sweep with one failing run,
and resume after a Ray worker is killed in the middle of a run."""
import json
import os
import threading
import time

import psutil
import pytest

from scale_services import RayHead, Unavailable, tiny_project
from neuronb import scale, sweep


@pytest.fixture(scope='module')
def ray_cluster(tmp_path_factory):
    try: head = RayHead(tmp_path_factory.mktemp('ray'), num_cpus=2).start()
    except Unavailable as e: pytest.skip(str(e))
    old = os.environ.get('RAY_ADDRESS')
    os.environ['RAY_ADDRESS'] = head.address
    yield head
    head.stop()
    if old is None: os.environ.pop('RAY_ADDRESS', None)
    else: os.environ['RAY_ADDRESS'] = old


def test_four_runs_one_failing(ray_cluster):
    spec_path = tiny_project("backend: ray\nray: {num_cpus: 1}\ngrid: {x: [1.0, 2.0, 3.0]}\nruns:\n  - {name: ok}\n"
                             "  - {name: bad, parameters: {fail: true}}\ntimeout: 120\n")
    spec = sweep.load_spec(spec_path)
    spec.runs = spec.runs[:4]  # ok x 3 and bad x=1.0
    res = scale.run_spec(spec)
    assert res.executed == ['ok__x=1.0', 'ok__x=2.0', 'ok__x=3.0', 'bad__x=1.0'] and res.failed == ['bad__x=1.0']
    st = json.loads((spec.run_dir('bad__x=1.0') / 'status.json').read_text())
    assert st['backend'] == 'ray' and st['error'].startswith('ValueError: planned failure') and 'raise ValueError' in st['traceback']
    table = res.table.set_index('run')
    assert table.loc['ok__x=3.0', 'y'] == 6.0 and table.loc['ok__x=3.0', 'status'] == 'completed'
    # the same spec, now with the local backend, skips every completed run: one table whatever the backend
    spec.backend = 'local'
    again = scale.run_spec(spec, only=['ok'])
    assert again.skipped == ['ok__x=1.0', 'ok__x=2.0', 'ok__x=3.0'] and again.executed == []


def test_killed_worker_marks_its_run_failed_and_the_next_run_redoes_it(ray_cluster, tmp_path):
    block = tmp_path / 'block'
    block.write_text('the run sleeps while this file exists')
    spec_path = tiny_project(f"backend: ray\nruns:\n  - {{name: slow, parameters: {{block_file: '{block}'}}}}\n"
                             "  - {name: quick, parameters: {x: 4.0}}\n")
    spec = sweep.load_spec(spec_path)
    result = {}
    driver = threading.Thread(target=lambda: result.update(res=scale.run(spec_path)))
    driver.start()
    t0 = time.monotonic()
    while not (spec.run_dir('slow') / 'driver.json').exists():
        assert time.monotonic() - t0 < 240 and driver.is_alive(), 'the slow run did not start'
        time.sleep(0.5)
    run_pid = json.loads((spec.run_dir('slow') / 'driver.json').read_text())['processes'][0]['pid']
    worker = psutil.Process(run_pid).parent()
    assert 'ray::' in ' '.join(worker.cmdline()) or 'default_worker' in ' '.join(worker.cmdline()), worker.cmdline()
    worker.kill()  # the Ray worker executing the run dies
    driver.join(timeout=300)
    res = result['res']
    assert res.failed == ['slow'] and 'quick' in res.executed
    st = json.loads((spec.run_dir('slow') / 'status.json').read_text())
    assert st['error'].startswith('the Ray worker running it died'), st['error']
    assert not psutil.pid_exists(run_pid) or psutil.Process(run_pid).status() == psutil.STATUS_ZOMBIE
    block.unlink()
    again = scale.run(spec_path)
    assert again.executed == ['slow'] and again.failed == [] and again.skipped == ['quick']
