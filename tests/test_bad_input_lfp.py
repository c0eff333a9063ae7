"""The LFP bad-input catalogue (issue 8, section 4): every case gives a clear error naming the file, column, session
or parameter and what was expected, and leaves nothing half-written (no output folder, no hidden temporary file)."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuronb.lfp.baseline import run_baseline, trial_quantities
from neuronb.lfp.data import ParquetSequenceDataset, SQLTrials, preprocess, remove_stale_temps
from neuronb.lfp.simulate import write_simulated


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    "A small simulated cohort (8 animals x 16 trials), written with page checksums."
    return write_simulated(str(tmp_path_factory.mktemp('raw') / 'raw.parquet'), n_animals=8, n_trials=16, seed=0)


@pytest.fixture(scope='module')
def frame(raw):
    return pq.read_table(raw).to_pandas()


def _nothing_written(folder):
    "No output folder, and no hidden file left beside it."
    parent = os.path.dirname(folder)
    assert not os.path.exists(folder), os.listdir(folder)
    assert not [f for f in os.listdir(parent) if f.startswith('.')], os.listdir(parent)


def _refused(source, tmp_path, *words, error=ValueError, **kwargs):
    "preprocess(source) raises `error` whose message holds every word, and writes nothing."
    out = str(tmp_path / 'out')
    with pytest.raises(error) as e: preprocess(source, out, **kwargs)
    assert all(w in str(e.value) for w in words), f"{e.value!r} lacks {words}"
    _nothing_written(out)
    return str(e.value)


def _write(df, path, **kwargs):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, **kwargs)
    return str(path)


def test_one_genotype_is_an_error_in_preprocess(frame, tmp_path):
    only_wt = _write(frame[frame.genotype == 'WT'], tmp_path / 'wt.parquet')
    _refused(only_wt, tmp_path, 'wt.parquet', "'genotype'", "['KO']", 'needs trials')


def test_empty_table(frame, tmp_path):
    empty = _write(frame.iloc[:0], tmp_path / 'empty.parquet')
    _refused(empty, tmp_path, 'empty.parquet', 'empty')


@pytest.mark.parametrize('column, value, words', [
    ('trace', 1.5, ["'trace'", 'double', 'list<float32>']),  # a scalar instead of an array
    ('trace', ['a', 'b'], ["'trace'", 'list<string>', 'array of numbers']),  # text samples
    ('stim_onset_s', '0.2', ["'stim_onset_s'", 'string', 'a number']),
    ('sfreq', 'fast', ["'sfreq'", 'string', 'a number']),
])
def test_wrong_types_name_file_and_column(frame, tmp_path, column, value, words):
    bad = frame.copy()
    bad[column] = [value] * len(bad)
    _refused(_write(bad, tmp_path / 'typed.parquet'), tmp_path, 'typed.parquet', *words)


def test_fractional_trial_index(frame, tmp_path):
    bad = frame.copy()
    bad['trial_index'] = bad.trial_index.astype(float)
    bad.loc[3, 'trial_index'] = 2.5
    _refused(_write(bad, tmp_path / 'frac.parquet'), tmp_path, "'trial_index'", 'whole numbers', '2.5', bad.session_id[3])
    # whole numbers stored as floats are fine
    ok = frame.copy(); ok['trial_index'] = ok.trial_index.astype(float)
    stats = preprocess(_write(ok, tmp_path / 'float_index.parquet'), str(tmp_path / 'ok'))
    assert sum(stats['n_trials'].values()) == len(ok)


def test_text_in_a_sql_trace(frame, tmp_path):
    con = sqlite3.connect(':memory:')
    con.execute('CREATE TABLE t (session_id TEXT, animal_id TEXT, genotype TEXT, trial_index INT, sfreq REAL, '
                'stim_onset_s REAL, trace BLOB)')
    rows = [(r.session_id, r.animal_id, r.genotype, int(r.trial_index), r.sfreq, r.stim_onset_s,
             np.asarray(r.trace, '<f4').tobytes()) for r in frame.itertuples()]
    rows[5] = rows[5][:6] + ('not samples',)
    con.executemany('INSERT INTO t VALUES (?,?,?,?,?,?,?)', rows)
    _refused(SQLTrials(con, 'SELECT * FROM t'), tmp_path, 'SQL query', "'trace'", 'text')


def _corrupt_data_page(path, column, n_bytes=64):
    "Overwrite `n_bytes` in the middle of the first data page of `column` (row group 0); returns the offset."
    md = pq.ParquetFile(path).metadata
    index = [i for i in range(md.num_columns) if md.schema.column(i).path.split('.')[0] == column][0]
    chunk = md.row_group(0).column(index)
    start = chunk.data_page_offset
    offset = start + min(chunk.total_compressed_size // 2, 4096)  # well past the page header, inside the values
    with open(path, 'r+b') as f:
        f.seek(offset)
        original = f.read(n_bytes)
        f.seek(offset)
        f.write(bytes((b + 1) % 256 for b in original))
    return offset


def test_corrupted_bytes_in_a_raw_data_page_are_detected(raw, tmp_path):
    path = str(tmp_path / 'corrupt.parquet')
    with open(raw, 'rb') as src, open(path, 'wb') as dst: dst.write(src.read())
    _corrupt_data_page(path, 'trace')
    _refused(path, tmp_path, 'corrupt.parquet', 'corrupted', 'CRC')
    with pytest.raises(ValueError, match='corrupt.parquet'): trial_quantities(path)


def test_corrupted_bytes_in_a_preprocessed_file_are_detected(raw, tmp_path):
    out = str(tmp_path / 'prep')
    preprocess(raw, out, row_group_size=64)
    _corrupt_data_page(f'{out}/train.parquet', 'spec')
    ds = ParquetSequenceDataset(f'{out}/train.parquet', n_trials=4)  # the small columns are intact
    with pytest.raises(ValueError, match=r'train\.parquet: row group 0 .*corrupted'): ds[0]


def test_folder_with_a_readme_is_read_and_other_files_are_ignored(frame, raw, tmp_path):
    "Decision: a folder is its *.parquet files; a README, checksums or hidden/private files beside them are ignored."
    folder = tmp_path / 'cohort'; folder.mkdir()
    half = frame.session_id.isin(sorted(frame.session_id.unique())[:4])
    _write(frame[half], folder / 'part-0.parquet'); _write(frame[~half], folder / 'part-1.parquet')
    (folder / 'README.md').write_text('# recordings of 2026\n')
    (folder / 'SHA256SUMS').write_text('abc  part-0.parquet\n')
    (folder / '.part-2.parquet.tmp').write_bytes(b'PAR1 half a file')
    (folder / '_SUCCESS').write_text('')
    from_folder = preprocess(str(folder), str(tmp_path / 'a'), seed=0)
    from_file = preprocess(raw, str(tmp_path / 'b'), seed=0)
    assert from_folder['splits'] == from_file['splits'] and np.allclose(from_folder['mean'], from_file['mean'])


def test_truncated_file_in_a_folder_is_named(frame, tmp_path):
    folder = tmp_path / 'cohort'; folder.mkdir()
    half = frame.session_id.isin(sorted(frame.session_id.unique())[:4])
    _write(frame[half], folder / 'part-0.parquet'); _write(frame[~half], folder / 'part-1.parquet')
    data = (folder / 'part-1.parquet').read_bytes()
    (folder / 'part-1.parquet').write_bytes(data[:len(data) // 2])
    _refused(str(folder), tmp_path, 'part-1.parquet', 'not a readable parquet file', 'truncated')


def test_empty_folder_is_named(tmp_path):
    folder = tmp_path / 'nothing_here'; folder.mkdir()
    (folder / 'README.md').write_text('to be filled\n')
    _refused(str(folder), tmp_path, 'nothing_here', 'no .parquet files', 'README.md', error=FileNotFoundError)


_SLOW_PREPROCESS = textwrap.dedent('''
    import sys, time
    import neuronb.lfp.data as data
    original = data.trials_to_spectrograms
    def slow(*args, **kwargs):
        time.sleep(0.3)
        return original(*args, **kwargs)
    data.trials_to_spectrograms = slow
    data.preprocess(sys.argv[1], sys.argv[2], chunk_size=8)
''')


def test_sigkill_during_preprocess_leaves_temps_that_the_next_run_removes(raw, tmp_path):
    out = tmp_path / 'out'
    child = subprocess.Popen([sys.executable, '-c', _SLOW_PREPROCESS, raw, str(out)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out.is_dir() and [f for f in os.listdir(out) if f.startswith('.')]):
            assert child.poll() is None, 'preprocess ended before it was killed'
            time.sleep(0.02)
        time.sleep(0.5)  # well inside the stream (each chunk sleeps 0.3 s)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    stale = sorted(f for f in os.listdir(out) if f.startswith('.'))
    assert len(stale) == 3 and all(f'-{child.pid}-' in f for f in stale), stale  # the 3 split files, hidden, named by pid
    assert not [f for f in os.listdir(out) if not f.startswith('.')], 'nothing visible was written'
    # a temporary file of a process that is still alive is not touched
    alive = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        live_temp = out / stale[0].replace(f'-{child.pid}-', f'-{alive.pid}-')
        live_temp.write_bytes(b'being written')
        stats = preprocess(raw, str(out))
        assert sorted(os.listdir(out)) == sorted(['stats.json', 'test.parquet', 'train.parquet', 'val.parquet', live_temp.name])
        assert sum(stats['n_trials'].values()) == 8 * 16
        assert live_temp.exists() and remove_stale_temps(str(out)) == []
    finally:
        alive.kill(); alive.wait()
    assert [os.path.basename(f) for f in remove_stale_temps(str(out))] == [live_temp.name]


def test_baseline_reads_each_rows_own_onset(frame, tmp_path):
    "Sessions recorded with 0.1 s more pre-stimulus signal (onset 0.3 s) give the same per-trial features."
    shifted = frame.copy()
    late = shifted.session_id.isin(sorted(shifted.session_id.unique())[::2])
    pad = int(round(0.1 * shifted.sfreq[0]))
    rng = np.random.default_rng(0)
    shifted['trace'] = [np.r_[rng.normal(0, 5, pad), t].astype(np.float32) if is_late else t
                        for t, is_late in zip(shifted.trace, late)]
    shifted.loc[late, 'stim_onset_s'] = shifted.stim_onset_s[late] + pad / shifted.sfreq[0]
    path = _write(shifted, tmp_path / 'shifted.parquet')
    a = trial_quantities(_write(frame, tmp_path / 'plain.parquet'), chunk_size=40)
    b = trial_quantities(path, chunk_size=40)  # chunks mix both onsets
    assert (a['sessions'] == b['sessions']).all()
    assert np.array_equal(a['session'], b['session']) and np.array_equal(a['trial_index'], b['trial_index'])
    for k in ('bandpower', 'erp', 'phasor'):
        assert np.allclose(a[k], b[k], atol=1e-5), k


def test_session_too_short_for_n_trials_is_named(frame, tmp_path):
    short = frame[~((frame.session_id == 'KO003-S0') & (frame.trial_index >= 5))]
    path = _write(short, tmp_path / 'short.parquet')
    stats = preprocess(path, str(tmp_path / 'prep'), seed=0)
    split = [k for k, v in stats['splits'].items() if 'KO003-S0' in v][0]
    with pytest.raises(ValueError) as e: run_baseline(path, stats, n_trials=8)
    assert "'KO003-S0' (5)" in str(e.value) and f"split {split!r}" in str(e.value) and 'n_trials=8' in str(e.value)
    with pytest.raises(ValueError, match="'KO003-S0' \\(5\\)"):
        ParquetSequenceDataset(str(tmp_path / 'prep' / f'{split}.parquet'), n_trials=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ds = ParquetSequenceDataset(str(tmp_path / 'prep' / f'{split}.parquet'), n_trials=8, short='warn')
    assert any("'KO003-S0'" in str(w.message) for w in caught)
    assert len(ds) > 0


def test_phase_options_refuse_bad_input(raw, tmp_path):
    "Phase planes: a wrong option value, a file written without them, a power-only model fed them; each error names it."
    import torch
    from neuronb.lfp.data import phase_itpc
    from neuronb.lfp.models import MODELS
    with pytest.raises(TypeError, match="phase must be True or False, got 'yes'"):
        preprocess(raw, str(tmp_path / 'out'), phase='yes')
    _nothing_written(str(tmp_path / 'out'))
    out = str(tmp_path / 'plain')
    preprocess(raw, out, seed=0)
    with pytest.raises(ValueError) as e: ParquetSequenceDataset(f'{out}/train.parquet', n_trials=4, phase=True)
    assert 'train.parquet' in str(e.value) or 'phase_mean' in str(e.value)
    assert 'phase=True' in str(e.value)
    with pytest.raises(ValueError, match='phase must be True or False'): MODELS.build('vit3d', phase=1)
    power_only = MODELS.build('vit3d', depth=1, d_model=16)
    with pytest.raises(ValueError, match=r'phase=False'): power_only(MODELS.build('vit3d', depth=1, d_model=16, phase=True).example_input())
    with pytest.raises(ValueError, match=r'\(\.\.\., n_trials, 2, n_freqs, n_times\)'): phase_itpc(np.zeros((4, 3, 12, 16)))
