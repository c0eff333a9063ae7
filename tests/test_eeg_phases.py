"""LaBraM's chain (neuronb.eeg.phases): contrastive pairs, the challenge metric, the phase layout and a tiny run of the chain."""
import numpy as np
import pandas as pd
import pytest
import torch

from neuronb.core import seed_everything
from neuronb.data import make_loader
from neuronb.eeg.labram import LaBraMPretrainer, demographic_tasks, structured_windows
from neuronb.eeg.phases import (EEGItems, PairContrastiveObjective, challenge_score, contrastive_pairs, labram_chain, movie_pairs,
                                nrmse, rest_pairs, task_pairs)
from neuronb.ssl import LinearProbeCallback
from neuronb.train import TaskModule, load_weights, run_phases

torch.set_num_threads(1)


def _windows():
    "A window table like `WindowStore.windows`: 3 subjects x (4 movie windows, 2+2 rest windows, 3 trials)."
    rows = []
    for subject in ('s1', 's2', 's3'):
        rows += [dict(subject=subject, task='movie', condition='movie', movie_time=2.0 * k) for k in range(4)]
        rows += [dict(subject=subject, task='rest', condition=c, movie_time=np.nan) for c in ('eyes_open', 'eyes_closed') for _ in range(2)]
        rows += [dict(subject=subject, task='ccd', condition='contrast_change', movie_time=np.nan) for _ in range(3)]
    return pd.DataFrame(rows)


def test_pair_generators_follow_their_rules():
    windows = _windows()
    movie = movie_pairs(windows, seed=0)
    assert len(movie) == 12  # every movie window is an anchor with a partner
    a, b = windows.loc[movie[:, 0]], windows.loc[movie[:, 1]]
    assert (a['movie_time'].to_numpy() == b['movie_time'].to_numpy()).all() and (a['subject'].to_numpy() != b['subject'].to_numpy()).all()
    rest = rest_pairs(windows, seed=0)
    a, b = windows.loc[rest[:, 0]], windows.loc[rest[:, 1]]
    assert len(rest) == 12 and (a['subject'].to_numpy() == b['subject'].to_numpy()).all()
    assert (a['condition'].to_numpy() == b['condition'].to_numpy()).all() and (rest[:, 0] != rest[:, 1]).all()
    task = task_pairs(windows, seed=0)
    assert len(task) == 9 and (windows.loc[task[:, 1], 'condition'] == 'contrast_change').all()
    only_s1_s2 = windows.index[windows['subject'] != 's3']
    pairs = contrastive_pairs(windows, only_s1_s2, seed=0)
    assert set(pairs[['anchor', 'positive']].to_numpy().ravel()) <= set(only_s1_s2) and set(pairs['kind']) == {'movie', 'rest', 'task'}
    with pytest.raises(ValueError, match='unknown pair kinds'):
        contrastive_pairs(windows, kinds=('sleep',))


def test_nrmse_and_per_subject_score():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    assert nrmse(np.full(4, target.mean()), target) == pytest.approx(1.0)
    assert nrmse(target, target) == 0.0
    with pytest.raises(ValueError, match='constant'):
        nrmse(target, np.ones(4))

    class Items(torch.utils.data.Dataset):  # subject g has target g; its windows predict g +- 1, which averages out
        def __len__(self): return 8
        def __getitem__(self, i):
            g = i // 2
            return {'x': torch.tensor([g + (1.0 if i % 2 else -1.0)]), 'y': torch.tensor(float(g)), 'group': torch.tensor(g)}
    module = TaskModule(torch.nn.Identity(), task='regression')
    loader = make_loader(Items(), batch_size=4)
    assert challenge_score(module, loader, per_subject=True)['nrmse'] == pytest.approx(0.0, abs=1e-6)
    assert challenge_score(module, loader, per_subject=False)['nrmse'] > 0.8


def test_contrastive_objective_prefers_true_pairs():
    seed_everything(0)
    model = LaBraMPretrainer()
    objective = PairContrastiveObjective(model.d_model)
    assert objective.temperature == 0.07 and len([m for m in objective.projector if isinstance(m, torch.nn.Linear)]) == 2
    x = structured_windows(16, seed=0)
    same = objective.step(model, {'x': x, 'x_pair': x}, 'train')
    shuffled = objective.step(model, {'x': x, 'x_pair': x[torch.randperm(16)]}, 'train')
    assert float(same.logs['pair_top1']) == 1.0 and same.losses['info_nce'] < shuffled.losses['info_nce']
    with pytest.raises(KeyError, match='x_pair'):
        objective.step(model, {'x': x}, 'train')


def test_chain_layout_and_ablations():
    loaders = {k: {'train': None} for k in ('tokenizer', 'mem', 'contrastive', 'finetune')}
    epochs = {'tokenizer': 1, 'mem': 1, 'contrastive': 1, 'finetune': 6}
    full = labram_chain(16, 64, loaders, epochs)
    assert [p.name for p in full] == ['tokenizer', 'mem', 'contrastive', 'finetune_c1']
    assert full[-1].freeze == ['encoder'] and full[-1].freeze_epochs == 5 and full[-1].load == {'model.': 'model.'}
    assert full[1].objective.aux is not None and full[2].objective.temperature == 0.07
    assert [p.name for p in labram_chain(16, 64, loaders, epochs, contrastive=False)] == ['tokenizer', 'mem', 'finetune_c1_nocontrastive']
    no_aux = labram_chain(16, 64, loaders, epochs, aux=False, challenge='c2')
    assert [p.name for p in no_aux] == ['tokenizer', 'mem_noaux', 'contrastive_noaux', 'finetune_c2_noaux'] and no_aux[1].objective.aux is None
    scratch = labram_chain(16, 64, loaders, epochs, pretrain=False)
    assert [p.name for p in scratch] == ['finetune_c1_scratch'] and scratch[0].freeze_epochs == 0
    with pytest.raises(ValueError, match="'contrastive'"):
        labram_chain(16, 64, {k: v for k, v in loaders.items() if k != 'contrastive'}, epochs)


def test_chain_runs_and_phase_three_freezes_the_encoder(tmp_path):
    seed_everything(0)
    x = structured_windows(64, seed=0)
    rng = np.random.default_rng(0)
    subject = np.repeat(np.arange(8), 8)
    age = rng.normal(size=8).astype(np.float32)[subject]  # a subject's label is shared by its windows

    class Items(torch.utils.data.Dataset):
        def __init__(self, pair=False): self.pair = pair
        def __len__(self): return 64
        def __getitem__(self, i):
            item = {'x': x[i], 'y': torch.tensor(age[i]), 'age': torch.tensor(age[i]), 'group': torch.tensor(subject[i])}
            return item | ({'x_pair': x[i] + 0.1 * torch.randn_like(x[i])} if self.pair else {})
    loader = {'train': make_loader(Items(), batch_size=16, shuffle=True, seed=0, drop_last=True), 'val': make_loader(Items(), batch_size=16)}
    pairs = {'train': make_loader(Items(True), batch_size=16, shuffle=True, seed=0, drop_last=True), 'val': make_loader(Items(True), batch_size=16)}
    labels = (x[:32], (np.arange(32) % 2)), (x[32:], (np.arange(32) % 2))
    model = LaBraMPretrainer()
    phases = labram_chain(model.d_model, 64, {'tokenizer': loader, 'mem': loader, 'contrastive': pairs, 'finetune': loader},
                          {'tokenizer': 1, 'mem': 1, 'contrastive': 1, 'finetune': 1}, freeze_epochs=1,
                          aux_tasks=lambda d: demographic_tasks(d, regression=('age',), binary=()),
                          probe=lambda: LinearProbeCallback(*labels), fit_kwargs={'accelerator': 'cpu'})
    results = run_phases(model, phases, tmp_path / 'chain', seed=0)
    assert [r.name for r in results] == ['tokenizer', 'mem', 'contrastive', 'finetune_c1']
    assert all(r.load_report['n_loaded'] > 0 for r in results[1:])
    assert all(len(p.fit_kwargs['callbacks'][0].history) == p.epochs for p in phases), 'a probe in every phase, every epoch'
    # phase 3 had only its frozen epoch: the encoder is phase 2's, the head has trained; phase 2 itself moved the encoder
    states = [torch.load(r.best_checkpoint, weights_only=True)['state_dict'] for r in results]
    key = 'model.encoder.blocks.0.attn.qkv.weight'
    assert torch.equal(states[3][key], states[2][key]) and not torch.equal(states[2][key], states[1][key])
    assert torch.equal(states[1]['model.tokenizer.quantizer.codebook'], states[0]['model.tokenizer.quantizer.codebook'])
    finetuned = TaskModule(LaBraMPretrainer(), objective=phases[-1].objective)
    load_weights(finetuned, results[-1].best_checkpoint)
    assert np.isfinite(challenge_score(finetuned, loader['val'], per_subject=True)['nrmse'])
