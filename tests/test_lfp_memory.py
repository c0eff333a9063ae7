"Indexes held per session and per-trial baseline values memory-mapped from disk: the same windows, items and results as per-window indexes in memory."
import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neuronb.data import sequence_windows
from neuronb.lfp.baseline import run_baseline, sequence_features, trial_quantities
from neuronb.lfp.data import ParquetSequenceDataset, SessionWindows, preprocess
from neuronb.lfp.simulate import write_simulated


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp('lfp_memory')
    raw = write_simulated(str(d / 'raw.parquet'), n_animals=8, sessions_per_animal=2, n_trials=20, seed=3)
    stats = preprocess(raw, str(d / 'prep'), seed=3, chunk_size=24, row_group_size=7)  # sessions cross row groups
    return d, raw, stats


def _reference(path, n_trials, stride):
    "The per-window index: every window's file rows from all index columns at once."
    t = pq.read_table(path, columns=['session_id', 'trial_index', 'label', 'animal_code'])
    sess = np.asarray(t.column('session_id').to_pylist(), dtype=object)
    rows = sequence_windows(sess, t.column('trial_index').to_numpy(), n_trials, stride)
    names, code = np.unique(sess.astype(str), return_inverse=True)
    return names, rows, t.column('label').to_numpy()[rows[:, 0]], t.column('animal_code').to_numpy()[rows[:, 0]], code[rows[:, 0]]


@pytest.mark.parametrize('n_trials,stride', [(8, 1), (4, 3), (1, 1)])
def test_per_session_index_is_the_per_window_index(cohort, n_trials, stride):
    d, _, _ = cohort
    path = str(d / 'prep' / 'train.parquet')
    ds = ParquetSequenceDataset(path, n_trials=n_trials, stride=stride)
    assert ds.per_session and isinstance(ds.rows, SessionWindows)
    names, rows, labels, groups, codes = _reference(path, n_trials, stride)
    assert (ds.sessions == names).all() and len(ds) == len(rows)
    assert np.array_equal(np.asarray(ds.rows), rows) and np.array_equal(np.stack(list(ds.rows)), rows)
    assert np.array_equal(ds.labels, labels) and np.array_equal(ds.groups, groups) and np.array_equal(ds.session_codes, codes)
    assert ds.rows[-1].tolist() == rows[-1].tolist() and ds.rows[3, 0] == rows[3, 0]
    assert np.array_equal(ds.label_counts(2), np.bincount(labels, minlength=2))
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        assert int(item['y']) == labels[i] and int(item['group']) == groups[i] and int(item['session']) == codes[i]
    with pytest.raises(IndexError): ds.rows[len(ds)]


def test_any_row_order_falls_back_to_the_per_window_index(cohort):
    d, _, _ = cohort
    path = str(d / 'prep' / 'val.parquet')
    table = pq.read_table(path)
    shuffled = str(d / 'prep_shuffled' / 'val.parquet')
    (d / 'prep_shuffled').mkdir()
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), shuffled, row_group_size=5)
    ordered = ParquetSequenceDataset(path, n_trials=4, stride=2)
    mixed = ParquetSequenceDataset(shuffled, n_trials=4, stride=2, stats=str(d / 'prep' / 'stats.json'))
    assert ordered.per_session and not mixed.per_session
    assert np.array_equal(np.asarray(mixed.rows), _reference(shuffled, 4, 2)[1])
    assert len(ordered) == len(mixed) and np.array_equal(ordered.labels, mixed.labels) and np.array_equal(ordered.groups, mixed.groups)
    for i in (0, 5, len(mixed) - 1):  # the same sequences, read from other file rows
        assert torch_equal(ordered[i]['x'], mixed[i]['x'])


def torch_equal(a, b): return bool((a == b).all())


def test_short_session_errors_match_sequence_windows(cohort):
    d, _, _ = cohort
    path = str(d / 'prep' / 'test.parquet')
    with pytest.raises(ValueError) as per_session: ParquetSequenceDataset(path, n_trials=25)
    with pytest.raises(ValueError) as per_window:
        sequence_windows(*[pq.read_table(path).column(c).to_numpy(zero_copy_only=False) for c in ('session_id', 'trial_index')], 25, where=path)
    assert str(per_session.value) == str(per_window.value) and 'the longest has 20' in str(per_session.value)


def _old_baseline(q, raw, stats, n_trials, train_stride):
    "The per-trial-table baseline: windows over all trials of a split at once, features window by window."
    import pandas as pd
    meta = pd.DataFrame({'session_id': q['sessions'][q['session']].astype(str), 'trial_index': np.asarray(q['trial_index'])})
    src = pq.read_table(raw, columns=['session_id', 'animal_id', 'genotype']).to_pandas()
    first = src.groupby(src.session_id.astype(str)).first()
    lab = {g: i for i, g in enumerate(stats['genotypes'])}
    data = {}
    for split, stride in (('train', train_stride), ('val', n_trials), ('test', n_trials)):
        in_split = np.flatnonzero(meta.session_id.isin(set(stats['splits'][split])).to_numpy())
        wins = in_split[sequence_windows(meta.session_id.to_numpy()[in_split], meta.trial_index.to_numpy()[in_split], n_trials, stride)]
        rows = []
        sf = q['sfreq']; t = np.arange(q['erp'].shape[1]) / sf
        p1, n1 = (t >= 0.01) & (t < 0.03), (t >= 0.03) & (t < 0.06)
        for w in wins:
            avg = q['erp'][w].mean(0)
            f = [*q['bandpower'][w].mean(0), avg[p1].max(), -avg[n1].min()]
            if n_trials > 1: f.extend(np.abs(q['phasor'][w].mean(0)).mean(-1))
            rows.append(f)
        s = meta.session_id.to_numpy()[wins[:, 0]]
        data[split] = (np.asarray(rows, np.float64), np.array([lab[first.genotype[x]] for x in s]),
                       np.array([stats['animal_codes'][first.animal_id[x]] for x in s]), wins)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight='balanced', max_iter=2000))
    clf.fit(*data['train'][:2])
    return data, clf


def test_baseline_on_disk_gives_identical_features_and_model(cohort):
    d, raw, stats = cohort
    q = trial_quantities(raw, chunk_size=50, folder=str(d))
    assert all(isinstance(q[k], np.memmap) for k in ('bandpower', 'erp', 'phasor', 'session', 'trial_index'))
    assert not any(p.name.startswith('tmp') for p in d.iterdir()), 'temporary files are unlinked'
    assert len(q['sessions']) == 16 and len(q['bandpower']) == 16 * 20
    data, clf = _old_baseline(q, raw, stats, 8, 1)
    X_train, _, _, wins = data['train']
    X, names = sequence_features(q, wins, block=7)  # vectorised in blocks that do not divide the windows
    assert np.array_equal(X, X_train) and X.shape == (len(wins), 13) and names[-1] == 'itpc_80hz'
    r = run_baseline(raw, stats, n_trials=8, train_stride=1, quantities=q)
    assert r['model'][0].n_samples_seen_ == len(wins)
    assert np.array_equal(r['model'][-1].coef_, clf[-1].coef_) and np.array_equal(r['model'][0].mean_, clf[0].mean_)
    for split in ('val', 'test'):
        assert np.array_equal(r['model'].decision_function(data[split][0]), clf.decision_function(data[split][0]))
    assert r['metrics']['test/group/auroc'] > 0.7, 'the simulated genotype effect is strong'
