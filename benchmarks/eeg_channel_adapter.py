"""The cross-attention channel adapter's cost vs zero-padding (and spherical-spline interpolation).

Maps a batch of 21-channel 10-20 windows (2 s at 100 Hz) to the 128 target channels with each method and prints the
time per batch and the ratio to zero-padding, measured in this run on the CPU (one thread), forward only and
forward + backward for the adapter (its attention is recomputed every call, as in training).

    .venv/bin/python benchmarks/eeg_channel_adapter.py
"""
import time

import torch

from neuronb.eeg.channels import ChannelAdapter, SplineInterpolation, ZeroPad, name_bucket, normalized_positions, target_montage
from neuronb.eeg.simulate import TUH_CHANNELS, montage_positions


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats): fn()
    return (time.perf_counter() - start) / repeats


def main(batch_size: int = 64, n_times: int = 200, repeats: int = 50):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    names, raw_positions = montage_positions('colin27_1005', TUH_CHANNELS)
    source = normalized_positions(raw_positions)
    target = target_montage()[1]
    positions = torch.as_tensor(source, dtype=torch.float32)
    ids = torch.as_tensor([name_bucket(n) for n in names])
    x = torch.randn(batch_size, len(names), n_times)
    pad = ZeroPad(source, target)
    spline = SplineInterpolation(source, target)
    adapter = ChannelAdapter()
    with torch.no_grad():
        t_pad = timed(lambda: pad(x), repeats)
        t_spline = timed(lambda: spline(x), repeats)
        t_adapter = timed(lambda: adapter(x, positions, ids), repeats)
    t_train = timed(lambda: adapter(x, positions, ids).sum().backward(), repeats)
    print(f"batch of {batch_size} windows, 21 -> 128 channels x {n_times} samples, CPU, 1 thread")
    print(f"zero-padding:            {t_pad * 1e3:.3f} ms")
    print(f"spherical spline:        {t_spline * 1e3:.3f} ms  ({t_spline / t_pad:.1f}x zero-padding)")
    print(f"adapter forward:         {t_adapter * 1e3:.3f} ms  ({t_adapter / t_pad:.1f}x zero-padding)")
    print(f"adapter forward+backward: {t_train * 1e3:.3f} ms  ({t_train / t_pad:.1f}x zero-padding)")
    print(f"adapter parameters: {sum(p.numel() for p in adapter.parameters()):,}")


if __name__ == '__main__':
    main()
