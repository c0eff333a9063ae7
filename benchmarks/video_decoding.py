"""Decoding speed of the SSv2 reader: clips per second with 1 and 2 DataLoader workers (and in the main process).

Writes a synthetic SSv2-layout dataset (VP9 webm at 12 fps, SSv2-like 240 x 320 frames and ~48 frames per clip by
default), then times one pass over `SSv2Dataset` (uniform segment sampling with random offsets, resize, crop,
normalisation) through `make_loader` with 0, 1 and 2 worker processes. Prints clips/s and the 2-worker / 1-worker
ratio; asserts nothing about time. On a machine with at least two free cores the ratio should approach 2.

    .venv/bin/python benchmarks/video_decoding.py [--per-class 4 --height 240 --width 320 --frames 48 --n-frames 16 --size 112]
"""
import argparse
import shutil
import tempfile
import time

import torch

from neuronb.video.data import SSv2Dataset, make_loader
from neuronb.video.synthetic import make_synthetic_ssv2


def clips_per_second(dataset, workers, batch):
    "Clips per second of one pass over the dataset (worker start-up included)."
    loader = make_loader(dataset, batch_size=batch, num_workers=workers, seed=0)
    start = time.perf_counter()
    n = sum(len(frames) for frames, _ in loader)
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--per-class', type=int, default=4, help='training videos per class (10 classes)')
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--frames', type=int, default=48, help='frames per clip')
    parser.add_argument('--n-frames', type=int, default=16, help='frames sampled per clip')
    parser.add_argument('--size', type=int, default=112, help='crop size')
    parser.add_argument('--batch', type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix='video-decoding-')
    try:
        start = time.perf_counter()
        root = make_synthetic_ssv2(f'{folder}/ssv2', n_train_per_class=args.per_class, n_val_per_class=1,
                                   height=args.height, width=args.width, n_frames=args.frames, length_jitter=4)
        print(f'wrote {args.per_class * 10 + 10} videos of {args.height}x{args.width} in {time.perf_counter() - start:.0f} s')
        dataset = SSv2Dataset(root, 'train', n_frames=args.n_frames, size=args.size)
        rates = {}
        for workers in (0, 1, 2):
            rates[workers] = clips_per_second(dataset, workers, args.batch)
            print(f'{workers} workers: {rates[workers]:6.1f} clips/s ({len(dataset)} clips, {args.n_frames} frames at {args.size} px)')
        print(f'ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f}')
        print(f'ratio 1 worker / main process: {rates[1] / rates[0]:.2f}')
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    main()
