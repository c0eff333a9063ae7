"""Video data: the synthetic SSv2 classes (a frame bag is at chance within the motion-order pairs), the reader's
round trip on the synthetic layout, segment sampling (determinism, offsets, workers) and the real clips in
../shared/data/video (skipped when absent; set NEURONB_SHARED_DATA to the parent folder `data`)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neuronb.core import read_json
from neuronb.video.data import (SSv2Dataset, count_frames, decode_clip, decode_video, make_loader, read_split,
                                segment_indices, transform_frames)
from neuronb.video.synthetic import (CLASSES, MOTION_ORDER_GROUPS, SyntheticConfig, _video_plan, foreground_track,
                                     make_synthetic_ssv2, motion_order_classes, render_video)

SHARED = Path(os.environ.get('NEURONB_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
TINY = dict(n_train_per_class=1, n_val_per_class=1, height=48, width=64, n_frames=12, length_jitter=2, seed=3)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synthetic_ssv2(tmp_path_factory.mktemp('video') / 'ssv2', **TINY)


def _tracks(pair, n_per_class, n_frames=8, seed=11):
    ordered, unordered, every_frame, y = [], [], [], []
    for label_index, name in enumerate(pair):
        for k in range(n_per_class):
            rng = np.random.default_rng([seed, CLASSES.index(name), k])
            clip, _ = render_video(name, rng, 40, 56, 16 + int(rng.integers(0, 9)))
            track = foreground_track(clip)
            centres = segment_indices(len(track), n_frames)
            ordered.append(track[centres].ravel())
            unordered.append(np.sort(track[centres], axis=0).ravel())
            every_frame.append(np.quantile(track, np.linspace(0, 1, 9), axis=0).ravel())
            y.append(label_index)
    return np.array(ordered), np.array(unordered), np.array(every_frame), np.array(y)


def _cv(x, y):
    return cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), x, y, cv=4).mean()


@pytest.mark.parametrize('pair', MOTION_ORDER_GROUPS, ids=['horizontal', 'depth', 'vertical', 'occlusion'])
def test_frame_bag_at_chance_ordered_frames_not(pair):
    "Within each motion-order pair: ordered 8-frame tracks separate the classes, unordered ones are at chance."
    ordered, unordered, every_frame, y = _tracks(pair, 20)
    assert _cv(ordered, y) >= 0.85
    assert _cv(unordered, y) <= 0.7
    assert _cv(every_frame, y) <= 0.7


def test_pretending_shares_the_frames_of_pushing():
    "Pretending plays exactly the frames of a left-to-right push in another order (so the full frame set matches)."
    n = 17
    push, _ = render_video('Pushing something from left to right', np.random.default_rng(5), 40, 56, n)
    pretend, _ = render_video('Pretending to push something from left to right', np.random.default_rng(5), 40, 56, n)
    assert sorted(map(bytes, push)) == sorted(map(bytes, pretend))
    x_push, x_pretend = foreground_track(push)[:, 0], foreground_track(pretend)[:, 0]
    assert x_push[-1] - x_push[0] > 0.1 and abs(x_pretend[-1] - x_pretend[0]) < 0.05  # goes and comes back


def test_motion_order_classes_are_the_pairs():
    assert len(MOTION_ORDER_GROUPS) == 4 and all(len(pair) == 2 for pair in MOTION_ORDER_GROUPS)
    assert [CLASSES[i] for i in motion_order_classes()] == sorted(
        [name for pair in MOTION_ORDER_GROUPS for name in pair], key=CLASSES.index)
    assert motion_order_classes({name: 9 - i for i, name in enumerate(CLASSES)}) == sorted(
        9 - i for i in motion_order_classes())


def test_reader_round_trip(root):
    "Layout, labels, ids and contents: each decoded video is the rendered one, and its motion matches its label."
    labels = read_json(Path(root) / 'labels' / 'labels.json')
    assert labels == {name: str(i) for i, name in enumerate(CLASSES)}  # indices as strings, like SSv2
    train, label_map = read_split(root, 'train')
    validation, _ = read_split(root, 'validation')
    assert len(train) == len(validation) == 10 and label_map == {name: i for i, name in enumerate(CLASSES)}
    raw = read_json(Path(root) / 'labels' / 'train.json')
    assert set(raw[0]) == {'id', 'label', 'template', 'placeholders'}
    assert raw[7]['template'] == 'Covering [something] with [something]' and len(raw[7]['placeholders']) == 2
    plan = _video_plan(SyntheticConfig(**TINY))
    for entry, (split, name, length, rng) in zip(train + validation, plan):
        assert entry.name == name and CLASSES[entry.label] == name
        frames = decode_video(entry.path)
        rendered, _ = render_video(name, rng, 48, 64, length)
        assert frames.shape == rendered.shape
        assert np.abs(frames.astype(float) - rendered).mean() < 12
        x = foreground_track(frames)[:, 0]
        if name == 'Pushing something from left to right': assert x[-1] - x[0] > 0.1
        if name == 'Pushing something from right to left': assert x[0] - x[-1] > 0.1


def test_generation_is_deterministic(tmp_path):
    config = dict(TINY, n_train_per_class=1, n_val_per_class=1)
    a = make_synthetic_ssv2(tmp_path / 'a', **config)
    b = make_synthetic_ssv2(tmp_path / 'b', **config)
    c = make_synthetic_ssv2(tmp_path / 'c', **dict(config, seed=4))
    video = '20bn-something-something-v2/5.webm'
    assert (Path(a) / video).read_bytes() == (Path(b) / video).read_bytes() != (Path(c) / video).read_bytes()
    assert (Path(a) / 'labels/train.json').read_text() == (Path(b) / 'labels/train.json').read_text()


def test_segment_sampling_offsets_and_determinism():
    assert segment_indices(24, 8).tolist() == [1, 4, 7, 10, 13, 16, 19, 22]
    draws = [segment_indices(40, 8, train=True, rng=np.random.default_rng(s)) for s in range(50)]
    for draw in draws: assert np.array_equal(draw // 5, np.arange(8))  # one frame inside each segment
    assert len({tuple(d) for d in draws}) > 40  # offsets are random
    assert np.stack(draws).min() == 0 and np.stack(draws).max() == 39  # every offset reachable
    assert np.array_equal(segment_indices(40, 8, True, np.random.default_rng(7)),
                          segment_indices(40, 8, True, np.random.default_rng(7)))
    assert segment_indices(16, 16).tolist() == list(range(16))


def test_dataset_draws_seeded_by_epoch_and_index(root):
    train = SSv2Dataset(root, 'train', n_frames=8, size=32, seed=0)
    x0 = train[2][0]
    assert x0.shape == (8, 3, 32, 32) and torch.equal(x0, train[2][0])
    assert torch.equal(x0, SSv2Dataset(root, 'train', n_frames=8, size=32, seed=0)[2][0])
    assert not torch.equal(x0, SSv2Dataset(root, 'train', n_frames=8, size=32, seed=1)[2][0])
    train.set_epoch(1)
    assert not torch.equal(x0, train[2][0])
    evaluation = SSv2Dataset(root, 'train', n_frames=8, size=32, train=False)
    centred = decode_clip(evaluation.entries[2].path, 8)[0]
    assert torch.allclose(evaluation[2][0], transform_frames(centred, 32))


def test_loader_workers_give_the_same_clips(root):
    "Decoding in 2 worker processes gives the same batches as decoding in the main process."
    dataset = SSv2Dataset(root, 'train', n_frames=8, size=32)
    main = list(make_loader(dataset, batch_size=4, num_workers=0, seed=3))
    workers = list(make_loader(dataset, batch_size=4, num_workers=2, seed=3))
    assert len(main) == 3
    for (x_main, y_main), (x_workers, y_workers) in zip(main, workers):
        assert torch.equal(y_main, y_workers) and torch.equal(x_main, x_workers)
    assert sorted(torch.cat([y for _, y in main]).tolist()) == list(range(10))


def test_transform_normalises_with_the_given_mean_and_std():
    frames = np.zeros((2, 30, 40, 3), np.uint8)
    frames[..., 0] = 255
    out = transform_frames(frames, size=16, mean=(0.5, 0.0, 0.0), std=(0.25, 1.0, 1.0))
    assert out.shape == (2, 3, 16, 16)
    assert torch.allclose(out[:, 0], torch.full((2, 16, 16), 2.0)) and out[:, 1:].abs().max() == 0


@pytest.mark.skipif(not (SHARED / 'video').is_dir(), reason=f"real clips not found at {SHARED / 'video'} (set NEURONB_SHARED_DATA)")
@pytest.mark.parametrize('name', ['decord_flipping_a_pancake.mkv', 'mmaction2_demo_demo.mp4',
                                  'mmaction2_tests_data_test.avi', 'mmaction2_tests_data_test.mp4'])
def test_real_clips_through_decoder_and_sampler(name):
    path = SHARED / 'video' / name
    n_total = count_frames(path)
    assert n_total >= 100
    frames, indices = decode_clip(path, 16)
    assert indices.tolist() == segment_indices(n_total, 16).tolist()
    assert frames.dtype == np.uint8 and frames.shape[0] == 16 and frames.shape[-1] == 3
    assert frames.std() > 10  # real content, not a blank decode
    assert np.array_equal(frames[3], decode_video(path, indices[3:4])[0])
    x = transform_frames(frames, size=112, train=True, rng=np.random.default_rng(0))
    assert x.shape == (16, 3, 112, 112) and torch.isfinite(x).all()
    assert abs(x.mean().item()) < 2.5
