"""Contracts of neuronb.ssl: InfoNCE against a loop and across two processes, schedules, effective rank, the EMA
codebook, the linear probe, and exact kill-and-resume of a run with an EMA target through `neuronb.train.fit`."""
import math

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from torch import nn

from neuronb.core import seed_everything
from neuronb.data import ArrayDataset, group_split, make_loader, simulate_oscillations
from neuronb.ssl import (DANNObjective, EMATarget, JEPAObjective, LinearProbeCallback, PatchEncoder, VectorQuantizerEMA,
                         effective_rank, ema_momentum, grl_coefficient, GradientReversal, info_nce, info_nce_ddp)
from neuronb.train import TaskModule, fit, load_checkpoint
from fit_callbacks import Interrupt, RecordVal


def info_nce_loop(a, b, temperature):
    "Symmetric InfoNCE straight from its formula, one item at a time, in float64."
    a = [v / np.linalg.norm(v) for v in np.asarray(a, dtype=np.float64)]
    b = [v / np.linalg.norm(v) for v in np.asarray(b, dtype=np.float64)]
    total = 0.0
    for i in range(len(a)):
        total -= math.log(math.exp(a[i] @ b[i] / temperature) / sum(math.exp(a[i] @ bj / temperature) for bj in b))
        total -= math.log(math.exp(b[i] @ a[i] / temperature) / sum(math.exp(b[i] @ aj / temperature) for aj in a))
    return total / (2 * len(a))


@pytest.mark.parametrize('temperature', [0.05, 0.2, 1.0])
def test_info_nce_matches_brute_force(temperature):
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(10, 7, generator=g), torch.randn(10, 7, generator=g)
    assert abs(info_nce(a, b, temperature).item() - info_nce_loop(a, b, temperature)) < 1e-5
    learned = torch.tensor(temperature, requires_grad=True)
    info_nce(a, b, learned).backward()
    step = 1e-4
    numeric = (info_nce_loop(a, b, temperature + step) - info_nce_loop(a, b, temperature - step)) / (2 * step)
    assert abs(learned.grad.item() - numeric) < 1e-3 * max(1.0, abs(numeric))


def test_info_nce_bad_input():
    with pytest.raises(ValueError, match='same shape'): info_nce(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match='at least 2 items'): info_nce(torch.randn(1, 3), torch.randn(1, 3))


def test_info_nce_two_processes_equal_single_process():
    g = torch.Generator().manual_seed(1)
    a, b, w = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g), torch.randn(6, 4, generator=g)
    w1 = w.clone().requires_grad_(True)
    single = info_nce(a @ w1, b @ w1, 0.1)
    single.backward()
    ddp = info_nce_ddp(a, b, w, 0.1, world_size=2)
    assert torch.allclose(ddp['loss'], single.detach(), atol=1e-6)
    assert torch.allclose(ddp['grad'], w1.grad, atol=1e-6)
    # the check can fail: negatives from the own half only give another loss
    halves = np.mean([info_nce(a[s] @ w, b[s] @ w, 0.1).item() for s in (slice(0, 8), slice(8, 16))])
    assert abs(halves - single.item()) > 1e-3


def test_schedules():
    assert ema_momentum(0.0) == 0.996 and ema_momentum(1.0) == 1.0
    assert abs(ema_momentum(0.5) - 0.998) < 1e-12 and abs(ema_momentum(0.25) - (1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)) < 1e-12
    assert grl_coefficient(0.0) == 0.0
    for p in (0.1, 0.3, 0.5, 1.0): assert abs(grl_coefficient(p) - (2 / (1 + math.exp(-10 * p)) - 1)) < 1e-12
    assert abs(grl_coefficient(0.1) - 0.4621171572600098) < 1e-12
    x = torch.ones(4, requires_grad=True)
    GradientReversal(0.5)(x).sum().backward()
    assert torch.equal(x.grad, torch.full((4,), -0.5))


def test_ema_target_update_and_state():
    online = nn.Linear(3, 2)
    ema = EMATarget(online, momentum_start=0.9, momentum_end=1.0)
    start = ema.target.weight.clone()
    with torch.no_grad(): online.weight.add_(1.0)
    assert ema.update(online, 0.0) == pytest.approx(0.9)
    assert torch.allclose(ema.target.weight, start + 0.1)
    ema.update(online, 1.0)  # momentum 1: the target stays
    assert torch.allclose(ema.target.weight, start + 0.1) and int(ema.step) == 2
    with pytest.raises(ValueError, match='parameters differ'): ema.update(nn.Linear(3, 3, bias=False), 0.5)


def test_effective_rank_of_rank_k_matrices():
    g = torch.Generator().manual_seed(0)
    for k in (1, 3, 8):
        left, _ = torch.linalg.qr(torch.randn(100, k, generator=g, dtype=torch.float64))
        right, _ = torch.linalg.qr(torch.randn(20, k, generator=g, dtype=torch.float64))
        assert abs(effective_rank(left @ right.T) - k) < 1e-6
        random_k = torch.randn(100, k, generator=g) @ torch.randn(k, 20, generator=g)
        assert 0.7 * k < effective_rank(random_k) <= k + 1e-9


def test_vq_codebook_moves_toward_data_and_restarts_dead_codes():
    seed_everything(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    vq = VectorQuantizerEMA(n_codes=6, d_code=2, decay=0.8, dead_threshold=0.05)
    with torch.no_grad(): vq.codebook[5] = torch.tensor([50.0, 50.0]); vq.embed_sum[5] = vq.codebook[5]
    before = torch.cdist(centres, vq.codebook).min(1).values
    for _ in range(60): vq(centres[torch.randint(0, 3, (300,))] + 0.2 * torch.randn(300, 2))
    after = torch.cdist(centres, vq.codebook).min(1).values
    assert (before > 2.5).all() and (after < 0.3).all(), (before, after)
    assert int(vq.restarts) >= 1, 'the far-away code is never chosen and must be restarted'
    frozen = vq.codebook.clone()
    vq.eval()(torch.randn(50, 2))
    assert torch.equal(frozen, vq.codebook), 'no update in eval mode'


def test_linear_probe_above_chance_on_signal_and_at_chance_on_shuffled_labels():
    sim = simulate_oscillations(n_sessions=6, n_trials=40, n_times=128, snr=1.0, seed=0)
    splits = group_split(sim['session'], fractions=(0.5, 0.5), names=('train', 'test'), seed=0)
    band_power = lambda model, x: torch.log(torch.fft.rfft(x, dim=-1).abs().pow(2).mean(1) + 1e-6)
    tr, te = splits['train'], splits['test']
    probe = LinearProbeCallback((sim['x'][tr], sim['y'][tr]), (sim['x'][te], sim['y'][te]), embed=band_power, C=0.1)
    scores = probe.score(nn.Linear(1, 1))
    assert scores['probe/accuracy'] > 0.8 and scores['monitor/effective_rank'] > 1
    shuffled = np.random.default_rng(0).permutation(sim['y'][tr])
    null = LinearProbeCallback((sim['x'][tr], shuffled), (sim['x'][te], sim['y'][te]), embed=band_power, C=0.1)
    assert null.score(nn.Linear(1, 1))['probe/accuracy'] < 0.5  # three classes: chance 1/3
    with pytest.raises(ValueError, match='single class'):
        LinearProbeCallback((sim['x'][:5], np.zeros(5)), (sim['x'][te], sim['y'][te]))


def test_objectives_name_bad_input():
    encoder = PatchEncoder(4, patch_len=16, d_model=8)
    with pytest.raises(ValueError, match=r'tokens \(batch, n_times // patch_len, d_model\)'):
        JEPAObjective(encoder, d_model=12, patch_len=16).step(encoder, {'x': torch.randn(2, 4, 64)}, 'train')
    dann = DANNObjective(nn.Linear(8, 3), d_features=8, n_classes=3, n_domains=2)
    with pytest.raises(KeyError, match="batch\\['domain'\\]"):
        dann.step(nn.Linear(5, 8), {'x': torch.randn(4, 5), 'y': torch.zeros(4, dtype=torch.long)}, 'train')


@pytest.fixture(scope='module')
def loaders():
    sim = simulate_oscillations(n_sessions=6, n_trials=24, n_times=128, seed=4)
    splits = group_split(sim['session'], seed=0)
    loaders = {s: make_loader(ArrayDataset(sim['x'][i], sim['y'][i], sim['session'][i]), batch_size=16,
                              shuffle=s == 'train', seed=5) for s, i in splits.items()}
    probe_data = {s: (sim['x'][i], sim['y'][i]) for s, i in splits.items()}
    return loaders, probe_data


def _jepa_run(loaders, out, ckpt=None, interrupt=None, epochs=4, seed=1):
    loaders, probe_data = loaders
    seed_everything(seed)
    encoder = PatchEncoder(4, patch_len=16, d_model=16, dropout=0.1)
    module = TaskModule(encoder, objective=JEPAObjective(encoder, d_model=16, patch_len=16, momentum_start=0.9), lr=1e-2)
    record = RecordVal()
    probe = LinearProbeCallback(probe_data['train'], probe_data['val'])
    callbacks = [record, probe] + ([Interrupt(interrupt)] if interrupt else [])
    result = fit(module, loaders['train'], loaders['val'], max_epochs=epochs, seed=seed, out_dir=out, ckpt_path=ckpt,
                 callbacks=callbacks, progress_bar=False)
    return result, record.losses, probe.history


def test_kill_and_resume_with_ema_target_is_exact(loaders, tmp_path):
    straight, s_losses, s_probe = _jepa_run(loaders, tmp_path / 'straight')
    first, f_losses, _ = _jepa_run(loaders, tmp_path / 'resumed', interrupt=2)
    assert sorted(f_losses) == [0, 1]
    resumed, r_losses, r_probe = _jepa_run(loaders, tmp_path / 'resumed', ckpt=first.last_checkpoint)
    assert sorted(r_losses) == [2, 3], 'resume must continue at epoch 2'
    assert [f_losses[0], f_losses[1], r_losses[2], r_losses[3]] == [s_losses[e] for e in range(4)]
    assert r_probe == s_probe and len(s_probe) == 4, 'the probe history is restored and continues identically'
    a = load_checkpoint(straight.last_checkpoint)['state_dict']
    b = load_checkpoint(resumed.last_checkpoint)['state_dict']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    target_keys = [k for k in a if '.target.target.' in k]
    assert target_keys, 'the EMA target is in the checkpoint'
    steps = [v for k, v in a.items() if k.endswith('target.step')]
    assert len(steps) == 1 and int(steps[0]) == 4 * len(loaders[0]['train'])
    # the target followed the online encoder but is not a copy of it
    online = {k.split('model.', 1)[1]: v for k, v in a.items() if k.startswith('model.')}
    target = {k.split('.target.target.', 1)[1]: v for k, v in a.items() if '.target.target.' in k}
    assert online.keys() == target.keys() and not all(torch.equal(online[k], target[k]) for k in online)
    for k in ('val/loss', 'probe/accuracy', 'monitor/effective_rank'):
        assert resumed.metrics[k] == straight.metrics[k]


def test_vq_kmeans_init_uses_the_data_and_l2_codes_stay_unit():
    seed_everything(0)
    centres = torch.tensor([[8.0, 0.0], [-8.0, 0.0], [0.0, 8.0], [0.0, -8.0]])
    batch = centres[torch.randint(0, 4, (400,))] + 0.2 * torch.randn(400, 2)
    fitted = VectorQuantizerEMA(n_codes=4, d_code=2, decay=0.999, dead_threshold=0.0, kmeans_init=True)
    plain = VectorQuantizerEMA(n_codes=4, d_code=2, decay=0.999, dead_threshold=0.0)
    fitted(batch); plain(batch)
    assert (torch.cdist(centres, fitted.codebook).min(1).values < 0.3).all(), 'one batch of k-means finds every cluster'
    assert (torch.cdist(centres, plain.codebook).min(1).values > 3).any()
    def again(flat): raise AssertionError('k-means ran a second time')
    fitted._init_codebook = again
    fitted(batch + 100.0)  # k-means runs once; later batches move the codebook by EMA only
    assert bool(fitted.initialized)
    assert 'initialized' in fitted.state_dict() and 'initialized' not in plain.state_dict()
    unit = VectorQuantizerEMA(n_codes=8, d_code=4, l2_norm=True)
    out = unit(5 * torch.randn(64, 4))
    assert torch.allclose(unit.codebook.norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(64), atol=1e-5)
    assert float(out.usage) == out.codes.unique().numel() / 8, 'usage: the share of the 8 codes this batch used'
    counts = torch.bincount(out.codes, minlength=8).float() / 64
    assert torch.isclose(out.perplexity, torch.exp(-(counts * torch.log(counts + 1e-10)).sum()))
    z = torch.randn(3, 4)
    nearest_by_cosine = (torch.nn.functional.normalize(z, dim=1) @ unit.codebook.T).argmax(1)
    assert torch.equal(unit.eval()(z * 7.0).codes, nearest_by_cosine), 'unit codes: the nearest code is the most similar direction'
