"NeuroFMx model: shapes, missing modalities, bad input, gradient reversal, the objective's terms, freezing, equal-size backbones."
import math

import pytest
import torch
import torch.nn.functional as F

from neuronb.neurofm.model import (COMPONENTS, GPU_CONFIG, MODELS, NeuroFMx, NeuroFMxObjective, PerceiverFusion,
                                   TransformerBackbone, matched_mlp_ratio)
from neuronb.nn.mamba import MambaBackbone
from neuronb.nn.registry import n_params


def _batch(model, batch_size=4, n_times=16, seed=0):
    inputs, = model.example_input(batch_size, n_times)
    gen = torch.Generator().manual_seed(seed)
    return {'x': inputs, 'behavior': torch.randn(batch_size, n_times, model.n_behavior, generator=gen),
            'stimulus': torch.randn(batch_size, n_times, generator=gen), 'species': torch.arange(batch_size) % 3}


def test_registry_defaults_build_a_tiny_model_and_its_example_input_runs():
    model = MODELS.build('neurofmx')
    assert n_params(model) < 200_000
    out = model(*model.example_input(3))
    assert out.behavior.shape == (3, 24, 2) and out.species_logits.shape == (3, 3)
    assert set(out.reconstruction) == {'spikes', 'lfp'}
    with pytest.raises(ValueError, match='does not take'):
        MODELS.build('neurofmx', d_modle=8)


@pytest.mark.parametrize('backbone,fusion', [('mamba', 'perceiver'), ('transformer', 'perceiver'), ('mamba', 'mean')])
def test_missing_modality_for_one_item_equals_leaving_it_out(backbone, fusion):
    torch.manual_seed(0)
    model = NeuroFMx(backbone=backbone, fusion=fusion).eval()
    inputs, = model.example_input(2)
    both = model(inputs).latents
    masked = model(inputs, {'spikes': torch.tensor([True, False])}).latents
    alone = model({'lfp': inputs['lfp']}).latents
    torch.testing.assert_close(masked[1], alone[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(masked[0], both[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(both[1], alone[1], atol=1e-3)


def test_an_item_with_no_modality_is_refused():
    model = NeuroFMx()
    inputs, = model.example_input(2)
    with pytest.raises(ValueError, match=r'item\(s\) \[1\] have no present modality'):
        model({'lfp': inputs['lfp']}, {'lfp': torch.tensor([True, False])})


@pytest.mark.parametrize('bad,match', [
    ({'fmri': torch.randn(2, 8, 3)}, r"modality 'fmri' is not one this model was built for"),
    ({'spikes': torch.randn(8, 16)}, r"inputs\['spikes'\] must have rank 3"),
    ({'lfp': torch.randn(2, 8, 5)}, r"inputs\['lfp'\] must be \(batch, n_times, n_features=4\)"),
    ({'spikes': torch.randn(2, 8, 16), 'lfp': torch.randn(2, 9, 4)}, r"inputs\['lfp'\] has \(batch, n_times\)"),
    ({}, r"non-empty dict"),
])
def test_bad_input_names_modality_and_field(bad, match):
    with pytest.raises(ValueError, match=match):
        NeuroFMx()(bad)


def test_bad_constructor_options():
    with pytest.raises(ValueError, match='backbone'):
        NeuroFMx(backbone='lstm')
    with pytest.raises(ValueError, match="modality 'lfp'"):
        NeuroFMx(modalities={'lfp': 0})
    with pytest.raises(ValueError, match=r"\['eeg'\]"):
        NeuroFMx(tokenizers={'eeg': torch.nn.Identity()})


def test_perceiver_ignores_tokens_of_missing_modalities():
    torch.manual_seed(0)
    fusion = PerceiverFusion(16, n_latents=4)
    tokens = torch.randn(2, 3, 5, 16)
    present = torch.tensor([[True, False, True], [False, True, False]])
    changed = tokens.clone()
    changed[0, 1] = 1e3
    changed[1, 0] = -1e3
    torch.testing.assert_close(fusion(changed, present), fusion(tokens, present))


def test_species_head_reverses_the_gradient_into_the_backbone():
    torch.manual_seed(0)
    model = NeuroFMx()
    inputs, = model.example_input(4)
    species = torch.tensor([0, 1, 2, 0])
    grads = {}
    for coefficient in (1.0, -1.0):  # -1: the reversal layer passes the gradient through unchanged
        model.zero_grad()
        model.species_head[0].coefficient = coefficient
        F.cross_entropy(model(inputs).species_logits, species).backward()
        grads[coefficient] = model.backbone.layers[0].mixer.in_proj.weight.grad.clone()
        head_grad = model.species_head[1].weight.grad.clone()
        grads[f'head{coefficient}'] = head_grad
    assert grads[1.0].abs().max() > 0
    torch.testing.assert_close(grads[1.0], -grads[-1.0])
    torch.testing.assert_close(grads['head1.0'], grads['head-1.0'])  # the classifier itself is trained normally


@pytest.mark.parametrize('weighting', ['fixed', 'uncertainty'])
def test_objective_terms_and_weighting(weighting):
    torch.manual_seed(0)
    model = NeuroFMx()
    objective = NeuroFMxObjective(weighting=weighting, adversarial_weight=0.5)
    objective.progress = 0.5
    out = objective.step(model, _batch(model), 'train', objective.make_metrics())
    assert set(out.losses) == {'decode', 'encode', 'contrastive', 'adversarial'}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert out.logs['grl_coefficient'] == pytest.approx(2 / (1 + math.exp(-10 * 0.5)) - 1)  # lambda(p) = 2 / (1 + e^(-gamma p)) - 1 at p = 0.5
    assert (weighting == 'uncertainty') == ('weight_decode' in out.logs)
    sum(out.losses.values()).backward()
    if weighting == 'uncertainty':
        # the first training batch starts every term at weight 1 / its loss (each weighted term at 1), which is where
        # exp(-s) L + s is stationary in s: no gradient on the log-variances yet, and one as soon as a loss changes
        for term in NeuroFMxObjective.TERMS:
            assert out.logs[f'weight_{term}'] * out.logs[f'raw_loss_{term}'] == pytest.approx(1.0, rel=1e-4)
        assert bool(objective.log_vars_set)
        torch.testing.assert_close(objective.log_vars.grad, torch.zeros(3), atol=1e-5, rtol=0)
        objective.log_vars.grad = None
        later = objective.step(model, _batch(model, seed=1), 'train', None)
        sum(later.losses.values()).backward()
        assert objective.log_vars.grad.abs().min() > 1e-4


def test_uncertainty_weights_are_set_once_and_only_by_training():
    torch.manual_seed(0)
    model = NeuroFMx()
    objective = NeuroFMxObjective()
    objective.step(model, _batch(model), 'val', None)
    assert objective.log_vars.detach().abs().max() == 0 and not bool(objective.log_vars_set)
    objective.step(model, _batch(model), 'train', None)
    started = objective.log_vars.detach().clone()
    assert started.abs().min() > 0
    objective.step(model, _batch(model, seed=1), 'train', None)
    torch.testing.assert_close(objective.log_vars.detach(), started)  # later batches leave them to the optimiser


def test_fixed_zero_weight_drops_a_term_and_unknown_terms_are_refused():
    model = NeuroFMx()
    out = NeuroFMxObjective(weighting='fixed', weights={'contrastive': 0.0}).step(model, _batch(model), 'val', None)
    assert set(out.losses) == {'decode', 'encode'}
    with pytest.raises(ValueError, match='unknown term'):
        NeuroFMxObjective(weights={'decoding': 1.0})


def test_encode_loss_is_poisson_for_counts_and_squared_error_otherwise():
    torch.manual_seed(0)
    model = NeuroFMx()
    batch = _batch(model)
    objective = NeuroFMxObjective()
    out = model(batch['x'])
    counts = batch['x']['spikes']
    saturated = F.poisson_nll_loss(torch.log(counts.clamp(min=1e-12)), counts, log_input=True, reduction='none')
    deviance = F.poisson_nll_loss(out.reconstruction['spikes'], counts, log_input=True, reduction='none') - saturated
    expected = (deviance.mean() + F.mse_loss(out.reconstruction['lfp'], batch['x']['lfp'])) / 2
    torch.testing.assert_close(objective.encode_loss(model, out, batch), expected, rtol=1e-4, atol=1e-4)


def test_poisson_deviance_is_zero_at_the_counts_and_positive_elsewhere():
    from neuronb.neurofm.model import poisson_deviance
    counts = torch.tensor([0.0, 1.0, 4.0, 30.0])
    torch.testing.assert_close(poisson_deviance(torch.log(counts.clamp(min=1e-8)), counts), torch.zeros(4), atol=1e-6, rtol=0)
    off = poisson_deviance(torch.log(counts + 1.0), counts)
    assert (off > 0).all()
    # rates of 30 (spikes/s): the plain Poisson NLL is far below zero there, the deviance is not
    assert F.poisson_nll_loss(torch.log(counts[3:]), counts[3:], log_input=True) < -60


def test_any_subset_of_modalities_per_batch():
    torch.manual_seed(0)
    model = NeuroFMx()
    objective = NeuroFMxObjective(modality_dropout=1.0)
    batch = _batch(model)
    only_lfp = dict(batch, x={'lfp': batch['x']['lfp']})
    assert torch.isfinite(sum(objective.step(model, only_lfp, 'train', None).losses.values()))
    with_missing = dict(batch, present={'spikes': torch.tensor([True, False, True, False])})
    for _ in range(5):  # modality dropout never hides the only modality an item has
        assert torch.isfinite(sum(objective.step(model, with_missing, 'train', None).losses.values()))
    no_stimulus = {k: v for k, v in batch.items() if k not in ('stimulus', 'species')}
    assert 'adversarial' not in objective.step(model, no_stimulus, 'val', None).losses
    batch_nan = dict(batch, behavior=batch['behavior'].clone())
    batch_nan['behavior'][0, :4] = float('nan')
    assert torch.isfinite(objective.step(model, batch_nan, 'val', None).losses['decode'])
    with pytest.raises(ValueError, match=r"batch\['behavior'\]"):
        objective.step(model, dict(batch, behavior=batch['behavior'][..., :1]), 'val', None)


def test_freeze_by_component():
    model = NeuroFMx()
    total = n_params(model)
    frozen = model.freeze('backbone', 'fusion')
    assert frozen == n_params(model.backbone, False) + n_params(model.fusion, False)
    assert n_params(model) == total - frozen
    model.unfreeze('backbone')
    assert n_params(model) == total - n_params(model.fusion, False)
    with pytest.raises(ValueError, match='unknown component'):
        model.freeze('decoder')
    assert set(model.component_prefixes(*COMPONENTS)) <= {name.split('.')[0] for name, _ in model.named_parameters()}


@pytest.mark.parametrize('d_model', [32, 64, 128])
def test_transformer_backbone_matches_mamba_size_and_is_causal(d_model):
    mamba = n_params(MambaBackbone(d_model, 2))
    transformer = n_params(TransformerBackbone(d_model, 2, mlp_ratio=matched_mlp_ratio(d_model)))
    assert abs(mamba - transformer) / mamba < 0.03
    backbone = TransformerBackbone(32, 1)
    x = torch.randn(1, 10, 32)
    y = x.clone()
    y[:, 6:] += 1
    torch.testing.assert_close(backbone(y)[:, :6], backbone(x)[:, :6])


def test_gpu_config_is_the_design_size():
    with torch.device('meta'):
        model = NeuroFMx(**GPU_CONFIG)
    assert model.d_model == 512 and len(model.backbone.layers) == 8 and model.fusion.encoder.latents.shape[0] == 64


def test_session_readins_are_separate_and_session_ids_are_checked():
    from neuronb.neurofm.model import SessionLinear
    torch.manual_seed(0)
    layer = SessionLinear(3, 4, 5)
    x = torch.randn(2, 7, 4)
    before = layer(x, torch.tensor([0, 2]))
    with torch.no_grad(): layer.weight[2] += 1.0
    after = layer(x, torch.tensor([0, 2]))
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])
    with pytest.raises(ValueError, match='pass session ids'):
        layer(x)
    with pytest.raises(ValueError, match=r'one id in \[0, 3\)'):
        layer(x, torch.tensor([0, 3]))
    layer.init_session(1, [0, 2])
    torch.testing.assert_close(layer.weight[1], (layer.weight[0] + layer.weight[2]) / 2)


def test_for_windows_reads_window_batches_with_padding_and_missing_modalities():
    shapes = {'signals': {'binned': (16, 1, 6), 'lfp': (16, 5, 3)}, 'behavior': (16, 2)}
    torch.manual_seed(0)
    model = NeuroFMx.for_windows(shapes, d_model=16, depth=1, n_latents=4, n_sessions=2)
    batch = {'signals': {'binned': torch.poisson(torch.full((3, 16, 1, 6), 2.0)), 'lfp': torch.randn(3, 16, 5, 3)},
             'present': {'binned': torch.tensor([True, True, False]), 'lfp': torch.tensor([True, False, True])},
             'channel_mask': {'binned': torch.ones(3, 6, dtype=torch.bool), 'lfp': torch.tensor([[True, True, False]] * 3)},
             'behavior': torch.randn(3, 16, 2), 'behavior_mask': torch.tensor([[True, True], [True, False], [True, True]]),
             'stimulus': torch.randn(3, 16), 'species': torch.tensor([2, 3, 2]), 'session': torch.tensor([0, 1, 0])}
    objective = NeuroFMxObjective(n_behavior=2, adversarial_weight=0.1)
    out = objective.step(model, batch, 'train', objective.make_metrics())
    assert set(out.losses) == {'decode', 'encode', 'contrastive', 'adversarial'}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert objective.predict(model, batch).shape == (3, 16, 2)
    with pytest.raises(ValueError, match=r"inputs\['lfp'\] must have rank 4"):
        model({'lfp': torch.randn(3, 16, 3)}, session=torch.tensor([0, 1, 0]))
