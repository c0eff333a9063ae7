"""The fMRI-reader bad-input catalogue (issue 8, section 4): text in a feature column, a truncated stimulus file, an
undeclared numeric column, n_frames=0, and errors that name the run and the TR (never a global TR index)."""
import numpy as np
import pandas as pd
import pytest

from neuronb.encoding.data import (EncodingData, frames_to_trs, read_npz, read_parquet, tr_labels,
                                   validate_encoding_data, write_npz, write_parquet)
from neuronb.encoding.simulate import simulate_encoding

FEATURES = [f'f{j}' for j in range(16)]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "A small simulation (4 runs of 40 TRs, 32 frames x 16 features) written as npz and as the two parquet tables."
    d = tmp_path_factory.mktemp('enc')
    data = EncodingData.from_simulation(simulate_encoding(n_runs=4, n_tr_per_run=40, n_voxels_per_group=4, seed=1))
    write_npz(data, d / 'sim.npz')
    write_parquet(data, d / 'stim.parquet', d / 'bold.parquet')
    return d, data


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as e: fn(*args, **kwargs)
    return str(e.value)


def test_text_in_a_feature_column_names_file_column_run_and_tr(files, tmp_path):
    d, _ = files
    table = pd.read_parquet(d / 'stim.parquet').astype({'f3': str})
    table.loc[1300, 'f3'] = 'n/a'  # frame 1300 = TR 40 (run 1, tr 0), frame 20
    table.to_parquet(tmp_path / 'text.parquet')
    msg = _error(read_parquet, tmp_path / 'text.parquet', d / 'bold.parquet', features=FEATURES)
    assert all(w in msg for w in ('text.parquet', "feature column 'f3'", "'n/a'", 'run 1', 'tr 0', 'expected numbers')), msg


def test_truncated_stimulus_parquet_names_the_file(files, tmp_path):
    d, _ = files
    data = (d / 'stim.parquet').read_bytes()
    (tmp_path / 'cut.parquet').write_bytes(data[:len(data) // 3])
    msg = _error(read_parquet, tmp_path / 'cut.parquet', d / 'bold.parquet')
    assert 'cut.parquet' in msg and 'not a readable parquet file' in msg and 'truncated' in msg, msg


def test_an_extra_numeric_column_never_becomes_a_feature_or_a_voxel(files, tmp_path):
    "Decision: only declared columns are values (features=/voxels=, or the lists write_parquet stores in the file)."
    d, data = files
    stim = pd.read_parquet(d / 'stim.parquet'); stim.insert(3, 'time_s', stim.tr * 1.5)
    bold = pd.read_parquet(d / 'bold.parquet'); bold['time_s'] = bold.tr * 1.5
    stim.to_parquet(tmp_path / 'stim.parquet'); bold.to_parquet(tmp_path / 'bold.parquet')  # pandas: nothing declared
    msg = _error(read_parquet, tmp_path / 'stim.parquet', tmp_path / 'bold.parquet')
    assert 'stim.parquet' in msg and 'which columns are features' in msg and 'features=[...]' in msg and 'time_s' in msg, msg
    voxels = [f'v{j}' for j in range(data.n_voxels)]
    back = read_parquet(tmp_path / 'stim.parquet', tmp_path / 'bold.parquet', features=FEATURES, voxels=voxels)
    assert back.n_features == 16 and back.n_voxels == data.n_voxels and np.array_equal(back.stimulus, data.stimulus)
    msg = _error(read_parquet, tmp_path / 'stim.parquet', tmp_path / 'bold.parquet', features=FEATURES + ['f99'], voxels=voxels)
    assert "['f99']" in msg and 'lacks' in msg, msg
    # a file written by write_parquet declares its columns: an extra column added later is ignored
    assert read_parquet(d / 'stim.parquet', d / 'bold.parquet').n_features == 16


@pytest.mark.parametrize('n_frames', [0, -2, 1.5])
def test_n_frames_must_be_a_positive_integer(files, n_frames):
    d, data = files
    frames = data.stimulus.reshape(-1, 16)
    frame_tr = np.repeat(np.arange(data.n_tr), 32)
    for call in (lambda: frames_to_trs(frames, frame_tr, n_frames=n_frames),
                 lambda: read_npz(d / 'sim.npz', n_frames=n_frames),
                 lambda: read_parquet(d / 'stim.parquet', d / 'bold.parquet', n_frames=n_frames)):
        msg = _error(call)
        assert 'n_frames must be an integer >= 1' in msg and repr(n_frames) in msg, msg


def test_errors_name_run_and_tr_not_a_global_index(files, tmp_path):
    d, data = files
    stim = data.stimulus.copy(); stim[85, 3, 2] = np.nan  # global TR 85 = run 2, TR 5
    msg = _error(validate_encoding_data, stim, data.bold, data.run)
    assert 'run 2, TR 5, frame 3, feature 2' in msg and '85' not in msg, msg
    bold = data.bold.copy(); bold[41, 7] = np.inf
    msg = _error(validate_encoding_data, data.stimulus, bold, data.run)
    assert 'run 1, TR 1, voxel 7' in msg, msg
    # ragged frames: the TR that lost a frame is named by its run and TR, in npz and parquet
    frame_tr = np.repeat(np.arange(data.n_tr), 32); frame_tr[32 * 121] = 120  # TR 121 = run 3, TR 1 lost a frame
    np.savez(tmp_path / 'ragged.npz', frames=data.stimulus.reshape(-1, 16), frame_tr=frame_tr, run=data.run, bold=data.bold)
    msg = _error(read_npz, tmp_path / 'ragged.npz')
    assert 'run 3, TR 0' in msg and 'run 3, TR 1' in msg, msg
    stim_table = pd.read_parquet(d / 'stim.parquet')
    stim_table = stim_table.drop(index=stim_table.index[(stim_table.run == 2) & (stim_table.tr == 7) & (stim_table.frame == 0)])
    stim_table.to_parquet(tmp_path / 'missing_frame.parquet')
    msg = _error(read_parquet, tmp_path / 'missing_frame.parquet', d / 'bold.parquet', features=FEATURES)
    assert 'missing_frame.parquet' in msg and 'run 2, tr 7' in msg and 'n_frames=32' in msg, msg
    assert tr_labels(np.array(['a', 'a', 'b']))[2] == "run 'b', TR 0"
