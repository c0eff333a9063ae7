"""Opening and saving a notebook in Jupyter leaves the tree clean.

A real Jupyter server (the one JupyterLab runs on), started from this environment with the configuration
`make venv` installs (tools/install_hooks.py), serves a copy of a notebook; the test saves it back through the
server's REST API the way JupyterLab does after opening it (kernelspec of the running kernel, language_info,
execution counts), and the file on disk must still be byte-for-byte what nbdev_clean gives. The same save with
nbdev's Jupyter hook switched off in settings.ini changes the file: the control that shows the check can fail.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import install_hooks  # noqa: E402

TOKEN = 'neuronb-roundtrip'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = 'GET', body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f'http://127.0.0.1:{port}/api/{path}', data=data, method=method,
                                 headers={'Authorization': f'token {TOKEN}', 'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r: return json.loads(r.read() or b'{}')


def _start_server(root: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, '-m', 'jupyter_server', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
           f'--ServerApp.root_dir={root}', f'--IdentityProvider.token={TOKEN}', '--ServerApp.port_retries=0', '--allow-root', *extra]
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(root / '.runtime')}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(300):
        try:
            _api(port, 'status')
            return proc, port
        except OSError:
            if proc.poll() is not None: break
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"jupyter server did not start: {proc.stderr.read()[-2000:]}")


def _open_and_save(root: Path, rel: str, extra: list[str]) -> None:
    "GET the notebook, then PUT it back as JupyterLab saves a notebook it opened and ran."
    proc, port = _start_server(root, extra)
    try:
        model = _api(port, f'contents/{rel}?content=1')
        nb = model['content']
        nb['metadata']['kernelspec'] = {'display_name': 'Python 3 (neuronb)', 'language': 'python', 'name': 'python3'}
        nb['metadata']['language_info'] = {'name': 'python', 'version': '3.11.2', 'mimetype': 'text/x-python',
                                           'codemirror_mode': {'name': 'ipython', 'version': 3}}
        code = [c for c in nb['cells'] if c['cell_type'] == 'code']
        for i, cell in enumerate(code): cell['execution_count'] = i + 1
        _api(port, f'contents/{rel}', 'PUT', {'type': 'notebook', 'format': 'json', 'content': nb})
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def project(tmp_path) -> Path:
    "A copy of settings.ini and one notebook, laid out like the project."
    shutil.copy2(ROOT / 'settings.ini', tmp_path)
    (tmp_path / 'nbs' / 'nn').mkdir(parents=True)
    shutil.copy2(ROOT / 'nbs' / 'nn' / '01_registry.ipynb', tmp_path / 'nbs' / 'nn')
    return tmp_path


def test_make_venv_installed_the_jupyter_hook():
    config = install_hooks.JUPYTER_CONFIG
    assert config.is_file(), f"{config} is missing: run `make venv` (or `python tools/install_hooks.py`)"
    assert json.loads(config.read_text())['ContentsManager']['pre_save_hook'] == 'nbdev.clean.clean_jupyter'


def test_open_and_save_in_jupyter_leaves_the_notebook_clean(project):
    rel = 'nbs/nn/01_registry.ipynb'
    before = (project / rel).read_bytes()
    _open_and_save(project, rel, [])
    assert (project / rel).read_bytes() == before, "saving through Jupyter changed a clean notebook"


def test_without_the_hook_the_same_save_changes_the_notebook(project):
    "The control: with nbdev's Jupyter hook switched off (`jupyter_hooks = False`) the same save dirties the file."
    settings = project / 'settings.ini'
    settings.write_text(settings.read_text().replace('jupyter_hooks = True', 'jupyter_hooks = False'))
    rel = 'nbs/nn/01_registry.ipynb'
    before = (project / rel).read_bytes()
    _open_and_save(project, rel, [])
    after = json.loads((project / rel).read_text())
    assert (project / rel).read_bytes() != before
    assert 'language_info' in after['metadata']
