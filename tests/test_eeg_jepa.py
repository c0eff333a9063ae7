"""SignalJEPA (neuronb.eeg.jepa): mask geometry, braindecode equality and strict checkpoint loading, downstream models
loading pretrained weights, the JEPA objective and the chain through `run_phases`."""
import numpy as np
import pytest
import torch

from neuronb.core import seed_everything
from neuronb.data import make_loader
from neuronb.eeg.jepa import (HEADS, MASKS, SignalJEPAEncoder, SignalJEPAObjective, SignalJEPAPretrainer, braindecode_signal_jepa,
                              jepa_mask, load_pretrained, load_signal_jepa, signal_jepa_chain, signal_jepa_head)
from neuronb.eeg.labram import _DEFAULT_NAMES, demographic_tasks, labram_chs_info, structured_windows
from neuronb.train import run_phases

torch.set_num_threads(1)
POSITIONS = np.stack([np.asarray(ch['loc'], dtype=float)[:3] for ch in labram_chs_info(_DEFAULT_NAMES[:16])])
DISTANCES = np.linalg.norm(POSITIONS[:, None] - POSITIONS[None], axis=-1)


def _is_nearest_block(channels: np.ndarray) -> bool:
    "True when the hidden channels are the k nearest (3D distance) of one of them."
    k = int(channels.sum())
    return any(set(np.argsort(DISTANCES[c], kind='stable')[:k]) == set(np.flatnonzero(channels)) for c in np.flatnonzero(channels))


def _contiguous(steps: np.ndarray) -> bool:
    hidden = np.flatnonzero(steps)
    return len(hidden) > 0 and hidden[-1] - hidden[0] + 1 == len(hidden)


@pytest.mark.parametrize('ratio', [0.25, 0.5])
def test_spatial_masks_hide_the_channels_nearest_a_centre_at_every_time(ratio):
    mask = jepa_mask('spatial', 50, POSITIONS, n_tokens=8, mask_ratio=ratio, generator=torch.Generator().manual_seed(0)).numpy().reshape(50, 16, 8)
    assert (mask.all(2) | ~mask.any(2)).all()
    channels = mask.any(2)
    assert (channels.sum(1) == round(ratio * 16)).all()
    assert all(_is_nearest_block(c) for c in channels)
    assert len({tuple(c) for c in channels}) > 5, 'the centre is drawn at random per item'


@pytest.mark.parametrize('ratio', [0.25, 0.5])
def test_temporal_masks_hide_one_contiguous_block_on_every_channel(ratio):
    mask = jepa_mask('temporal', 50, POSITIONS, n_tokens=8, mask_ratio=ratio, generator=torch.Generator().manual_seed(1)).numpy().reshape(50, 16, 8)
    assert (mask.all(1) | ~mask.any(1)).all()
    steps = mask.any(1)
    assert (steps.sum(1) == round(ratio * 8)).all() and all(_contiguous(s) for s in steps)
    assert len({int(np.flatnonzero(s)[0]) for s in steps}) > 2, 'the block starts at random'


def test_spatiotemporal_masks_are_a_channel_block_times_a_time_block():
    mask = jepa_mask('spatiotemporal', 50, POSITIONS, n_tokens=8, mask_ratio=0.5, generator=torch.Generator().manual_seed(2)).numpy().reshape(50, 16, 8)
    channels, steps = mask.any(2), mask.any(1)
    assert (mask == (channels[:, :, None] & steps[:, None, :])).all()
    assert (channels.sum(1) == round(np.sqrt(0.5) * 16)).all() and (steps.sum(1) == round(np.sqrt(0.5) * 8)).all()
    assert all(_is_nearest_block(c) for c in channels) and all(_contiguous(s) for s in steps)
    assert abs(mask.mean() - 0.5) < 0.05


def test_mask_bad_input():
    with pytest.raises(ValueError, match='mask kind'): jepa_mask('random', 2, POSITIONS, 8)
    with pytest.raises(ValueError, match='mask_ratio'): jepa_mask('spatial', 2, POSITIONS, 8, mask_ratio=1.0)
    with pytest.raises(ValueError, match='positions'): jepa_mask('spatial', 2, POSITIONS[:, :2], 8)
    with pytest.raises(ValueError, match="has no 3D position"):
        SignalJEPAEncoder(n_chans=2, chs_info=[{'ch_name': 'A', 'loc': [0.0, 0.0, 0.0]}, {'ch_name': 'B', 'loc': [0.1, 0.0, 0.0]}])


def _braindecode_model(encoder):
    return braindecode_signal_jepa().SignalJEPA(
        n_chans=encoder.n_chans, n_times=encoder.n_times, sfreq=encoder.sfreq, chs_info=encoder.chs_info,
        feature_encoder__conv_layers_spec=encoder.conv_layers, pos_encoder__spat_dim=6, pos_encoder__time_dim=10,
        pos_encoder__sfreq_features=encoder.sfreq_features, transformer__d_model=16, transformer__num_encoder_layers=2,
        transformer__num_decoder_layers=1, transformer__nhead=2)


def test_a_braindecode_checkpoint_loads_strictly_and_gives_braindecodes_output(tmp_path):
    seed_everything(0)
    encoder = SignalJEPAEncoder(mlp_ratio=2048 / 16)  # braindecode's feed-forward width
    theirs = _braindecode_model(encoder).eval()
    torch.save(theirs.state_dict(), tmp_path / 'sjepa.pt')
    report = load_signal_jepa(tmp_path / 'sjepa.pt', encoder)
    assert report.n_loaded == len(theirs.state_dict()) and not report.missing and not report.unexpected
    x = encoder.example_input(2)
    assert torch.allclose(encoder.eval()(x), theirs(x), atol=1e-5)
    # strict: a key too many, a key too few, a shape mismatch: each an error naming it
    state = theirs.state_dict()
    torch.save(state | {'extra.weight': torch.zeros(1)}, tmp_path / 'extra.pt')
    with pytest.raises(ValueError, match='extra.weight'): load_signal_jepa(tmp_path / 'extra.pt', encoder)
    torch.save({k: v for k, v in state.items() if k != 'pos_encoder.pos_encoder_spat.weight'}, tmp_path / 'short.pt')
    with pytest.raises(ValueError, match='pos_encoder_spat'): load_signal_jepa(tmp_path / 'short.pt', encoder)
    with pytest.raises(ValueError, match='linear1.weight'): load_signal_jepa(tmp_path / 'sjepa.pt', SignalJEPAEncoder())


@pytest.mark.parametrize('kind', HEADS)
def test_downstream_models_load_their_pretrained_parts(kind):
    seed_everything(0)
    encoder = SignalJEPAEncoder()
    head = signal_jepa_head(kind, encoder, n_outputs=2)
    report = load_pretrained(head, encoder.state_dict())
    for name, value in head.state_dict().items():
        if name.startswith('feature_encoder') or (kind == 'contextual' and name.startswith(('pos_encoder', 'transformer'))):
            assert torch.equal(value, encoder.state_dict()[name]), name
    assert {k.split('.')[0] for k in report.missing} == ({'final_layer', 'spatial_conv'} if kind == 'pre_local' else {'final_layer'})
    assert bool(report.unexpected) == (kind != 'contextual')
    assert head(encoder.example_input(3)).shape == (3, 2)
    wider = SignalJEPAEncoder(conv_layers=((8, 5, 5), (24, 5, 5)), spat_dim=6)
    with pytest.raises(ValueError, match='feature_encoder'): load_pretrained(head, wider.state_dict())


def test_objective_predicts_hidden_target_tokens_and_moves_the_target():
    seed_everything(0)
    model = SignalJEPAPretrainer()
    objective = SignalJEPAObjective(model.encoder, mask='temporal', loss='mse', aux=demographic_tasks(model.d_model, regression=('age',), binary=()))
    x = structured_windows(6)
    out = objective.step(model, {'x': x, 'age': torch.tensor([0.1, float('nan'), 1.0, -1.0, 0.5, 0.0])}, 'train', objective.make_metrics())
    assert set(out.losses) == {'jepa', 'aux_age'} and out.logs['monitor_effective_rank'] > 1.5
    sum(out.losses.values()).backward()
    assert objective.mask_token.grad is not None and model.encoder.transformer.decoder.layers[0].linear1.weight.grad is not None
    assert all(p.grad is None for p in model.head.parameters()) and all(p.grad is None for p in objective.target.parameters())
    objective.progress = 1.0  # momentum 1 at the end: the target stays
    before = [p.clone() for p in objective.target.parameters()]
    with torch.no_grad(): model.encoder.feature_encoder[1][0].weight.add_(1.0)
    objective.after_optimizer_step(model)
    assert all(torch.equal(a, b) for a, b in zip(before, objective.target.parameters()))
    with pytest.raises(ValueError, match='loss'): SignalJEPAObjective(model.encoder, loss='huber')


class _Items(torch.utils.data.Dataset):
    def __init__(self, x): self.x, self.pair = x, torch.roll(x, 1, dims=-1)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {'x': self.x[i], 'x_pair': self.pair[i], 'y': self.x[i, 0, :5].mean(), 'age': self.x[i].std()}


def test_chain_runs_and_the_downstream_model_reports_what_it_loaded(tmp_path):
    seed_everything(0)
    x = structured_windows(64)
    loader = {split: make_loader(_Items(part), batch_size=16, shuffle=split == 'train', seed=0) for split, part in (('train', x[:48]), ('val', x[48:]))}
    model = SignalJEPAPretrainer(head='post_local')
    phases = signal_jepa_chain(model, {'jepa': loader, 'contrastive': loader, 'finetune': loader}, {'jepa': 1, 'contrastive': 1, 'finetune': 1},
                               aux_tasks=lambda d: demographic_tasks(d, regression=('age',), binary=()), freeze_epochs=1)
    assert [p.name for p in phases] == ['jepa_spatial', 'contrastive_spatial', 'finetune_c1_post_local_spatial']
    assert phases[-1].freeze == ['head.feature_encoder']
    results = run_phases(model, phases, tmp_path, seed=0)
    report = results[-1].load_report
    assert report['n_loaded'] == 4 and not report['shape_mismatched']
    assert {k.split('.')[2] for k in report['missing']} == {'final_layer'}
    assert any('transformer' in k for k in report['unexpected'])
    assert np.isfinite(results[-1].metrics['val/loss'])
