"""Channel adaptation: zero-padding, MNE spherical-spline interpolation and the cross-attention adapter."""
import numpy as np
import pytest
import torch

from neuronb.eeg.channels import (ChannelAdapter, SplineInterpolation, ZeroPad, name_bucket, normalized_positions,
                                  paired_windows, reconstruction_r2, target_montage)
from neuronb.eeg.simulate import TUH_CHANNELS, montage_positions


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "The matrices are tiny: one thread avoids the cost of synchronising several (restored afterwards)."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def montages():
    names, raw_positions = montage_positions('colin27_1005', TUH_CHANNELS)
    return names, normalized_positions(raw_positions), target_montage()[1]


def test_zero_pad_places_each_channel_once(montages):
    _, source, target = montages
    pad = ZeroPad(source, target)
    assert len(set(pad.index.tolist())) == 21
    x = torch.randn(3, 21, 10)
    out = pad(x)
    assert torch.equal(out[:, pad.index], x) and int((out.abs().sum(-1) > 0).sum()) == 3 * 21
    # each 10-20 channel lands close to where it was (the assignment is by angle)
    cos = (source * target[pad.index.numpy()]).sum(1) / np.linalg.norm(source, axis=1) / np.linalg.norm(target[pad.index.numpy()], axis=1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 25


def test_spline_reproduces_a_smooth_field(montages):
    _, source, target = montages
    spline = SplineInterpolation(source, target)
    assert torch.allclose(spline(torch.ones(1, 21, 1)), torch.ones(1, 128, 1), atol=1e-3)
    # a smooth (linear) scalp field is recovered at target electrodes near the recorded ones
    field = lambda p: p @ np.array([1.0, -2.0, 0.5]) / 0.095
    estimate = spline(torch.as_tensor(field(source), dtype=torch.float32)[None, :, None])[0, :, 0].numpy()
    near = (target @ source.T / 0.095 ** 2).max(1) > np.cos(np.radians(15))
    assert near.sum() > 40 and np.abs(estimate[near] - field(target[near])).max() < 0.15 * np.abs(field(target)).max()


def test_adapter_is_montage_agnostic(montages):
    names, source, _ = montages
    torch.manual_seed(0)
    adapter = ChannelAdapter(d_model=16, n_heads=2)
    positions = torch.as_tensor(source, dtype=torch.float32)
    ids = torch.as_tensor([name_bucket(n) for n in names])
    x = torch.randn(2, 21, 30)
    out = adapter(x, positions, ids)
    assert out.shape == (2, 128, 30)
    perm = torch.randperm(21)
    assert torch.allclose(adapter(x[:, perm], positions[perm], ids[perm]), out, atol=1e-5)  # channel order is irrelevant
    # padding channels are ignored: appended junk channels marked as padding change nothing
    padded_x = torch.cat([x, 100 * torch.randn(2, 5, 30)], 1)
    padded_pos = torch.cat([positions, positions[:5]], 0)
    padded_ids = torch.cat([ids, ids[:5]], 0)
    mask = torch.zeros(2, 26, dtype=torch.bool)
    mask[:, 21:] = True
    assert torch.allclose(adapter(padded_x, padded_pos, padded_ids, key_padding_mask=mask), out, atol=1e-5)
    # and it is linear in the signal
    assert torch.allclose(adapter(2 * x, positions, ids), 2 * out, atol=1e-5)
    out.sum().backward()
    assert adapter.queries.grad is not None and adapter.queries.grad.abs().sum() > 0


def test_trained_adapter_reconstructs_unrecorded_channels(montages):
    names, source, target = montages
    torch.manual_seed(0)
    train_low, train_high = paired_windows(4, seed=0, seconds=10.0)
    test_low, test_high = paired_windows(2, seed=1, seconds=10.0)
    positions = torch.as_tensor(source, dtype=torch.float32)
    ids = torch.as_tensor([name_bucket(n) for n in names])
    adapter = ChannelAdapter(d_model=16, n_heads=2)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        batch = torch.randint(len(train_low), (8,))
        loss = ((adapter(train_low[batch], positions, ids) - train_high[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pad = ZeroPad(source, target)
    empty = torch.ones(128, dtype=torch.bool)
    empty[pad.index] = False
    with torch.no_grad():
        r2_adapter = reconstruction_r2(adapter(test_low, positions, ids), test_high)[empty].numpy()
        r2_pad = reconstruction_r2(pad(test_low), test_high)[empty].numpy()
        untrained = reconstruction_r2(ChannelAdapter(d_model=16, n_heads=2)(test_low, positions, ids), test_high)[empty].numpy()
    assert np.abs(r2_pad).max() < 1e-6
    assert np.median(r2_adapter) > 0.5 and np.median(r2_adapter) > np.median(untrained) + 0.2
