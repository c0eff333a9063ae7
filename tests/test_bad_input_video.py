"""Bad input catalogue of the video track: missing and corrupt videos, labels not in labels.json, templates that do
not map, clips shorter than asked for, skipping that is logged and listed, caches of another backbone or sampling,
and configurations refused before anything is written."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neuronb.video.cache import CacheMismatchError, CachedFeatureDataset, build_cache, cache_identity
from neuronb.video.data import (SSv2Dataset, VideoError, decode_clip, decode_video, read_labels, read_split,
                                segment_indices, transform_frames)
from neuronb.video.synthetic import make_synthetic_ssv2

VIDEOS = '20bn-something-something-v2'


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    return Path(make_synthetic_ssv2(tmp_path_factory.mktemp('video') / 'ssv2', n_train_per_class=1, n_val_per_class=1,
                                    height=32, width=48, n_frames=10, length_jitter=0, seed=9))


@pytest.fixture
def root(pristine, tmp_path):
    copy = tmp_path / 'ssv2'
    shutil.copytree(pristine, copy)
    return copy


def _edit(root, split, change):
    path = root / 'labels' / f'{split}.json'
    entries = json.loads(path.read_text())
    change(entries)
    path.write_text(json.dumps(entries))
    return path


def test_missing_video_names_the_file(root):
    (root / VIDEOS / '3.webm').unlink()
    dataset = SSv2Dataset(root, 'train')
    with pytest.raises(VideoError, match=r'not found: .*3\.webm'):
        dataset[2]


@pytest.mark.parametrize('damage', ['garbage', 'empty', 'header_only'])
def test_corrupt_video_names_the_file(root, damage):
    path = root / VIDEOS / '4.webm'
    data = path.read_bytes()
    path.write_bytes({'garbage': b'\x00not a webm file' * 64, 'empty': b'', 'header_only': data[:60]}[damage])
    with pytest.raises(VideoError, match=r'4\.webm'):
        decode_video(path)
    with pytest.raises(VideoError, match=r'4\.webm'):
        SSv2Dataset(root, 'train')[3]


def test_skip_is_logged_and_listed_never_silent(root, caplog):
    (root / VIDEOS / '2.webm').write_bytes(b'garbage')
    (root / VIDEOS / '5.webm').unlink()
    with caplog.at_level(logging.WARNING, logger='neuronb.video.data'):
        dataset = SSv2Dataset(root, 'train', on_error='skip')
    assert len(dataset) == 8 and [e.id for e in dataset.entries][:2] == ['1', '3']
    assert [(video_id, Path(path).name) for video_id, path, _ in dataset.skipped] == [('2', '2.webm'), ('5', '5.webm')]
    assert 'corrupt' in dataset.skipped[0][2] and 'not found' in dataset.skipped[1][2]
    logged = caplog.text
    assert 'skipping video 2' in logged and 'skipping video 5' in logged and '2 of 10 videos' in logged
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        SSv2Dataset(root, 'train', on_error='ignore')


def test_label_not_in_labels_json(root):
    def rename(entries): entries[4]['template'] = 'Juggling [something]'
    path = _edit(root, 'train', rename)
    with pytest.raises(KeyError) as error:
        read_split(root, 'train')
    message = str(error.value)
    assert "entry id 5" in message and "'Juggling something'" in message and 'labels.json' in message
    assert str(path) in message


@pytest.mark.parametrize('template, placeholders, why', [
    ('Pushing [something from left to right', ['cup'], 'unpaired brackets'),
    ('Pushing [something] from left to right', [], '1 [...] slots for 0 placeholders'),
    ('Covering [something] with [something]', ['cup'], '2 [...] slots for 1 placeholders'),
])
def test_template_that_does_not_map(root, template, placeholders, why):
    def damage(entries):
        entries[0]['template'] = template
        entries[0]['placeholders'] = placeholders
    _edit(root, 'validation', damage)
    with pytest.raises(ValueError, match='does not map') as error:
        read_split(root, 'validation')
    assert 'entry id 11' in str(error.value) and why in str(error.value) and 'validation.json' in str(error.value)


def test_entry_without_template_and_bad_labels_json(root):
    _edit(root, 'train', lambda entries: entries[1].pop('template'))
    with pytest.raises(ValueError, match=r"entry 1 lacks \['template'\]"):
        read_split(root, 'train')
    (root / 'labels' / 'validation.json').unlink()
    with pytest.raises(FileNotFoundError, match='validation.json'):
        read_split(root, 'validation')
    labels = root / 'labels' / 'labels.json'
    labels.write_text(json.dumps({'a': '0', 'b': '2'}))
    with pytest.raises(ValueError, match='without gaps'):
        read_labels(labels)
    labels.write_text(json.dumps({'a': 'zero'}))
    with pytest.raises(ValueError, match="class 'a' has index 'zero'"):
        read_labels(labels)


def test_too_few_frames_names_file_and_counts(root):
    dataset = SSv2Dataset(root, 'train', n_frames=16)
    with pytest.raises(VideoError) as error:
        dataset[0]
    assert '1.webm has 10 frames, fewer than the 16 requested' in str(error.value)
    repeated = SSv2Dataset(root, 'train', n_frames=16, size=32, short='repeat', train=False)
    assert repeated[0][0].shape == (16, 3, 32, 32)
    frames, indices = decode_clip(root / VIDEOS / '1.webm', 16, short='repeat')
    assert indices.tolist() == segment_indices(10, 16, short='repeat').tolist() and np.array_equal(frames[0], frames[1])
    skipping = SSv2Dataset(root, 'train', n_frames=16, on_error='skip')
    assert len(skipping) == 0 and len(skipping.skipped) == 10 and 'fewer than the 16' in skipping.skipped[0][2]


def test_cache_from_another_backbone_or_sampling(root, tmp_path):
    def extractor(frames): return {'motion': frames.mean((-2, -1))}
    identity = {'backbone': 'r3d_tiny', 'checkpoint': 'random-init', 'seed': 0}
    dataset = SSv2Dataset(root, 'train', n_frames=8, size=32)
    build_cache(tmp_path / 'cache', dataset, extractor, identity)
    with pytest.raises(CacheMismatchError, match="extractor.backbone: cached 'r3d_tiny', requested 'r3d_18'"):
        CachedFeatureDataset(tmp_path / 'cache', cache_identity({**identity, 'backbone': 'r3d_18'}, dataset))
    wider_resize = SSv2Dataset(root, 'train', n_frames=8, size=32, resize=40)
    with pytest.raises(CacheMismatchError, match='sampling.resize: cached 37, requested 40'):
        build_cache(tmp_path / 'cache', wider_resize, extractor, identity)
    with pytest.raises(ValueError, match='non-empty dict'):
        cache_identity({}, dataset)


def test_bad_configuration_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match='even'):
        make_synthetic_ssv2(tmp_path / 'odd', height=33)
    with pytest.raises(ValueError, match='length_jitter'):
        make_synthetic_ssv2(tmp_path / 'short', n_frames=5, length_jitter=3)
    assert not (tmp_path / 'odd').exists() and not (tmp_path / 'short').exists()
    with pytest.raises(ValueError, match=r'resize \(20\) must be at least size \(32\)'):
        transform_frames(np.zeros((1, 8, 8, 3), np.uint8), 32, 20)


def test_interrupted_generation_does_not_read_as_finished(tmp_path, monkeypatch):
    import neuronb.video.synthetic as synthetic
    calls = []
    real_encode = synthetic.encode_webm
    def failing(frames, **kwargs):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt
        return real_encode(frames, **kwargs)
    monkeypatch.setattr(synthetic, 'encode_webm', failing)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_ssv2(tmp_path / 'ssv2', n_train_per_class=1, n_val_per_class=1, height=32, width=32, n_frames=8,
                            length_jitter=0)
    assert not (tmp_path / 'ssv2' / 'synthetic.json').exists() and not (tmp_path / 'ssv2' / 'labels').exists()
    assert sorted(p.name for p in (tmp_path / 'ssv2' / VIDEOS).iterdir()) == ['1.webm', '2.webm', '3.webm']
    monkeypatch.setattr(synthetic, 'encode_webm', real_encode)
    root = make_synthetic_ssv2(tmp_path / 'ssv2', n_train_per_class=1, n_val_per_class=1, height=32, width=32,
                               n_frames=8, length_jitter=0)
    assert len(read_split(root, 'train')[0]) == 10
