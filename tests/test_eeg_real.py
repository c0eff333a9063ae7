"""EEG readers and preprocessing on real recordings from ../shared/data/eeg: EEGMMIDB S001 (EDF), the EEGLAB sample
and its BIDS tree, and vendor-format clips. Skips with a reason when the folder is absent (set NEURONB_SHARED_DATA
to its parent folder `data`)."""
import os
from pathlib import Path

import mne
import numpy as np
import pytest

from neuronb.eeg.data import (PreprocessConfig, WindowConfig, chs_info, eegmmidb_eyes_store, find_recordings, preprocess,
                              read_bids_recording, read_participants, read_raw, recording_windows, set_montage, time_split)

ROOT = Path(os.environ.get('NEURONB_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
EEG = ROOT / 'eeg'
pytestmark = pytest.mark.skipif(not EEG.is_dir(), reason=f"real EEG data not found at {EEG} (set NEURONB_SHARED_DATA)")


def _alpha(x, sfreq):
    f = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
    p = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    return p[..., (f >= 8) & (f < 13)].sum(-1)


def test_eegmmidb_eyes_open_closed_store(tmp_path):
    store = eegmmidb_eyes_store(tmp_path / 'store', folder=EEG / 'eegmmidb_S001')
    assert (store.n_chans, store.n_times, store.sfreq) == (64, 200, 100.0)
    assert store.windows.groupby('condition').size().to_dict() == {'eyes_closed': 30, 'eyes_open': 30}
    assert 'O1' in store.ch_names and np.isfinite(store.chs_info[0]['loc'][:3]).all()
    halves = time_split(store, 0.3)
    assert not set(halves['train']) & set(halves['test']) and len(halves['train']) + len(halves['test']) == 60
    window_s = store.n_times / store.sfreq
    for recording, rows in store.windows.groupby('recording'):
        train_end = (rows.loc[rows.index.isin(halves['train']), 't_start'] + window_s).max()
        test_start = rows.loc[rows.index.isin(halves['test']), 't_start'].min()
        assert train_end <= test_start, f"{recording}: train and test windows overlap in time"
    # the Berger effect on the real data: more occipital alpha with the eyes closed
    occipital = [store.ch_names.index(c) for c in ('O1', 'Oz', 'O2')]
    power = {c: np.mean([_alpha(store.read(i)[occipital], 100.0).mean() for i in np.flatnonzero(store.windows['condition'] == c)])
             for c in ('eyes_open', 'eyes_closed')}
    assert power['eyes_closed'] > 1.5 * power['eyes_open']


def test_eegmmidb_motor_run_annotations():
    raw = read_raw(EEG / 'eegmmidb_S001' / 'S001R03.edf')
    assert set(raw.annotations.description) == {'T0', 'T1', 'T2'} and raw.info['sfreq'] == 160.0
    mne.datasets.eegbci.standardize(raw)
    set_montage(raw, 'colin27_1005')
    clean = preprocess(raw, PreprocessConfig(sfreq=100.0))
    events = raw.annotations.to_data_frame(time_format=None).rename(columns={'description': 'trial_type'})
    x, meta = recording_windows(clean, events, WindowConfig(segments=('T1', 'T2'), window_s=2.0, stride_s=1.0))
    assert len(x) > 20 and set(meta['condition']) == {'T1', 'T2'} and np.isfinite(x).all()


def test_eeglab_sample_and_its_bids_tree():
    sample = EEG / 'eeglab_sample'
    raw = read_raw(sample / 'eeglab_data.set')
    assert len(raw.ch_names) == 32 and raw.info['sfreq'] == 128.0
    raw.set_montage(mne.channels.read_custom_montage(sample / 'eeglab_chan32.locs'), verbose='error')
    assert len(chs_info(raw)) == 32
    clean = preprocess(raw, PreprocessConfig(sfreq=64.0, h_freq=30.0))
    assert clean.info['sfreq'] == 64.0 and np.isfinite(clean.get_data()).all()
    root = sample / 'BIDS_test'
    paths = find_recordings(root)
    assert [p.subject for p in paths] == ['S1']
    bids_raw, events = read_bids_recording(paths[0])
    assert bids_raw.n_times > 0 and {'onset', 'duration', 'trial_type'} <= set(events.columns)
    people = read_participants(root, ('Age', 'Gender'))
    assert people.loc['S1', 'Age'] == 32
    with pytest.raises(ValueError, match=r"participants\.tsv: no column\(s\) \['age'\]"):
        read_participants(root, ('age',))


VENDOR = ['EDF/test_reduced.edf', 'BDF/test_bdf_stim_channel.bdf', 'Brainvision/test_NO.vhdr', 'EEGLAB/test_raw.set',
          'CNT/scan41_short.cnt', 'NihonKohden/MB0400FU.EEG', 'Persyst/sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.lay',
          'data_resting_EO_200Hz_raw.fif']


READER_OPTIONS = {'CNT/scan41_short.cnt': {'data_format': 'int16'}}  # its header gives no sample count


@pytest.mark.parametrize('name', VENDOR)
def test_vendor_formats_read_and_preprocess(name):
    raw = read_raw(EEG / 'formats' / name, **READER_OPTIONS.get(name, {}))
    assert raw.n_times > 0 and raw.info['sfreq'] > 0
    eeg = mne.pick_types(raw.info, eeg=True, seeg=True, ecog=True)
    assert len(eeg) >= 2
    raw.set_channel_types({raw.ch_names[i]: 'eeg' for i in eeg}, verbose='error')
    target = 100.0 if raw.info['sfreq'] >= 100 else raw.info['sfreq']
    clean = preprocess(raw, PreprocessConfig(sfreq=target, l_freq=1.0, h_freq=min(40.0, target / 2 - 5)), where=name)
    assert clean.info['sfreq'] == target and np.isfinite(clean.get_data()).all()
    good = [i for i, n in enumerate(clean.ch_names) if n not in clean.info['bads']]
    assert np.abs(clean.get_data()[good].mean(0)).max() < 1e-9  # average reference (MNE leaves bad channels out of it)
    if name in READER_OPTIONS:  # the reader option decides the sample format: the amplitudes are EEG's (tens of uV)
        assert 1e-6 < np.median(np.abs(clean.get_data()[good])) < 1e-3
