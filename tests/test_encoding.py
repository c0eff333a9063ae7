"fMRI encoding: simulator ground truth, readers and their errors, run splits, ridge baseline, model, a tiny fit."
import math

import numpy as np
import pytest
import torch

from neuronb.encoding.data import (EncodingData, check_run_split, frames_to_trs, make_windows, read_npz, read_parquet,
                                   run_split, unchunk, validate_encoding_data, write_npz, write_parquet, zscore_runs)
from neuronb.encoding.models import (EncodingModel, RidgeFIR, StagewiseEncodingModel, embed_trs, fir_delays, fit_encoding_model,
                                     order_probe, paired_block_bootstrap, reconstruction_probe, voxel_pearson)
from neuronb.encoding.simulate import (VOXEL_GROUPS, canonical_hrf, hrf_per_tr, noise_ceiling, render_stimulus,
                                       simulate_encoding)
from neuronb.temporal.encoders import make_encoder  # importing the temporal track registers its encoders


@pytest.fixture(scope='module')
def small():
    return simulate_encoding(n_runs=4, n_tr_per_run=40, n_voxels_per_group=4, seed=3)


# --- simulator -----------------------------------------------------------------------------------------------------
def test_simulator_shapes_and_determinism(small):
    assert small['stimulus'].shape == (160, 32, 16) and small['bold'].shape == (160, 12)
    assert list(dict.fromkeys(small['voxel_group'])) == list(VOXEL_GROUPS)
    again = simulate_encoding(n_runs=4, n_tr_per_run=40, n_voxels_per_group=4, seed=3)
    assert np.array_equal(again['bold'], small['bold'])
    assert not np.array_equal(simulate_encoding(n_runs=4, n_tr_per_run=40, n_voxels_per_group=4, seed=4)['bold'], small['bold'])


def test_hrf_peaks_near_5s():
    t = np.linspace(0, 30, 3001)
    assert abs(t[canonical_hrf(t).argmax()] - 5.0) < 0.05
    assert abs(hrf_per_tr(1.5).sum() - 1) < 1e-9


def test_tr_mean_is_blind_to_order(small):
    ev = {'order': small['order'], 'rate': small['rate'], 'phase': small['phase'],
          'first': np.round(small['onset'] * 32 / 1.5).astype(int), 'second': np.round(small['second_onset'] * 32 / 1.5).astype(int)}
    a = render_stimulus(ev, small['background'], 1.5)
    b = render_stimulus({**ev, 'order': 1 - ev['order']}, small['background'], 1.5)
    assert np.allclose(a, small['clean_stimulus'], atol=1e-5)
    assert np.abs(a.mean(1) - b.mean(1)).max() < 1e-9 and np.abs(a - b).max() > 1


def test_noise_ceiling_matches_snr():
    sim = simulate_encoding(n_runs=4, n_tr_per_run=100, n_voxels_per_group=8, snr=0.5, seed=0)
    c = noise_ceiling(sim['signal'], sim['bold'])
    assert abs(c.mean() - math.sqrt(0.5 / 1.5)) < 0.04


def test_simulator_rejects_unresolvable_rates():
    with pytest.raises(ValueError, match='cannot resolve modulation'):
        simulate_encoding(n_frames=16, tr=2.0)


# --- readers and validation ----------------------------------------------------------------------------------------
def test_validation_errors_name_array_and_shape(small):
    s, b, r = small['stimulus'], small['bold'], small['run']
    with pytest.raises(ValueError, match=r'bold has 158 TRs but stimulus has 160.*\(160, n_voxels\)'):
        validate_encoding_data(s, b[:-2], r)
    with pytest.raises(ValueError, match=r'run 3: stimulus has 40 TRs but bold has 38'):
        validate_encoding_data(s, b[:-2], r, bold_run=r[:-2])
    with pytest.raises(ValueError, match='different runs'):
        validate_encoding_data(s, b, r, bold_run=np.where(r == 3, 7, r))
    bad = s.copy(); bad[5, 3, 2] = np.nan
    with pytest.raises(ValueError, match=r'stimulus contains NaN.*first at run 0, TR 5, frame 3, feature 2'):
        validate_encoding_data(bad, b, r)
    badb = b.copy(); badb[7, 1] = np.inf
    with pytest.raises(ValueError, match='bold contains NaN'):
        validate_encoding_data(s, badb, r)
    with pytest.raises(ValueError, match=r'model expects 12.*\(160, 32, 12\)'):
        validate_encoding_data(s, b, r, n_features=12)
    with pytest.raises(ValueError, match=r'stimulus must have shape \(n_TR, n_frames, n_features\)'):
        validate_encoding_data(s[..., 0], b, r)
    r2 = r.copy(); r2[10:20] = 1
    with pytest.raises(ValueError, match='not contiguous'):
        validate_encoding_data(s, b, r2)


def test_frame_counts_must_agree_unless_resampled():
    frames = np.random.default_rng(0).standard_normal((4 * 8, 4))
    tr_of = np.repeat(np.arange(4), 8); tr_of[8] = 0  # TR 0 got 9 frames, TR 1 got 7
    with pytest.raises(ValueError, match=r'frame counts differ between TRs: most TRs have 8 frames but TR 0 has 9; TR 1 has 7'):
        frames_to_trs(frames, tr_of)
    assert frames_to_trs(frames, tr_of, n_frames=8).shape == (4, 8, 4)
    assert np.array_equal(frames_to_trs(frames, np.repeat(np.arange(4), 8)), frames.reshape(4, 8, 4))


def test_npz_and_parquet_round_trips(small, tmp_path):
    data = EncodingData.from_simulation(small)
    write_npz(data, tmp_path / 'a.npz')
    write_parquet(data, tmp_path / 's.parquet', tmp_path / 'b.parquet')
    for back in (read_npz(tmp_path / 'a.npz'), read_parquet(tmp_path / 's.parquet', tmp_path / 'b.parquet'),
                 read_npz(tmp_path / 'a.npz', n_features=16)):
        assert np.array_equal(back.stimulus, data.stimulus) and np.array_equal(back.bold, data.bold)
        assert np.array_equal(back.run, data.run)
    write_npz(data, 'memory://neuronb-test-enc/a.npz')
    assert read_npz('memory://neuronb-test-enc/a.npz').n_voxels == 12
    with pytest.raises(ValueError, match='model expects 8'):
        read_npz(tmp_path / 'a.npz', n_features=8)


def test_separate_bold_file_with_fewer_trs(small, tmp_path):
    np.savez(tmp_path / 'stim.npz', stimulus=small['stimulus'], run=small['run'])
    keep = np.flatnonzero(~((small['run'] == 2) & (np.arange(160) % 40 == 39)))  # run 2 lost its last TR
    np.savez(tmp_path / 'bold.npz', bold=small['bold'][keep], run=small['run'][keep])
    with pytest.raises(ValueError, match=r'run 2 \(.*stim.npz.*bold.npz\): stimulus has 40 TRs but bold has 39'):
        read_npz(tmp_path / 'stim.npz', bold_path=tmp_path / 'bold.npz')


def test_missing_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / 'nope.npz')
    np.savez(tmp_path / 'x.npz', stimulus=np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="no 'run' array"):
        read_npz(tmp_path / 'x.npz')


# --- splits --------------------------------------------------------------------------------------------------------
def test_run_splits_are_whole_contiguous_and_disjoint():
    run = np.repeat(np.arange(8), 10)
    seen_test = set()
    for fold in range(4):
        sp = run_split(run, n_val=1, n_test=2, fold=fold)
        runs = {k: np.unique(run[v]) for k, v in sp.items()}
        assert sum(len(v) for v in sp.values()) == 80
        assert np.all(np.diff(runs['test']) == 1)  # a contiguous block of runs
        assert not (set(runs['train']) & set(runs['test'])) and not (set(runs['val']) & set(runs['test']))
        seen_test |= set(runs['test'].tolist())
    assert seen_test == set(range(8))
    with pytest.raises(ValueError, match='at least one training run'):
        run_split(np.repeat(np.arange(3), 5), n_val=1, n_test=2)


def test_leak_check_catches_interleaved_trs():
    run = np.repeat(np.arange(4), 10)
    with pytest.raises(ValueError, match="run 0 is only partly in the 'train' split"):
        check_run_split({'train': np.arange(0, 40, 2), 'test': np.arange(1, 40, 2)}, run)
    with pytest.raises(ValueError, match="are 0 TRs apart"):  # interleaved TRs fail the gap check too
        check_run_split({'train': np.arange(0, 40, 2), 'test': np.arange(1, 40, 2)}, run, min_gap=1)
    with pytest.raises(ValueError, match='only partly'):
        check_run_split({'train': np.arange(0, 25), 'test': np.arange(30, 40)}, run)  # run 2: TRs 20-24 only


def test_windows_never_borrow_from_another_run(small):
    data = EncodingData.from_simulation(small)
    idx = np.flatnonzero(data.run >= 2)
    w = make_windows(data.stimulus, data.bold, data.run, idx, context=8, chunk=16)
    for x, t in zip(w['x'], w['target_index']):
        first = t[0] - np.flatnonzero(data.run == data.run[t[0]])[0]  # position of the first target in its run
        n_pad = max(0, 7 - first)
        assert np.all(x[:n_pad] == 0)
        assert np.array_equal(x[n_pad:], data.stimulus[t[0] - 7 + n_pad:t[-1] + 1])
    rows, back = unchunk(w['y'], w['target_index'], data.n_tr)
    assert np.array_equal(rows, idx) and np.array_equal(back, data.bold[idx])


# --- ridge baseline ------------------------------------------------------------------------------------------------
def test_ridge_fir_recovers_known_linear_map():
    rng = np.random.default_rng(0)
    run = np.repeat(np.arange(6), 80)
    stim = rng.standard_normal((480, 4, 5))
    W = rng.standard_normal((5 * 4, 7))
    Y = fir_delays(stim.mean(1), run, range(4)) @ W + 0.1 * rng.standard_normal((480, 7))
    rf = RidgeFIR(context=4).fit(stim[:400], Y[:400], run[:400])
    assert voxel_pearson(rf.predict(stim[400:], run[400:]), Y[400:]).min() > 0.97
    assert np.corrcoef((rf.fit_.coef / rf.fit_.x_std[:, None]).ravel(), W.ravel())[0, 1] > 0.97
    # with pure-noise targets there is nothing to find on held-out runs
    noise = rng.standard_normal((480, 3))
    rf0 = RidgeFIR(context=4).fit(stim[:400], noise[:400], run[:400])
    assert np.abs(voxel_pearson(rf0.predict(stim[400:], run[400:]), noise[400:])).max() < 0.25


def test_fir_delays_stay_in_run():
    f = np.arange(6, dtype=float)[:, None]
    d = fir_delays(f, np.array([0, 0, 0, 1, 1, 1]), range(2))
    assert d[:, 1].tolist() == [0, 0, 1, 0, 3, 4]


# --- model ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('temporal', ['conv', 'transformer'])
def test_encoding_model_is_causal_with_subject_heads(temporal):
    torch.manual_seed(0)
    m = EncodingModel('hierarchical', n_voxels=[5, 3], n_features=16, n_frames=32, context=4, temporal=temporal).eval()
    x = torch.randn(1, 10, 32, 16)
    out = m(x)
    assert out.shape == (1, 7, 8) and [t.shape[-1] for t in m.split_subjects(out)] == [5, 3]
    x2 = x.clone(); x2[0, 6] += 1  # input TR 6 = target 3; it may affect targets 3..6 only
    with torch.no_grad():
        d = (m(x2) - out).abs().amax(-1)[0]
    assert torch.all(d[:3] == 0) and torch.all(d[3:] > 0)
    with pytest.raises(ValueError, match='at least context=4'):
        m(torch.randn(1, 3, 32, 16))
    with pytest.raises(ValueError, match='n_features=16'):
        m(torch.randn(1, 6, 32, 8))


@pytest.mark.parametrize('kind', ['mean', 'mean_posenc', 'multiscale', 'hierarchical', 'transformer'])
def test_mean_path_is_present_and_order_still_differs(small, kind):
    torch.manual_seed(0)
    m = EncodingModel(kind, n_voxels=6, n_features=16, n_frames=32, context=4).eval()
    d_enc = m.encoder.d_model
    # on by default for temporal encoders, off for the mean (it would only duplicate the embedding)
    assert m.mean_path == (kind != 'mean')
    assert m.d_in == d_enc + (16 if kind != 'mean' else 0)
    assert m.temporal[0].in_channels == m.d_in  # the lag model sees the mean channels
    x = torch.randn(2, 7, 32, 16)
    with torch.no_grad():
        z, out = m.embed(x), m(x)
    assert z.shape == (2, 7, m.d_in) and out.shape == (2, 4, 6)
    if m.mean_path:
        assert torch.allclose(z[..., d_enc:], x.mean(2), atol=1e-6)  # the plain per-TR frame mean, untouched
        with torch.no_grad():
            assert torch.allclose(z[..., :d_enc], m.encoder(x.reshape(14, 32, 16)).reshape(2, 7, -1))
    off = EncodingModel(kind, n_voxels=6, n_features=16, n_frames=32, context=4, mean_path=False)
    assert not off.mean_path and off.d_in == d_enc
    # swapped within-TR order: the model's TR embedding still differs for temporal encoders, not for the mean
    ev = {'order': small['order'][:6], 'rate': small['rate'][:6], 'phase': small['phase'][:6],
          'first': np.round(small['onset'][:6] * 32 / 1.5).astype(int),
          'second': np.round(small['second_onset'][:6] * 32 / 1.5).astype(int)}
    a = torch.tensor(render_stimulus(ev, small['background'][:6], 1.5), dtype=torch.float32)[None]
    b = torch.tensor(render_stimulus({**ev, 'order': 1 - ev['order']}, small['background'][:6], 1.5), dtype=torch.float32)[None]
    with torch.no_grad():
        d = (m.embed(a) - m.embed(b)).norm(dim=-1)[0]
        dm = (m.embed(a) - m.embed(b))[0, :, d_enc:].abs().amax() if m.mean_path else torch.tensor(0.)
    assert dm < 1e-5  # the mean path itself is blind to order
    if kind == 'mean': assert d.max() < 1e-5, d
    else: assert d.min() > 1e-3, (kind, d)


def test_tiny_end_to_end_fit(small, tmp_path):
    data = EncodingData.from_simulation(small)
    splits = run_split(data.run, n_val=1, n_test=1)
    res = fit_encoding_model(data, splits, encoder='multiscale', encoder_kwargs={'d_model': 16}, context=4, chunk=8,
                             max_epochs=1, seed=0, out_dir=tmp_path, accelerator='cpu', progress_bar=False)
    assert set(res.r) == {'train', 'val', 'test'} and res.r['test'].shape == (12,)
    assert np.all(np.isfinite(res.r['test']))
    rows, pred = res.predictions['test']
    assert np.array_equal(rows, splits['test']) and pred.shape == (40, 12)
    z = embed_trs(res.model.encoder, res.scaler.transform(data.stimulus))
    assert z.shape == (160, 16)
    again = fit_encoding_model(data, splits, encoder='multiscale', encoder_kwargs={'d_model': 16}, context=4, chunk=8,
                               max_epochs=1, seed=0, out_dir=tmp_path / 'again', accelerator='cpu', progress_bar=False)
    assert np.allclose(again.r['test'], res.r['test'], atol=1e-5)  # same seed, same numbers


def test_stagewise_fit_is_mean_model_plus_residual_model(small, tmp_path):
    "Temporal encoders are fitted in two stages by default: a MeanPool model first, the encoder on its residual,"
    "scaled per voxel by a step size in [0, 1] fitted on the validation run."
    from neuronb.nn.temporal import MeanPool
    data = EncodingData.from_simulation(small)
    splits = run_split(data.run, n_val=1, n_test=1)
    kw = dict(encoder_kwargs={'d_model': 16}, context=4, chunk=8, max_epochs=2, seed=0, accelerator='cpu', progress_bar=False)
    res = fit_encoding_model(data, splits, encoder='multiscale', out_dir=tmp_path, **kw)
    m = res.model
    assert isinstance(m, StagewiseEncodingModel) and isinstance(m.base.encoder, MeanPool)
    assert m.encoder is m.residual.encoder and m.n_params == m.base.n_params + m.residual.n_params
    assert res.base_fit_result.best_checkpoint.startswith(str(tmp_path / 'base'))
    assert res.fit_result.best_checkpoint.startswith(str(tmp_path / 'residual'))
    x = torch.as_tensor(make_windows(res.scaler.transform(data.stimulus), res.bold, data.run, splits['test'], 4, 8)['x'])
    with torch.no_grad():
        assert torch.allclose(m(x), m.base(x) + m.residual(x) * m.residual_scale)
        assert m.residual_scale.shape == (12,) and bool(((m.residual_scale >= 0) & (m.residual_scale <= 1)).all())
        # the two stages differ: the residual stage is not a copy of the mean model
        assert m.residual(x).abs().mean() > 1e-4
        out = m(x).numpy()
    rows, pred = res.predictions['test']
    assert np.allclose(pred.reshape(-1, 8, 12), out.reshape(-1, 8, 12), atol=1e-5)
    full = fit_encoding_model(data, splits, encoder='multiscale', shrink_residual=False, out_dir=tmp_path / 'full', **kw)
    assert torch.equal(full.model.residual_scale, torch.ones(12))
    one = fit_encoding_model(data, splits, encoder='multiscale', stagewise=False, out_dir=tmp_path / 'joint', **kw)
    assert type(one.model) is EncodingModel and one.base_fit_result is None
    mean = fit_encoding_model(data, splits, encoder='mean', context=4, chunk=8, max_epochs=1, seed=0, accelerator='cpu',
                              progress_bar=False, out_dir=tmp_path / 'mean')
    assert type(mean.model) is EncodingModel  # nothing to add to a mean model
    with pytest.raises(ValueError, match='share context'):
        StagewiseEncodingModel(EncodingModel('mean', 12, 16, 32, context=4), EncodingModel('mean', 12, 16, 32, context=6))


# --- probes and statistics -----------------------------------------------------------------------------------------
def test_order_probe_chance_for_means_and_high_for_order_code():
    sim = simulate_encoding(n_runs=4, n_tr_per_run=100, n_voxels_per_group=1, seed=5)
    z = embed_trs(make_encoder('mean', 16, 32), sim['stimulus'])
    tr, te = sim['run'] < 3, sim['run'] == 3
    acc = order_probe(z[tr], sim['order'][tr], sim['run'][tr], z[te], sim['order'][te])['order_accuracy']
    assert acc < 0.65  # chance: 100 test TRs, 0.5 +- 0.05
    # an embedding that carries the A-minus-B timing (centre of mass of each event's profile) decodes order
    s = sim['clean_stimulus'] - sim['background']
    t = np.arange(32)
    code = np.stack([(s[:, :, 4] * t).sum(1) / s[:, :, 4].sum(1), (s[:, :, 8] * t).sum(1) / s[:, :, 8].sum(1)], 1)
    acc = order_probe(code[tr], sim['order'][tr], sim['run'][tr], code[te], sim['order'][te])['order_accuracy']
    assert acc > 0.95


def test_reconstruction_probe_perfect_for_identity_and_none_for_mean():
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((200, 4, 3))
    run = np.repeat(np.arange(4), 50)
    full = frames.reshape(200, -1)
    p = reconstruction_probe(full[:150], frames[:150], run[:150], full[150:], frames[150:], alphas=(1e-3,))
    assert p['recon_r'] > 0.99 and p['recon_r_detail'] > 0.99
    m = frames.mean(1)
    p = reconstruction_probe(m[:150], frames[:150], run[:150], m[150:], frames[150:])
    assert abs(p['recon_r_detail']) < 0.2


def test_paired_block_bootstrap():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((300, 6)); bold = truth + rng.standard_normal((300, 6))
    same = paired_block_bootstrap(truth, truth + 0.01 * rng.standard_normal((300, 6)), bold)
    assert same['all']['lo'] < 0 < same['all']['hi']
    better = paired_block_bootstrap(truth, rng.standard_normal((300, 6)), bold)
    assert better['all']['lo'] > 0.5


def test_residual_scale_is_the_validation_least_squares_step(small, tmp_path):
    "The per-voxel scale is the clipped least-squares step of the residual stage on the validation windows."
    from neuronb.encoding.data import FeatureScaler
    data = EncodingData.from_simulation(small)
    splits = run_split(data.run, n_val=1, n_test=1)
    res = fit_encoding_model(data, splits, encoder='multiscale', encoder_kwargs={'d_model': 16}, context=4, chunk=8,
                             max_epochs=2, seed=0, accelerator='cpu', progress_bar=False, out_dir=tmp_path)
    m = res.model
    w = make_windows(res.scaler.transform(data.stimulus), res.bold, data.run, splits['val'], 4, 8)
    with torch.no_grad():
        x = torch.as_tensor(w['x'])
        r, p = w['y'] - m.base(x).numpy(), m.residual(x).numpy()
    g = np.clip((r * p).sum((0, 1)) / (p * p).sum((0, 1)), 0, 1)
    assert np.allclose(m.residual_scale.numpy(), g, atol=1e-4)


def test_encoder_by_name_resolves_through_the_registry_and_names_the_import():
    "The encoding track never imports the temporal track: names resolve in neuronb.nn.temporal.ENCODERS."
    from neuronb.nn.temporal import ENCODERS
    m = EncodingModel('hierarchical', n_voxels=3, n_features=16, n_frames=32, context=4, encoder_kwargs={'d_model': 8})
    assert type(m.encoder) is ENCODERS['hierarchical'] and m.encoder.d_model == 8
    with pytest.raises(ValueError, match=r"unknown temporal encoder 'lstm'; registered: \[.*'multiscale'.*\].*import neuronb\.temporal\.encoders"):
        EncodingModel('lstm', n_voxels=3, n_features=16, n_frames=32)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['d_embed'\]"):
        EncodingModel('multiscale', n_voxels=3, n_features=16, n_frames=32, encoder_kwargs={'d_embed': 8})
    with pytest.raises(TypeError, match='TemporalEncoder or its name, got Linear'):
        EncodingModel(torch.nn.Linear(16, 8), n_voxels=3)
