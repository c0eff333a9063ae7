"""Loading speed of ParquetSequenceDataset vs pandas one item at a time, and vs the model's training consumption.

Preprocesses a simulated cohort, then measures sequences per second for (a) ParquetSequenceDataset items in
shuffled order, (b) the same through `neuronb.data.make_loader` batches, (c) a naive reader that uses pandas to
read the rows of each sequence from the parquet file (`pd.read_parquet` with filters) one item at a time, and
(d) the training consumption of the experiment's default Temporal3DViT (train steps per second x batch size).
Prints ratios; asserts nothing about time. The loader must never be the bottleneck: ratio (b)/(d) >> 1.

    .venv/bin/python benchmarks/lfp_loading.py [--animals 16 --trials 200 --n-trials 8 --threads 1]
"""
import argparse
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from neuronb.data import make_loader
from neuronb.lfp.data import ParquetSequenceDataset, preprocess
from neuronb.lfp.models import Temporal3DViT
from neuronb.lfp.simulate import write_simulated


def rate(fn, n):
    t0 = time.perf_counter(); fn(); return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--animals', type=int, default=16)
    ap.add_argument('--trials', type=int, default=200)
    ap.add_argument('--n-trials', type=int, default=8)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--naive-items', type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = tempfile.mkdtemp(prefix='lfp-load-')
    try:
        raw = write_simulated(f'{d}/raw.parquet', n_animals=a.animals, n_trials=a.trials, seed=0)
        stats = preprocess(raw, f'{d}/prep', seed=0)
        path = f'{d}/prep/train.parquet'
        ds = ParquetSequenceDataset(path, n_trials=a.n_trials, stride=1)
        order = np.random.default_rng(0).permutation(len(ds))
        r_ds = rate(lambda: [ds[int(i)] for i in order], len(ds))
        loader = make_loader(ds, a.batch, shuffle=True, seed=0)
        r_loader = rate(lambda: [b for b in loader], len(ds))
        mean, std = np.asarray(stats['mean'], np.float32)[:, None], np.asarray(stats['std'], np.float32)[:, None]
        sess = ds.sessions

        def naive():
            for i in order[:a.naive_items]:
                s = str(sess[ds.session_codes[i]])
                df = pd.read_parquet(path, filters=[('session_id', '==', s)])
                df = df.sort_values('trial_index')
                t0 = int(pd.read_parquet(path, columns=['trial_index']).trial_index.to_numpy()[ds.rows[i, 0]])
                rows = df[(df.trial_index >= t0)].iloc[:a.n_trials]  # the same window of consecutive trials
                x = (np.stack(rows.spec.to_numpy()).reshape(-1, stats['n_freqs'], stats['n_times']) - mean) / std
                xt = torch.from_numpy(x.astype(np.float32))
                if i == order[0]: assert torch.allclose(xt, ds[int(i)]['x'], atol=1e-5), 'naive reader must read the same window'
        r_naive = rate(naive, a.naive_items)
        m = Temporal3DViT(n_freqs=stats['n_freqs'], n_frames=stats['n_times'], n_trials=a.n_trials, d_model=32, depth=2,
                          attention='divided')
        opt = torch.optim.AdamW(m.parameters())
        xb = torch.stack([ds[i]['x'] for i in range(a.batch)]); yb = torch.randint(0, 2, (a.batch,))
        def train(steps=5):
            for _ in range(steps):
                loss = F.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
        train(1)
        r_model = rate(train, 5 * a.batch)
        print(f"{len(ds)} training sequences of {a.n_trials} trials ({stats['n_freqs']}x{stats['n_times']} spectrograms), "
              f"{a.threads} thread(s)")
        print(f"ParquetSequenceDataset items, shuffled: {r_ds:10,.0f} seq/s")
        print(f"make_loader batches of {a.batch}:          {r_loader:10,.0f} seq/s")
        print(f"pandas, one item at a time:           {r_naive:10,.1f} seq/s")
        print(f"model training consumption:           {r_model:10,.0f} seq/s (experiment default Temporal3DViT)")
        print(f"ratios: dataset / pandas = {r_ds / r_naive:,.0f}x; loader / model consumption = {r_loader / r_model:,.1f}x")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    main()
