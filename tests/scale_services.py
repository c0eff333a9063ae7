"""Real services on localhost for the scale-out tests: a one-node SLURM cluster, a Ray head, an S3 server (moto).

Each starter returns a handle whose `stop()` ends only the processes it started (by pid), or raises `Unavailable`
with the reason, which the tests turn into a skip. Also: a tiny parameterized notebook project for sweeps."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat

VENV_BIN = Path(sys.executable).parent


class Unavailable(RuntimeError):
    "A service could not start here; the message says why (the tests skip with it)."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stop_tree(proc: subprocess.Popen, grace: float = 5.0) -> None:
    "Terminate a process we started and every descendant of it (by pid), then kill what is left."
    import psutil
    try: root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess: return
    procs = [root]
    with contextlib.suppress(psutil.Error): procs += root.children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.Error): p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error): p.kill()
    psutil.wait_procs(alive, timeout=grace)
    with contextlib.suppress(subprocess.TimeoutExpired): proc.wait(timeout=grace)


# ---------------------------------------------------------------- the tiny notebook project
TINY_PARAMETERS = textwrap.dedent("""\
    x = 1.0
    fail = False
    sleep_s = 0.0
    block_file = ''
    """)
TINY_BODY = textwrap.dedent("""\
    import os, time
    from neuronb.sweep import log_metrics
    if block_file and os.path.exists(block_file): time.sleep(120)
    time.sleep(sleep_s)
    if fail: raise ValueError(f"planned failure for x={x}")
    log_metrics({'y': 2 * x, 'host': os.uname().nodename}, show=False)
    """)


def tiny_project(spec: str,  # YAML text of the spec (its notebook field is filled in: nbs/tiny.ipynb)
                 name: str = 'tiny',  # the spec's file name without .yaml
                 root: Path | None = None,  # an existing project to add the spec to
                ) -> Path:
    "A project folder with settings.ini, nbs/tiny.ipynb (parameters x, fail, sleep_s, block_file) and the spec; returns the spec's path."
    if root is None:
        root = Path(tempfile.mkdtemp(prefix='nbscale-'))
        (root / 'settings.ini').write_text('[DEFAULT]\nlib_name = tiny\n')
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(TINY_PARAMETERS)
        cell.metadata['tags'] = ['parameters']
        nb.cells = [cell, nbformat.v4.new_code_cell(TINY_BODY)]
        nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
        (root / 'nbs').mkdir()
        nbformat.write(nb, root / 'nbs' / 'tiny.ipynb')
        (root / 'papermill_runs').mkdir()
    path = root / 'papermill_runs' / f'{name}.yaml'
    path.write_text('notebook: nbs/tiny.ipynb\n' + textwrap.dedent(spec))
    return path


# ---------------------------------------------------------------- SLURM
class SlurmCluster:
    "munged + slurmctld + slurmd on localhost, state and logs in a temporary folder; clients find it via SLURM_CONF."
    def __init__(self, folder: Path):
        self.folder, self.procs, self.env = folder, [], {}

    def start(self, timeout: float = 60.0) -> 'SlurmCluster':
        for exe in ('/usr/sbin/munged', '/usr/sbin/slurmctld', '/usr/sbin/slurmd'):
            if not os.path.exists(exe): raise Unavailable(f"{exe} is not installed (make system installs slurm-wlm and munge)")
        if not shutil.which('sbatch'): raise Unavailable("sbatch is not on PATH")
        if os.geteuid() != 0: raise Unavailable("the test cluster runs slurmd as root, and this is not root")
        if not os.path.exists('/etc/munge/munge.key'): raise Unavailable("no /etc/munge/munge.key (munge's package creates it)")
        f = self.folder
        for sub in ('state', 'spool', 'log', 'munge'): (f / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(f / 'munge', 0o700)
        key = f / 'munge' / 'munge.key'
        shutil.copy('/etc/munge/munge.key', key)
        os.chmod(key, 0o400)
        socket_path = f / 'munge' / 'munge.socket'
        self._spawn('munged', ['/usr/sbin/munged', '-F', '--force', f'--socket={socket_path}', f'--key-file={key}',
                               f'--pid-file={f}/munge/munged.pid', f'--log-file={f}/log/munged.log',
                               f'--seed-file={f}/munge/munged.seed'])
        self._wait(lambda: socket_path.exists(), timeout, 'munged did not create its socket', 'munged.log')
        host = socket.gethostname().split('.')[0]
        cpus = os.cpu_count() or 1
        conf = f / 'slurm.conf'
        conf.write_text(textwrap.dedent(f"""\
            ClusterName=neuronbtest
            SlurmctldHost={host}
            SlurmctldPort={free_port()}
            SlurmdPort={free_port()}
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket={socket_path}
            SlurmUser=root
            SlurmdUser=root
            StateSaveLocation={f}/state
            SlurmdSpoolDir={f}/spool
            SlurmctldPidFile={f}/slurmctld.pid
            SlurmdPidFile={f}/slurmd.pid
            SlurmctldLogFile={f}/log/slurmctld.log
            SlurmdLogFile={f}/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            SchedulerType=sched/backfill
            AccountingStorageType=accounting_storage/none
            JobAcctGatherType=jobacct_gather/none
            JobCompType=jobcomp/none
            MpiDefault=none
            ReturnToService=2
            SlurmctldTimeout=30
            SlurmdTimeout=30
            InactiveLimit=0
            MinJobAge=300
            NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
            PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
            """))
        self.env = {'SLURM_CONF': str(conf)}
        self._spawn('slurmctld', ['/usr/sbin/slurmctld', '-D', '-i', '-f', str(conf)])
        self._spawn('slurmd', ['/usr/sbin/slurmd', '-D', '-f', str(conf)])
        env = {**os.environ, **self.env}
        def idle():
            out = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True, env=env)
            return out.returncode == 0 and out.stdout.strip() in ('idle', 'mixed', 'allocated')
        self._wait(idle, timeout, 'the node did not become idle', 'slurmctld.log')
        return self

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.folder / 'log' / f'{name}.out', 'wb')
        self.procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  start_new_session=True, env={**os.environ, **self.env})))

    def _wait(self, ok, timeout: float, what: str, log: str) -> None:
        t0 = time.monotonic()
        while not ok():
            dead = [n for n, p in self.procs if p.poll() is not None]
            if dead or time.monotonic() - t0 > timeout:
                tail = ''
                for path in (self.folder / 'log' / log, *(self.folder / 'log' / f'{n}.out' for n in dead)):
                    with contextlib.suppress(OSError): tail += path.read_text(errors='replace')[-600:]
                self.stop()
                raise Unavailable(f"SLURM test cluster: {what}" + (f" ({', '.join(dead)} exited)" if dead else
                                  f" within {timeout:g} s") + f"; log: {' '.join(tail.split())[-600:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        for _, p in reversed(self.procs): _stop_tree(p)
        self.procs = []


# ---------------------------------------------------------------- Ray
class RayHead:
    "`ray start --head --block` on 127.0.0.1 with its own temp folder; `address` is what RAY_ADDRESS takes."
    def __init__(self, folder: Path, num_cpus: int = 2):
        self.folder, self.num_cpus, self.proc, self.address = folder, num_cpus, None, None

    def start(self, timeout: float = 90.0) -> 'RayHead':
        ray_exe = VENV_BIN / 'ray'
        if not ray_exe.exists(): raise Unavailable("ray is not installed in this environment")
        port = free_port()
        cmd = [str(ray_exe), 'start', '--head', '--block', '--num-cpus', str(self.num_cpus), '--num-gpus', '0',
               '--node-ip-address', '127.0.0.1', '--port', str(port), '--include-dashboard', 'false',
               '--disable-usage-stats', '--temp-dir', str(self.folder)]
        self.log = self.folder / 'ray-start.log'
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, 'wb'), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, 'RAY_AUTH_MODE': 'disabled'})
        self.address = f'127.0.0.1:{port}'
        t0 = time.monotonic()
        while True:
            text = self.log.read_text(errors='replace') if self.log.exists() else ''
            if 'Ray runtime started' in text: return self
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                code = self.proc.poll()
                self.stop()
                why = ('timed out during startup' if 'timed out' in text else f"exited with {code}" if code is not None
                       else f"not up within {timeout:g} s")
                raise Unavailable(f"the Ray head did not start ({why}; on an overloaded machine its raylet gives up "
                                  f"waiting for the dashboard agent after a fixed 15 s): {' '.join(text.split())[-400:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None: _stop_tree(self.proc, grace=10.0)
        self.proc = None


# ---------------------------------------------------------------- S3 (moto's server mode)
class S3Server:
    "moto's S3-compatible server on 127.0.0.1 in a thread; `env` holds the endpoint and dummy credentials."
    def __init__(self):
        self.server, self.env, self.endpoint = None, {}, None

    def start(self) -> 'S3Server':
        try: from moto.server import ThreadedMotoServer
        except ImportError as e: raise Unavailable(f"moto[server] is not installed ({e})") from None
        self.server = ThreadedMotoServer(ip_address='127.0.0.1', port=free_port(), verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f'http://{host}:{port}'
        self.env = {'AWS_ENDPOINT_URL': self.endpoint, 'AWS_ACCESS_KEY_ID': 'testing', 'AWS_SECRET_ACCESS_KEY': 'testing',
                    'AWS_DEFAULT_REGION': 'us-east-1'}
        return self

    def make_bucket(self, name: str) -> None:
        import boto3
        boto3.client('s3', endpoint_url=self.endpoint, aws_access_key_id='testing', aws_secret_access_key='testing',
                     region_name='us-east-1').create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.server is not None: self.server.stop()
        self.server = None
