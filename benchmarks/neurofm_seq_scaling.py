"""Training-step time (forward + backward) against sequence length for NeuroFMx's backbones: the Mamba backbone
(parallel scan, or the mamba-ssm kernel on a GPU where installed) against the causal transformer backbone of equal
size. Prints the time per step at 256 ... 4096 steps and each backbone's growth ratio from 256 to 4096 steps
(linear scaling would be 16x; quadratic attention tends to 256x once attention dominates).

Run: .venv/bin/python benchmarks/neurofm_seq_scaling.py [--device cpu|cuda] [--d-model 64] [--depth 2]
"""
import argparse
import time

import torch

from neuronb.neurofm.model import TransformerBackbone, matched_mlp_ratio
from neuronb.nn.mamba import MambaBackbone
from neuronb.nn.registry import n_params


def step_seconds(model: torch.nn.Module, length: int, d_model: int, batch: int, device: str, repeats: int) -> float:
    x = torch.randn(batch, length, d_model, device=device)
    model(x).square().mean().backward()  # warm-up
    if device == 'cuda': torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        model.zero_grad()
        model(x).square().mean().backward()
    if device == 'cuda': torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--d-model', type=int, default=64)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--lengths', default='256,512,1024,2048,4096')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = [int(n) for n in args.lengths.split(',')]
    backbones = {'mamba': MambaBackbone(args.d_model, args.depth),
                 'transformer': TransformerBackbone(args.d_model, args.depth, mlp_ratio=matched_mlp_ratio(args.d_model))}
    for name, model in backbones.items(): model.to(args.device)
    print(f"device {args.device}, d_model {args.d_model}, depth {args.depth}, batch {args.batch}; parameters: "
          + ', '.join(f"{name} {n_params(model)}" for name, model in backbones.items()))
    repeats = 5 if args.device == 'cuda' else 1
    times = {name: {} for name in backbones}
    print(f"{'length':>7} " + ' '.join(f"{name + ' ms':>15}" for name in backbones))
    for length in lengths:
        for name, model in backbones.items():
            times[name][length] = step_seconds(model, length, args.d_model, args.batch, args.device, repeats)
        print(f"{length:>7} " + ' '.join(f"{times[name][length] * 1e3:>15.1f}" for name in backbones))
    first, last = lengths[0], lengths[-1]
    for name in backbones:
        print(f"{name}: {first} -> {last} steps, time grows {times[name][last] / times[name][first]:.1f}x "
              f"(length grows {last / first:.0f}x)")
    print(f"transformer / mamba at {last} steps: {times['transformer'][last] / times['mamba'][last]:.2f}x")


if __name__ == '__main__':
    main()
