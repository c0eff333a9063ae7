"""neuronb.interpret: capture, selectivity, geometry, patching, SAE, attribution and embeddings on small known cases,
and the bad-input catalogue (unknown module names, mismatched patches, non-differentiable inputs, an SAE wider than
its data), with hooks removed after every error."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from neuronb.interpret.attribution import (attention_maps, attention_rollout, attribution_profile, grad_cam,
                                           integrated_gradients, region_fraction)
from neuronb.interpret.capture import ActivationCapture, RunningMoments, collect_activations, resolve_modules
from neuronb.interpret.embeddings import embed
from neuronb.interpret.neurons import NeuronActivationAnalyzer, linear_cka, participation_ratio, rsa
from neuronb.interpret.patching import Component, activation_patching, head_components, path_patching
from neuronb.interpret.planted import WiredTransformer, planted_dimensionality, planted_tuning, wired_inputs
from neuronb.interpret.sae import TopKSAE, sae_metrics, spliced_loss, train_sae


def n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


# --- capture ----------------------------------------------------------------------------------------------------------
def test_capture_records_outputs_inputs_gradients_and_removes_hooks(mlp):
    x = torch.randn(7, 6)
    with ActivationCapture(mlp, ['0', '2'], inputs=True, gradients=True) as cap:
        mlp(x).sum().backward()
    assert n_hooks(mlp) == 0
    assert torch.allclose(cap.outputs['0'], mlp[0](x).detach())
    assert torch.equal(cap.inputs['2'], torch.relu(cap.outputs['0']))
    assert torch.allclose(cap.gradients['2'], torch.ones(7, 3))


def test_unknown_module_lists_valid_names_and_registers_nothing(mlp):
    with pytest.raises(KeyError, match=r"no module named \['fc1'\].*valid names are: \['0', '1', '2'\]"):
        ActivationCapture(mlp, ['0', 'fc1'])
    assert n_hooks(mlp) == 0
    with pytest.raises(KeyError, match='valid names'):
        collect_activations(mlp, [torch.randn(2, 6)], 'nope')


def test_hooks_removed_after_an_error_inside_the_block(mlp):
    with pytest.raises(RuntimeError):
        with ActivationCapture(mlp, ['0', '1', '2']):
            mlp(torch.randn(2, 5))
    assert n_hooks(mlp) == 0
    with pytest.raises(KeyError, match="no 'x' entry"):
        collect_activations(mlp, [{'inputs': torch.randn(2, 6)}], '0')
    assert n_hooks(mlp) == 0 and mlp.training


def test_streaming_summaries_equal_the_full_arrays(mlp):
    items = [{'x': torch.randn(6), 'cond': i % 4} for i in range(203)]
    loader = DataLoader(items, batch_size=32)
    full = collect_activations(mlp, loader, ['0', '2'], condition_key='cond')
    moments = collect_activations(mlp, loader, ['0', '2'], summary='covariance', condition_key='cond')
    assert full['0'].shape == (203, 16) and moments['0'].n == 203
    np.testing.assert_allclose(moments['0'].mean, full['0'].mean(0), atol=1e-6)
    np.testing.assert_allclose(moments['2'].cov, np.cov(full['2'].T), atol=1e-5)
    np.testing.assert_allclose(moments['2'].condition_means()[3], full['2'][full['conditions'] == 3].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match='covariance was not accumulated'):
        collect_activations(mlp, loader, '0', summary='moments')['0'].cov


def test_running_moments_precision_with_a_large_offset():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5000, 4)) + 1e7
    moments = RunningMoments()
    for part in np.array_split(data, 17): moments.update(part)
    np.testing.assert_allclose(moments.var, data.var(0, ddof=1), rtol=1e-6)


# --- neurons and geometry ---------------------------------------------------------------------------------------------
def test_selectivity_tuning_curve_and_null():
    planted = planted_tuning(seed=1)
    analyzer = NeuronActivationAnalyzer(n_shuffles=50, n_boot=100)
    tuned = analyzer.compute_neuron_selectivity(planted['activity'], 0, planted['stimulus'])
    assert tuned.preferred == planted['preferred'][0] and tuned.p_value < 1e-6 and tuned.corrected_index > 0.1
    assert (tuned.ci_low < tuned.tuning_curve).all() and (tuned.tuning_curve < tuned.ci_high).all()
    untuned = analyzer.compute_neuron_selectivity(planted['activity'], 50, planted['stimulus'])
    assert untuned.p_value > 0.001 and abs(untuned.corrected_index) < 0.02
    with pytest.raises(IndexError, match='has 60 units'):
        analyzer.compute_neuron_selectivity(planted['activity'], 60, planted['stimulus'])
    with pytest.raises(ValueError, match='one value per item'):
        analyzer.compute_neuron_selectivity(planted['activity'], 0, planted['stimulus'][:-1])


def test_participation_ratio_correction_and_cka_rsa():
    data = planted_dimensionality(n_items=80, dim=30, seed=2)
    assert abs(participation_ratio(data) - 30) < 3 < abs(participation_ratio(data, bias_corrected=False) - 30)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    assert linear_cka(x, x @ np.linalg.qr(rng.normal(size=(10, 10)))[0]) > 0.999
    assert linear_cka(x, rng.normal(size=(200, 10))) < 0.2
    labels = rng.integers(0, 5, 200)
    coded = rng.normal(size=(5, 10))[labels] * 3 + x
    assert rsa(coded, 2 * coded + 1, labels) > 0.99
    with pytest.raises(ValueError, match='same items'):
        linear_cka(x, x[:-1])


# --- patching ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def wired():
    torch.manual_seed(0)
    model = WiredTransformer(wired_layer=0, wired_head=1)
    return model, *wired_inputs(model, signal_position=2)


def metric(logits): return logits[:, 1] - logits[:, 0]


def test_patching_finds_a_head_wired_in_the_first_layer(wired):
    model, clean, corrupted = wired
    table = activation_patching(model, clean, corrupted, head_components(model, ['blocks.0.attn'], position=0), metric)
    assert table.effect.abs().idxmax() == 1 and abs(table.effect[1] - 1) < 1e-3
    assert table.drop(1).effect.abs().max() < 1e-4
    assert n_hooks(model) == 0


def test_patching_bad_input_and_hooks_removed(wired):
    model, clean, corrupted = wired
    with pytest.raises(KeyError, match='valid names'):
        activation_patching(model, clean, corrupted, ['blocks.9.attn'], metric)
    with pytest.raises(ValueError, match=r"has no heads to patch.*\['blocks.0.attn', 'blocks.1.attn'\]"):
        activation_patching(model, clean, corrupted, [Component('blocks.0.mlp', head=0)], metric)
    with pytest.raises(ValueError, match='head 4 out of range'):
        activation_patching(model, clean, corrupted, [Component('blocks.0.attn', head=4)], metric)
    with pytest.raises(ValueError, match=r'activation being patched has shape \(8, 6, 32\), the patch \(8, 5, 32\)'):
        activation_patching(model, clean[:, :5], corrupted, ['embed'], metric)
    with pytest.raises(ValueError, match='nothing to restore'):
        activation_patching(model, clean, clean, ['embed'], metric)
    assert n_hooks(model) == 0


def test_path_patching_only_through_the_wired_head(wired):
    model, clean, corrupted = wired
    receivers = head_components(model, ['blocks.0.attn'], position=0)
    paths = path_patching(model, clean, corrupted, Component('embed', position=2), receivers, metric, freeze=receivers)
    assert paths.effect.abs().idxmax() == 1 and abs(paths.effect[1] - 1) < 1e-3
    assert paths.drop(1).effect.abs().max() < 1e-4


# --- SAE --------------------------------------------------------------------------------------------------------------
def test_topk_sae_shapes_sparsity_and_bad_width():
    sae = TopKSAE(8, 32, k=3)
    out = sae(torch.randn(20, 8))
    assert ((out.latents > 0).sum(1) <= 3).all() and out.reconstruction.shape == (20, 8)
    with pytest.raises(ValueError, match='k must be in'):
        TopKSAE(8, 32, k=32)
    with pytest.raises(ValueError, match='wider than the data allows: only 50 activation vectors'):
        train_sae(np.random.randn(50, 8), n_latents=64)
    with pytest.raises(ValueError, match=r'must be \(n_items, d_input\)'):
        train_sae(np.random.randn(50, 8, 2), n_latents=16)
    with pytest.raises(ValueError, match='width 8'):
        sae(torch.randn(3, 9))


def test_sae_trains_and_spliced_loss(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(2048, 4)
    y = model(x).argmax(1).detach()
    acts = collect_activations(model, [x[i:i + 256] for i in range(0, 2048, 256)], '1')['1']
    sae = train_sae(acts, n_latents=16, k=6, epochs=8, batch_size=256, lr=1e-2, out_dir=tmp_path)
    metrics = sae_metrics(sae, acts)
    assert metrics['l0'] <= 6 and metrics['fraction_variance_explained'] > 0.9
    assert torch.allclose(sae.decoder.norm(dim=1), torch.ones(16), atol=1e-5)
    loader = [{'x': x[i:i + 512], 'y': y[i:i + 512]} for i in range(0, 2048, 512)]
    losses = spliced_loss(model, '1', sae, loader)
    assert losses['loss_clean'] <= losses['loss_spliced'] < losses['loss_mean_ablated']
    assert losses['loss_recovered'] > 0.8
    assert n_hooks(model) == 0


# --- attribution ------------------------------------------------------------------------------------------------------
def test_integrated_gradients_exact_on_linear_and_bad_inputs():
    torch.manual_seed(0)
    linear = nn.Linear(5, 2)
    x = torch.randn(3, 5)
    result = integrated_gradients(linear, x, target=0, baseline=0.5)
    torch.testing.assert_close(result.attributions, linear.weight[0].detach() * (x - 0.5))
    assert result.completeness_error < 1e-4
    with pytest.raises(TypeError, match='floating-point input.*int64'):
        integrated_gradients(linear, torch.ones(3, 5, dtype=torch.int64), target=0)

    class Detached(nn.Module):
        def forward(self, x): return linear(x.detach())
    with pytest.raises(ValueError, match='not differentiable with respect to the input'):
        integrated_gradients(Detached(), x, target=0)


def test_profiles_region_and_gradcam_checks():
    attributions = torch.zeros(2, 3, 10)
    attributions[:, 1, 4:6] = 1.0
    np.testing.assert_allclose(attribution_profile(attributions, 0), [0, 1, 0])
    assert region_fraction(attributions, (1, slice(4, 6))) == 1.0
    mlp = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"\(batch, channels, \.\.\.spatial\)"):
        grad_cam(mlp, '0', torch.randn(2, 6), target=0)
    assert n_hooks(mlp) == 0


def test_attention_maps_and_rollout_match_the_lfp_model():
    from neuronb.lfp.models import MODELS
    torch.manual_seed(0)
    model = MODELS.build('vit3d', n_trials=3, n_freqs=10, n_frames=9, patch=(4, 3), d_model=16, depth=2, n_heads=2).eval()
    x = torch.randn(2, 3, 10, 9)
    maps = attention_maps(model, x)
    n_tokens = 1 + 3 * model.grid[0] * model.grid[1]
    assert len(maps) == 2 and all(m.shape == (2, 2, n_tokens, n_tokens) for m in maps.values())
    _, returned = model._run(x, return_attn=True)
    for recorded, own in zip(maps.values(), returned):
        torch.testing.assert_close(recorded.mean(1), own, atol=1e-5, rtol=1e-4)
    cls_row = attention_rollout(maps)[:, 0, 1:].reshape(2, 3, *model.grid)
    torch.testing.assert_close(cls_row / cls_row.sum((1, 2, 3), keepdim=True), model.attention_maps(x, 'rollout'),
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match='different token counts'):
        attention_rollout([torch.rand(1, 4, 4), torch.rand(1, 5, 5)])


# --- embeddings -------------------------------------------------------------------------------------------------------
def test_embed_checks():
    data = np.random.default_rng(0).normal(size=(30, 5))
    assert embed(data, 'pca').shape == (30, 2)
    with pytest.raises(ValueError, match="one of \\('pca', 'tsne', 'umap'\\)"):
        embed(data, 'isomap')


# --- additions: float32 summaries, module kinds, several inputs ------------------------------------------------------
def test_float32_summaries_match_float64_and_the_variance_path():
    "Summaries of float32 activations (one matmul per batch in float32, accumulated in float64) match numpy's float64."
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(3000, 12, generator=generator) * torch.linspace(0.5, 3, 12) + 50.0
    with_cov, without_cov = RunningMoments(covariance=True), RunningMoments()
    for start in range(0, 3000, 256):
        with_cov.update(data[start:start + 256])
        without_cov.update(data[start:start + 256])
    reference = data.double().numpy()
    np.testing.assert_allclose(with_cov.cov, np.cov(reference.T), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(with_cov.var, reference.var(0, ddof=1), rtol=1e-4)
    np.testing.assert_allclose(without_cov.var, with_cov.var, rtol=1e-5)
    np.testing.assert_allclose(with_cov.mean, reference.mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match='batch has 3 features, earlier batches had 12'):
        with_cov.update(torch.randn(4, 3))
    with pytest.raises(ValueError, match='2 condition labels for 4 items'):
        with_cov.update(torch.randn(4, 12), conditions=[0, 1])
    with pytest.raises(ValueError, match='seen no items'):
        RunningMoments().var


def test_resolve_modules_by_kind_lists_the_qualifying_ones(mlp):
    is_linear = lambda module: isinstance(module, nn.Linear)
    assert list(resolve_modules(mlp, None, kind=is_linear, what='linear layer')) == ['0', '2']
    with pytest.raises(TypeError, match=r"\['1'\].*not a linear layer.*\['0', '2'\]"):
        resolve_modules(mlp, ['0', '1'], kind=is_linear, what='linear layer')
    with pytest.raises(ValueError, match='has no conv layer'):
        resolve_modules(mlp, None, kind=lambda module: isinstance(module, nn.Conv1d), what='conv layer')
    with pytest.raises(TypeError, match='not a neuronb.nn.attention.Attention module'):
        attention_maps(mlp, torch.randn(2, 6), modules=['0'])


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(5, 2)

    def forward(self, a, b): return self.a(a) + self.b(b)


def test_several_inputs_capture_and_attribution():
    torch.manual_seed(0)
    model = TwoInputs()
    batches = [{'x': (torch.randn(4, 3), torch.randn(4, 5))} for _ in range(3)]
    captured = collect_activations(model, batches, ['a', 'b'])
    assert captured['b'].shape == (12, 2)
    np.testing.assert_allclose(captured['b'][4:8], model.b(batches[1]['x'][1]).detach().numpy(), atol=1e-6)
    a, b = batches[0]['x']
    result = integrated_gradients(model, (a, b), target=1)
    torch.testing.assert_close(result.attributions[0], model.a.weight[1].detach() * a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.attributions[1], model.b.weight[1].detach() * b, atol=1e-5, rtol=1e-4)
    assert result.completeness_error < 1e-4
    with pytest.raises(ValueError, match='2 inputs but 1 baselines'):
        integrated_gradients(model, (a, b), target=1, baseline=(0.0,))
    with pytest.raises(ValueError, match=r'share their batch size, got \[4, 3\]'):
        integrated_gradients(model, (a, b[:3]), target=1)
    with pytest.raises(TypeError, match='floating-point input 1'):
        integrated_gradients(model, (a, b.long()), target=1)
