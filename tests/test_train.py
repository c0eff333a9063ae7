"""Contracts of neuronb.train: exact resume, determinism, DDP with two CPU processes, safe checkpoints, clear errors."""
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
from neuronb.train import TaskModule, evaluate, fit, load_checkpoint, load_weights


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


class Interrupt(L.Callback):
    def __init__(self, n): self.n = n
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.n: trainer.should_stop = True


class RecordVal(L.Callback):
    def __init__(self): self.losses = {}
    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking: self.losses[trainer.current_epoch] = float(trainer.callback_metrics['val/loss'])


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
    assert 0 <= m['test/accuracy'] <= 1 and np.array(m['test/confusion_matrix']).sum() == m['test/n_items']
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
    for name, msg in [('notes.txt', 'not a loadable PyTorch checkpoint'), ('plain.pt', "no 'state_dict'"),
                      ('evil.ckpt', 'not a loadable PyTorch checkpoint')]:
        with pytest.raises(ValueError, match=msg): load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError): load_checkpoint(tmp_path / 'missing.ckpt')
    out = tmp_path / 'never'
    with pytest.raises(ValueError, match='not a loadable'):
        fit(TaskModule(small_cnn(), task='multiclass', n_classes=3), loaders['train'], max_epochs=1, out_dir=out,
            ckpt_path=tmp_path / 'notes.txt', progress_bar=False)
    assert not (out / 'checkpoints').exists()
    # a checkpoint of another architecture names the mismatching keys
    res, _ = _run(loaders, tmp_path / 'ok', epochs=1)
    with pytest.raises(ValueError, match='does not fit this model'):
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
    assert Path(result['best']).exists() and 0 <= result['val_acc'] <= 1
