"""The NeuroFMx bad-input catalogue (data side): a modality the model was not built for, arrays with the wrong rank,
sampling rates missing from metadata, behaviour shorter than the neural data, NaN segments, a malformed npz or NWB
file. Every case raises a clear error naming the session, modality and field, and leaves nothing half-written."""
import dataclasses
import io
import json
import os

import numpy as np
import pytest
import torch

from neuronb.neurofm.data import Session, make_datasets, read_nwb, read_session, write_session
from neuronb.neurofm.tokenizers import MultiModalTokenizer


@pytest.fixture
def session():
    rng = np.random.default_rng(0)
    return Session('s7', 'subj', 'monkey', {'lfp': rng.standard_normal((1000, 3)).astype(np.float32), 'binned': rng.poisson(5, (100, 4)).astype(np.float32)},
                   {'lfp': 500.0, 'binned': 50.0, 'behavior': 50.0}, rng.standard_normal((100, 2)).astype(np.float32), np.zeros(100, np.float32))


def _refused(session, tmp_path, *words):
    "write_session refuses the session with every word in the message and writes nothing (no file, no temp file)."
    with pytest.raises(ValueError) as e: write_session(tmp_path / 'out.npz', session)
    assert all(w in str(e.value) for w in words), f"{e.value!r} lacks {words}"
    assert os.listdir(tmp_path) == []
    return str(e.value)


def _raw_npz(path, session, **override):
    "Write the npz by hand, bypassing validation (what a foreign writer might produce)."
    arrays = {**session.signals, 'behavior': session.behavior, 'stimulus': session.stimulus, 'metadata': np.array(json.dumps(session.metadata()))}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_wrong_rank(session, tmp_path):
    bad = dataclasses.replace(session, signals={**session.signals, 'lfp': session.signals['lfp'][:, 0]})
    _refused(bad, tmp_path, "session 's7'", "modality 'lfp'", "field 'lfp'", '2-D (time, channels)', '(1000,)')
    path = _raw_npz(tmp_path / 'r.npz', session, lfp=np.zeros((10, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"r\.npz: session 's7', modality 'lfp': field 'lfp' must be 2-D"): read_session(path)


def test_missing_sampling_rate(session, tmp_path):
    bad = dataclasses.replace(session, sfreq={'lfp': 500.0, 'behavior': 50.0})
    _refused(bad, tmp_path, "session 's7'", "modality 'binned'", "metadata field 'sfreq'", "no sampling rate")
    bad = dataclasses.replace(session, sfreq={**session.sfreq, 'lfp': 0})
    _refused(bad, tmp_path, "modality 'lfp'", "sfreq['lfp']", 'positive number')


def test_behaviour_shorter_than_neural_data(session, tmp_path):
    bad = dataclasses.replace(session, behavior=session.behavior[:60], stimulus=session.stimulus[:60])
    _refused(bad, tmp_path, "session 's7'", "modality 'binned'", "field 'behavior' covers 1.200 s", "'binned' covers 2.000 s")
    bad = dataclasses.replace(session, stimulus=session.stimulus[:50])
    _refused(bad, tmp_path, "modality 'stimulus'", "50 samples", "'behavior' has 100")


def test_nan_segments(session, tmp_path):
    lfp = session.signals['lfp'].copy()
    lfp[250:300, 1] = np.nan
    bad = dataclasses.replace(session, signals={**session.signals, 'lfp': lfp})
    _refused(bad, tmp_path, "session 's7'", "modality 'lfp'", "field 'lfp'", 'samples 250-299', '0.500-0.598 s')
    behavior = session.behavior.copy()
    behavior[10] = np.inf
    _refused(dataclasses.replace(session, behavior=behavior), tmp_path, "modality 'behavior'", 'samples 10-10')
    path = _raw_npz(tmp_path / 'n.npz', session, lfp=lfp)
    with pytest.raises(ValueError, match="samples 250-299"): read_session(path)


def test_unknown_modality_and_species(session, tmp_path):
    bad = dataclasses.replace(session, signals={**session.signals, 'meg': session.signals['lfp']}, sfreq={**session.sfreq, 'meg': 500.0})
    _refused(bad, tmp_path, "session 's7'", "unknown modality 'meg'", "'spikes'")
    _refused(dataclasses.replace(session, species='dog'), tmp_path, "metadata field 'species'", "'dog'", "'mouse'")
    with pytest.raises(ValueError, match="unknown modality 'meg'"): make_datasets([session], modalities=['meg'])


@pytest.mark.parametrize('content, words', [
    (b'not a zip file at all', ['malformed session npz']),
    (None, ['malformed session npz']),  # a truncated npz: filled in below
])
def test_malformed_npz(session, tmp_path, content, words):
    path = tmp_path / 'bad.npz'
    if content is None:
        good = write_session(tmp_path / 'good.npz', session)
        content = open(good, 'rb').read()[:300]
    path.write_bytes(content)
    with pytest.raises(ValueError) as e: read_session(path)
    assert 'bad.npz' in str(e.value) and all(w in str(e.value) for w in words), e.value


def test_npz_metadata_problems(session, tmp_path):
    with pytest.raises(ValueError, match="no 'metadata' array"): read_session(_raw_npz(tmp_path / 'a.npz', session, metadata=None))
    with pytest.raises(ValueError, match="field 'metadata' is not valid JSON"): read_session(_raw_npz(tmp_path / 'b.npz', session, metadata=np.array('{oops')))
    meta = session.metadata()
    del meta['sfreq']
    with pytest.raises(ValueError, match=r"metadata lacks field\(s\) \['sfreq'\]"): read_session(_raw_npz(tmp_path / 'c.npz', session, metadata=np.array(json.dumps(meta))))
    with pytest.raises(ValueError, match="session 's7' has no field 'behavior'"): read_session(_raw_npz(tmp_path / 'd.npz', session, behavior=None))
    with pytest.raises(FileNotFoundError, match='no such session file'): read_session(tmp_path / 'missing.npz')


def test_malformed_nwb(tmp_path):
    path = tmp_path / 'broken.nwb'
    path.write_bytes(b'\x89HDF\r\n\x1a\n' + b'\0' * 64)
    with pytest.raises(ValueError, match=r"broken\.nwb: malformed NWB file"): read_nwb(path, species='mouse')


def test_nwb_without_behaviour(tmp_path):
    import datetime
    import pynwb
    nwb = pynwb.NWBFile(session_description='x', identifier='nobehav', session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    nwb.add_unit(spike_times=[0.1, 0.2])
    with pynwb.NWBHDF5IO(str(tmp_path / 'nb.nwb'), 'w') as io_: io_.write(nwb)
    with pytest.raises(ValueError, match=r"nb\.nwb \(session 'nobehav'\): no behavioural time series"): read_nwb(tmp_path / 'nb.nwb', species='mouse')
    with pytest.raises(ValueError, match="names no known species"): read_nwb(tmp_path / 'nb.nwb')


def test_modality_the_model_was_not_built_for():
    model = MultiModalTokenizer(('lfp', 'binned'), d_model=16)
    signals = {'lfp': torch.zeros(1, 4, 25, 2), 'fmri': torch.zeros(1, 4, 1, 3)}
    with pytest.raises(ValueError, match=r"modality 'fmri' was given but the model was built for \['lfp', 'binned'\]"): model(signals)
    with pytest.raises(ValueError, match="'meg' is not a NeuroFMx modality"): model({'meg': torch.zeros(1, 4, 1, 1)})
    with pytest.raises(ValueError, match="'meg' is not a NeuroFMx modality"): MultiModalTokenizer(('meg',))
