"""Multi-node training through `fit(num_nodes=...)`: torchrun on localhost as 2 nodes x 1 CPU process (rendezvous on
127.0.0.1, gloo) reaches the same weights as the single-node 2-process run."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent('''
    import json, os, sys, torch
    from torch import nn
    from neuronb.core import seed_everything
    from neuronb.data import ArrayDataset, make_loader, simulate_oscillations
    from neuronb.train import TaskModule, fit
    import lightning.pytorch as L

    class Report(L.Callback):
        def on_train_end(self, trainer, pl_module):
            w = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
            out = dict(rank=trainer.global_rank, node_rank=trainer.node_rank, world_size=trainer.world_size,
                       num_nodes=trainer.num_nodes, env=type(trainer.strategy.cluster_environment).__name__,
                       backend=torch.distributed.get_backend(), steps=trainer.global_step, weights=w.tolist())
            json.dump(out, open(os.path.join(sys.argv[1], f'rank{trainer.global_rank}.json'), 'w'))

    if __name__ == '__main__':
        torch.set_num_threads(1)
        devices, num_nodes = int(sys.argv[2]), int(sys.argv[3])
        sim = simulate_oscillations(n_sessions=2, n_trials=32, n_times=64, seed=0)
        seed_everything(0)
        model = nn.Sequential(nn.Conv1d(4, 4, 9, padding=4), nn.GELU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))
        module = TaskModule(model, task='multiclass', n_classes=3, lr=1e-2)
        dl = make_loader(ArrayDataset(sim['x'], sim['y']), batch_size=8, shuffle=True)
        fit(module, dl, max_epochs=2, out_dir=os.path.join(sys.argv[1], 'fit'), accelerator='cpu', devices=devices,
            num_nodes=num_nodes, strategy='ddp', callbacks=[Report()], progress_bar=False)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(*args) -> list[str]:
    return [sys.executable, '-m', 'torch.distributed.run', *args]


def test_two_nodes_match_one_node_with_two_processes(tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(SCRIPT)
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}
    env.pop('SLURM_NTASKS', None)  # torchrun's variables decide, not an enclosing SLURM job's
    one, two = tmp_path / 'one_node', tmp_path / 'two_nodes'
    one.mkdir(); two.mkdir()
    # one node, two processes
    port = _free_port()
    single = subprocess.run(_torchrun('--nnodes', '1', '--nproc-per-node', '2', '--master-addr', '127.0.0.1',
                                      '--master-port', str(port), str(script), str(one), '2', '1'),
                            env={**env}, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    # two "nodes" of one process each, rendezvous on 127.0.0.1 (c10d), started as two torchrun agents
    port = _free_port()
    nodes = [subprocess.Popen(_torchrun('--nnodes', '2', '--nproc-per-node', '1', '--node-rank', str(rank),
                                        '--rdzv-backend', 'static', '--master-addr', '127.0.0.1', '--master-port', str(port),
                                        str(script), str(two), '1', '2'),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], '\n'.join(o[-2000:] for o in outs)
    ref = [json.loads((one / f'rank{k}.json').read_text()) for k in (0, 1)]
    got = [json.loads((two / f'rank{k}.json').read_text()) for k in (0, 1)]
    assert [r['num_nodes'] for r in ref] == [1, 1] and [r['num_nodes'] for r in got] == [2, 2]
    assert sorted(r['node_rank'] for r in got) == [0, 1] and [r['world_size'] for r in got] == [2, 2]
    assert {r['env'] for r in got} == {'TorchElasticEnvironment'} and {r['backend'] for r in got} == {'gloo'}
    # 64 items, batch 8, two processes -> 4 steps per epoch each, 2 epochs
    assert [r['steps'] for r in got] == [r['steps'] for r in ref] == [8, 8]
    w_ref, w_got = np.array(ref[0]['weights']), np.array(got[0]['weights'])
    assert np.allclose(ref[1]['weights'], w_ref) and np.allclose(got[1]['weights'], w_got)  # replicas agree
    assert np.abs(w_got - w_ref).max() < 1e-6  # same weights as one node with two processes
