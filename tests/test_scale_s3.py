"""Run folders on object storage: a sweep whose output_dir is s3://... on moto's S3-compatible server (localhost), read
back with s3fs from another process; and the clear errors of a store that cannot be used."""
import json
import os
import subprocess
import sys

import pytest

from scale_services import S3Server, Unavailable, tiny_project
from neuronb import scale, sweep

NEURONB = os.path.join(os.path.dirname(sys.executable), 'neuronb')  # the console script


@pytest.fixture(scope='module')
def s3():
    try: server = S3Server().start()
    except Unavailable as e: pytest.skip(str(e))
    server.make_bucket('lab')
    old = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    server.stop()
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v


def _fs():
    import s3fs
    return s3fs.S3FileSystem(skip_instance_cache=True)


def test_sweep_on_s3_and_collect_from_another_process(s3, tmp_path):
    spec_path = tiny_project("output_dir: s3://lab/sweeps/tiny\nruns:\n  - {name: a, parameters: {x: 1.5}}\n"
                             "  - {name: b, parameters: {fail: true}}\nworkers: 2\n")
    res = sweep.run(spec_path)  # the local backend, run folders on the store
    assert res.executed == ['a', 'b'] and res.failed == ['b']
    fs = _fs()
    files = sorted(p.split('lab/sweeps/tiny/', 1)[1] for p in fs.find('lab/sweeps/tiny'))
    assert {'a/status.json', 'a/metrics.json', 'a/notebook.ipynb', 'a/run.log', 'b/status.json', 'results.csv',
            'results.parquet', 'summary.png'} <= set(files), files
    assert not any(f.endswith('heartbeat.json') for f in files)
    st = json.loads(fs.cat_file('lab/sweeps/tiny/b/status.json'))
    assert st['status'] == 'failed' and 'planned failure' in st['error'] and 'raise ValueError' in st['traceback']
    # another process, with a fresh local copy, reads status and collects from the store alone
    spec = sweep.load_spec(spec_path)
    import shutil
    shutil.rmtree(spec.output_dir)
    fs.rm_file('lab/sweeps/tiny/results.csv')
    code = ("import sys; from neuronb import sweep; t = sweep.collect(sys.argv[1]); "
            "print(t[['run', 'status', 'y']].to_json(orient='records'))")
    out = subprocess.run([sys.executable, '-c', code, str(spec_path)], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert rows == [{'run': 'a', 'status': 'completed', 'y': 3.0}, {'run': 'b', 'status': 'failed', 'y': None}]
    assert fs.exists('lab/sweeps/tiny/results.csv')
    assert 'a,' in fs.cat_file('lab/sweeps/tiny/results.csv').decode()
    out = subprocess.run([NEURONB, 'sweep', 'status', str(spec_path)], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0 and out.stdout.split('\n')[1].split()[:2] == ['a', 'completed'], out.stdout
    # resume: only the failed run is redone
    again = sweep.run(spec_path)
    assert again.skipped == ['a'] and again.executed == ['b'] and again.failed == ['b']


def test_url_without_credentials_is_refused_before_any_run(s3, monkeypatch):
    spec_path = tiny_project("output_dir: s3://lab/sweeps/nocred\ngrid: {x: [1.0]}\n")
    for var in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'): monkeypatch.delenv(var)
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', os.devnull)
    monkeypatch.setenv('AWS_CONFIG_FILE', os.devnull)
    monkeypatch.setenv('AWS_EC2_METADATA_DISABLED', 'true')
    with pytest.raises(scale.StorageError, match=r"cannot write to s3://lab/sweeps/nocred \(NoCredentialsError.*AWS_ACCESS_KEY_ID"):
        sweep.run(spec_path)
    assert not sweep.load_spec(spec_path).output_dir.exists()  # nothing was written, not even the local copy


def test_missing_bucket_is_refused(s3):
    spec_path = tiny_project("output_dir: s3://no-such-bucket/x\ngrid: {x: [1.0]}\n")
    out = subprocess.run([NEURONB, 'sweep', 'run', str(spec_path)], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 2 and 'no-such-bucket' in out.stderr and 'does not exist' in out.stderr, out.stderr
