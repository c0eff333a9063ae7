"The shared building blocks: attention (fused vs explicit), blocks, cross-attention with padding, registry, n_params."
import inspect

import pytest
import torch
from torch import nn

from neuronb.nn.attention import (Attention, Block, CrossAttention, CrossBlock, DividedBlock, PerceiverEncoder,
                                  attention_weights, divided_attention_matrices, scaled_dot_product)
from neuronb.nn.registry import Registry, n_params
from neuronb.nn.temporal import ENCODERS, MeanPool, MultiScaleBlock, TemporalEncoder


def _masks(n_queries, n_keys, n_heads=4, seed=0):
    "No mask, an additive bias per head, a boolean mask (every query keeps a key), a causal -inf bias."
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.rand(2, 1, n_queries, n_keys, generator=gen) > 0.4
    allowed[..., 0] = True
    lag = torch.arange(n_queries)[:, None] - torch.arange(n_keys)[None]
    causal = torch.where(lag >= 0, torch.zeros(()), torch.tensor(float('-inf')))
    return {'none': None, 'bias': torch.randn(n_heads, n_queries, n_keys, generator=gen), 'bool': allowed,
            'causal': causal}


@pytest.mark.parametrize('mask_kind', ['none', 'bias', 'bool', 'causal'])
def test_fused_and_explicit_attention_agree(mask_kind):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    mask = _masks(6, 6)[mask_kind]
    fused, none = scaled_dot_product(q, k, v, mask)
    explicit, weights = scaled_dot_product(q, k, v, mask, return_attn=True)
    assert none is None and torch.allclose(fused, explicit, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 6), atol=1e-6)
    if mask_kind == 'bool': assert (weights[~mask.expand_as(weights)] == 0).all()
    if mask_kind == 'causal': assert (weights.triu(1) == 0).all()
    # the explicit weights are the reference softmax
    scores = q @ k.transpose(-2, -1) / 8 ** 0.5
    if mask_kind in ('bias', 'causal'): scores = scores + mask
    if mask_kind == 'bool': scores = scores.masked_fill(~mask, float('-inf'))
    assert torch.allclose(weights, scores.softmax(-1), atol=1e-6)
    assert torch.allclose(attention_weights(q, k, mask), weights)


@pytest.mark.parametrize('mask_kind', ['none', 'bias', 'bool', 'causal'])
def test_attention_module_paths_agree(mask_kind):
    torch.manual_seed(1)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 6, 32)
    mask = _masks(6, 6)[mask_kind]
    y, w = attn(x, mask, return_attn=True)
    assert torch.allclose(y, attn(x, mask), atol=1e-6) and w.shape == (2, 6, 6)
    blk = Block(32, 4).eval()
    y, w = blk(x, attn_mask=mask, return_attn=True)
    assert torch.allclose(y, blk(x, attn_mask=mask), atol=1e-6) and torch.allclose(w.sum(-1), torch.ones(2, 6), atol=1e-6)


def test_attention_checks_heads_and_mask_changes_output():
    with pytest.raises(ValueError, match='d_model=30 must be divisible by n_heads=4'):
        Attention(30, 4)
    torch.manual_seed(2)
    attn = Attention(16, 2).eval()
    x = torch.randn(1, 5, 16)
    lag = torch.arange(5)[:, None] - torch.arange(5)[None]
    causal = attn(x, lag >= 0)
    # causal: the first token sees only itself, so changing later tokens leaves it unchanged
    x2 = x.clone(); x2[:, 1:] += 1.0
    assert torch.allclose(attn(x2, lag >= 0)[:, 0], causal[:, 0], atol=1e-6)
    assert not torch.allclose(attn(x2)[:, 0], attn(x)[:, 0], atol=1e-4)


def test_block_dropout_options():
    blk = Block(16, 2, dropout=0.3, proj_dropout=0.0, layerscale_init=None, drop_path=0.2)
    assert blk.attn.proj_drop.p == 0.0 and blk.mlp.drop1.p == 0.3 and isinstance(blk.ls1, nn.Identity)
    assert Block(16, 2, dropout=0.3).attn.proj_drop.p == 0.3
    assert [k for k in Block(16, 2).state_dict() if k.startswith('ls')] == ['ls1.gamma', 'ls2.gamma']


def test_divided_block_shapes_and_matrices():
    torch.manual_seed(3)
    n_steps, n_patches = 3, 5
    blk = DividedBlock(32, 4).eval()
    x = torch.randn(2, 1 + n_steps * n_patches, 32)
    y, (across, within) = blk(x, n_steps, return_attn=True)
    assert y.shape == x.shape and across.shape == within.shape == (2, 16, 16)
    assert torch.allclose(y, blk(x, n_steps), atol=1e-6)
    assert torch.allclose(across.sum(-1), torch.ones(2, 16), atol=1e-5) and torch.allclose(within.sum(-1), torch.ones(2, 16), atol=1e-5)
    # across steps: patch p of step i attends only to patch p of the other steps (token 1 + i * n_patches + p)
    row = across[0, 1 + 0 * n_patches + 2]
    assert set(row.nonzero().flatten().tolist()) <= {1 + i * n_patches + 2 for i in range(n_steps)}
    # within a step: no weight crosses to another step's patches
    assert (within[0, 1:1 + n_patches, 1 + n_patches:] == 0).all()
    with pytest.raises(ValueError, match='do not split into n_steps=4'):
        blk(x, 4)


def test_divided_matrices_follow_the_weights_device_and_dtype():
    across = torch.rand(2, 5, 3, 3, dtype=torch.float64, device='meta')
    within = torch.rand(2, 3, 6, 6, dtype=torch.float64, device='meta')
    full = divided_attention_matrices(across, within)
    assert all(m.device.type == 'meta' and m.dtype == torch.float64 and m.shape == (2, 16, 16) for m in full)


def test_cross_attention_ignores_padded_inputs():
    torch.manual_seed(4)
    xattn = CrossAttention(32, 4, d_context=12).eval()
    queries, inputs = torch.randn(3, 6, 32), torch.randn(3, 9, 12)
    padding = torch.zeros(3, 9, dtype=torch.bool)
    padding[0, 4:] = True
    padding[2, 7:] = True
    out, w = xattn(queries, inputs, padding, return_attn=True)
    assert (w[0, :, 4:] == 0).all() and (w[2, :, 7:] == 0).all() and torch.allclose(w.sum(-1), torch.ones(3, 6), atol=1e-6)
    assert torch.allclose(out, xattn(queries, inputs, padding), atol=1e-6)  # fused and explicit agree
    changed = inputs.clone()
    changed[0, 4:] = 50.0
    changed[2, 7:] = -50.0
    assert torch.allclose(xattn(queries, changed, padding), out, atol=1e-6)
    # the same item without its padding (shorter input) gives the same result
    assert torch.allclose(xattn(queries[:1], inputs[:1, :4]), out[:1], atol=1e-5)
    assert not torch.allclose(xattn(queries, changed), xattn(queries, inputs), atol=1e-3)  # unmasked, padding is read
    with pytest.raises(ValueError, match=r'batch item\(s\) \[1\] is padding'):
        all_padded = padding.clone(); all_padded[1] = True
        xattn(queries, inputs, all_padded)
    with pytest.raises(TypeError, match='bool'):
        xattn(queries, inputs, padding.float())


def test_cross_block_and_perceiver_encoder():
    torch.manual_seed(5)
    blk = CrossBlock(16, 2, d_context=8).eval()
    assert blk(torch.randn(2, 3, 16), torch.randn(2, 7, 8)).shape == (2, 3, 16)
    perceiver = PerceiverEncoder(d_input=8, n_latents=4, d_model=16, depth=2, n_heads=2, drop_path=0.1).eval()
    x = torch.randn(2, 11, 8)
    padding = torch.zeros(2, 11, dtype=torch.bool)
    padding[1, 6:] = True
    z = perceiver(x, padding)
    assert z.shape == (2, 4, 16) and len(perceiver.blocks) == 2
    x2 = x.clone(); x2[1, 6:] = 9.0
    assert torch.allclose(perceiver(x2, padding), z, atol=1e-5)
    z.sum().backward()
    assert perceiver.latents.grad is not None and perceiver.latents.grad.abs().sum() > 0


# --- registry --------------------------------------------------------------------------------------------------------
def _registry():
    reg = Registry('test model', hint='import tests.models to register more')

    @reg.register('lin')
    class Lin(nn.Linear):
        def __init__(self, n_inputs: int, n_outputs: int = 2, bias: bool = True):
            super().__init__(n_inputs, n_outputs, bias)

    @reg.register()
    def anything(n_inputs: int, **options):
        return nn.Linear(n_inputs, options.get('n_outputs', 1))
    return reg, Lin


def test_registry_rejects_unknown_options_naming_the_accepted_ones():
    reg, Lin = _registry()
    with pytest.raises(ValueError, match=r"test model 'lin' \(.*Lin\) does not take option\(s\) \['dropout', 'embed_dim'\]; "
                                         r"it takes \['n_inputs', 'n_outputs', 'bias'\]"):
        reg.build('lin', n_inputs=3, embed_dim=8, dropout=0.1)
    with pytest.raises(ValueError, match=r"needs option\(s\) \['n_inputs'\]"):
        reg.build('lin', n_outputs=3)
    with pytest.raises(ValueError, match=r"unknown test model 'conv'; registered: \['anything', 'lin'\]\. import tests\.models"):
        reg.build('conv', n_inputs=3)
    assert reg.build('lin', n_inputs=3, n_outputs=5).out_features == 5
    assert reg.build('anything', n_inputs=3, n_outputs=4, whatever=1).out_features == 4  # **options takes anything


def test_registry_introspection_and_duplicates():
    reg, Lin = _registry()
    assert reg.names() == ['anything', 'lin'] and list(reg) == reg.names() and len(reg) == 2 and 'lin' in reg
    assert reg.options('lin') == {'n_inputs': inspect.Parameter.empty, 'n_outputs': 2, 'bias': True}
    assert list(reg.signature('lin').parameters) == ['n_inputs', 'n_outputs', 'bias']
    assert reg['lin'] is Lin and reg.register('lin')(Lin) is Lin  # the same builder again: harmless
    with pytest.raises(ValueError, match="'lin' is already registered"):
        reg.register('lin')(nn.Linear)


def test_n_params_counts_trainable_or_all():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert n_params(m) == 3 * 4 + 4 + 4 * 2 + 2
    m[0].requires_grad_(False)
    assert n_params(m) == 4 * 2 + 2 and n_params(m, trainable_only=False) == 3 * 4 + 4 + 4 * 2 + 2


# --- temporal blocks -------------------------------------------------------------------------------------------------
def test_multiscale_block_reach_is_the_widest_kernel():
    torch.manual_seed(6)
    blk = MultiScaleBlock(8, kernel_sizes=(1, 3, 7), dropout=0.0).eval()
    h = torch.zeros(1, 21, 8)
    h[0, 10] = torch.randn(8)
    with torch.no_grad():
        change = (blk(h) - h - blk(torch.zeros_like(h))).abs().sum(-1)[0]
    assert (change[7:14] > 0).all() and (change[:7] < 1e-6).all() and (change[14:] < 1e-6).all()


def test_temporal_encoder_interface_and_mean_registration():
    assert 'mean' in ENCODERS and ENCODERS['mean'] is MeanPool and issubclass(MeanPool, TemporalEncoder)
    enc = ENCODERS.build('mean', n_features=4, n_frames=6, d_model=3)
    assert enc.d_model == 3 and enc.n_params == 4 * 3 + 3 and 'd_model=3' in repr(enc)
    with pytest.raises(ValueError, match='n_frames must be a positive int'):
        MeanPool(4, 0)
    with pytest.raises(ValueError, match=r'built for n_frames=6 per window but x has 5 frames'):
        enc(torch.randn(2, 5, 4))


def test_registry_accepts_a_redefinition_of_the_same_builder():
    "A notebook cell run again (or a reloaded module) defines a new class object of the same name: it replaces the entry."
    from neuronb.nn.registry import Registry
    reg = Registry('demo model')

    def make_first():
        class Net(nn.Module):
            pass
        return Net

    first, second = make_first(), make_first()
    reg.register('net')(first)
    reg.register('net')(second)
    assert reg['net'] is second
    with pytest.raises(ValueError, match="'net' is already registered"):
        reg.register('net')(nn.Identity)
