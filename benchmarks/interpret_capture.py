"""Cost of activation capture: one pass over a dataset with `collect_activations` (every activation of three
modules kept as arrays, and running covariance summaries) against a plain forward pass over the same batches.
Target: at most 1.2x. Prints the ratios measured in this run (process CPU time, one thread, so that other load on
the machine does not distort them).
    .venv/bin/python benchmarks/interpret_capture.py [--items 8192] [--repeats 3]"""
import argparse
import time

import torch
from torch import nn

from neuronb.interpret.capture import collect_activations
from neuronb.nn.attention import Block


class Encoder(nn.Module):
    "A small transformer encoder over (batch, n_tokens, d_model) inputs."
    def __init__(self, d_model: int = 64, depth: int = 4, n_heads: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(depth))
        self.head = nn.Linear(d_model, 2)

    def forward(self, x):
        for block in self.blocks: x = block(x)
        return self.head(x.mean(1))


def plain_pass(model, batches):
    with torch.no_grad():
        for x in batches: model(x)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--items', type=int, default=8192)
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Encoder().eval()
    batches = [torch.randn(args.batch, 32, 64) for _ in range(args.items // args.batch)]
    modules = ['blocks.1', 'blocks.3', 'head']
    pool_tokens = lambda a: a.mean(1) if a.ndim == 3 else a  # what one usually keeps: a vector per item
    plain = best_of(lambda: plain_pass(model, batches), args.repeats)
    arrays = best_of(lambda: collect_activations(model, batches, modules, transform=pool_tokens), args.repeats)
    full = best_of(lambda: collect_activations(model, batches, ['blocks.3']), args.repeats)
    moments = best_of(lambda: collect_activations(model, batches, modules, summary='covariance', transform=pool_tokens), args.repeats)
    print(f"{args.items} items, batches of {args.batch}, 4-block d_model=64 encoder, 32 tokens, 1 thread")
    print(f"plain forward pass                      {plain:.3f} s")
    print(f"capture 3 modules (token-pooled arrays) {arrays:.3f} s   ratio {arrays / plain:.2f}x")
    print(f"capture 1 module, every token kept      {full:.3f} s   ratio {full / plain:.2f}x")
    print(f"capture 3 modules, covariance summaries {moments:.3f} s   ratio {moments / plain:.2f}x")
    print(f"target: <= 1.2x")


if __name__ == '__main__':
    main()
