"""Bad input to the EEG data layer: clear errors naming the file, channel or column, raised before anything is
written; a window store is never left half-written."""
import json

import mne
import numpy as np
import pandas as pd
import pytest

from neuronb.eeg.channels import ChannelAdapter, normalized_positions
from neuronb.eeg.data import (PreprocessConfig, WindowConfig, WindowStore, chs_info, find_recordings, preprocess,
                              read_participants, recording_windows, set_montage, write_window_store)
from neuronb.eeg.simulate import TUH_CHANNELS, write_brainvision


def _raw(tmp_path, names=TUH_CHANNELS, sfreq=250.0, seconds=4.0, name='rec.vhdr', data=None):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((len(names), int(sfreq * seconds))).astype(np.float32) * 10 if data is None else data
    path = write_brainvision(tmp_path / name, data, list(names), sfreq)
    return mne.io.read_raw_brainvision(path, preload=True, verbose='error'), path


def test_unknown_channel_names_are_named(tmp_path):
    raw, path = _raw(tmp_path, names=list(TUH_CHANNELS[:-2]) + ['XYZ1', 'Chan99'])
    with pytest.raises(ValueError, match=r"rec\.vhdr.*'XYZ1', 'Chan99'.*not in the montage"):
        set_montage(raw, 'colin27_1005', str(path))


def test_montage_without_positions(tmp_path):
    raw, path = _raw(tmp_path)
    with pytest.raises(ValueError, match=r"rec\.vhdr.*'Fp1'.*no 3D position"):
        chs_info(raw, str(path))
    adapter = ChannelAdapter(d_model=16, n_heads=2)
    with pytest.raises(ValueError, match=r"'Fp1'.*no 3D position"):
        adapter.inputs_for(raw.info['chs'])
    with pytest.raises(ValueError, match='no 3D position'):
        normalized_positions(np.full((5, 3), np.nan))


def test_sampling_rates_that_do_not_divide(tmp_path):
    raw, path = _raw(tmp_path)
    with pytest.raises(ValueError, match=r"rec\.vhdr: 250 Hz cannot be decimated to 100 Hz"):
        preprocess(raw, PreprocessConfig(sfreq=100.0, resample='decimate'), str(path))
    assert preprocess(raw, PreprocessConfig(sfreq=125.0, h_freq=40.0, resample='decimate'), str(path)).info['sfreq'] == 125.0
    clean = preprocess(raw, PreprocessConfig(sfreq=100.0), str(path))
    with pytest.raises(ValueError, match=r"rec\.vhdr: window_s=1.234 s at 100 Hz is 123.4 samples"):
        recording_windows(clean, pd.DataFrame({'onset': [], 'duration': [], 'trial_type': []}), WindowConfig(window_s=1.234), str(path))
    with pytest.raises(ValueError, match='Nyquist'):
        PreprocessConfig(sfreq=100.0, h_freq=60.0)


def test_annotations_outside_the_recording(tmp_path):
    raw, path = _raw(tmp_path)
    events = pd.DataFrame({'onset': [1.0, 3.0], 'duration': [1.0, 5.0], 'trial_type': ['eyes_open', 'eyes_closed']})
    with pytest.raises(ValueError, match=r"rec\.vhdr: event 'eyes_closed' at 3 s \(to 8 s\) lies outside the recording \(0 to 4.00 s\)"):
        recording_windows(preprocess(raw, PreprocessConfig(), str(path)), events, WindowConfig(), str(path))


def test_participants_without_the_requested_column(tmp_path):
    root = tmp_path / 'bids'
    (root / 'sub-01' / 'eeg').mkdir(parents=True)
    (root / 'dataset_description.json').write_text(json.dumps({'Name': 'x', 'BIDSVersion': '1.8.0'}))
    pd.DataFrame({'participant_id': ['sub-01'], 'age': [10.0], 'sex': ['F']}).to_csv(root / 'participants.tsv', sep='\t', index=False)
    with pytest.raises(ValueError, match=r"participants\.tsv: no column\(s\) \['externalizing'\]"):
        read_participants(root, ('age', 'externalizing'))
    assert read_participants(root, ('age',))['age'].tolist() == [10.0]


def test_a_folder_that_is_not_bids(tmp_path):
    (tmp_path / 'notbids').mkdir()
    (tmp_path / 'notbids' / 'rec.edf').write_bytes(b'0')
    with pytest.raises(ValueError, match=r"notbids is not a BIDS dataset: it has no dataset_description\.json"):
        find_recordings(tmp_path / 'notbids')
    with pytest.raises(FileNotFoundError, match='not a folder'):
        find_recordings(tmp_path / 'missing')


def test_nan_segments_are_named_and_nothing_is_written(tmp_path):
    data = np.random.default_rng(0).standard_normal((21, 1000)).astype(np.float32)
    data[3, 500:600] = np.nan
    raw, path = _raw(tmp_path, data=data)
    with pytest.raises(ValueError, match=r"rec\.vhdr: channel 'F3' has 100 NaN or infinite samples from 2.00 s"):
        preprocess(raw, PreprocessConfig(), str(path))
    # a store fed a NaN window in its second part: no manifest, no array, no temporary file
    good, path_good = _raw(tmp_path, name='good.vhdr')
    set_montage(good, 'colin27_1005')
    clean = preprocess(good, PreprocessConfig())
    x, meta = recording_windows(clean, pd.DataFrame({'onset': [], 'duration': [], 'trial_type': []}), WindowConfig(),
                                str(path_good), subject='s1')
    bad = x.copy()
    bad[1, 4, 10] = np.nan
    subjects = pd.DataFrame({'age': [9.0]}, index=pd.Index(['s1'], name='subject'))
    url = tmp_path / 'store'
    with pytest.raises(ValueError, match=r"good\.vhdr: window at 2.00 s has NaN or infinite samples in channel 'Fz'"):
        write_window_store(url, [(x, meta), (bad, meta)], subjects, chs_info(clean), 100.0)
    assert not url.exists() or sorted(p.name for p in url.iterdir()) == []
    with pytest.raises(FileNotFoundError, match='manifest.json is missing'):
        WindowStore(url)
    # an existing store survives a failed overwrite
    write_window_store(url, [(x, meta)], subjects, chs_info(clean), 100.0)
    with pytest.raises(ValueError, match='NaN'):
        write_window_store(url, [(bad, meta)], subjects, chs_info(clean), 100.0, overwrite=True)
    assert np.array_equal(WindowStore(url).read(1), x[1]) and not [p for p in url.iterdir() if '.tmp' in p.name]
    with pytest.raises(ValueError, match=r"subject\(s\) \['s2'\] are not in the demographics"):
        write_window_store(tmp_path / 'other', [(x, meta.assign(subject='s2'))], subjects, chs_info(clean), 100.0)
