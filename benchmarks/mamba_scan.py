"""Parallel (Blelloch) scan against the sequential recurrence, one training step (forward + backward) of a Mamba
backbone on the CPU, at sequence lengths 256 to 2048. Prints the time per step and the sequential / parallel ratio.
(--max-length 4096 works, but the sequential loop then takes hours: its cost grows faster than linearly.)

Run: .venv/bin/python benchmarks/mamba_scan.py [--threads 1] [--max-length 2048]
"""
import argparse
import time

import torch

from neuronb.nn.mamba import MambaBackbone


def step_seconds(backend: str, length: int, d_model: int, d_state: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = MambaBackbone(d_model=d_model, depth=1, d_state=d_state, backend=backend)
    x = torch.randn(batch, length, d_model)
    model(x).square().mean().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.zero_grad()
        model(x).square().mean().backward()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--max-length', type=int, default=2048)
    parser.add_argument('--d-model', type=int, default=32)
    parser.add_argument('--d-state', type=int, default=16)
    parser.add_argument('--batch', type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Mamba backbone, 1 layer, d_model {args.d_model}, d_state {args.d_state}, batch {args.batch}, "
          f"{args.threads} thread(s); one training step (forward + backward)")
    print(f"{'length':>7} {'parallel ms':>12} {'sequential ms':>14} {'ratio':>7}")
    length = 256
    while length <= args.max_length:
        parallel = step_seconds('parallel', length, args.d_model, args.d_state, args.batch, repeats=3)
        sequential = step_seconds('sequential', length, args.d_model, args.d_state, args.batch, repeats=1)
        print(f"{length:>7} {parallel * 1e3:>12.1f} {sequential * 1e3:>14.1f} {sequential / parallel:>6.1f}x")
        length *= 2


if __name__ == '__main__':
    main()
