"""Phase chains: each phase from the previous best checkpoint, resume skipping completed phases, loading reports."""
import json

import lightning.pytorch as L
import pytest
import torch
from torch import nn

from neuronb.core import seed_everything
from neuronb.data import ArrayDataset, make_loader
from neuronb.train import (Phase, load_checkpoint, load_from_phase, phases_from_config, run_phases, supervised_objective,
                           TaskModule)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 6, generator=g)
    y_reg = x @ torch.randn(6, 2, generator=g)
    y_cls = (x[:, 0] + x[:, 1] > 0).long()
    reg = {s: make_loader(ArrayDataset(x[i].numpy(), y_reg[i].numpy()), batch_size=16, shuffle=s == 'train', seed=1)
           for s, i in (('train', slice(0, 64)), ('val', slice(64, 96)))}
    cls = {s: make_loader(ArrayDataset(x[i].numpy(), y_cls[i].numpy()), batch_size=16, shuffle=s == 'train', seed=1)
           for s, i in (('train', slice(0, 64)), ('val', slice(64, 96)))}
    return reg, cls


class Crash(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0: raise RuntimeError('simulated crash')


def _encoder():
    seed_everything(0)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU())


def _chain(crash=False):
    reg, cls = _data()
    seed_everything(1)
    return [Phase('pretrain', supervised_objective('regression', n_outputs=2, head=nn.Linear(8, 2)), reg, epochs=2, lr=1e-2),
            Phase('finetune', supervised_objective('binary', head=nn.Linear(8, 2)), cls, epochs=3, lr=1e-2,
                  lr_groups={'0': 1e-3}, freeze=['0'], freeze_epochs=1, fit_kwargs={'callbacks': [Crash()] if crash else []})]


def test_chain_resumes_skipping_completed_phases_and_matches_an_uninterrupted_chain(tmp_path):
    straight_model = _encoder()
    straight = run_phases(straight_model, _chain(), tmp_path / 'straight', seed=0)
    assert [r.skipped for r in straight] == [False, False]
    assert straight[1].load_report['n_loaded'] == 2 and straight[1].load_report['missing'] == []
    with pytest.raises(RuntimeError, match='simulated crash'):
        run_phases(_encoder(), _chain(crash=True), tmp_path / 'resumed', seed=0)
    assert (tmp_path / 'resumed' / '00_pretrain' / 'phase.json').exists()
    assert not (tmp_path / 'resumed' / '01_finetune' / 'phase.json').exists()
    phase1_mtime = (tmp_path / 'resumed' / '00_pretrain' / 'phase.json').stat().st_mtime_ns
    resumed_model = _encoder()
    resumed = run_phases(resumed_model, _chain(), tmp_path / 'resumed', seed=0)
    assert [r.skipped for r in resumed] == [True, False]
    assert (tmp_path / 'resumed' / '00_pretrain' / 'phase.json').stat().st_mtime_ns == phase1_mtime
    # the interrupted phase continued exactly: same final weights and metrics as the chain that never stopped
    a = load_checkpoint(straight[1].last_checkpoint)['state_dict']
    b = load_checkpoint(resumed[1].last_checkpoint)['state_dict']
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed[1].metrics['val/loss'] == straight[1].metrics['val/loss']
    # the model ends with the last phase's best weights
    assert all(torch.equal(p, q) for p, q in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()))
    # a third call runs nothing
    again = run_phases(_encoder(), _chain(), tmp_path / 'resumed', seed=0)
    assert [r.skipped for r in again] == [True, True]
    marker = json.loads((tmp_path / 'resumed' / '01_finetune' / 'phase.json').read_text())
    assert marker['spec']['freeze'] == ['0'] and marker['best_checkpoint'].startswith('checkpoints/best-')


def test_changed_phase_settings_do_not_reuse_a_completed_phase(tmp_path):
    run_phases(_encoder(), _chain()[:1], tmp_path, seed=0)
    changed = _chain()[:1]
    changed[0].epochs = 3
    with pytest.raises(ValueError, match=r"00_pretrain.*phase.json records a completed phase.*remove"):
        run_phases(_encoder(), changed, tmp_path, seed=0)


def test_key_and_shape_mismatch_errors_name_the_parameters(tmp_path):
    results = run_phases(_encoder(), _chain()[:1], tmp_path, seed=0)
    best = results[0].best_checkpoint
    module = TaskModule(_encoder(), objective=supervised_objective('binary', head=nn.Linear(8, 2)))
    report = load_from_phase(module, best, {'objective.head.': 'objective.head.'})
    assert report.n_loaded == 2 and report.shape_mismatched == []
    wide = TaskModule(nn.Sequential(nn.Linear(6, 5), nn.GELU()), objective=supervised_objective('binary', head=nn.Linear(5, 2)))
    with pytest.raises(ValueError, match=r"model\.0\.weight: checkpoint \(8, 6\) vs model \(5, 6\); model\.0\.bias: checkpoint \(8,\) vs model \(5,\)"):
        load_from_phase(wide, best, {'model.': 'model.'})
    report = load_from_phase(wide, best, {'model.': 'model.', 'objective.': 'objective.'}, allow_shape_mismatch=True)
    assert [k for k, _, _ in report.shape_mismatched] == ['model.0.weight', 'model.0.bias', 'objective.head.weight']
    with pytest.raises(ValueError, match=r"missing \['model\.2\.weight', 'model\.2\.bias'\]"):
        deeper = TaskModule(nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8)),
                            objective=supervised_objective('binary', head=nn.Linear(8, 2)))
        load_from_phase(deeper, best, {'model.': 'model.'}, strict=True)
    with pytest.raises(ValueError, match=r"took nothing from .*keys start with \['model\.', 'objective\.'\]"):
        load_from_phase(module, best, {'encoder.': 'model.'})


def test_phases_from_config_names_phase_and_field():
    reg, cls = _data()
    objectives = {'regress': lambda **kw: supervised_objective('regression', n_outputs=2, head=nn.Linear(8, 2)),
                  'classify': lambda **kw: supervised_objective('binary', head=nn.Linear(8, 2))}
    data = {'reg': reg, 'cls': cls}
    config = [{'name': 'pretrain', 'objective': 'regress', 'data': 'reg', 'epochs': 2, 'lr': 1e-2},
              {'name': 'finetune', 'objective': 'classify', 'data': 'cls', 'epochs': 3, 'lr': 1e-2, 'lr_groups': {'0': 1e-3},
               'freeze': ['0'], 'freeze_epochs': 1, 'load': {'model.': 'model.'}}]
    phases = phases_from_config(config, objectives, data)
    assert [(p.name, p.epochs, p.freeze, p.lr_groups) for p in phases] == [('pretrain', 2, (), None), ('finetune', 3, ['0'], {'0': 1e-3})]
    cases = [({'lr': '1e-3'}, r"phase 0 \('pretrain'\): lr must be float, got str '1e-3' \(YAML 1.1"),
             ({'epoch': 2}, r"unknown key\(s\) \['epoch'\]"),
             ({'objective': 'infonce'}, r"unknown objective 'infonce'; known: \['classify', 'regress'\]"),
             ({'data': 'eeg'}, r"unknown data 'eeg'"),
             ({'epochs': 2.5}, r'epochs must be int'),
             ({'freeze': '0'}, r'freeze must be list')]
    for change, message in cases:
        with pytest.raises(ValueError, match=message): phases_from_config([{**config[0], **change}], objectives, data)
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['epochs'\]"):
        phases_from_config([{k: v for k, v in config[0].items() if k != 'epochs'}], objectives, data)
    with pytest.raises(ValueError, match="phase name 'pretrain' is used twice"):
        run_phases(_encoder(), phases_from_config([config[0], config[0]], objectives, data), '/nonexistent/never-written')
