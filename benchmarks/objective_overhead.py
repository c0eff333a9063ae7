"""Overhead of the objective interface: time per training epoch of the same LFP-sized run with `neuronb.train` before
objectives existed (read from git, commit given by --before) and with the current code, in one process, alternating.

    python benchmarks/objective_overhead.py            # prints the per-epoch times and the ratio after / before

The run is shaped like the LFP experiment's E3 (sequences of 8 trial spectrograms, ~1,000 training sequences,
batch 32, a two-block transformer of ~60k parameters, binary task with class weights and label smoothing).
"""
import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from torch import nn

import neuronb.train as train_after
from neuronb.core import seed_everything
from neuronb.data import ArrayDataset, make_loader

ROOT = Path(__file__).resolve().parents[1]


def load_before(rev: str):
    "neuronb/train.py as it was at `rev`, imported as a module of the neuronb package."
    source = subprocess.run(['git', 'show', f'{rev}:neuronb/train.py'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / 'train_before.py'
    path.write_text(source)
    spec = importlib.util.spec_from_file_location('neuronb._train_before', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class SequenceTransformer(nn.Module):
    "(batch, n_trials, n_freqs, n_times) -> (batch, 2): one token per trial and time frame, two transformer blocks."
    def __init__(self, n_trials=8, n_freqs=32, n_times=24, d_model=48, depth=2, n_heads=4):
        super().__init__()
        self.embed = nn.Linear(n_freqs, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_trials * n_times, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth)
        self.head = nn.Linear(d_model, 2)
    def forward(self, x):
        b, k, f, t = x.shape
        tokens = self.embed(x.permute(0, 1, 3, 2).reshape(b, k * t, f)) + self.pos_embed
        return self.head(self.blocks(tokens).mean(1))


class EpochTimer(L.Callback):
    def __init__(self): self.times, self._start = [], None
    def on_train_epoch_start(self, trainer, pl_module): self._start = time.perf_counter()
    def on_train_epoch_end(self, trainer, pl_module): self.times.append(time.perf_counter() - self._start)


def run(train, loaders, epochs: int) -> list[float]:
    seed_everything(0)
    module = train.TaskModule(SequenceTransformer(), task='binary', class_weights=[1.0, 1.2], label_smoothing=0.1, lr=1e-3)
    timer = EpochTimer()
    train.fit(module, loaders['train'], loaders['val'], max_epochs=epochs, seed=0, out_dir=tempfile.mkdtemp(), accelerator='cpu',
              callbacks=[timer], progress_bar=False, log_every_n_steps=1)
    return timer.times[1:]  # the first epoch warms up


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--before', default='54b0869', help='git revision of neuronb/train.py before the objective interface')
    parser.add_argument('--epochs', type=int, default=4, help='epochs per run (the first is not timed)')
    parser.add_argument('--repeats', type=int, default=2, help='before/after pairs, alternating')
    parser.add_argument('--n-train', type=int, default=1000, help='training sequences')
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load_before(args.before)
    g = torch.Generator().manual_seed(0)
    n = args.n_train + 250
    x = torch.randn(n, 8, 32, 24, generator=g)
    y = (torch.rand(n, generator=g) < 0.45).long()
    loaders = {'train': make_loader(ArrayDataset(x[:args.n_train].numpy(), y[:args.n_train].numpy()), batch_size=32, shuffle=True),
               'val': make_loader(ArrayDataset(x[args.n_train:].numpy(), y[args.n_train:].numpy()), batch_size=32)}
    times = {'before': [], 'after': []}
    for _ in range(args.repeats):
        times['before'] += run(before, loaders, args.epochs)
        times['after'] += run(train_after, loaders, args.epochs)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"seconds per training epoch (median of {len(times['before'])}): before {med['before']:.3f} "
          f"[{min(times['before']):.3f}-{max(times['before']):.3f}], after {med['after']:.3f} "
          f"[{min(times['after']):.3f}-{max(times['after']):.3f}]")
    print(f"ratio after / before: {med['after'] / med['before']:.3f}")


if __name__ == '__main__':
    main()
