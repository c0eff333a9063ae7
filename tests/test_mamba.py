"Mamba block: parallel scan against the sequential reference (outputs, gradients), backend choice, checkpoints, bad input."
import io
import logging

import pytest
import torch
import torch.nn.functional as F

from neuronb.nn.mamba import (BACKENDS, Mamba, MambaBackbone, mamba_ssm_kernel, parallel_scan, resolve_backend,
                              sequential_scan, set_backend)

MAMBA_SSM_NAMES = {'in_proj.weight', 'conv1d.weight', 'conv1d.bias', 'x_proj.weight', 'dt_proj.weight', 'dt_proj.bias',
                   'A_log', 'D', 'out_proj.weight'}


def _scan_inputs(length, dtype, seed=0, batch=2, d_inner=5, d_state=3):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, d_inner, generator=gen, dtype=dtype)
    delta = F.softplus(torch.randn(batch, length, d_inner, generator=gen, dtype=dtype))
    A = -2 * torch.rand(d_inner, d_state, generator=gen, dtype=dtype)
    B = torch.randn(batch, length, d_state, generator=gen, dtype=dtype)
    C = torch.randn(batch, length, d_state, generator=gen, dtype=dtype)
    D = torch.randn(d_inner, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, B, C, D)]


@pytest.mark.parametrize('length', [1, 2, 7, 64, 100])
def test_parallel_scan_matches_sequential_outputs_and_gradients(length):
    inputs = _scan_inputs(length, torch.float64)
    results = {}
    for name, scan in [('sequential', sequential_scan), ('parallel', parallel_scan)]:
        y = scan(*inputs)
        weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        results[name] = [y, *torch.autograd.grad((y * weights).sum() + y.pow(2).sum(), inputs)]
    for ref, par in zip(results['sequential'], results['parallel']):
        torch.testing.assert_close(par, ref, rtol=1e-8, atol=1e-8)


def test_parallel_scan_float32_tolerance():
    inputs = _scan_inputs(200, torch.float32, seed=3)
    torch.testing.assert_close(parallel_scan(*inputs), sequential_scan(*inputs), rtol=1e-4, atol=1e-4)


def test_scan_is_a_real_recurrence():
    "A state that decays: y at step t depends on inputs before t (not a per-step map) and never on later ones."
    u, delta, A, B, C, D = [t.detach() for t in _scan_inputs(30, torch.float64)]
    y = parallel_scan(u, delta, A, B, C, D)
    u2 = u.clone()
    u2[:, 10] += 5.0
    y2 = parallel_scan(u2, delta, A, B, C, D)
    assert torch.allclose(y[:, :10], y2[:, :10])
    assert (y[:, 11:15] - y2[:, 11:15]).abs().max() > 1e-3


def test_block_backends_agree_on_outputs_and_parameter_gradients():
    torch.manual_seed(0)
    block = Mamba(8, d_state=4, backend='parallel').double()
    x = torch.randn(2, 33, 8, dtype=torch.float64)
    grads = {}
    for backend in ['parallel', 'sequential']:
        block.backend = backend
        block.zero_grad()
        out = block(x)
        out.pow(2).mean().backward()
        assert block.last_backend == backend
        grads[backend] = [out.detach()] + [p.grad.clone() for p in block.parameters()]
    for a, b in zip(grads['parallel'], grads['sequential']):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_parameter_names_are_mamba_ssm_names():
    assert {name for name, _ in Mamba(16).named_parameters()} == MAMBA_SSM_NAMES
    backbone = MambaBackbone(d_model=16, depth=2)
    names = set(backbone.state_dict())
    assert {f'layers.1.mixer.{n}' for n in MAMBA_SSM_NAMES} <= names
    assert {'layers.0.norm.weight', 'norm_f.weight'} <= names
    block = Mamba(32, d_state=16, expand=2)
    assert block.A_log.shape == (64, 16) and block.x_proj.weight.shape == (2 + 32, 64)  # dt_rank = ceil(32 / 16) = 2


def test_checkpoint_moves_between_backends():
    torch.manual_seed(0)
    source = MambaBackbone(d_model=8, depth=2, d_state=4, backend='parallel')
    x = torch.randn(2, 20, 8)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = MambaBackbone(d_model=8, depth=2, d_state=4, backend='sequential')
    target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    torch.testing.assert_close(target(x), source(x), rtol=1e-4, atol=1e-5)


def test_backend_choice_and_errors(caplog):
    assert resolve_backend('auto', torch.device('cpu')) == 'parallel'
    with pytest.raises(ValueError, match="one of"):
        Mamba(8, backend='fast')
    with pytest.raises(ValueError, match="one of"):
        set_backend(MambaBackbone(8, 1), 'fast')
    block = Mamba(8, backend='cuda')  # built anywhere; refused when run without the kernel or off the GPU
    with pytest.raises(RuntimeError, match="cuda"):
        block(torch.randn(1, 4, 8))
    block.backend = 'auto'
    with caplog.at_level(logging.INFO, logger='neuronb.nn.mamba'):
        block(torch.randn(1, 4, 8))
    assert 'backend: parallel' in caplog.text
    assert block.last_backend == 'parallel'
    assert set(BACKENDS) == {'auto', 'cuda', 'parallel', 'sequential'}


def test_auto_never_picks_sequential():
    backbone = MambaBackbone(8, 2)
    backbone(torch.randn(1, 5, 8))
    assert {m.last_backend for m in backbone.modules() if isinstance(m, Mamba)} == {'parallel'}


@pytest.mark.parametrize('bad', [torch.randn(4, 8), torch.randn(1, 4, 7), torch.randn(1, 1, 4, 8)])
def test_bad_shapes_name_the_expected_shape(bad):
    with pytest.raises(ValueError, match=r"\(batch, length, d_model=8\)"):
        Mamba(8)(bad)


@pytest.mark.skipif(mamba_ssm_kernel() is None or not torch.cuda.is_available(),
                    reason="needs mamba-ssm's selective-scan kernel and a CUDA GPU")
def test_cuda_kernel_matches_parallel_scan_and_loads_into_mamba_ssm():
    from mamba_ssm import Mamba as MambaSSM
    torch.manual_seed(0)
    block = Mamba(32, d_state=16).cuda()
    x = torch.randn(2, 128, 32, device='cuda')
    block.backend = 'cuda'
    kernel_out = block(x)
    block.backend = 'parallel'
    torch.testing.assert_close(kernel_out, block(x), rtol=1e-3, atol=1e-3)
    reference = MambaSSM(32, d_state=16).cuda()
    reference.load_state_dict(block.state_dict(), strict=True)
    torch.testing.assert_close(reference(x), kernel_out, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_parallel_scan_on_gpu_matches_cpu():
    torch.manual_seed(0)
    block = Mamba(16, d_state=8, backend='parallel')
    x = torch.randn(2, 64, 16)
    cpu = block(x)
    gpu = block.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
