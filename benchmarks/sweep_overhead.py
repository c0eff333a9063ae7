"""Overhead of executing a trivial notebook through the sweep runner vs running the same code in-process.

    .venv/bin/python benchmarks/sweep_overhead.py

The notebook is `x = 1` (parameters) and `log_metrics({'y': x * 2})`. Each measurement runs in a fresh Python
process, so every side pays its own imports (neuronb.core imports torch; papermill imports nbformat):

  in-process   exec() of the notebook's code cells, as a script would run them (NEURONB_RUN_DIR set, so the same
               metrics.json is written)
  run          the run's duration_s from status.json: run process start, papermill import, kernel start,
               the cells, graceful kernel shutdown, executed notebook written
  sweep.run    the whole `sweep.run(spec)` call: spec and notebook checks (papermill import), the run, status.json,
               collect (results.parquet/csv, summary.png); cold, then again with rerun=True in the same process
  provenance   `sweep.provenance(spec)`: the notebook's hash, the neuronb source hash and git (once per sweep.run),
               and without git (status/collect, and once per run); the project here is the neuronb checkout, so
               git runs on a real repository
Prints seconds and the differences. Times depend on machine load; compare numbers from one invocation only.
"""
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat

PARAMS, CODE = "x = 1", "from neuronb.sweep import log_metrics\nlog_metrics({'y': x * 2}, show=False)"


def fresh(code: str) -> str:
    "Run `code` in a fresh interpreter; returns its stdout."
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return r.stdout


def main():
    root = Path(tempfile.mkdtemp(prefix='neuronb-bench-'))
    (root / 'settings.ini').write_text('[DEFAULT]\n')
    (root / 'nbs').mkdir(); (root / 'papermill_runs').mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMS, metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell(CODE)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, root / 'nbs' / 'trivial.ipynb')
    spec = root / 'papermill_runs' / 'bench.yaml'
    spec.write_text('notebook: nbs/trivial.ipynb\nparameters: {x: 3}\n')

    inproc = float(fresh(f"""
        import os, time
        os.environ['NEURONB_RUN_DIR'] = {str(root / 'inproc')!r}
        t = time.perf_counter()
        exec(compile({(PARAMS + chr(10) + CODE)!r}, 'notebook', 'exec'), {{}})
        print(time.perf_counter() - t)"""))
    out = fresh(f"""
        import contextlib, io, json, time
        t = time.perf_counter()
        from neuronb import sweep
        with contextlib.redirect_stdout(io.StringIO()): res = sweep.run({str(spec)!r})
        cold = time.perf_counter() - t
        d1 = json.loads((res.spec.run_dir('default') / 'status.json').read_text())['duration_s']
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()): res = sweep.run({str(spec)!r}, rerun=True)
        warm = time.perf_counter() - t
        d2 = json.loads((res.spec.run_dir('default') / 'status.json').read_text())['duration_s']
        assert res.ok and res.table['y'][0] == 6
        spec = res.spec
        spec.root = {str(Path(__file__).resolve().parent.parent)!r}  # git on the neuronb checkout
        t = time.perf_counter(); [sweep.provenance(spec) for _ in range(5)]; prov = (time.perf_counter() - t) / 5
        t = time.perf_counter(); [sweep.provenance(spec, git=False) for _ in range(5)]; prov_nogit = (time.perf_counter() - t) / 5
        print(json.dumps(dict(cold=cold, d1=d1, warm=warm, d2=d2, prov=prov, prov_nogit=prov_nogit)))""")
    s = json.loads(out.strip().splitlines()[-1])
    print(f"in-process code (cold imports)      {inproc:6.2f} s")
    print(f"one run (status.json duration_s)    {s['d1']:6.2f} s   second run {s['d2']:6.2f} s")
    print(f"sweep.run, cold process             {s['cold']:6.2f} s")
    print(f"sweep.run again (rerun=True, warm)  {s['warm']:6.2f} s")
    print(f"per-run overhead (run - in-process)                 {s['d1'] - inproc:6.2f} s")
    print(f"per-sweep overhead, cold (sweep.run - run)          {s['cold'] - s['d1']:6.2f} s")
    print(f"total difference, cold (sweep.run - in-process)     {s['cold'] - inproc:6.2f} s   "
          f"ratio {s['cold'] / inproc:.1f}x")
    print(f"total difference, warm (sweep.run - in-process)     {s['warm'] - inproc:6.2f} s")
    print(f"provenance with git (once per sweep.run)            {s['prov']:6.3f} s")
    print(f"provenance without git (per run, status, collect)   {s['prov_nogit']:6.3f} s")


if __name__ == '__main__':
    main()
