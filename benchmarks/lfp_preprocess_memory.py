"""Peak memory and throughput of LFP preprocessing at the real study's size (77k trials), on the simulator.

Writes a simulated raw trial table of `--animals` x `--trials` trials (default 32 x 2400 = 76,800), then runs
`neuronb.lfp.data.preprocess` on it in a fresh child process and reports the child's peak resident memory
(`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`), its RSS before preprocessing (imports only), the peak of
numpy/Python allocations (tracemalloc) and of Arrow's memory pool during preprocessing, and the throughput in trials per second. Prints ratios, asserts nothing about time.

    .venv/bin/python benchmarks/lfp_preprocess_memory.py [--animals 32 --trials 2400 --chunk 2048]

With `--growth`, a cohort is written twice, the second with ten times the trials: ten times the sessions of the
same length (`--scale sessions`, the default; the raw file's row groups, one per session, keep their size) or ten
times the trials per session (`--scale trials`), and each of three consumers runs in a fresh child at both sizes: `preprocess`, the index of a
`ParquetSequenceDataset` over the train split (8-trial windows at stride 1, as the experiments train) and the
classical baseline's per-trial quantities (`trial_quantities`, memory-mapped from temporary files in the working
folder: their size on disk is printed too). It prints the peak numpy/Python allocations (tracemalloc) of each at
both sizes, what each still holds when done ("held"), and their growth ratio (1.0: independent of the number of
trials; 10: linear). With `--fit` it also runs the whole baseline, whose feature matrix is one row per sequence.

    nice -n 10 .venv/bin/python benchmarks/lfp_preprocess_memory.py --growth --animals 32 --trials 240
"""
import argparse
import multiprocessing as mp
import os
import queue
import resource
import shutil
import sys
import tempfile
import time

import numpy as np


def _import_only(q):
    import neuronb.lfp.data  # noqa: F401
    q.put(None)


def _preprocess(raw, out, chunk, q):
    import tracemalloc
    import pyarrow as pa
    from neuronb.lfp.data import preprocess
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    stats = preprocess(raw, out, chunk_size=chunk)
    secs = time.perf_counter() - t0
    py_peak = tracemalloc.get_traced_memory()[1]
    q.put((secs, stats['n_trials'], py_peak / 2**20, pa.default_memory_pool().max_memory() / 2**20, rss0 / 1024))


def _dataset_index(out, q):
    import tracemalloc
    from neuronb.lfp.data import ParquetSequenceDataset
    tracemalloc.start()
    ds = ParquetSequenceDataset(os.path.join(out, 'train.parquet'), n_trials=8, stride=1)
    held = tracemalloc.get_traced_memory()[0]
    q.put((tracemalloc.get_traced_memory()[1] / 2**20, held / 2**20, len(ds)))


def _baseline_quantities(raw, folder, q):
    import tracemalloc
    from neuronb.lfp.baseline import trial_quantities
    tracemalloc.start()
    quantities = trial_quantities(raw, folder=folder)
    held = tracemalloc.get_traced_memory()[0]
    on_disk = sum(v.nbytes for v in quantities.values() if isinstance(v, np.ndarray) and v.dtype != object)
    q.put((tracemalloc.get_traced_memory()[1] / 2**20, held / 2**20, on_disk / 2**20))


def _baseline_fit(raw, out, folder, q):
    "run_baseline as the sweeps run it (8 trials, training windows at stride 1); its feature matrix is one row per sequence."
    import tracemalloc
    import neuronb.lfp.baseline  # noqa: F401  (imports are not the baseline's memory)
    tracemalloc.start()
    r = _run_with_folder(raw, out, folder)
    q.put((tracemalloc.get_traced_memory()[1] / 2**20, int(r['model'][0].n_samples_seen_)))


def _run_with_folder(raw, out, folder):
    from neuronb.core import read_json
    from neuronb.lfp.baseline import run_baseline, trial_quantities
    from neuronb.lfp.data import SpectrogramConfig
    st = read_json(os.path.join(out, 'stats.json'))
    cfg = SpectrogramConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in st['config'].items()})
    return run_baseline(raw, st, n_trials=8, train_stride=1, quantities=trial_quantities(raw, cfg, folder=folder))


def _growth(a, d):
    "Peak allocations of preprocess, the dataset index and the baseline's quantities at n and 10 n trials per session."
    from neuronb.lfp.simulate import write_simulated
    rows = {}
    sizes = [(a.animals, a.trials), (10 * a.animals, a.trials)] if a.scale == 'sessions' else [(a.animals, a.trials), (a.animals, 10 * a.trials)]
    for animals, trials in sizes:
        raw = os.path.join(d, f'raw{animals}x{trials}.parquet')
        out = os.path.join(d, f'prep{animals}x{trials}')
        write_simulated(raw, n_animals=animals, n_trials=trials, seed=0)
        n = animals * trials
        (secs, _, py_peak, arrow_peak, _), rss_peak, _ = _child_peak(_preprocess, raw, out, a.chunk)
        index_peak = index_held = base_peak = base_held = on_disk = fit_peak = float('nan'); n_seq = n_fit = 0
        if not a.preprocess_only:
            (index_peak, index_held, n_seq), _, _ = _child_peak(_dataset_index, out)
            (base_peak, base_held, on_disk), _, _ = _child_peak(_baseline_quantities, raw, d)
            if a.fit: (fit_peak, n_fit), _, _ = _child_peak(_baseline_fit, raw, out, d)
        rows[n] = {'preprocess peak MiB': py_peak, 'preprocess RSS MiB': rss_peak, 'preprocess arrow MiB': arrow_peak,
                   'dataset index peak MiB': index_peak, 'dataset index held MiB': index_held,
                   'baseline peak MiB': base_peak, 'baseline held MiB': base_held, 'baseline on disk MiB': on_disk,
                   'baseline fit peak MiB': fit_peak}
        print(f"{n:,} trials ({animals} sessions x {trials}): preprocess {secs:.0f} s, " +
              ', '.join(f"{k} {v:,.2f}" for k, v in rows[n].items()) + f"; {n_seq:,} training sequences"
              + (f"; the baseline fit on {n_fit:,}" if a.fit else ''), flush=True)
    small, large = sorted(rows)
    print(f"growth from {small:,} to {large:,} trials (x{large / small:.0f}):")
    for k in rows[small]:
        print(f"  {k:<24} {rows[small][k]:9,.2f} -> {rows[large][k]:9,.2f}   ratio {rows[large][k] / max(rows[small][k], 1e-9):5.2f}")
    for k in ('dataset index held MiB', 'baseline held MiB', 'baseline on disk MiB'):
        print(f"  {k.replace(' MiB', '')} per trial: {2**20 * rows[large][k] / large:,.1f} bytes")


def _child_peak(target, *args):
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = ctx.Process(target=target, args=(*args, q)); p.start()
    while True:  # a child that dies without answering (killed, out of memory) is an error, not a hang
        try:
            res = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive(): raise SystemExit(f"child {target.__name__} died with exit code {p.exitcode} before answering")
    p.join()
    if p.exitcode: raise SystemExit(f"child {target.__name__} failed with exit code {p.exitcode}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return res, peak_kb / 1024, before / 1024  # MiB (Linux reports KiB)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--animals', type=int, default=32)
    ap.add_argument('--trials', type=int, default=2400, help='trials per session (one session per animal)')
    ap.add_argument('--chunk', type=int, default=2048)
    ap.add_argument('--dir', default=None, help='working folder (default: a temporary folder, removed afterwards)')
    ap.add_argument('--growth', action='store_true', help='measure at --trials and 10x --trials per session and print growth ratios')
    ap.add_argument('--preprocess-only', action='store_true', help='with --growth: measure preprocess alone')
    ap.add_argument('--fit', action='store_true', help="with --growth: also run the whole baseline (its feature matrix, one row "
                    "per training sequence, and the logistic regression's copies of it grow with the cohort by design)")
    ap.add_argument('--scale', choices=('sessions', 'trials'), default='sessions',
                    help="with --growth: ten times the sessions of the same length (default), or ten times the trials per "
                         "session (the raw file's row groups, one per session, then grow too, and the reader's buffers with them)")
    a = ap.parse_args()
    if a.growth:
        d = a.dir or tempfile.mkdtemp(prefix='lfp-bench-')
        try: return _growth(a, d)
        finally:
            if a.dir is None: shutil.rmtree(d, ignore_errors=True)
    from neuronb.lfp.simulate import write_simulated
    d = a.dir or tempfile.mkdtemp(prefix='lfp-bench-')
    try:
        raw = os.path.join(d, 'raw.parquet')
        t0 = time.perf_counter()
        write_simulated(raw, n_animals=a.animals, n_trials=a.trials, seed=0)
        n = a.animals * a.trials
        print(f"simulated {n:,} trials in {time.perf_counter() - t0:.1f} s; raw table {os.path.getsize(raw) / 2**20:.0f} MiB")
        _, base_mib, _ = _child_peak(_import_only)
        (secs, counts, py_peak, arrow_peak, rss_before), peak_mib, _ = _child_peak(_preprocess, raw, os.path.join(d, 'prep'), a.chunk)
        out_mib = sum(os.path.getsize(os.path.join(d, 'prep', f)) for f in os.listdir(os.path.join(d, 'prep'))) / 2**20
        print(f"preprocess: {n:,} trials in {secs:.1f} s = {n / secs:,.0f} trials/s; outputs {out_mib:.0f} MiB {counts}")
        print(f"peak RSS of the preprocessing process: {peak_mib:,.0f} MiB (after imports, before preprocess: "
              f"{rss_before:,.0f} MiB; a child that only imports: {base_mib:,.0f} MiB)")
        print(f"peak allocations during preprocess: numpy/python (tracemalloc) {py_peak:,.0f} MiB, "
              f"Arrow memory pool {arrow_peak:,.0f} MiB")
        print(f"ratio peak RSS / raw table size: {peak_mib / (os.path.getsize(raw) / 2**20):.2f}; "
              f"peak RSS / 24 GB machine: {peak_mib / (24 * 1024):.3f}")
    finally:
        if a.dir is None: shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
