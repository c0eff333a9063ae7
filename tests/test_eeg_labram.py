"""LaBraM (neuronb.eeg.labram): braindecode equality, montage embeddings, the VQ-NSP tokenizer and masked EEG modelling."""
import numpy as np
import pytest
import torch

from neuronb.core import seed_everything
from neuronb.data import make_loader
from neuronb.eeg.labram import (LABRAM_CHANNELS, MODELS, LaBraM, LaBraMPretrainer, MEMObjective, NeuralTokenizer, VQNSPObjective,
                                braindecode_labram, channel_weights, codebook_usage, demographic_tasks, fourier_targets,
                                labram_chs_info, structured_windows)
from neuronb.nn.registry import n_params
from neuronb.train import TaskModule, evaluate_objective, fit

torch.set_num_threads(1)


class _Items(torch.utils.data.Dataset):
    def __init__(self, x, **labels): self.x, self.labels = x, labels
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {'x': self.x[i], 'y': torch.tensor(0.0), **{k: torch.as_tensor(v[i]) for k, v in self.labels.items()}}


def _loader(x, shuffle, **labels): return make_loader(_Items(x, **labels), batch_size=32, shuffle=shuffle, seed=0)


@pytest.mark.parametrize('config', [{}, dict(n_chans=19, n_times=400, patch_len=200, conv_channels=8, depth=2, n_heads=10,
                                             n_outputs=3, mean_pooling=False, qkv_bias=True)])
def test_same_parameters_weights_and_output_as_braindecode(config):
    ours = LaBraM(**config)
    theirs = braindecode_labram().Labram(**ours.braindecode_config())
    assert n_params(ours) == n_params(theirs)
    with torch.no_grad():  # embeddings large enough that a wrong channel or patch order would show in the output
        theirs.position_embedding.normal_()
        theirs.temporal_embedding.normal_()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = ours.example_input(2)
    names = [ch['ch_name'] for ch in ours.chs_info]
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs.eval()(x, ch_names=names), atol=1e-5)
        permuted = names[1:] + names[:1]
        tokens = ours.tokens(x)[:, 1:]
        if ours.fc_norm is not None: tokens = ours.fc_norm(tokens)  # braindecode's return_features normalises them
        assert not torch.allclose(tokens, theirs(x, ch_names=permuted, return_features=True)['features'], atol=1e-4)
        assert torch.allclose(tokens, theirs(x, ch_names=names, return_features=True)['features'], atol=1e-4)


def test_channel_weights_by_name_and_position():
    named = channel_weights(labram_chs_info(['Cz', 'O1']))
    assert named[0, LABRAM_CHANNELS.index('CZ')] == 1 and named[1, LABRAM_CHANNELS.index('O1')] == 1
    cz = labram_chs_info(['CZ'])[0]
    renamed = channel_weights([{'ch_name': 'E999', 'loc': cz['loc'] * 1.1}])  # an unknown name at Cz's direction
    assert renamed.argmax() == LABRAM_CHANNELS.index('CZ') and torch.isclose(renamed.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="'E7'.*no 3D position"):
        channel_weights([{'ch_name': 'E7', 'loc': np.full(12, np.nan)}])


def test_mask_hides_patch_content_and_montages_by_channel_count():
    seed_everything(0)
    model = LaBraM()
    x = model.example_input(2)
    n_tokens = model.n_chans * model.n_patches
    mask = torch.zeros(2, n_tokens, dtype=torch.bool)
    mask[:, 5] = True
    noisy = x.clone()
    noisy[:, 0, 5 * model.patch_len:6 * model.patch_len] += 100.0  # channel 0, patch 5 = token 5
    token = torch.zeros(model.d_model)
    assert torch.allclose(model.tokens(noisy, mask, token), model.tokens(x, mask, token), atol=1e-5)
    assert not torch.allclose(model.tokens(noisy), model.tokens(x), atol=1e-3)
    with pytest.raises(ValueError, match='n_chans in \[8\]'):
        model(torch.randn(2, 3, 200))
    model.add_montage(labram_chs_info(['FZ', 'CZ', 'PZ']))
    assert model(torch.randn(2, 3, 200)).shape == (2, model.d_model)


def test_registry_builds_tiny_models_with_example_inputs():
    assert set(MODELS.names()) >= {'labram', 'labram_tokenizer', 'labram_pretrainer'}
    for name in MODELS.names():
        model = MODELS.build(name)
        assert model(model.example_input(2)) is not None
    with pytest.raises(Exception, match='n_codes'):
        MODELS.build('labram', n_codes=8)


def test_fourier_targets_find_the_frequency():
    t = torch.arange(200) / 100
    x = torch.sin(2 * torch.pi * 12 * t)[None, None]  # 12 Hz = bin 3 of a 25-sample patch at 100 Hz
    amplitude, phase = fourier_targets(x, 25)
    assert amplitude.shape == (1, 8, 13) and (amplitude[0].argmax(1) == 3).all()
    assert torch.allclose(amplitude.mean(-1), torch.zeros(1, 8), atol=1e-5)


def test_tokenizer_reconstruction_improves_and_uses_the_codebook():
    seed_everything(0)
    windows = structured_windows(192, seed=1)
    train, val = _loader(windows[:160], True), _loader(windows[160:], False)
    module = TaskModule(NeuralTokenizer(), objective=VQNSPObjective(), lr=3e-3, warmup_epochs=0.5)
    before = evaluate_objective(module, val, accelerator='cpu')
    fit(module, train, val, max_epochs=3, seed=0, accelerator='cpu')
    after = evaluate_objective(module, val, accelerator='cpu')
    assert after['test/loss_amplitude'] < 0.85 * before['test/loss_amplitude'], (before, after)
    usage = codebook_usage(module.model, val)
    assert usage['usage'] > 0.2 and usage['perplexity'] > 5 and usage['n_tokens'] == 32 * 64


def test_mem_objective_masks_symmetric_and_masks_missing_labels():
    seed_everything(0)
    model = LaBraMPretrainer()
    objective = MEMObjective(model.d_model, 64, aux=demographic_tasks(model.d_model, regression=('age',), binary=('sex',)))
    x = model.example_input(4)
    age = torch.tensor([0.5, float('nan'), -1.0, float('nan')])
    sex = torch.tensor([1, -1, -1, -1])
    out = objective.step(model, {'x': x, 'age': age, 'sex': sex}, 'train', objective.make_metrics())
    assert set(out.losses) == {'mem', 'aux_age', 'aux_sex'} and all(torch.isfinite(v) for v in out.losses.values())
    codes = model.tokenizer.tokenize(x)  # the frozen tokenizer's codes of this batch: the majority-code share is theirs
    majority = torch.bincount(codes.reshape(-1), minlength=64).max().item() / codes.numel()
    assert float(out.logs['mem_majority']) == pytest.approx(majority) and majority >= 1 / 64
    out.losses['mem'].backward()
    assert model.encoder.patch_embed.temporal_conv.conv1.weight.grad is not None
    assert all(p.grad is None for p in model.tokenizer.parameters()), 'the tokenizer is frozen during MEM'
    only_missing = objective.step(model, {'x': x, 'age': torch.full((4,), float('nan')), 'sex': torch.full((4,), -1)}, 'train', None)
    assert float(only_missing.losses['aux_age']) == 0.0 and float(only_missing.losses['aux_sex']) == 0.0
    with pytest.raises(ValueError, match='codes'):
        MEMObjective(model.d_model, 32).step(model, {'x': x}, 'train', None)


def test_mem_accuracy_counts_hidden_tokens_whose_code_the_head_predicts():
    "A head that always answers code 3 is right on every hidden token when every code is 3, and on none when every code is 5."
    seed_everything(0)
    model = LaBraMPretrainer()
    objective = MEMObjective(model.d_model, 64)
    with torch.no_grad():
        objective.head.weight.zero_()
        objective.head.bias.zero_()
        objective.head.bias[3] = 10.0
    x = model.example_input(4)
    n_tokens = model.encoder.n_chans * model.encoder.n_patches
    for code, expected in ((3, 1.0), (5, 0.0)):
        model.tokenizer.tokenize = lambda x, code=code: torch.full((len(x), n_tokens), code, dtype=torch.long)
        out = objective.step(model, {'x': x}, 'train', None)
        assert float(out.logs['mem_accuracy']) == expected and float(out.logs['mem_majority']) == 1.0


@pytest.mark.slow
def test_mem_accuracy_above_the_majority_code_on_structured_data():
    "The recipe of the chapter's demonstration: tokenizer 5 epochs, then MEM 8 epochs; validation accuracy vs the commonest code."
    import pandas as pd
    seed_everything(0)
    windows = structured_windows(320, seed=0)
    train, val = _loader(windows[:256], True), _loader(windows[256:], False)
    tokenizer = TaskModule(NeuralTokenizer(), objective=VQNSPObjective(), lr=3e-3, warmup_epochs=0.5)
    fit(tokenizer, train, val, max_epochs=5, seed=0, accelerator='cpu')
    seed_everything(0)
    model = LaBraMPretrainer()
    model.tokenizer.load_state_dict(tokenizer.model.state_dict())
    module = TaskModule(model, objective=MEMObjective(model.d_model, 64), lr=1e-2, warmup_epochs=0.5)
    result = fit(module, train, val, max_epochs=8, seed=0, accelerator='cpu')
    log = pd.read_csv(f"{result.log_dir}/metrics.csv").groupby('epoch').mean(numeric_only=True)
    accuracy, majority = log['val/mem_accuracy'].iloc[-1], log['val/mem_majority'].iloc[-1]
    assert accuracy > 1.2 * majority, (accuracy, majority)
