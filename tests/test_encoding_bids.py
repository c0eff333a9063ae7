"fMRI encoding from events and BIDS folders: one test per friction point (events, BIDS errors, lag units, TR-level designs, scaling, splits, baselines)."
import json
import shutil
import tempfile
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import neuronb.temporal.encoders  # noqa: F401  (registers the encoders)
from neuronb.encoding.baselines import fit_banded_ridge, fit_glm_baseline, score_table
from neuronb.encoding.bids import events_to_frames, find_bold_runs, load_bids_encoding, read_events, write_bids_dataset
from neuronb.encoding.data import (DEFAULT_LAG_WINDOW, EncodingData, FeatureScaler, block_split, check_run_split, lag_trs,
                                   make_windows, resolve_context, run_split)
from neuronb.encoding.models import fit_encoding_model, fit_ridge_baseline
from neuronb.encoding.simulate import simulate_encoding
from neuronb.temporal.encoders import make_encoder


@pytest.fixture(scope='module')
def bids(tmp_path_factory):
    root = tmp_path_factory.mktemp('bids') / 'ds'
    truth = write_bids_dataset(root, n_runs=4, n_trs=100, seed=0)
    data = load_bids_encoding(root, 'listen', atlas=truth['atlas'], confounds=['drift', 'motion'], n_frames=4)
    return root, truth, data


def _fresh(tmp_path, **kw):
    root = tmp_path / 'bad'
    return root, write_bids_dataset(root, n_runs=2, n_trs=40, seed=1, **kw)


# --- events --------------------------------------------------------------------------------------------------------
def test_events_to_frames_shares_and_tr_level_design():
    ev = pd.DataFrame({'onset': [2.0, 9.5, 13.0], 'duration': [4.0, 0.0, 1.0], 'trial_type': ['tone', 'click', 'tone']})
    x, types = events_to_frames(ev, tr=2.0, n_trs=10, n_frames=4)
    assert types == ['click', 'tone'] and x.shape == (10, 4, 2)
    assert np.allclose(x[1, :, 1], 1) and np.allclose(x[6, 2:, 1], 1) and x[6, :2, 1].sum() == 0
    x1, _ = events_to_frames(ev, tr=2.0, n_trs=10, n_frames=1)
    assert np.allclose(x1[:, 0], x.mean(1))  # the TR-level design is the frame mean of a finer one


def test_events_outside_run_name_file_and_row(tmp_path):
    f = tmp_path / 'sub-01_task-x_events.tsv'
    pd.DataFrame({'onset': [1.0, 30.0], 'duration': [1.0, 5.0], 'trial_type': ['a', 'b']}).to_csv(f, sep='\t', index=False)
    with pytest.raises(ValueError, match=r'events\.tsv: event in row 1 \(onset 30 s.*outside the run.*20 s'):
        events_to_frames(f, tr=2.0, n_trs=10)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['duration'\]"):
        read_events(pd.DataFrame({'onset': [1.0], 'trial_type': ['a']}))


# --- BIDS ----------------------------------------------------------------------------------------------------------
def test_bids_load_runs_tr_and_confounds(bids):
    root, truth, data = bids
    assert data.tr == 2.0 and data.bold.shape == (400, 4) and data.stimulus.shape == (400, 4, 3)
    assert list(dict.fromkeys(data.run)) == [f'sub-01_task-listen_run-{k}' for k in range(1, 5)]
    raw = load_bids_encoding(root, 'listen', atlas=truth['atlas'], n_frames=1)
    def r_signal(d):
        return np.mean([np.corrcoef(d.bold[d.run == k][:, j], truth['signal'][k][:, j])[0, 1] for k in truth['signal'] for j in range(3)])
    assert r_signal(data) > r_signal(raw) + 0.03  # confound regression helps


def test_missing_repetition_time_names_sidecar(tmp_path):
    root, truth = _fresh(tmp_path, sidecar_tr=False)
    with pytest.raises(ValueError, match=r"run-1_bold\.json have no field 'RepetitionTime'"):
        load_bids_encoding(root, 'listen', atlas=truth['atlas'])


def test_nifti_time_axis_disagreeing_with_events(tmp_path):
    root, truth = _fresh(tmp_path)
    f = root / 'sub-01/func/sub-01_task-listen_run-2_bold.nii.gz'
    img = nib.load(f)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :20], img.affine, img.header), f)
    with pytest.raises(ValueError, match=r'run-2_events\.tsv: event in row .*run-2_bold\.nii\.gz \(20 volumes\)'):
        load_bids_encoding(root, 'listen', atlas=truth['atlas'])


def test_header_tr_disagreeing_with_sidecar(tmp_path):
    root, truth = _fresh(tmp_path)
    side = root / 'sub-01/func/sub-01_task-listen_run-1_bold.json'
    side.write_text(json.dumps({'RepetitionTime': 1.5}))
    with pytest.raises(ValueError, match=r'pixdim\[4\] = 2 s\) disagrees with RepetitionTime = 1.5 s'):
        load_bids_encoding(root, 'listen', atlas=truth['atlas'])


def test_duplicate_and_overlapping_runs(tmp_path):
    root, truth = _fresh(tmp_path)
    func = root / 'sub-01/func'
    shutil.copy(func / 'sub-01_task-listen_run-1_bold.nii.gz', func / 'sub-01_task-listen_run-01_bold.nii.gz')
    with pytest.raises(ValueError, match='two bold files for run'):
        find_bold_runs(root)
    (func / 'sub-01_task-listen_run-01_bold.nii.gz').unlink()
    (root / 'sub-01/sub-01_scans.tsv').write_text('filename\tacq_time\nfunc/sub-01_task-listen_run-1_bold.nii.gz\t2024-01-01T10:00:00\n'
                                                 'func/sub-01_task-listen_run-2_bold.nii.gz\t2024-01-01T10:01:00\n')
    with pytest.raises(ValueError, match=r'scans\.tsv: runs .*run-1 .* overlap in time'):
        find_bold_runs(root)


# --- units and defaults --------------------------------------------------------------------------------------------
def test_lag_window_in_seconds_needs_tr_and_covers_hrf():
    assert DEFAULT_LAG_WINDOW >= 16 and lag_trs(DEFAULT_LAG_WINDOW, 2.0) == 8 and lag_trs(DEFAULT_LAG_WINDOW, 1.5) == 11
    with pytest.raises(ValueError, match='repetition time is unknown: pass tr='):
        resolve_context(None, None, None)
    with pytest.warns(UserWarning, match=r'covers only 12 s at TR 1.5 s'):
        resolve_context(8, None, 1.5)
    sim = simulate_encoding(n_runs=3, n_tr_per_run=40, n_voxels_per_group=2, seed=0)
    data = EncodingData.from_simulation(sim)
    fit = fit_ridge_baseline(data, run_split(data.run, 1, 1))
    assert data.tr == 1.5 and fit.context == 11  # the default window, in TRs of this data set


@pytest.mark.parametrize('kind', ['mean', 'mean_posenc', 'multiscale', 'hierarchical', 'transformer'])
def test_tr_level_design_builds_every_encoder_that_can(kind):
    enc = make_encoder(kind, 5, 1)
    assert enc(torch.randn(3, 1, 5)).shape == (3, enc.d_model)


def test_tr_level_design_refused_in_user_terms():
    with pytest.raises(ValueError, match=r'a TR-level design \(n_frames=1\).*pass modulation=False'):
        make_encoder('multiscale', 5, 1, modulation=True)
    with pytest.raises(ValueError, match=r'S3DEncoder.*a TR-level design \(n_frames=1\)'):
        make_encoder('s3d', 3 * 16 * 16, 1, frame_size=(16, 16))
    with pytest.raises(ValueError, match='leave it unset for the largest divisor'):
        make_encoder('multiscale', 5, 6, n_segments=4)
    assert make_encoder('multiscale', 16, 32).n_params == 46872  # defaults at 32 frames unchanged


def test_feature_scaler_independent_of_frame_layout():
    rng = np.random.default_rng(0)
    events = (rng.random(300) < 0.3).astype(float)
    impulse = np.zeros((300, 16, 1)); impulse[:, 5, 0] = events
    boxcar = np.repeat(events[:, None, None], 16, axis=1)
    a, b = (FeatureScaler().fit(x).transform(x).mean(1) for x in (impulse, boxcar))
    assert np.allclose(a, b, atol=1e-5)
    fa, fb = (FeatureScaler(pool='frame').fit(x).transform(x).mean(1) for x in (impulse, boxcar))
    assert fb.std() / fa.std() > 3  # the per-frame z-score is what differed


# --- splits --------------------------------------------------------------------------------------------------------
def test_single_run_blocks_with_gap_and_no_leak_wording():
    run = np.zeros(200, dtype=int)
    sp = block_split(run, tr=2.0)
    assert sp['val'].min() - sp['train'].max() - 1 >= 8 and sp['test'].min() - sp['val'].max() - 1 >= 8
    check_run_split(sp, run, min_gap=8)
    with pytest.raises(ValueError) as e:
        check_run_split({'train': np.arange(150), 'test': np.arange(150, 200)}, run)
    assert 'block_split' in str(e.value) and 'leak' not in str(e.value).lower()
    with pytest.raises(ValueError) as e:
        run_split(run)
    assert 'block_split' in str(e.value) and 'leak' not in str(e.value).lower()
    with pytest.raises(ValueError, match='are 3 TRs apart'):
        check_run_split({'train': np.arange(100), 'test': np.arange(103, 200)}, run, min_gap=8)


def test_boolean_mask_splits():
    run = np.repeat(np.arange(4), 10)
    mask = run < 3
    check_run_split({'train': mask, 'test': ~mask}, run)
    with pytest.raises(ValueError, match=r"split 'train' is a boolean mask of shape \(39,\).*\(40,\)"):
        check_run_split({'train': mask[:-1]}, run)


def test_windows_of_a_block_use_the_runs_own_history():
    sim = simulate_encoding(n_runs=2, n_tr_per_run=40, n_voxels_per_group=2, seed=0)
    w = make_windows(sim['stimulus'], sim['bold'], sim['run'], np.arange(10, 30), context=4, chunk=8)
    assert np.array_equal(w['x'][0, :3], sim['stimulus'][7:10])


# --- baselines -----------------------------------------------------------------------------------------------------
def test_ridge_returns_predictions_fits_train_raises_and_warns(bids):
    _, _, data = bids
    splits = run_split(data.run, 1, 1)
    fit = fit_ridge_baseline(data, splits)
    rows, pred = fit.predictions['test']
    assert fit.fit_on == ('train',) and np.array_equal(rows, splits['test']) and pred.shape == (100, 4)
    both = fit_ridge_baseline(data, splits, fit_on=('train', 'val'))
    assert not np.allclose(fit.r['test'], both.r['test'])  # a different fitting set, a different fit
    with pytest.raises(ValueError, match='no other split to predict'):
        fit_ridge_baseline(data, {'train': splits['train']})
    with pytest.warns(UserWarning, match='smallest alpha of the grid'):
        fit_ridge_baseline(data, splits, alphas=[1e3, 1e4])


def test_glm_banded_ridge_find_planted_rois_and_null(bids):
    _, _, data = bids
    splits = run_split(data.run, 1, 1)
    fits = {'glm': fit_glm_baseline(data, splits), 'banded': fit_banded_ridge(data, splits, n_iter=20),
            'fir': fit_ridge_baseline(data, splits)}
    table = score_table(fits)
    assert (table[['v0', 'v1', 'v2']] > 0.3).all().all() and (table['v3'].abs() < 0.3).all()


# --- fitting -------------------------------------------------------------------------------------------------------
def test_fit_without_out_dir_leaves_no_folders_and_tr_level_is_joint(tmp_path, monkeypatch):
    sim = simulate_encoding(n_runs=3, n_tr_per_run=40, n_voxels_per_group=2, seed=0)
    tr_level = EncodingData(sim['stimulus'].mean(1, keepdims=True), sim['bold'], sim['run'], tr=2.0)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # a private temporary folder, watched
    res = fit_encoding_model(tr_level, run_split(tr_level.run, 1, 1), encoder='multiscale', encoder_kwargs={'d_model': 8},
                             chunk=8, max_epochs=1, accelerator='cpu', progress_bar=False)
    assert list(tmp_path.iterdir()) == []
    assert res.context == 8 and not res.stage1_r and type(res.model).__name__ == 'EncodingModel'


def test_encoder_fits_on_bids_runs_named_by_files(bids):
    _, _, data = bids  # run ids are strings such as 'sub-01_task-listen_run-1'
    res = fit_encoding_model(data, run_split(data.run, 1, 1), encoder='mean', chunk=8, max_epochs=1, accelerator='cpu',
                             progress_bar=False)
    assert res.context == 8 and res.predictions['test'][1].shape == (100, 4)
