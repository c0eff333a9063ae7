"""Window-store loading vs reading the raw file per window.

Builds a small simulated HBN-like BIDS dataset, writes its window store once, then times (a) reading random windows
from the store through `WindowDataset` (memory-mapped) and (b) what a loader without a store does for each window:
open the BIDS recording with mne-bids, preprocess it (filter, resample, re-reference) and cut the window.
Prints the time per window of each and their ratio, measured in this run.

    .venv/bin/python benchmarks/eeg_window_store.py
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuronb.eeg.data import (PreprocessConfig, WindowConfig, WindowDataset, build_bids_store, find_recordings,
                              preprocess, read_bids_recording, recording_windows)
from neuronb.eeg.simulate import simulate_bids


def main(n_store: int = 500, n_raw: int = 10, seed: int = 0):
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        roots = simulate_bids(Path(tmp) / 'bids', n_subjects_hbn=2, n_subjects_tuh=0, seed=seed)
        store = build_bids_store(roots['hbn'], Path(tmp) / 'store', corpus='hbn')
        dataset = WindowDataset(store)
        picks = rng.integers(len(dataset), size=n_store)
        dataset[0]  # open the memory map
        start = time.perf_counter()
        for i in picks: dataset[int(i)]
        store_s = (time.perf_counter() - start) / n_store
        paths = {p.fpath.name: p for p in find_recordings(roots['hbn'])}
        start = time.perf_counter()
        for i in picks[:n_raw]:
            row = store.windows.iloc[int(i)]
            raw, events = read_bids_recording(paths[row['recording']])
            x, meta = recording_windows(preprocess(raw, PreprocessConfig()), events, WindowConfig())
            x[int(np.argmin(np.abs(meta['t_start'].to_numpy() - row['t_start'])))]
        raw_s = (time.perf_counter() - start) / n_raw
    print(f"window store: {store_s * 1e3:.3f} ms per window ({n_store} random windows of {store.n_chans} x {store.n_times})")
    print(f"raw file per window (read + preprocess + cut): {raw_s * 1e3:.1f} ms per window ({n_raw} windows)")
    print(f"ratio raw / store: {raw_s / store_s:.0f}x")


if __name__ == '__main__':
    main()
