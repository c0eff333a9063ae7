"""The checkpoint and training cases of the bad-input catalogue (issue 8, section 4; issue 9): each a clear error naming
the file, parameter or task, raised before anything is written."""
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from neuronb.core import load_state, read_checkpoint, seed_everything
from neuronb.data import ArrayDataset, make_loader
from neuronb.train import (MultiTaskObjective, TaskModule, TaskSpec, fit, load_checkpoint, load_weights)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A finished two-epoch fit: its folder and its module."
    out = tmp_path_factory.mktemp('fit')
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    loader = make_loader(ArrayDataset(x.numpy(), (x[:, 0] > 0).long().numpy()), batch_size=16, shuffle=True)
    seed_everything(0)
    res = fit(TaskModule(nn.Linear(4, 2), task='binary'), loader, max_epochs=2, out_dir=out, progress_bar=False)
    return res, loader


def test_checkpoint_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / 'empty.ckpt').write_bytes(b'')
    (tmp_path / 'notes.ckpt').write_text('hello')
    with open(tmp_path / 'code.ckpt', 'wb') as f: pickle.dump({'state_dict': {}, 'path': Path('/')}, f)
    torch.save([torch.zeros(1)], tmp_path / 'list.pt')
    torch.save({'weights': torch.zeros(1)}, tmp_path / 'plain.pt')
    (tmp_path / 'folder.ckpt').mkdir()
    cases = {'empty.ckpt': (ValueError, r'empty \(0 bytes\)'), 'notes.ckpt': (ValueError, 'is not a PyTorch file'),
             'code.ckpt': (ValueError, 'holds pickled Python objects'), 'list.pt': (ValueError, 'holds a list, expected a dict'),
             'missing.ckpt': (FileNotFoundError, 'checkpoint not found'), 'folder.ckpt': (IsADirectoryError, 'is a folder')}
    for name, (error, message) in cases.items():
        with pytest.raises(error, match=message) as e: read_checkpoint(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(ValueError, match=r"plain\.pt is a PyTorch file but not a training checkpoint: it has no 'state_dict'"):
        load_checkpoint(tmp_path / 'plain.pt')


def test_resume_from_a_checkpoint_without_weights_fails_at_once(tmp_path, trained):
    res, loader = trained
    torch.save({'state_dict': {}}, tmp_path / 'empty_state.ckpt')
    torch.save({'state_dict': TaskModule(nn.Linear(4, 2), task='binary').state_dict()}, tmp_path / 'weights_only.ckpt')
    out = tmp_path / 'never'
    cases = [('empty_state.ckpt', r'empty_state\.ckpt: its state_dict is empty'),
             ('weights_only.ckpt', r"weights_only\.ckpt: it was not written by fit \(it lacks \['epoch', 'global_step'")]
    for name, message in cases:
        with pytest.raises(ValueError, match=message):
            fit(TaskModule(nn.Linear(4, 2), task='binary'), loader, max_epochs=3, out_dir=out, ckpt_path=tmp_path / name,
                progress_bar=False)
    with pytest.raises(ValueError, match=r"does not fit this module: missing \['model\.0\.weight', 'model\.0\.bias'\], "
                                         r"unexpected \['model\.weight', 'model\.bias'\]"):
        fit(TaskModule(nn.Sequential(nn.Linear(4, 2)), task='binary'), loader, max_epochs=3, out_dir=out,
            ckpt_path=res.last_checkpoint, progress_bar=False)
    with pytest.raises(ValueError, match=r"shape mismatches \['model\.weight: checkpoint \(2, 4\) vs model \(2, 3\)'"):
        fit(TaskModule(nn.Linear(3, 2), task='binary'), loader, max_epochs=3, out_dir=out, ckpt_path=res.last_checkpoint,
            progress_bar=False)
    assert not out.exists()


def test_resuming_a_finished_fit_is_an_error_not_empty_metrics(tmp_path, trained):
    res, loader = trained
    out = tmp_path / 'again'
    with pytest.raises(ValueError, match=r"last\.ckpt: it has finished 2 epochs and max_epochs=2, so there is nothing left to train"):
        fit(TaskModule(nn.Linear(4, 2), task='binary'), loader, max_epochs=2, out_dir=out, ckpt_path=res.last_checkpoint,
            progress_bar=False)
    assert not out.exists()
    # with more epochs planned, the same checkpoint resumes and trains the third epoch
    more = fit(TaskModule(nn.Linear(4, 2), task='binary'), loader, max_epochs=3, out_dir=out, ckpt_path=res.last_checkpoint,
               progress_bar=False)
    assert 'train/loss' in more.metrics and load_checkpoint(more.last_checkpoint)['epoch'] == 2


def test_shape_mismatch_names_each_parameter_with_both_shapes(trained):
    res, _ = trained
    with pytest.raises(ValueError, match=r"last\.ckpt does not fit Linear: 2 parameter\(s\) have another shape: "
                                         r"weight: checkpoint \(2, 4\) vs model \(3, 4\); bias: checkpoint \(2,\) vs model \(3,\)"):
        load_weights(nn.Linear(4, 3), res.last_checkpoint)
    model = nn.Linear(4, 3)
    before = model.weight.detach().clone()
    load_weights(model, res.last_checkpoint, allow_shape_mismatch=True)
    assert torch.equal(model.weight, before)  # skipped, not half-loaded
    report = load_state(nn.Linear(4, 3), {'weight': torch.zeros(2, 4), 'bias': torch.zeros(3)}, allow_shape_mismatch=True)
    assert report.shape_mismatched == [('weight', (2, 4), (3, 4))] and report.n_loaded == 1
    with pytest.raises(ValueError, match=r"missing 1 key\(s\) \['bias'\], unexpected 1 key\(s\) \['b'\]"):
        load_state(nn.Linear(4, 3), {'weight': torch.zeros(3, 4), 'b': torch.zeros(3)})
    with pytest.raises(ValueError, match=r"key_map sends two checkpoint keys to 'weight'"):
        load_state(nn.Linear(4, 3), {'a.weight': torch.zeros(3, 4), 'b.weight': torch.zeros(3, 4)}, key_map=lambda k: k.split('.')[-1])


def test_multitask_label_of_the_wrong_shape_names_the_task():
    objective = MultiTaskObjective({'age': TaskSpec('regression', head=nn.Linear(4, 1)),
                                    'sex': TaskSpec('binary', head=nn.Linear(4, 2))})
    trunk = nn.Linear(3, 4)
    batch = {'x': torch.randn(5, 3), 'age': torch.randn(5), 'sex': torch.zeros(5, dtype=torch.long)}
    objective.step(trunk, batch, 'train', None)
    with pytest.raises(ValueError, match=r"task 'age': label 'age' has shape \(5, 3\), expected \(5, 1\) or \(5,\)"):
        objective.step(trunk, {**batch, 'age': torch.randn(5, 3)}, 'train', None)
    with pytest.raises(ValueError, match=r"task 'sex': label 'sex' has shape \(5, 2\), expected class ids of shape \(5,\)"):
        objective.step(trunk, {**batch, 'sex': torch.zeros(5, 2, dtype=torch.long)}, 'train', None)
    with pytest.raises(KeyError, match=r"task 'sex': the batch has no label 'sex'"):
        objective.step(trunk, {k: v for k, v in batch.items() if k != 'sex'}, 'train', None)
    with pytest.raises(ValueError, match=r"task 'age': mask 'age_mask' has shape \(4,\)"):
        objective.step(trunk, {**batch, 'age_mask': torch.ones(4, dtype=torch.bool)}, 'train', None)
    with pytest.raises(ValueError, match=r"task 'sex': task 'binary' needs n_classes >= 2 \(exactly 2"):
        MultiTaskObjective({'sex': TaskSpec('binary', n_classes=3)})
