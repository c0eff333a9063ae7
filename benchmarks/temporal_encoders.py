"""Throughput of the temporal TR encoders: TRs per second (forward, and forward+backward) and the scaling from a batch
of n to 2n TRs, printed as ratios measured in one run (no thresholds: speed targets are read, not asserted).

    python benchmarks/temporal_encoders.py [--device cpu|cuda] [--batch 256] [--threads 1]
"""
import argparse
import time

import torch

from neuronb.temporal.encoders import make_encoder


def rate(enc, x, backward, reps):
    def step():
        if backward:
            enc.zero_grad(set_to_none=True)
            enc(x).sum().backward()
        else:
            with torch.no_grad(): enc(x)
    step()
    if x.is_cuda: torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps): step()
    if x.is_cuda: torch.cuda.synchronize()
    return reps * len(x) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--reps', type=int, default=3)
    a = ap.parse_args()
    if a.device == 'cpu' and a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    print(f"device {a.device}, batch {a.batch} TRs of 32 frames x 16 features, threads {torch.get_num_threads()}")
    print(f"{'encoder':19s} {'n_params':>9s} {'fwd TRs/s':>10s} {'train TRs/s':>12s} {'fwd 2n/n time':>14s}")
    cases = [(k, {}) for k in ['mean', 'mean_posenc', 'multiscale', 'hierarchical', 'transformer']]
    cases += [(k, {'modulation': False}) for k in ['multiscale', 'hierarchical', 'transformer']]  # the branch's cost
    for kind, kw in cases:
        torch.manual_seed(0)
        enc = make_encoder(kind, 16, 32, **kw).to(dev)
        x, x2 = torch.randn(a.batch, 32, 16, device=dev), torch.randn(2 * a.batch, 32, 16, device=dev)
        f1, f2 = rate(enc.eval(), x, False, a.reps), rate(enc.eval(), x2, False, a.reps)
        tr = rate(enc.train(), x, True, a.reps) if enc.n_params else float('nan')
        # time ratio for 2n vs n TRs: 2.0 means linear scaling, below 2 means the larger batch used the device better
        name = kind + ('_nomod' if kw else '')
        print(f"{name:19s} {enc.n_params:9d} {f1:10.0f} {tr:12.0f} {2 * f1 / f2:14.2f}")


if __name__ == '__main__':
    main()
