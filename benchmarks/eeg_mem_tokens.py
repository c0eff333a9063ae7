"""Tokens per second of LaBraM's masked-EEG-modelling step (forward, backward, optimiser), one run.

A token is one (channel, patch) of a window. Prints tokens/s of the MEM step with the symmetric second pass (every
token predicted once per step, two encoder passes) and without it, and the ratio of tokens/s to a plain supervised
step on the same encoder (one pass, a regression head): the price of the tokenizer's codes plus the masked passes.
Run: .venv/bin/python benchmarks/eeg_mem_tokens.py [--n_chans 16 --batch 32 --steps 10 --threads 1]
"""
import argparse
import time

import torch

from neuronb.core import seed_everything
from neuronb.eeg.labram import LaBraMPretrainer, MEMObjective
from neuronb.train import supervised_objective


def time_step(model, objective, batch, steps: int) -> float:
    "Seconds per optimiser step (after one warm-up step)."
    parameters = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=1e-3)
    def one():
        out = objective.step(model, batch, 'train', None)
        loss = sum(out.losses.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    one()
    start = time.perf_counter()
    for _ in range(steps): one()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n_chans', type=int, default=16)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    from neuronb.eeg.labram import labram_chs_info, LABRAM_CHANNELS
    chs_info = labram_chs_info(LABRAM_CHANNELS[:args.n_chans])
    model = LaBraMPretrainer(n_chans=args.n_chans, chs_info=chs_info, depth=args.depth)
    x = model.example_input(args.batch)
    n_tokens = args.batch * args.n_chans * model.encoder.n_patches
    batch = {'x': x, 'y': torch.randn(args.batch)}
    results = {
        'MEM, symmetric (2 passes)': time_step(model, MEMObjective(model.d_model, model.tokenizer.n_codes, symmetric=True), batch, args.steps),
        'MEM, one pass': time_step(model, MEMObjective(model.d_model, model.tokenizer.n_codes, symmetric=False), batch, args.steps),
        'supervised step': time_step(model, supervised_objective('regression', head=torch.nn.Linear(model.d_model, 1)), batch, args.steps),
    }
    print(f"{args.batch} windows x {args.n_chans} channels x {model.encoder.n_patches} patches = {n_tokens} tokens per step, "
          f"d_model {model.d_model}, depth {args.depth}, {args.threads} thread(s)")
    for name, seconds in results.items(): print(f"  {name:28s} {n_tokens / seconds:10,.0f} tokens/s  ({seconds * 1000:.0f} ms/step)")
    symmetric, single, supervised = results.values()
    print(f"ratio symmetric / one-pass step time: {symmetric / single:.2f}")
    print(f"ratio MEM (symmetric) / supervised step time: {symmetric / supervised:.2f}")


if __name__ == '__main__':
    main()
