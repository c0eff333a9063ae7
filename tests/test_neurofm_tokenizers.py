"""NeuroFMx tokenizers (neuronb.neurofm.tokenizers): shapes, channel-permutation invariance, variable channel counts,
masks, registry and the unknown-modality error."""
import pytest
import torch

from neuronb.neurofm.data import MODALITIES, GridConfig, make_loaders
from neuronb.neurofm.simulate import simulate_session
from neuronb.neurofm.tokenizers import TOKENIZERS, ChannelSetPool, MultiModalTokenizer, band_log_power, check_modalities


@pytest.mark.parametrize('name', MODALITIES)
def test_tokenizer_shapes_permutation_and_padding(name):
    torch.manual_seed(0)
    tok = TOKENIZERS.build(name, d_model=32).eval()
    x, mask = tok.example_input(3)
    out = tok(x, mask)
    assert out.shape == (3, 16, 32) and torch.isfinite(out).all()
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(out, tok(x[..., perm], mask[:, perm]), atol=1e-4)
    # zero-padded extra channels with a False mask change nothing
    padded = torch.cat([x, torch.zeros_like(x[..., :2])], -1)
    pad_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], -1)
    assert torch.allclose(out, tok(padded, pad_mask), atol=1e-4)
    # a different channel count works with the same weights, and changes the output
    assert not torch.allclose(out, tok(x[..., :3], mask[:, :3]), atol=1e-3)
    # gradients reach the tokenizer's parameters
    tok(x, mask).pow(2).mean().backward()
    assert all(p.grad is not None for p in tok.parameters() if p.requires_grad)


def test_pool_without_channels_gives_zeros():
    pool = ChannelSetPool(16, 2)
    assert (pool(torch.randn(2, 4, 3, 16), torch.zeros(2, 3, dtype=torch.bool)) == 0).all()


def test_band_power_resolves_rhythms():
    t = torch.arange(32 * 25) / 250.0
    x = torch.stack([torch.sin(2 * torch.pi * 8 * t), torch.sin(2 * torch.pi * 45 * t)], -1).view(1, 32, 25, 2)
    p = band_log_power(x, 250.0, ((4, 12), (30, 60)))
    assert (p[0, 3:-3, 0, 0] > p[0, 3:-3, 0, 1] + 3).all() and (p[0, 3:-3, 1, 1] > p[0, 3:-3, 1, 0] + 3).all()


def test_wrong_shape_names_the_modality():
    tok = TOKENIZERS.build('eeg', d_model=16)
    with pytest.raises(ValueError, match=r"eeg tokenizer: expected \(batch, seq_len, 16, channels\)"):
        tok(torch.randn(2, 8, 10, 4))


def test_multimodal_tokenizer_on_a_batch_and_unknown_modality():
    sessions = [simulate_session(sp, duration_s=30.0, seed=0) for sp in ('mouse', 'human')]
    grid = GridConfig(window_tokens=8)
    batch = next(iter(make_loaders(sessions, batch_size=4, grid=grid)['train']))
    model = MultiModalTokenizer(tuple(batch['signals']), grid, d_model=16)
    tokens = model(batch['signals'], batch['channel_mask'])
    assert set(tokens) == set(batch['signals']) and all(t.shape == (4, 8, 16) for t in tokens.values())
    for m, t in tokens.items():  # items without the modality get the LayerNorm's bias only (no NaN)
        assert torch.isfinite(t).all()
    with pytest.raises(ValueError, match=r"modality 'spikes' was given but the model was built for \['eeg'\]"):
        MultiModalTokenizer(('eeg',), grid, d_model=16)(batch['signals'], batch['channel_mask'])
    with pytest.raises(ValueError, match="not a NeuroFMx modality"):
        check_modalities(['meg'], ['eeg'])
    with pytest.raises(ValueError, match="unknown NeuroFMx tokenizer 'meg'"):
        TOKENIZERS['meg']
