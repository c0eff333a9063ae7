"""EEG data layer on the simulator: BIDS round trip, preprocessing, windows, the window store, datasets, subject
splits and the mixed loader's sampling weights."""
import numpy as np
import pandas as pd
import pytest
import torch

from neuronb.eeg.data import (TARGETS, PreprocessConfig, WindowConfig, WindowDataset, WindowStore, build_bids_store,
                              chs_info, find_recordings, mixed_loader, preprocess, read_bids_recording, read_participants,
                              recording_windows, subject_split, target_table, write_window_store)
from neuronb.eeg.simulate import (HBN_MONTAGE, SimConfig, montage_positions, simulate_bids, simulate_participants,
                                  simulate_recording)


@pytest.fixture(scope='module')
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp('eeg')
    roots = simulate_bids(root / 'bids', n_subjects_hbn=3, n_subjects_tuh=2, n_trials=8, movie_s=20.0, rest_block_s=8.0)
    hbn = build_bids_store(roots['hbn'], root / 'hbn_store', corpus='hbn')
    tuh = build_bids_store(roots['tuh'], 'memory://test-eeg-data/tuh', corpus='tuh', preprocessing=PreprocessConfig(notch=60.0),
                           overwrite=True)
    return roots, hbn, tuh


def _band_power(x, sfreq, low, high):
    f = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
    return (np.abs(np.fft.rfft(x, axis=-1)) ** 2)[..., (f >= low) & (f < high)].sum(-1)


def test_bids_files_hold_the_simulated_signal_and_demographics_keep_missing(corpora):
    roots, _, _ = corpora
    table = read_participants(roots['hbn'])
    expected = simulate_participants(3, 'hbn', seed=0, missing_fraction=0.15).set_index('participant_id')
    assert np.allclose(table['age'].to_numpy(), expected['age'].to_numpy())
    assert table['externalizing'].isna().to_numpy().tolist() == expected['externalizing'].isna().to_numpy().tolist()
    many = simulate_participants(300, 'hbn', seed=0)
    assert 0.08 < many['attention'].isna().mean() < 0.25  # missing values stay missing
    assert read_participants(roots['tuh'])['externalizing'].isna().all()
    # the recording on disk is the simulated signal (vertex-referenced, microvolts), deterministic from the seed
    complete = simulate_participants(3, 'hbn', seed=0, missing_fraction=0.0)
    names, positions = montage_positions(HBN_MONTAGE)
    config = SimConfig(n_subjects_hbn=3, n_subjects_tuh=2, n_trials=8, movie_s=20.0, rest_block_s=8.0)
    x, events = simulate_recording(complete.iloc[0], 'RestingState', names, positions, 100.0, config, 0)
    raw, written = read_bids_recording(find_recordings(roots['hbn'], tasks=['RestingState'], subjects=['NDARSIM001'])[0])
    assert np.allclose(raw.get_data() * 1e6, x - x[names.index('Cz')], atol=1e-3)
    assert written['trial_type'].tolist() == events['trial_type'].tolist()


def test_store_holds_windows_metadata_and_chs_info(corpora):
    roots, hbn, tuh = corpora
    assert (hbn.n_chans, hbn.n_times, hbn.sfreq) == (129, 200, 100.0) and (tuh.n_chans, tuh.sfreq) == (21, 100.0)
    assert set(hbn.windows['condition']) == {'eyes_open', 'eyes_closed', 'movie', 'contrast_change'}
    # the store holds exactly what the pipeline computes from the raw recording
    path = find_recordings(roots['hbn'], tasks=['RestingState'])[1]
    raw, events = read_bids_recording(path)
    x, meta = recording_windows(preprocess(raw, PreprocessConfig()), events, WindowConfig())
    rows = np.flatnonzero(hbn.windows['recording'] == path.fpath.name)
    assert len(rows) == len(x) and np.allclose(np.stack([hbn.read(i) for i in rows]), x, atol=1e-5)
    assert [c['ch_name'] for c in hbn.chs_info] == raw.ch_names
    assert np.allclose(hbn.chs_info[5]['loc'][:3], chs_info(raw)[5]['loc'][:3])


def test_eyes_closed_windows_carry_more_alpha(corpora):
    _, hbn, _ = corpora
    occipital = [hbn.ch_names.index(c) for c in ('E70', 'E75', 'E83')]
    power = {cond: np.mean([_band_power(hbn.read(i)[occipital], 100.0, 7, 11).mean()
                            for i in np.flatnonzero(hbn.windows['condition'] == cond)]) for cond in ('eyes_open', 'eyes_closed')}
    assert power['eyes_closed'] > 2 * power['eyes_open']


def test_movie_windows_are_time_locked_across_subjects(corpora):
    _, hbn, _ = corpora
    movie = hbn.windows[hbn.windows['condition'] == 'movie']
    temporal = [hbn.ch_names.index(c) for c in ('E58', 'E96')]
    same, shifted = [], []
    subjects = sorted(movie['subject'].unique())
    a = movie[movie['subject'] == subjects[0]].sort_values('movie_time')
    b = movie[movie['subject'] == subjects[1]].sort_values('movie_time')
    assert np.allclose(a['movie_time'].to_numpy(), b['movie_time'].to_numpy())
    for k, (i, j) in enumerate(zip(a.index, b.index)):
        xi, xj = hbn.read(i)[temporal].ravel(), hbn.read(j)[temporal].ravel()
        same.append(np.corrcoef(xi, xj)[0, 1])
        xs = hbn.read(b.index[(k + 3) % len(b)])[temporal].ravel()
        shifted.append(np.corrcoef(xi, xs)[0, 1])
    assert np.mean(same) > 0.2 and abs(np.mean(shifted)) < 0.15


def test_stimulus_windows_carry_response_times(corpora):
    roots, hbn, _ = corpora
    task = hbn.windows[hbn.windows['kind'] == 'stimulus']
    assert len(task) == 3 * 8 and task['rt'].between(0.25, 2.0).all()
    path = find_recordings(roots['hbn'], tasks=['contrastChangeDetection'])[0]
    _, events = read_bids_recording(path)
    stimuli = events[events['trial_type'] == 'contrast_change']
    mine = task[task['recording'] == path.fpath.name]
    assert np.allclose(mine['t_start'].to_numpy(), stimuli['onset'].to_numpy(), atol=0.011)
    assert np.allclose(mine['rt'].to_numpy(), stimuli['response_time'].to_numpy())


def test_resampling_250_to_100_keeps_alpha_and_removes_line_noise():
    import mne
    sfreq, n = 250.0, 2500
    t = np.arange(n) / sfreq
    signal = np.stack([20e-6 * np.sin(2 * np.pi * 10 * t) + 5e-6 * np.sin(2 * np.pi * 60 * t)] * 4)
    raw = mne.io.RawArray(signal, mne.create_info(['a', 'b', 'c', 'd'], sfreq, 'eeg'), verbose='error')
    clean = preprocess(raw, PreprocessConfig(sfreq=100.0, l_freq=None, h_freq=40.0, reference=None), where='sines')
    assert clean.info['sfreq'] == 100.0 and clean.n_times == 1000
    y = clean.get_data()[0, 200:800] * 1e6  # away from the edges
    tt = np.arange(200, 800) / 100.0
    amplitude_10 = 2 * abs(np.mean(y * np.exp(-2j * np.pi * 10 * tt)))
    amplitude_40 = 2 * abs(np.mean(y * np.exp(-2j * np.pi * 40 * tt)))  # where 60 Hz would alias at 100 Hz
    assert abs(amplitude_10 - 20) < 1.0 and amplitude_40 < 0.1


def test_dataset_targets(corpora):
    _, hbn, _ = corpora
    ds = WindowDataset(hbn, scale=0.01)
    x, y = ds[0]
    assert x.shape == (129, 200) and x.dtype == torch.float32 and set(y) == set(TARGETS)
    assert torch.allclose(x, torch.from_numpy(hbn.read(0)) * 0.01)
    table = target_table(hbn)
    rest = hbn.windows['condition'].isin(['eyes_open', 'eyes_closed'])
    assert table.loc[rest, 'eyes_closed'].notna().all() and table.loc[~rest, 'eyes_closed'].isna().all()
    assert table.loc[hbn.windows['kind'] == 'stimulus', 'rt'].notna().all() and table.loc[rest, 'rt'].isna().all()
    subjects = hbn.subjects
    for i in (0, len(hbn) - 1):
        _, y = ds[i]
        age = subjects['age'].iloc[int(y['subject'])]
        assert np.isclose(float(y['age']), age)
    assert table['externalizing'].isna().any() == subjects['externalizing'].isna().any()


def test_subject_split_never_splits_a_subject(corpora):
    _, hbn, _ = corpora
    splits = subject_split(hbn, (1 / 3, 1 / 3, 1 / 3), seed=1)
    owners = {name: set(hbn.windows['subject'].iloc[idx]) for name, idx in splits.items()}
    assert all(len(s) == 1 for s in owners.values()) and len(set.union(*owners.values())) == 3
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(hbn)))


def test_mixed_loader_weights_hold_every_epoch(corpora):
    _, hbn, tuh = corpora
    loader = mixed_loader({'hbn': WindowDataset(hbn), 'tuh': WindowDataset(tuh)}, {'hbn': 0.7, 'tuh': 0.3},
                          batch_size=4, n_batches=30, seed=3)
    orders = []
    for epoch in range(3):
        loader.batch_sampler.set_epoch(epoch)
        counts = np.zeros(2)
        order, tuh_seen = [], set()
        for x, y in loader:
            corpus = int(y['corpus'][0])
            assert (y['corpus'] == corpus).all() and x.shape[1:] == ((129, 200), (21, 200))[corpus]
            counts[corpus] += len(x)
            order.append((corpus, y['window'].tolist()))
            if corpus == 1: tuh_seen |= set(y['window'].tolist())
        assert counts[0] / counts.sum() == pytest.approx(0.7)
        assert counts[1] >= len(tuh) and tuh_seen == set(range(len(tuh)))  # the small corpus is cycled through whole
        orders.append(order)
    assert orders[0] != orders[1]  # a fresh order per epoch
    loader.batch_sampler.set_epoch(0)
    assert [(int(y['corpus'][0]), y['window'].tolist()) for _, y in loader] == orders[0]  # it depends on (seed, epoch) only


def test_mixed_loader_refuses_different_rates(corpora, tmp_path):
    roots, hbn, _ = corpora
    other = build_bids_store(roots['tuh'], tmp_path / 'tuh125', corpus='tuh',
                             preprocessing=PreprocessConfig(sfreq=125.0, h_freq=40.0),
                             windows=WindowConfig(window_s=1.6, stride_s=1.6))
    with pytest.raises(ValueError, match='different sampling rates'):
        mixed_loader({'hbn': WindowDataset(hbn), 'tuh': WindowDataset(other)}, {'hbn': 0.5, 'tuh': 0.5})


def test_store_is_written_once(corpora, tmp_path):
    _, hbn, _ = corpora
    x = np.stack([hbn.read(i) for i in range(3)])
    meta = hbn.windows.iloc[:3]
    url = tmp_path / 'store'
    write_window_store(url, [(x, meta)], hbn.subjects, hbn.chs_info, 100.0, 'hbn')
    with pytest.raises(FileExistsError, match='already exists'):
        write_window_store(url, [(x, meta)], hbn.subjects, hbn.chs_info, 100.0, 'hbn')
    again = WindowStore(url)
    assert np.array_equal(np.stack([again.read(i) for i in range(3)]), x)
