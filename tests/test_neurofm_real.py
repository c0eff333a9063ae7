"""NeuroFMx readers on the real recordings in ../shared/data: each reader gives a valid session, and position is
decodable from the linear-track place cells on held-out time blocks (lagged ridge vs a shuffled control).

Skips with a reason when the folder is absent (set NEURONB_SHARED_DATA to its parent folder `data`)."""
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from neuronb.neurofm.data import GridConfig, make_datasets, make_splits, on_grid, read_ca1_example, read_eegmmidb, read_linear_track, read_session, write_session

ROOT = Path(os.environ.get('NEURONB_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
pytestmark = pytest.mark.skipif(not (ROOT / 'spikes' / 'nelpy_linear_track').is_dir(), reason=f"real data not found at {ROOT} (set NEURONB_SHARED_DATA)")


@pytest.fixture(scope='module')
def track():
    return read_linear_track(ROOT / 'spikes' / 'nelpy_linear_track')


def test_readers_give_valid_sessions(track, tmp_path):
    ca1 = read_ca1_example(ROOT / 'lfp' / 'ca1_example' / 'example_tr_data.mat')
    run = read_eegmmidb(ROOT / 'eeg' / 'eegmmidb_S001' / 'S001R03.edf')
    assert track.species == 'rat' and track.signals['spikes'].shape[1] == 31 and 900 < track.duration() < 1000
    assert track.behavior[:, 0].max() - track.behavior[:, 0].min() > 300  # pixels along the track
    assert ca1.modalities == ['spikes', 'lfp'] and ca1.signals['spikes'].shape[1] == 94 and ca1.sfreq['lfp'] == 800.0
    assert ca1.signals['spikes'].sum() > 500
    assert run.signals['eeg'].shape == (20000, 64) and set(np.unique(run.stimulus)) == {0.0, 1.0, 2.0}
    assert 5 < np.median(np.abs(run.signals['eeg'])) < 100  # microvolts
    for s in (track, ca1, run):
        back = read_session(write_session(tmp_path / f"{s.name}.npz", s))
        assert back.modalities == s.modalities and np.array_equal(back.behavior, s.behavior)
    ds = make_datasets([ca1, run], grid=GridConfig(window_tokens=16), n_blocks=5, gap_s=1.0)
    batch = ds['train'][0]
    assert set(batch['signals']) == {'spikes', 'lfp', 'eeg'}


def _lagged(x, lags):
    "Stack x shifted by 0..lags-1 tokens into the past (a Wiener filter's design matrix)."
    return np.concatenate([np.roll(x, k, 0) for k in range(lags)], 1)


def test_place_cells_decode_position_on_held_out_blocks(track):
    g = on_grid(track, GridConfig())
    counts = np.log1p(g.tokens['spikes'].sum(1))  # (n_tokens, units), 100 ms bins
    position = g.behavior[:, 0]
    splits = make_splits([g], n_blocks=10, gap_s=2.0, token_rate=10.0, seed=0)
    rows = {k: np.concatenate([np.arange(s.start + 5, s.stop) for s in v]) for k, v in splits.items()}  # skip the lags' warm-up
    design = _lagged(counts, 5)
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 6)).fit(design[rows['train']], position[rows['train']])
    r2 = r2_score(position[rows['test']], ridge.predict(design[rows['test']]))
    # control: the same decoder trained on position shuffled in 10 s chunks (breaks the spike-position pairing)
    rng = np.random.default_rng(0)
    chunks = np.array_split(rows['train'], len(rows['train']) // 100)
    shuffled = np.concatenate([position[chunks[i]] for i in rng.permutation(len(chunks))])
    control = RidgeCV(alphas=np.logspace(-1, 4, 6)).fit(design[rows['train']], shuffled)
    r2_control = r2_score(position[rows['test']], control.predict(design[rows['test']]))
    print(f"linear track, held-out blocks: ridge R2 {r2:.2f}, shuffled control {r2_control:.2f}")
    assert r2 > 0.3 and r2_control < 0.05 and r2 > r2_control + 0.3
