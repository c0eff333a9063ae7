"""LFP preprocessing on real recordings from ../shared/data/lfp (continuous recordings cut into pseudo-trials).

Skips with a reason when the folder is absent (set NEURONB_SHARED_DATA to its parent folder `data`)."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from neuronb.lfp.data import ParquetSequenceDataset, SpectrogramConfig, preprocess, trials_to_spectrograms

ROOT = Path(os.environ.get('NEURONB_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
LFP = ROOT / 'lfp'
pytestmark = pytest.mark.skipif(not LFP.is_dir(), reason=f"real LFP data not found at {LFP} (set NEURONB_SHARED_DATA)")


def _pseudo_trials(x, sfreq, onsets_s, pre_s, post_s):
    "Cut (n_trials, n_samples) windows [onset - pre, onset + post) from a continuous recording."
    n_pre, n = int(round(pre_s * sfreq)), int(round((pre_s + post_s) * sfreq))
    starts = [int(round(o * sfreq)) - n_pre for o in onsets_s]
    return np.stack([x[s:s + n] for s in starts if s >= 0 and s + n <= len(x)]).astype(np.float32)


def test_hippocampal_lfp_full_pipeline(tmp_path):
    "Rat hippocampal LFP (NeuroDSP sample_data_2, 1 kHz, 150 s) through readers, split, spectrograms and dataset."
    x = np.load(LFP / 'neurodsp' / 'sample_data_2.npy').astype(np.float32)
    sfreq = 1000.0
    tr = _pseudo_trials(x, sfreq, np.arange(0.2, 150 - 1.0, 1.25), 0.2, 1.0)  # 1.2 s pseudo-trials, onset at 0.2 s
    n = len(tr); per = n // 6
    rows = [{'session_id': f'seg{i // per}', 'animal_id': f'pseudo{i // per}', 'genotype': 'WT' if (i // per) % 2 == 0 else 'KO',
             'trial_index': i % per, 'sfreq': sfreq, 'stim_onset_s': 0.2, 'trace': tr[i]} for i in range(per * 6)]
    raw = tmp_path / 'raw.parquet'
    pd.DataFrame(rows).to_parquet(raw)
    stats = preprocess(str(raw), str(tmp_path / 'prep'), seed=0, chunk_size=32)
    assert sum(stats['n_trials'].values()) == per * 6 and stats['n_freqs'] == 12
    spec = np.stack(pq.read_table(tmp_path / 'prep' / 'train.parquet').column('spec').to_numpy(zero_copy_only=False))
    spec = spec.reshape(len(spec), stats['n_freqs'], stats['n_times'])
    assert np.isfinite(spec).all()
    f = np.asarray(stats['freqs']); m = np.asarray(stats['mean'])
    # physiology: theta (about 8 Hz) dominates hippocampal LFP, power falls with frequency (1/f)
    assert m[np.argmin(abs(f - 8))] > m[np.argmin(abs(f - 50))] + 1.0, m.round(2)
    assert np.corrcoef(np.log(f), m)[0, 1] < -0.8
    ds = ParquetSequenceDataset(tmp_path / 'prep' / 'train.parquet', n_trials=4)
    assert ds[0]['x'].shape == (4, stats['n_freqs'], stats['n_times'])


def test_human_m1_spectrograms():
    "Human M1 LFP (NeuroDSP sample_data_1, 1 kHz, 10 s): beta (13-30 Hz) stands out above the 1/f trend."
    x = np.load(LFP / 'neurodsp' / 'sample_data_1.npy').astype(np.float32)
    tr = _pseudo_trials(x, 1000.0, np.arange(0.2, 9.0, 1.25), 0.2, 1.0)
    cfg = SpectrogramConfig(win_s=0.256, hop_s=0.128, fmin=4, fmax=60)
    s = trials_to_spectrograms(tr, 1000.0, 0.2, cfg)
    f, _ = cfg.shape(1000.0)
    assert s.shape[0] == len(tr) and np.isfinite(s).all()
    m = s.mean((0, 2))
    resid = m - np.polyval(np.polyfit(np.log(f), m, 1), np.log(f))  # remove the 1/f trend
    assert resid[(f >= 13) & (f <= 30)].max() > resid[(f > 35)].max(), resid.round(2)


def test_ca1_ripple_locked_pseudo_trials():
    "Rat CA1 (800 Hz): pseudo-trials locked to detected ripples have more 150-250 Hz power than random-time ones."
    import scipy.io as sio
    d = sio.loadmat(LFP / 'ca1_example' / 'example_tr_data.mat', squeeze_me=True, struct_as_record=False)['tr_data']
    x, t = np.asarray(d.lfp_raw, np.float32), np.asarray(d.lfp_times)
    sfreq = 1 / np.median(np.diff(t))
    assert abs(sfreq - 800) < 1
    cfg = SpectrogramConfig(baseline_s=(-0.1, 0.0), response_s=(0.0, 0.1), win_s=0.04, hop_s=0.02, fmin=100, fmax=300)
    rip = _pseudo_trials(x, sfreq, np.asarray(d.ripples_se)[:, 0] - t[0], 0.1, 0.1)
    rng = np.random.default_rng(0)
    ctrl = _pseudo_trials(x, sfreq, rng.uniform(0.2, t[-1] - t[0] - 0.2, 60), 0.1, 0.1)
    f, _ = cfg.shape(sfreq)
    band = (f >= 150) & (f <= 250)
    sr = trials_to_spectrograms(rip, sfreq, 0.1, cfg)[:, band].mean((1, 2))
    sc = trials_to_spectrograms(ctrl, sfreq, 0.1, cfg)[:, band].mean((1, 2))
    assert len(sr) >= 8 and np.median(sr) > np.median(sc) + 0.3, (np.median(sr), np.median(sc))
