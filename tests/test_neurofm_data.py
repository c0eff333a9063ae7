"""NeuroFMx data: simulator, session format, token grid, splits and loaders (neuronb.neurofm.simulate / .data)."""
import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from neuronb.neurofm.data import (MODALITIES, SPECIES, GridConfig, Segment, check_segments, first_fraction, make_datasets,
                                  make_loaders, on_grid, read_nwb, read_session, resample, session_to_nwb, time_block_split,
                                  write_session)
from neuronb.neurofm.simulate import DEFAULT_MODALITIES, simulate_session, write_simulated


@pytest.fixture(scope='module')
def sessions():
    return [simulate_session(sp, duration_s=40.0, seed=k) for sp in ('mouse', 'monkey', 'human') for k in range(2)]


def test_simulator_is_deterministic_and_complete():
    a = simulate_session('monkey', modalities='all', duration_s=6.0, seed=4)
    b = simulate_session('monkey', modalities='all', duration_s=6.0, seed=4)
    c = simulate_session('monkey', modalities='all', duration_s=6.0, seed=5)
    assert a.modalities == list(MODALITIES)
    for m in MODALITIES:
        assert np.array_equal(a.signals[m], b.signals[m]), m
        assert a.signals[m].ndim == 2 and np.isfinite(a.signals[m]).all(), m
    assert not np.array_equal(a.signals['lfp'], c.signals['lfp'])
    assert (a.signals['spikes'] >= 0).all() and np.array_equal(a.signals['spikes'], a.signals['spikes'].round())


def test_species_observation_differs():
    "The dominant LFP rhythm is the species' own (8 / 20 / 10 Hz), so species are distinguishable from the data."
    from scipy import signal
    peaks = {}
    for sp in ('mouse', 'monkey', 'human'):
        s = simulate_session(sp, ('lfp',), duration_s=20.0, seed=0)
        f, p = signal.welch(s.signals['lfp'].mean(1), fs=s.sfreq['lfp'], nperseg=1024)
        band = (f > 5) & (f < 30)
        resid = np.log(p[band]) - np.polyval(np.polyfit(np.log(f[band]), np.log(p[band]), 1), np.log(f[band]))
        peaks[sp] = f[band][np.argmax(resid)]
    assert abs(peaks['mouse'] - 8) < 2 and abs(peaks['monkey'] - 20) < 4 and abs(peaks['human'] - 10) < 2.5, peaks


@pytest.mark.parametrize('mapping, low, high', [('linear', 0.55, 1.0), ('nonlinear', -1.0, 0.3)])
def test_behaviour_decodable_linearly_only_for_linear_latents(mapping, low, high):
    s = simulate_session('monkey', ('binned',), duration_s=60.0, latents=mapping, seed=2)
    rates = np.sqrt(resample(s.signals['binned'], 50.0, 10.0))
    velocity = resample(s.behavior[:, 2:], 50.0, 10.0)
    n = int(0.8 * len(rates))
    r2 = r2_score(velocity[n:], RidgeCV(alphas=np.logspace(-2, 4, 7)).fit(rates[:n], velocity[:n]).predict(rates[n:]))
    assert low < r2 < high, r2


def test_round_trip_and_grid(tmp_path):
    paths = write_simulated(tmp_path, species=('mouse',), n_sessions=1, duration_s=10.0)
    s = read_session(paths[0])
    assert s.species == 'mouse' and s.modalities == [m for m in MODALITIES if m in DEFAULT_MODALITIES['mouse']]
    g = on_grid(s, GridConfig())
    assert g.n_tokens == 99 and g.tokens['spikes'].shape == (99, 10, 40)  # calcium frames (30.3 Hz) end at 9.9 s
    assert g.tokens['calcium'].shape[1] == 1
    assert g.tokens['spikes'].sum() == pytest.approx(s.signals['spikes'][:9900].sum(), abs=1.0)  # counts conserved
    assert abs(g.behavior.mean()) < 1e-4 and np.allclose(g.behavior.std(0), 1, atol=1e-3)


def test_time_split_blocks_and_gap():
    splits = time_block_split('s', 2000, n_blocks=10, gap_tokens=20, seed=3)
    assert [len(v) for v in splits.values()] == [8, 1, 1]
    check_segments(splits, gap_tokens=20)
    with pytest.raises(ValueError, match='only 1 tokens apart'):
        check_segments({'train': [Segment('s', 0, 10, 0)], 'val': [Segment('s', 11, 20, 1)]}, gap_tokens=5)
    with pytest.raises(ValueError, match="appears in both"):
        check_segments({'train': [Segment('s', 0, 10, 0)], 'val': [Segment('s', 30, 40, 0)]})
    kept = first_fraction(splits['train'], 0.1)
    assert sum(k.stop - k.start for k in kept) == round(0.1 * sum(k.stop - k.start for k in splits['train']))
    assert min(k.start for k in kept) == min(k.start for k in splits['train'])


def test_loaders_batch_structure(sessions):
    loaders = make_loaders(sessions, batch_size=4, grid=GridConfig(window_tokens=16))
    ds = loaders['train'].dataset
    assert ds.modalities == [m for m in MODALITIES if m in {m for s in sessions for m in s.modalities}]
    batch = next(iter(loaders['train']))
    for m in ds.modalities:
        assert batch['signals'][m].shape == (4, 16, GridConfig().samples_per_token[m], ds.n_channels[m])
        absent = ~batch['present'][m]
        assert (batch['signals'][m][absent] == 0).all() and not batch['channel_mask'][m][absent].any()
    assert batch['behavior'].shape == (4, 16, 4) and batch['stimulus'].shape == (4, 16)
    species = [SPECIES[i] for i in batch['species']]
    for i, sp in enumerate(species):  # present modalities are the session's
        assert {m for m in ds.modalities if batch['present'][m][i]} == set(DEFAULT_MODALITIES[sp])
        assert batch['behavior_mask'][i].sum() == (2 if sp == 'mouse' else 4)
    # windows never leave their split's segments, and the shuffled order is reproducible
    again = next(iter(make_loaders(sessions, batch_size=4, grid=GridConfig(window_tokens=16))['train']))
    assert torch.equal(again['start'], batch['start']) and torch.equal(again['session'], batch['session'])


def test_session_split_keeps_sessions_whole(sessions):
    ds = make_datasets(sessions, grid=GridConfig(window_tokens=16), by='session', seed=1)
    seen = {k: {d.index[i][0] for i in range(len(d))} for k, d in ds.items()}
    assert all(seen.values()) and not (seen['train'] & seen['test']) and not (seen['train'] & seen['val'])
    assert set().union(*seen.values()) == {s.name for s in sessions}


def test_nwb_round_trip(tmp_path):
    s = simulate_session('mouse', ('spikes', 'lfp', 'calcium'), duration_s=6.0, seed=1)
    back = read_nwb(session_to_nwb(s, tmp_path / 'x.nwb'), spike_sfreq=1000.0)
    assert back.species == 'mouse' and back.modalities == ['spikes', 'lfp', 'calcium']
    n = len(back.signals['spikes'])
    assert n >= len(s.signals['spikes']) - 100  # cropped to the span all streams share (the last calcium frame)
    assert np.array_equal(back.signals['spikes'], s.signals['spikes'][:n])
    assert np.allclose(back.signals['calcium'], s.signals['calcium'][:len(back.signals['calcium'])], atol=1e-4)
    assert np.allclose(back.behavior, s.behavior[:len(back.behavior)], atol=1e-3)
