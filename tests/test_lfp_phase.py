"""LFP phase planes (cos, sin of the STFT phase): they carry phase, are normalised with train statistics only, reach the
models through one option; the metadata pass keeps per-session aggregates whose size does not grow with the trials."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from neuronb.lfp.data import (ParquetSequenceDataset, SpecAugment, SpectrogramConfig, phase_itpc, preprocess,
                              read_metadata, read_sessions, trials_to_spectrograms)
from neuronb.lfp.models import MODELS, input_attribution
from neuronb.lfp.simulate import GenotypeEffects, write_simulated


def _tone_trials(n_trials, locked, seed=0, sfreq=250.0, freq=39.0625):
    "Trials of a 39 Hz tone (an STFT bin) in weak noise: the same phase in every trial, or a random phase per trial."
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.2 * sfreq)) / sfreq
    phases = np.zeros(n_trials) if locked else rng.uniform(0, 2 * np.pi, n_trials)
    x = np.sin(2 * np.pi * freq * t[None] + phases[:, None]) + 0.1 * rng.standard_normal((n_trials, len(t)))
    return x.astype(np.float32)


def test_phase_planes_carry_phase():
    "A phase-locked tone gives ITPC near 1 at its frequency, a random-phase one near 0; planes are unit phasors."
    cfg = SpectrogramConfig()
    freqs, _ = cfg.shape(250.0)
    row = int(np.argmin(np.abs(freqs - 39.0625)))
    itpc = {}
    for locked in (True, False):
        planes = trials_to_spectrograms(_tone_trials(64, locked), 250.0, 0.2, cfg, phase=True)
        assert planes.shape == (64, 3, len(freqs), 16)
        assert np.allclose(planes[:, 1] ** 2 + planes[:, 2] ** 2, 1, atol=1e-5)
        power_only = trials_to_spectrograms(_tone_trials(64, locked), 250.0, 0.2, cfg)
        assert np.array_equal(planes[:, 0], power_only), 'the power plane is the spectrogram of phase=False'
        itpc[locked] = phase_itpc(planes[:, 1:])[row].mean()
    assert itpc[True] > 0.95 and itpc[False] < 0.3, itpc


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp('phase')
    raw = write_simulated(str(d / 'raw.parquet'), n_animals=12, n_trials=24, seed=5)
    plain = preprocess(raw, str(d / 'plain'), seed=0, chunk_size=50)
    with_phase = preprocess(raw, str(d / 'phase'), seed=0, chunk_size=50, phase=True)
    return d, plain, with_phase


def _plane_stats(path, n_freqs, n_times):
    x = pq.read_table(path, columns=['phase']).column('phase').combine_chunks().values.to_numpy()
    x = x.reshape(-1, 2, n_freqs, n_times).astype(np.float64)
    return x.mean((0, 3)), x.std((0, 3))


def test_phase_normalisation_uses_train_statistics_only(cohort):
    d, plain, st = cohort
    assert st['phase'] and not plain['phase']
    assert np.array_equal(st['mean'], plain['mean']) and np.array_equal(st['std'], plain['std'])
    f, t = st['n_freqs'], st['n_times']
    train_mean, train_std = _plane_stats(str(d / 'phase' / 'train.parquet'), f, t)
    assert np.allclose(st['phase_mean'], train_mean, atol=1e-6) and np.allclose(st['phase_std'], train_std, atol=1e-6)
    test_mean, _ = _plane_stats(str(d / 'phase' / 'test.parquet'), f, t)
    assert not np.allclose(st['phase_mean'], test_mean, atol=1e-3), 'the test split would give other statistics'
    spec_plain = pq.read_table(str(d / 'plain' / 'train.parquet'), columns=['spec']).column('spec')
    spec_phase = pq.read_table(str(d / 'phase' / 'train.parquet'), columns=['spec']).column('spec')
    assert spec_plain.equals(spec_phase), 'the log-power column does not change with phase=True'
    ds = ParquetSequenceDataset(str(d / 'phase' / 'test.parquet'), n_trials=4, phase=True)
    ds_plain = ParquetSequenceDataset(str(d / 'phase' / 'test.parquet'), n_trials=4)
    x, raw = ds[1]['x'].numpy(), ds.read_rows(ds.rows[1])
    assert x.shape == (4, 3, f, t) and np.allclose(x[:, 0], ds_plain[1]['x'].numpy())
    expected = (raw[:, 1:] - np.asarray(st['phase_mean'])[None, :, :, None]) / np.asarray(st['phase_std'])[None, :, :, None]
    assert np.allclose(x[:, 1:], expected, atol=1e-5)


def test_phase_planes_carry_the_phenotype(cohort):
    "On the simulator the KO's chirp response is less phase-locked: the ITPC of the stored planes, read where the chirp sweeps, ranks animals."
    from sklearn.metrics import roc_auc_score
    d, _, st = cohort
    tab = pd.concat([pq.read_table(str(d / 'phase' / f'{k}.parquet'), columns=['animal_id', 'label', 'phase']).to_pandas()
                     for k in ('train', 'val', 'test')])
    freqs, times = np.asarray(st['freqs']), np.asarray(st['times'])
    rows_20_100 = np.flatnonzero(freqs >= 20)
    chirp_frame = [int(np.argmin(np.abs(times - ((freqs[r] - 1) / 99 + 0.01)))) for r in rows_20_100]  # 1 -> 100 Hz in 1 s
    scores, labels, off_chirp = [], [], []
    for animal, rows in tab.groupby('animal_id'):
        planes = np.stack(rows.phase.to_numpy()).reshape(len(rows), 2, st['n_freqs'], st['n_times'])
        itpc = phase_itpc(planes)
        scores.append(itpc[rows_20_100, chirp_frame].mean())
        off_chirp.append(itpc[rows_20_100, -1].mean())  # the last frame, after the chirp: no phase locking
        labels.append(int(rows.label.iloc[0]))
    assert roc_auc_score(labels, -np.asarray(scores)) > 0.8, (labels, scores)
    assert np.mean(scores) > np.mean(off_chirp) + 0.05, 'phase locking where the chirp is, not elsewhere'
    assert abs(roc_auc_score(labels, -np.asarray(off_chirp)) - 0.5) < 0.35, 'away from the chirp, no genotype ranking'


def test_models_read_phase_through_one_option():
    torch.manual_seed(0)
    for kind in MODELS.names():
        default = MODELS.build(kind)
        assert not default.config['phase'] and default(default.example_input()).shape == (2, 2)
        net = MODELS.build(kind, depth=1, d_model=16, phase=True)
        x = net.example_input(3)
        assert x.shape[-3:] == (3, 12, 16) and net(x).shape == (3, 2)
        assert net.n_params - MODELS.build(kind, depth=1, d_model=16).n_params == 2 * 16 * 16
        # integrated gradients are complete: per item they sum to the logit difference from the zero baseline
        attr = input_attribution(net, x, steps=64)
        with torch.no_grad(): gain = (net(x) - net(torch.zeros_like(x))) @ torch.tensor([-1.0, 1.0])
        assert torch.allclose(attr.flatten(1).sum(1), gain, atol=0.02 * gain.abs().max() + 1e-6)
        # ... and zero on an input the model ignores: a plane multiplied by 0 in the patch embedding
        with torch.no_grad(): net.patch_embed.weight[:, 1:] = 0
        assert input_attribution(net, x, steps=4)[..., 1:, :, :].abs().max() == 0


def test_augment_masks_every_plane_and_gains_power_only():
    torch.manual_seed(0)
    x = torch.ones(4, 3, 12, 16)
    out = SpecAugment(freq_mask=3, time_mask=4, gain_sd=0.5)(x)
    masked = out[:, 1] == 0
    assert masked.any() and torch.equal(masked, out[:, 2] == 0), 'the same masks on the cos and sin planes'
    assert torch.all(out[:, 1][~masked] == 1), 'no gain on phase planes'
    assert not torch.all(out[:, 0][out[:, 0] != 0] == 1), 'the gain moves the power plane'


def test_metadata_pass_keeps_per_session_aggregates(tmp_path):
    "Ten times the trials per session: the same number of rows and the same bytes of trial-index bitmaps."
    held = {}
    for n in (16, 160):
        raw = write_simulated(str(tmp_path / f'raw{n}.parquet'), n_animals=6, n_trials=n, seed=0)
        sessions = read_sessions(raw, batch_size=37)
        held[n] = (len(sessions), sessions.attrs['index_bytes'])
        per_trial = read_metadata(raw)
        expected = per_trial.groupby('session_id').size()
        assert sessions.set_index('session_id').n_trials.sort_index().equals(expected.rename('n_trials').sort_index())
    assert held[16] == held[160] and held[16][0] == 6, held


def test_duplicate_trial_index_across_chunks_is_found(tmp_path):
    raw = write_simulated(str(tmp_path / 'raw.parquet'), n_animals=4, n_trials=20, seed=0)
    df = pq.read_table(raw).to_pandas()
    df.loc[df.index[-1], 'trial_index'] = df.trial_index.iloc[-20]  # the last trial repeats the session's first
    bad = str(tmp_path / 'dup.parquet')
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), bad)
    with pytest.raises(ValueError, match=rf"session '{df.session_id.iloc[-1]}' has trial_index 0 more than once"):
        read_sessions(bad, batch_size=7)
