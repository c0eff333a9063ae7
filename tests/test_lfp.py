"LFP track: simulator, readers, validation, preprocessing, dataset, models, baseline (small and fast)."
import os
import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from neuronb.lfp.simulate import GenotypeEffects, RAW_COLUMNS, simulate_trials, write_simulated
from neuronb.lfp.data import (LFPDataModule, ParquetSequenceDataset, SQLTrials, SpecAugment, check_splits, preprocess,
                              read_metadata, split_sessions)
from neuronb.lfp.models import Temporal3DViT, SpectrogramViT, build_model
from neuronb.lfp.baseline import run_baseline


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp('lfp')
    return write_simulated(str(d / 'raw.parquet'), n_animals=8, n_trials=24, seed=3)


@pytest.fixture(scope='module')
def prep(raw, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('prep'))
    return out, preprocess(raw, out, seed=0, chunk_size=40)


def test_simulator_deterministic_and_complete():
    a = simulate_trials(n_animals=2, n_trials=8, seed=1)
    b = simulate_trials(n_animals=2, n_trials=8, seed=1)
    c = simulate_trials(n_animals=2, n_trials=8, seed=2)
    assert set(RAW_COLUMNS) <= set(a.columns) and len(a) == 16
    assert np.array_equal(np.stack(a.trace), np.stack(b.trace)) and not np.array_equal(np.stack(a.trace), np.stack(c.trace))
    state = np.random.get_state()[1].copy(); simulate_trials(n_animals=2, n_trials=4, seed=0)
    assert np.array_equal(state, np.random.get_state()[1]), 'the global numpy generator is restored'


def test_null_effects_have_no_genotype_difference():
    e = GenotypeEffects.null()
    assert e.gamma_power_ko == 1 and e.evoked_amp_ko == 1 and e.jitter_ms_ko == e.jitter_ms_wt and e.habituation_ko == e.habituation_wt


def test_preprocess_outputs_and_split(prep, raw):
    out, stats = prep
    assert sorted(f for f in os.listdir(out)) == ['stats.json', 'test.parquet', 'train.parquet', 'val.parquet']
    meta = read_metadata(raw)
    check_splits(meta, stats['splits'])
    animals = {k: set(a[:5] for a in pq.read_table(f'{out}/{k}.parquet').column('animal_id').to_pylist()) for k in ('train', 'val', 'test')}
    assert not (animals['train'] & animals['test']) and not (animals['train'] & animals['val'])
    # train-only statistics: recomputing them from train.parquet gives the saved ones
    spec = np.stack(pq.read_table(f'{out}/train.parquet').column('spec').to_numpy(zero_copy_only=False)).reshape(-1, stats['n_freqs'], stats['n_times'])
    assert np.allclose(spec.mean((0, 2)), stats['mean'], atol=1e-4) and np.allclose(spec.std((0, 2)), stats['std'], atol=1e-3)


def test_split_reproducible_and_seed_dependent(raw):
    meta = read_metadata(raw)
    assert split_sessions(meta, seed=4) == split_sessions(meta, seed=4)
    assert any(split_sessions(meta, seed=s) != split_sessions(meta, seed=4) for s in range(5))


def test_sql_sources_match_parquet(raw, prep, tmp_path):
    df = pq.read_table(raw).to_pandas()
    con = sqlite3.connect(':memory:')
    con.execute('CREATE TABLE t (session_id TEXT, animal_id TEXT, genotype TEXT, trial_index INT, sfreq REAL, stim_onset_s REAL, trace BLOB)')
    con.executemany('INSERT INTO t VALUES (?,?,?,?,?,?,?)', [(r.session_id, r.animal_id, r.genotype, int(r.trial_index), r.sfreq,
                    r.stim_onset_s, np.asarray(r.trace, '<f4').tobytes()) for r in df.itertuples()])
    s1 = preprocess(SQLTrials(con, 'SELECT * FROM t'), str(tmp_path / 'sq'), seed=0)
    ddb = duckdb.connect(); ddb.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{raw}')")
    s2 = preprocess((ddb, 'SELECT * FROM t ORDER BY session_id, trial_index'), 'memory://test-lfp/dd', seed=0)
    for s in (s1, s2):
        assert s['splits'] == prep[1]['splits'] and np.allclose(s['mean'], prep[1]['mean'], atol=1e-5)
    # columns are selected as plain identifiers (no dialect-specific quoting), and anything else is refused
    src = SQLTrials(con, 'SELECT * FROM t')
    assert next(src.batches(['session_id', 'trial_index'])).schema.names == ['session_id', 'trial_index']
    with pytest.raises(ValueError, match='plain SQL identifiers'):
        next(src.batches(['trial_index; DROP TABLE t']))


def _bad_table(raw, tmp_path, edit):
    df = pq.read_table(raw).to_pandas(); df = edit(df) if isinstance(edit(df.copy()), pd.DataFrame) else (edit(df), df)[1]
    p = str(tmp_path / 'bad.parquet'); df.to_parquet(p); return p


@pytest.mark.parametrize('edit, words', [
    (lambda d: d.drop(columns='stim_onset_s'), ["missing", "stim_onset_s"]),
    (lambda d: d.__setitem__('genotype', d.genotype.where(d.index != 5, 'HET')), ["'genotype'", 'HET']),
    (lambda d: d.at.__setitem__((30, 'trace'), np.r_[d.trace[30][:-1], np.inf].astype(np.float32)), ["NaN or infinite", "trial_index 6"]),
    (lambda d: d.at.__setitem__((50, 'trace'), d.trace[50][:-3]), ['unequal length', 'session']),
])
def test_bad_input_clear_error_and_no_output(raw, tmp_path, edit, words):
    p = _bad_table(raw, tmp_path, edit)
    out = tmp_path / 'out'
    with pytest.raises(ValueError) as e: preprocess(p, str(out), chunk_size=16)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not out.exists() or not os.listdir(out), os.listdir(out)


def test_too_few_animals_and_one_genotype_split(raw, tmp_path):
    few = _bad_table(raw, tmp_path, lambda d: d[d.animal_id.isin(['WT000', 'KO001', 'WT002', 'KO003', 'WT004'])])
    with pytest.raises(ValueError, match='too few animals'): preprocess(few, str(tmp_path / 'o1'))
    meta = read_metadata(raw); sp = split_sessions(meta)
    sp['test'] = [s for s in sp['test'] if s.startswith('WT')]
    with pytest.raises(ValueError, match="split 'test' has only genotype"): preprocess(raw, str(tmp_path / 'o2'), splits=sp)
    assert not (tmp_path / 'o2').exists() or not os.listdir(tmp_path / 'o2')


def test_sequence_dataset(prep):
    out, stats = prep
    ds = ParquetSequenceDataset(f'{out}/train.parquet', n_trials=8, stride=4, cache_row_groups=1)
    n_sess = len(stats['splits']['train'])
    assert len(ds) == n_sess * ((24 - 8) // 4 + 1)
    it = ds[len(ds) - 1]
    assert it['x'].shape == (8, stats['n_freqs'], stats['n_times']) and it['y'].item() in (0, 1)
    tab = pq.read_table(f'{out}/train.parquet')
    rows = ds.rows[5]
    assert (np.diff(tab.column('trial_index').to_numpy()[rows]) == 1).all()
    assert len(set(np.asarray(tab.column('session_id').to_pylist())[rows])) == 1
    ref = np.stack(tab.column('spec').to_numpy(zero_copy_only=False)[rows]).reshape(8, stats['n_freqs'], stats['n_times'])
    ref = (ref - np.asarray(stats['mean'])[:, None]) / np.asarray(stats['std'])[:, None]
    assert np.allclose(ds[5]['x'].numpy(), ref, atol=1e-5)
    with pytest.raises(ValueError, match='no session has 100 trials'): ParquetSequenceDataset(f'{out}/train.parquet', n_trials=100)


def test_datamodule_and_augment(prep):
    out, _ = prep
    dm = LFPDataModule(out, n_trials=4, batch_size=5, augment=SpecAugment(gain_sd=0.0))
    b = next(iter(dm.train_dataloader()))
    assert b['x'].shape[:2] == (5, 4) and set(b) == {'x', 'y', 'group', 'session'}
    assert np.isclose(np.mean(dm.class_weights()), 1.0)
    x = torch.randn(4, 12, 14)
    torch.manual_seed(1); a = SpecAugment()(x); torch.manual_seed(1); c = SpecAugment()(x)
    assert torch.equal(a, c) and not torch.equal(a, x)


@pytest.mark.parametrize('attention', ['joint', 'divided'])
def test_temporal_vit(attention):
    torch.manual_seed(0)
    m = Temporal3DViT(n_trials=4, n_freqs=10, n_frames=9, patch=(4, 3), d_model=16, depth=2, n_heads=2, attention=attention)
    x = torch.randn(3, 4, 10, 9, requires_grad=True)
    y = m(x); assert y.shape == (3, 2)
    y[:, 1].sum().backward(); assert x.grad[:, 3].abs().sum() > 0, 'the last trial influences the output'
    maps = m.attention_maps(x.detach(), 'rollout'); assert maps.shape == (3, 4, 3, 3)
    assert torch.allclose(maps.sum((1, 2, 3)), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError): Temporal3DViT(attention='sparse')


STRONG = GenotypeEffects(gamma_power_ko=4.0, evoked_amp_ko=2.0, jitter_ms_ko=12.0, habituation_ko=0.0)


def _cohort(tmp_path, effects, n_animals, seed):
    "A simulated cohort, preprocessed with a large test split (40% of the animals)."
    raw = write_simulated(str(tmp_path / f'raw{seed}.parquet'), n_animals=n_animals, n_trials=16, effects=effects, seed=seed)
    out = str(tmp_path / f'prep{seed}')
    return raw, out, preprocess(raw, out, seed=seed, fractions=(0.5, 0.1, 0.4))


def _train_vit(out, stats, tmp_path):
    from neuronb.train import TaskModule, evaluate, fit
    dm = LFPDataModule(out, n_trials=4, batch_size=16, train_stride=2)
    net = build_model('vit3d', stats['n_freqs'], stats['n_times'], 4, d_model=16, depth=1, n_heads=2)
    mod = TaskModule(net, task='binary', class_weights=dm.class_weights(), label_smoothing=0.1, lr=3e-3)
    r = fit(mod, datamodule=dm, max_epochs=3, seed=0, out_dir=str(tmp_path / 'fit'), accelerator='cpu', progress_bar=False)
    return evaluate(mod, dm.test_dataloader(), checkpoint=r.best_checkpoint, aggregate_by_group=True, accelerator='cpu')


def _p_chance(metrics):
    "Two-sided p of the animal-level AUROC against chance (its null standard error for the test animals)."
    from scipy.stats import norm
    n_wt, n_ko = np.asarray(metrics['test/group/confusion_matrix']).sum(1)
    se = np.sqrt((n_wt + n_ko + 1) / (12 * n_wt * n_ko))
    return 2 * norm.sf(abs(metrics['test/group/auroc'] - 0.5) / se)


def _test_animals(out):
    return len(set(pq.read_table(f'{out}/test.parquet', columns=['animal_id']).column('animal_id').to_pylist()))


def test_models_and_baseline_above_chance_on_a_strong_effect(tmp_path):
    "A large genotype effect: the ViT (through neuronb.train) and the baseline both separate the test animals."
    raw, out, stats = _cohort(tmp_path, STRONG, n_animals=16, seed=0)
    vit = _train_vit(out, stats, tmp_path)
    base = run_baseline(raw, stats, n_trials=8)['metrics']
    for m in (vit, base):
        assert m['test/group/n_groups'] == _test_animals(out), 'every test animal is scored'
        assert m['test/auroc'] > 0.8 and m['test/group/auroc'] > 0.8, m
    assert isinstance(build_model('vit2d', 12, 14, 1, depth=1), SpectrogramViT)
    with pytest.raises(ValueError, match='n_trials must be 1'): build_model('vit2d', 12, 14, 8)


def test_models_and_baseline_at_chance_on_the_null(tmp_path):
    "No genotype difference (GenotypeEffects.null()): 16 test animals, animal-level AUROC not distinguishable from 0.5."
    raw, out, stats = _cohort(tmp_path, GenotypeEffects.null(), n_animals=40, seed=1)
    vit = _train_vit(out, stats, tmp_path)
    base = run_baseline(raw, stats, n_trials=8)['metrics']
    for m in (vit, base):
        assert m['test/group/n_groups'] == _test_animals(out) == 16
        assert _p_chance(m) > 0.01, (m['test/group/auroc'], _p_chance(m))
    # the check can fail: a perfect separation of these 16 animals is far from chance
    assert _p_chance({**base, 'test/group/auroc': 1.0}) < 0.001


def test_baseline_runs_on_same_split(raw, prep):
    out, stats = prep
    r = run_baseline(raw, stats, n_trials=8)
    m = r['metrics']
    assert m['test/group/n_groups'] == len(stats['splits']['test'])
    assert {'itpc_60hz', 'bp_high_gamma', 'erp_n1'} <= set(r['feature_names'])
    assert m['test/n_items'] == len(stats['splits']['test']) * (24 // 8), 'three 8-trial windows per 24-trial test session'
