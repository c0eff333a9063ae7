"""Train-step time of Temporal3DViT versus n_trials, joint vs divided attention, with growth ratios.

One train step = forward, cross-entropy, backward, AdamW step, on a batch of sequences of (16 x 16) spectrograms with
(4 x 4) patches (16 patches per trial). Joint attention over n_trials * 16 tokens grows ~quadratically; divided
attention (across trials, then within a trial) ~linearly while n_trials is not much larger than the patch count.
Prints the median step time and the ratio per doubling of n_trials; asserts nothing about time.

    .venv/bin/python benchmarks/lfp_attention_scaling.py [--threads 1 --batch 8 --dim 64 --depth 2 --reps 5]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from neuronb.lfp.models import Temporal3DViT


def step_time(mode, n, a):
    torch.manual_seed(0)
    m = Temporal3DViT(n_trials=n, n_freqs=16, n_frames=16, patch=(4, 4), d_model=a.dim, depth=a.depth,
                      n_heads=4, attention=mode)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x, y = torch.randn(a.batch, n, 16, 16), torch.randint(0, 2, (a.batch,))
    times = []
    for i in range(a.reps + 1):
        t0 = time.perf_counter()
        loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
        if i: times.append(time.perf_counter() - t0)  # first step is warm-up
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--dim', type=int, default=64)
    ap.add_argument('--depth', type=int, default=2)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--trials', type=int, nargs='+', default=[4, 8, 16, 32])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {mode: [step_time(mode, n, a) for n in a.trials] for mode in ('joint', 'divided')}
    print(f"train step time (ms), batch {a.batch}, dim {a.dim}, depth {a.depth}, 16 patches per trial, {a.threads} thread(s)")
    print('n_trials  ' + ''.join(f'{n:>10d}' for n in a.trials))
    for mode, ts in res.items(): print(f'{mode:9s} ' + ''.join(f'{1e3 * t:10.1f}' for t in ts))
    print('growth ratio per step of n_trials (tokens x2 per step; linear = 2.0, quadratic = 4.0):')
    for mode, ts in res.items():
        print(f'{mode:9s} ' + '  '.join(f'{a.trials[i]}->{a.trials[i + 1]}: x{ts[i + 1] / ts[i]:.2f}' for i in range(len(ts) - 1)))
    print(f"overall {a.trials[0]}->{a.trials[-1]} (x{a.trials[-1] // a.trials[0]} tokens): "
          + ', '.join(f"{m} x{ts[-1] / ts[0]:.1f}" for m, ts in res.items())
          + f"; joint/divided at {a.trials[-1]} trials: {res['joint'][-1] / res['divided'][-1]:.2f}")


if __name__ == '__main__':
    main()
