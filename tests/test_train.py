"""Contracts of neuronb.train: unchanged metrics, exact resume, determinism, DDP with two CPU processes, objectives and
multi-task losses, non-finite losses, safe checkpoints, clear errors."""
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from torch import nn

from neuronb.core import seed_everything
from neuronb.data import ArrayDataset, group_split, make_loader, simulate_oscillations
from neuronb.train import (MultiTaskObjective, NonFiniteLossError, Objective, RegressionObjective, StepOutput, TaskModule,
                           TaskSpec, evaluate, fit, load_checkpoint, load_weights)
from fit_callbacks import Interrupt, RecordVal


class LogPower(nn.Module):
    def forward(self, x): return torch.log(x.pow(2).mean(-1) + 1e-4)


def small_cnn(n_outputs=3):
    return nn.Sequential(nn.Conv1d(4, 8, 33, padding=16), LogPower(), nn.BatchNorm1d(8), nn.Dropout(0.2),
                         nn.Linear(8, n_outputs))


@pytest.fixture(scope='module')
def loaders():
    sim = simulate_oscillations(n_sessions=8, n_trials=40, n_times=128, seed=3)
    splits = group_split(sim['session'], seed=0)
    return {s: make_loader(ArrayDataset(sim['x'][i], sim['y'][i], sim['session'][i]), batch_size=32,
                           shuffle=s == 'train', seed=5) for s, i in splits.items()}


def _run(loaders, out, seed=1, ckpt=None, interrupt=None, epochs=4):
    seed_everything(seed)
    rec = RecordVal()
    cbs = [rec] + ([Interrupt(interrupt)] if interrupt else [])
    module = TaskModule(small_cnn(), task='multiclass', n_classes=3, lr=1e-2)
    res = fit(module, loaders['train'], loaders['val'], max_epochs=epochs, seed=seed, out_dir=out, ckpt_path=ckpt,
              callbacks=cbs, progress_bar=False)
    return res, rec.losses


def test_resume_matches_uninterrupted_run(loaders, tmp_path):
    straight, s_losses = _run(loaders, tmp_path / 'straight')
    first, f_losses = _run(loaders, tmp_path / 'resumed', interrupt=2)
    assert sorted(f_losses) == [0, 1]
    resumed, r_losses = _run(loaders, tmp_path / 'resumed', ckpt=first.last_checkpoint)
    assert sorted(r_losses) == [2, 3], 'resume must continue at epoch 2, not start over'
    # exact equality, epoch by epoch: data order, dropout and schedule all continue where they stopped
    assert [f_losses[0], f_losses[1], r_losses[2], r_losses[3]] == [s_losses[e] for e in range(4)]
    assert resumed.metrics['val/accuracy'] == straight.metrics['val/accuracy']
    a = load_checkpoint(straight.last_checkpoint)['state_dict']
    b = load_checkpoint(resumed.last_checkpoint)['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_metrics_and_other_seed_differs(loaders, tmp_path):
    r1, l1 = _run(loaders, tmp_path / 'a', seed=2, epochs=2)
    r2, l2 = _run(loaders, tmp_path / 'b', seed=2, epochs=2)
    r3, l3 = _run(loaders, tmp_path / 'c', seed=3, epochs=2)
    assert l1 == l2 and l1 != l3


def test_evaluate_best_checkpoint_with_groups_writes_files(loaders, tmp_path):
    res, _ = _run(loaders, tmp_path / 'fit', epochs=3)
    assert Path(res.best_checkpoint).name.startswith('best-') and Path(res.last_checkpoint).name == 'last.ckpt'
    out = tmp_path / 'eval'
    m = evaluate(TaskModule(small_cnn(), task='multiclass', n_classes=3), loaders['test'], checkpoint=res.best_checkpoint,
                 out_dir=out, aggregate_by_group=False)
    assert np.array(m['test/confusion_matrix']).sum() == m['test/n_items']
    # the metrics are those of the best checkpoint's own predictions (not of the module's last weights)
    from neuronb.train import predict
    pred = predict(TaskModule(small_cnn(), task='multiclass', n_classes=3), loaders['test'], checkpoint=res.best_checkpoint)
    assert m['test/accuracy'] == pytest.approx((pred['output'].argmax(1) == pred['y']).float().mean().item())
    assert json.loads((out / 'metrics_test.json').read_text())['test/accuracy'] == m['test/accuracy']
    assert (out / 'confusion_test.png').stat().st_size > 1000
    # the oscillation classes vary within a session, so per-session aggregation must refuse
    with pytest.raises(ValueError, match='different targets'):
        evaluate(res.module, loaders['test'], aggregate_by_group=True)


def test_group_aggregation_binary_with_weights_and_smoothing(tmp_path):
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 10)
    label = (groups % 2).astype(np.int64)
    x = (rng.standard_normal((120, 6)) + 0.4 * label[:, None]).astype(np.float32)  # weak per item, strong per group
    ds = lambda idx: make_loader(ArrayDataset(x[idx], label[idx], groups[idx]), batch_size=16, shuffle=True)
    seed_everything(0)
    module = TaskModule(nn.Linear(6, 2), task='binary', class_weights=[1.0, 1.0], label_smoothing=0.1, lr=5e-2)
    res = fit(module, ds(np.arange(80)), ds(np.arange(80, 120)), max_epochs=8, out_dir=tmp_path, progress_bar=False)
    m = evaluate(res.module, ds(np.arange(80, 120)), aggregate_by_group=True)
    assert m['test/group/n_groups'] == 4 and m['test/n_items'] == 40
    assert m['test/group/accuracy'] >= m['test/accuracy']
    assert {'test/auroc', 'test/f1', 'test/balanced_accuracy', 'test/group/auroc'} <= set(m)


def test_bad_input_errors(tmp_path, loaders):
    with pytest.raises(ValueError, match='task must be one of'):
        TaskModule(nn.Linear(2, 2), task='ranking')
    with pytest.raises(ValueError, match="exactly 2 for 'binary'"):
        TaskModule(nn.Linear(2, 3), task='binary', n_classes=3)
    with pytest.raises(ValueError, match="freeze prefix 'encoder' matches no parameter"):
        TaskModule(nn.Linear(2, 2), task='binary', freeze=['encoder'], freeze_epochs=1)
    with pytest.raises(ValueError, match=r'logits of shape \(batch, 3\)'):
        TaskModule(nn.Linear(4, 2), task='multiclass', n_classes=3).loss(torch.zeros(5, 2), torch.zeros(5))
    # files that are not checkpoints, and a pickle that would run code, are refused before any training
    (tmp_path / 'notes.txt').write_text('hello')
    torch.save({'weights': torch.zeros(1)}, tmp_path / 'plain.pt')
    with open(tmp_path / 'evil.ckpt', 'wb') as f: pickle.dump({'state_dict': {}, 'x': Path('/')}, f)
    for name, msg in [('notes.txt', 'notes.txt is not a PyTorch file'), ('plain.pt', "no 'state_dict'"),
                      ('evil.ckpt', 'evil.ckpt holds pickled Python objects')]:
        with pytest.raises(ValueError, match=msg): load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError): load_checkpoint(tmp_path / 'missing.ckpt')
    out = tmp_path / 'never'
    with pytest.raises(ValueError, match='notes.txt is not a PyTorch file'):
        fit(TaskModule(small_cnn(), task='multiclass', n_classes=3), loaders['train'], max_epochs=1, out_dir=out,
            ckpt_path=tmp_path / 'notes.txt', progress_bar=False)
    assert not (out / 'checkpoints').exists()
    # a checkpoint of another architecture names the mismatching keys
    res, _ = _run(loaders, tmp_path / 'ok', epochs=1)
    with pytest.raises(ValueError, match=r'does not fit TaskModule: missing .*model\.0\.weight'):
        load_weights(TaskModule(nn.Linear(3, 3), task='multiclass', n_classes=3), res.best_checkpoint)


DDP_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from torch import nn
    import torch.distributed as dist
    from neuronb.core import seed_everything
    from neuronb.data import ArrayDataset, make_loader, simulate_oscillations
    from neuronb.train import TaskModule, fit
    import lightning.pytorch as L

    class Report(L.Callback):
        def on_train_end(self, trainer, pl_module):
            w = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
            out = {'rank': trainer.global_rank, 'world_size': trainer.world_size, 'strategy': type(trainer.strategy).__name__,
                   'steps': trainer.global_step, 'weights': w.tolist()}
            json.dump(out, open(sys.argv[1] + f'/rank{trainer.global_rank}.json', 'w'))

    if __name__ == '__main__':
        sim = simulate_oscillations(n_sessions=4, n_trials=32, n_times=128, seed=0)
        seed_everything(0)
        model = nn.Sequential(nn.Conv1d(4, 8, 17, padding=8), nn.GELU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))
        module = TaskModule(model, task='multiclass', n_classes=3, lr=1e-2, freeze=['0'], freeze_epochs=1)
        dl = make_loader(ArrayDataset(sim['x'], sim['y']), batch_size=16, shuffle=True)
        res = fit(module, dl, dl, max_epochs=2, out_dir=sys.argv[1] + '/fit', accelerator='cpu', devices=2,
                  strategy='ddp', callbacks=[Report()], progress_bar=False)
        if res.module.global_rank == 0:
            json.dump({'best': res.best_checkpoint, 'val_acc': res.metrics['val/accuracy']}, open(sys.argv[1] + '/result.json', 'w'))
''')


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / 'train_ddp.py'
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f'rank{k}.json').read_text()) for k in (0, 1))
    assert {r0['rank'], r1['rank']} == {0, 1} and r0['world_size'] == r1['world_size'] == 2
    assert r0['strategy'] == 'DDPStrategy'
    # 128 items, batch 16, two processes -> 4 steps per epoch each, 2 epochs
    assert r0['steps'] == r1['steps'] == 8
    # gradients were all-reduced: both replicas end with identical weights
    assert np.allclose(r0['weights'], r1['weights'], atol=1e-6)
    result = json.loads((tmp_path / 'result.json').read_text())
    assert Path(result['best']).exists() and 'val_acc' in result
RECORDED = {
    'multiclass': {
        'val/loss': 1.1738989353179932,
        'val/accuracy': 0.20000000298023224,
        'val/auroc': 0.5024870038032532,
        'val/balanced_accuracy': 0.2380952537059784,
        'val/f1': 0.16825734078884125,
        'train/loss': 1.0665476322174072,
        'train/accuracy': 0.46875,
        'train/auroc': 0.6188788414001465,
        'train/balanced_accuracy': 0.4544752836227417,
        'train/f1': 0.4384058117866516,
        'best_score': 1.172650933265686,
        'test/accuracy': 0.32499998807907104,
        'test/auroc': 0.5175003409385681,
        'test/balanced_accuracy': 0.3062169551849365,
        'test/f1': 0.28358694911003113,
    },
    'binary': {
        'val/loss': 0.7051836848258972,
        'val/accuracy': 0.699999988079071,
        'val/auroc': 0.5366666913032532,
        'val/balanced_accuracy': 0.46666666865348816,
        'val/f1': 0.0,
        'train/loss': 0.7182157039642334,
        'train/accuracy': 0.543749988079071,
        'train/auroc': 0.5515813827514648,
        'train/balanced_accuracy': 0.48344093561172485,
        'train/f1': 0.2772277295589447,
        'best_score': 0.7022568583488464,
        'test/accuracy': 0.6000000238418579,
        'test/auroc': 0.5879120826721191,
        'test/balanced_accuracy': 0.5439560413360596,
        'test/f1': 0.38461539149284363,
    },
    'regression': {
        'val/loss': 0.27586397528648376,
        'val/nrmse': 1.2104231119155884,
        'val/pearson_r': 0.013471812009811401,
        'val/r2': -0.49153047800064087,
        'val/rmse': 0.5252275466918945,
        'train/loss': 0.2317192554473877,
        'train/nrmse': 1.2116553783416748,
        'train/pearson_r': 0.25155261158943176,
        'train/r2': -0.4687651991844177,
        'train/rmse': 0.48137226700782776,
        'best_score': 0.27538973093032837,
        'test/nrmse': 1.17205011844635,
        'test/pearson_r': -0.02858651988208294,
        'test/r2': -0.3754079341888428,
        'test/rmse': 0.4327642619609833,
    },
}


def _recorded_scenario(task, out):
    "Fixed-seed runs of the three supervised tasks, as recorded (RECORDED) from the code before objectives existed."
    sim = simulate_oscillations(n_sessions=6, n_trials=40, n_times=128, seed=11)
    if task == 'multiclass':
        y, n_out = sim['y'], 3
    elif task == 'binary':
        y, n_out = (sim['y'] == 0).astype(np.int64), 2
    else:
        y = np.stack([np.array([10., 20., 40.])[sim['y']] / 40, (sim['y'] == 1).astype(float)], 1).astype(np.float32)
        n_out = 2
    splits = group_split(sim['session'], seed=0)
    loaders = {s: make_loader(ArrayDataset(sim['x'][i], y[i], sim['session'][i]), batch_size=32, shuffle=s == 'train', seed=4)
               for s, i in splits.items()}
    seed_everything(7)
    net = nn.Sequential(nn.Conv1d(4, 8, 33, padding=16), LogPower(), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, n_out))
    if task == 'regression':
        module = TaskModule(net, task='regression', n_outputs=2, lr=1e-2)
    elif task == 'binary':
        module = TaskModule(net, task='binary', class_weights=[0.7, 1.5], label_smoothing=0.1, lr=1e-2)
    else:
        module = TaskModule(net, task='multiclass', n_classes=3, lr=1e-2, label_smoothing=0.05, freeze=['0'], freeze_epochs=1)
    res = fit(module, loaders['train'], loaders['val'], max_epochs=3, seed=7, out_dir=out, progress_bar=False)
    test = evaluate(res.module, loaders['test'], accelerator='cpu')
    return {k: v for k, v in {**res.metrics, **test}.items() if isinstance(v, float) and not k.startswith('lr-')}


@pytest.mark.parametrize('task', ['multiclass', 'binary', 'regression'])
def test_metrics_unchanged_against_recorded_numbers(task, tmp_path):
    got = _recorded_scenario(task, tmp_path)
    assert set(got) == set(RECORDED[task])
    # bit-identical on the machine that recorded them; the tolerance only absorbs other BLAS builds
    for name, expected in RECORDED[task].items():
        assert got[name] == pytest.approx(expected, rel=1e-4, abs=1e-6), name


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, **arrays): self.arrays = arrays
    def __len__(self): return len(next(iter(self.arrays.values())))
    def __getitem__(self, i): return {k: v[i] for k, v in self.arrays.items()}


def test_uncertainty_weights_give_the_noisy_task_less_weight(tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, generator=g)
    clean = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(400, 1, generator=g)
    noisy = x @ torch.randn(5, 1, generator=g) + 2.0 * torch.randn(400, 1, generator=g)
    loader = torch.utils.data.DataLoader(DictDataset(x=x, clean=clean, noisy=noisy), batch_size=50, shuffle=True)
    seed_everything(0)
    objective = MultiTaskObjective({'clean': TaskSpec('regression', head=nn.Linear(16, 1)),
                                    'noisy': TaskSpec('regression', head=nn.Linear(16, 1))}, weighting='uncertainty')
    assert objective.task_weights() == {'clean': 1.0, 'noisy': 1.0}
    res = fit(TaskModule(nn.Sequential(nn.Linear(5, 16), nn.GELU()), objective=objective, lr=3e-2), loader, max_epochs=10,
              out_dir=tmp_path, progress_bar=False)
    w = objective.task_weights()
    assert w['noisy'] < 0.6 and w['noisy'] < 0.5 * w['clean'], w  # the noisy task's weight fell, far below the clean one's
    # logged every epoch, and saved in the checkpoint with the model
    header = (Path(res.log_dir) / 'metrics.csv').read_text().splitlines()[0].split(',')
    assert {'train/weight_clean', 'train/weight_noisy', 'train/raw_loss_noisy', 'train/noisy/r2'} <= set(header)
    assert 'objective.log_vars' in load_checkpoint(res.last_checkpoint)['state_dict']


def test_missing_labels_do_not_bias_the_task_loss():
    torch.manual_seed(0)
    trunk = nn.Linear(3, 4)
    objective = MultiTaskObjective({'age': TaskSpec('regression', head=nn.Linear(4, 1)),
                                    'sex': TaskSpec('multiclass', n_classes=2, head=nn.Linear(4, 2))})
    x = torch.randn(6, 3)
    age = torch.tensor([30., 41., 52., 60., 25., 33.])
    sex = torch.tensor([0, 1, 1, 0, 1, 0])
    mask = torch.tensor([True, False, True, False, False, True])
    batch = {'x': x, 'age': age, 'age_mask': mask, 'sex': torch.where(mask, sex, -1)}
    out = objective.step(trunk, batch, 'train', None)
    feats = trunk(x)
    age_loss = ((objective.heads['age'](feats)[mask, 0] - age[mask]) ** 2).mean()
    sex_loss = nn.functional.cross_entropy(objective.heads['sex'](feats)[mask], sex[mask])
    assert torch.allclose(out.losses['age'], age_loss) and torch.allclose(out.losses['sex'], sex_loss)
    # the unlabelled items' values do not matter at all
    other = {**batch, 'age': torch.where(mask, age, 1e6)}
    assert torch.equal(objective.step(trunk, other, 'train', None).losses['age'], out.losses['age'])
    # a batch without any label for a task adds exactly zero for it
    none = objective.step(trunk, {**batch, 'age_mask': torch.zeros(6, dtype=torch.bool)}, 'train', None)
    assert none.losses['age'].item() == 0.0 and none.losses['age'].requires_grad


class _NaNAfter(RegressionObjective):
    def __init__(self, at):
        super().__init__(n_outputs=1)
        self.at, self.calls = at, 0
    def step(self, model, batch, split, metrics):
        out = super().step(model, batch, split, metrics)
        self.calls += split == 'train'
        bad = torch.tensor(float('nan') if self.calls > self.at else 0.0)
        return StepOutput(losses={'mse': out.losses['loss'], 'aux': bad}, batch_size=out.batch_size)


def test_nan_loss_stops_fit_naming_term_and_step_and_keeps_finite_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    loader = make_loader(ArrayDataset(x.numpy(), x[:, :1].numpy()), batch_size=16, shuffle=True)
    with pytest.raises(NonFiniteLossError, match=r"training step 6 \(epoch 1\).*term 'aux' = nan"):
        fit(TaskModule(nn.Linear(4, 1), objective=_NaNAfter(6), lr=1e-2), loader, loader, max_epochs=4, out_dir=tmp_path,
            progress_bar=False)
    last = load_checkpoint(tmp_path / 'checkpoints' / 'last.ckpt')
    assert last['epoch'] == 0 and all(torch.isfinite(v).all() for v in last['state_dict'].values())


def test_lr_groups_and_objective_parameters_in_the_optimiser():
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    objective = MultiTaskObjective({'a': TaskSpec('regression', head=nn.Linear(2, 1))}, weighting='uncertainty')
    module = TaskModule(net, objective=objective, lr=1e-3, lr_groups={'0': 1e-5, 'objective.log_vars': 1e-2})
    lrs = {g['name']: (g['lr'], len(g['params'])) for g in module.param_groups()}
    assert lrs == {'default': (1e-3, 2), 'default/no_decay': (1e-3, 2), '0': (1e-5, 1), '0/no_decay': (1e-5, 1),
                   'objective.log_vars/no_decay': (1e-2, 1)}
    with pytest.raises(ValueError, match="lr_groups prefix '2' matches no parameter"):
        TaskModule(net, objective=objective, lr_groups={'2': 1e-4})
    with pytest.raises(ValueError, match='either objective=... or the task arguments'):
        TaskModule(net, task='regression', objective=objective)


def test_fit_on_a_machine_with_slurm_installed_stays_quiet_unless_verbose(loaders, tmp_path, monkeypatch, recwarn):
    # a login node or notebook server has `srun` on PATH; a process not started by srun runs here, as asked
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text('#!/bin/sh\nexit 0\n')
    (bin_dir / 'srun').chmod(0o755)
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for var in ('SLURM_NTASKS', 'SLURM_JOB_NAME', 'SLURM_JOB_ID'):
        monkeypatch.delenv(var, raising=False)
    module = TaskModule(small_cnn(), task='multiclass', n_classes=3, lr=1e-2)
    fit(module, loaders['train'], loaders['val'], max_epochs=1, seed=0, out_dir=tmp_path / 'quiet', progress_bar=False)
    assert not [w for w in recwarn if 'srun' in str(w.message)]
    module = TaskModule(small_cnn(), task='multiclass', n_classes=3, lr=1e-2)
    with pytest.warns(Warning, match='`srun` command is available'):
        fit(module, loaders['train'], loaders['val'], max_epochs=1, seed=0, out_dir=tmp_path / 'verbose',
            progress_bar=False, verbose=True)
