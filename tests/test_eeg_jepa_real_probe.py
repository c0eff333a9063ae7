"""SignalJEPA on real EEG: eyes open (EEGMMIDB run R01) against eyes closed (R02) of subject S001 from ../shared/data/eeg.

A tiny SignalJEPA encoder is pretrained without labels (JEPA, spatial masks) on the first 70% of both runs; a linear
probe on its frozen embedding is fitted on that part and scored on the held-out last 30% (no window of the test part
overlaps the training part in time). Skips when the folder is absent (set NEURONB_SHARED_DATA to its parent `data`)."""
import numpy as np
import pytest
import torch

from neuronb.core import seed_everything
from neuronb.data import make_loader
from neuronb.eeg.data import WindowDataset, eegmmidb_eyes_store, shared_data_root, time_split
from neuronb.eeg.jepa import SignalJEPAObjective, SignalJEPAPretrainer
from neuronb.eeg.phases import nearest_channels
from neuronb.ssl import LinearProbeCallback
from neuronb.train import TaskModule, fit

FOLDER = shared_data_root() / 'eeg' / 'eegmmidb_S001'
pytestmark = pytest.mark.skipif(not FOLDER.is_dir(), reason=f"real EEGMMIDB data not found at {FOLDER} (set NEURONB_SHARED_DATA)")
torch.set_num_threads(1)


class _Windows(torch.utils.data.Dataset):
    def __init__(self, x): self.x = x
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {'x': self.x[i], 'y': torch.tensor(0.0)}


def test_pretrained_signal_jepa_probe_tells_eyes_open_from_closed(tmp_path):
    store = eegmmidb_eyes_store(tmp_path / 'eegmmidb')
    halves = time_split(store, test_fraction=0.3)
    channels = nearest_channels(store.chs_info)

    def part(name):
        ds = WindowDataset(store, halves[name], targets=('eyes_closed',))
        x = torch.stack([ds[i][0][channels] for i in range(len(ds))])
        return x, np.array([int(ds[i][1]['eyes_closed']) for i in range(len(ds))])
    (x_train, y_train), (x_test, y_test) = part('train'), part('test')
    scale = float(x_train.std())  # microvolts -> unit variance, from the training part only
    x_train, x_test = x_train / scale, x_test / scale
    assert set(y_train) == set(y_test) == {0, 1}

    seed_everything(0)
    model = SignalJEPAPretrainer(n_chans=len(channels), n_times=store.n_times, sfreq=store.sfreq, chs_info=[store.chs_info[i] for i in channels])
    loader = make_loader(_Windows(x_train), batch_size=16, shuffle=True, seed=0)
    fit(TaskModule(model, objective=SignalJEPAObjective(model.encoder), lr=3e-3), loader, max_epochs=6, seed=0, accelerator='cpu')
    scores = LinearProbeCallback((x_train, y_train), (x_test, y_test)).score(model)
    print(f"EEGMMIDB S001 eyes open vs closed, SignalJEPA: probe accuracy {scores['probe/accuracy']:.3f} on {len(y_test)} held-out windows")
    assert scores['probe/accuracy'] > 0.75  # chance is 0.5 (balanced runs)
    assert scores['monitor/effective_rank'] > 1.5  # not collapsed
    shuffled = LinearProbeCallback((x_train, np.random.default_rng(0).permutation(y_train)), (x_test, y_test)).score(model)
    assert shuffled['probe/accuracy'] < scores['probe/accuracy']
