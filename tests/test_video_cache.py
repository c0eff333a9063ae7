"""Video feature cache: values equal the extractor's, reuse, keys that name what differs, atomic builds (a crash
leaves nothing that reads as a cache), fsspec URLs, views and joined streams."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neuronb.video.cache import (CacheMismatchError, CachedFeatureDataset, IncompleteCacheError, JoinedFeatures,
                                 build_cache, cache_identity, checkpoint_sha256)
from neuronb.video.data import SSv2Dataset
from neuronb.video.synthetic import make_synthetic_ssv2

IDENTITY = {'backbone': 'tiny-conv', 'checkpoint': 'random-init', 'seed': 0}


class TinyExtractor(torch.nn.Module):
    "Random-init stand-in for the frozen backbones: {'semantic': (B, T, N, D), 'motion': (B, T/2, D')}."
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.motion = torch.nn.Conv3d(3, 12, (3, 5, 5), stride=(2, 4, 4), padding=(1, 2, 2))

    def forward(self, frames):
        batch, n_frames = frames.shape[:2]
        patches = self.patch_embed(frames.flatten(0, 1)).flatten(2).transpose(1, 2)
        motion = self.motion(frames.transpose(1, 2)).mean((-2, -1)).transpose(1, 2)
        return {'semantic': patches.unflatten(0, (batch, n_frames)), 'motion': motion}


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synthetic_ssv2(tmp_path_factory.mktemp('video') / 'ssv2', n_train_per_class=1, n_val_per_class=1,
                               height=48, width=64, n_frames=12, length_jitter=2, seed=5)


@pytest.fixture(scope='module')
def dataset(root):
    return SSv2Dataset(root, 'train', n_frames=8, size=32)


@pytest.fixture(scope='module')
def extractor():
    return TinyExtractor()


def test_cache_holds_the_extractor_tokens(tmp_path, dataset, extractor):
    cache = build_cache(tmp_path / 'c', dataset, extractor, IDENTITY, n_views=2, batch_size=3)
    assert len(cache) == 10 and cache.shapes() == {'semantic': (8, 16, 16), 'motion': (4, 12)}
    manifest = json.loads((tmp_path / 'c' / 'manifest.json').read_text())
    assert manifest['ids'] == [e.id for e in dataset.entries] and manifest['n_views'] == 2
    with torch.inference_mode():
        for index in (0, 7):
            expected = extractor(dataset.load(index, train=False)[None])
            tokens, label = cache[index]
            assert label == dataset.entries[index].label
            for name in ('semantic', 'motion'):
                assert torch.allclose(tokens[name], expected[name][0], atol=3e-3, rtol=3e-3)
            view1 = extractor(dataset.load(index, train=True, epoch=0, draw=(1,))[None])
            cached1 = CachedFeatureDataset(tmp_path / 'c', cache_identity(IDENTITY, dataset, 2), view=1)[index][0]
            assert torch.allclose(cached1['motion'], view1['motion'][0], atol=3e-3, rtol=3e-3)
            assert not torch.allclose(cached1['motion'], tokens['motion'], atol=1e-2)
    arrays = np.load(tmp_path / 'c' / 'semantic.npy', mmap_mode='r')
    assert arrays.dtype == np.float16 and arrays.shape == (10, 2, 8, 16, 16)


def test_same_identity_is_reused_without_calling_the_extractor(tmp_path, dataset, extractor):
    build_cache(tmp_path / 'c', dataset, extractor, IDENTITY)
    def must_not_run(frames): raise AssertionError('recomputed a cached identity')
    again = build_cache(tmp_path / 'c', dataset, must_not_run, dict(IDENTITY))
    assert len(again) == 10


@pytest.mark.parametrize('change, key', [
    (dict(identity={**IDENTITY, 'backbone': 'other'}), "extractor.backbone: cached 'tiny-conv', requested 'other'"),
    (dict(identity={**IDENTITY, 'checkpoint': 'ab' * 32}), "extractor.checkpoint: cached 'random-init'"),
    (dict(n_frames=12), 'sampling.n_frames: cached 8, requested 12'),
    (dict(size=24), 'sampling.size: cached 32, requested 24'),
    (dict(mean=(0.5, 0.5, 0.5)), 'sampling.mean'),
    (dict(n_views=3), 'sampling.n_views: cached 1, requested 3'),
    (dict(split='validation'), 'sampling.split'),
])
def test_another_identity_is_refused_naming_the_key(tmp_path, root, extractor, change, key):
    base = SSv2Dataset(root, 'train', n_frames=8, size=32)
    build_cache(tmp_path / 'c', base, extractor, IDENTITY)
    kwargs = {k: v for k, v in change.items() if k in ('n_frames', 'size', 'mean', 'split')}
    other = SSv2Dataset(root, kwargs.pop('split', 'train'), **{'n_frames': 8, 'size': 32, **kwargs})
    identity = change.get('identity', IDENTITY)
    n_views = change.get('n_views', 1)
    with pytest.raises(CacheMismatchError, match='another identity') as error:
        CachedFeatureDataset(tmp_path / 'c', cache_identity(identity, other, n_views))
    assert key in str(error.value) and str(tmp_path / 'c') in str(error.value)
    with pytest.raises(CacheMismatchError) as error:
        build_cache(tmp_path / 'c', other, extractor, identity, n_views=n_views)
    assert key in str(error.value)


def test_overwrite_replaces_a_cache_of_another_identity(tmp_path, dataset, extractor):
    build_cache(tmp_path / 'c', dataset, extractor, IDENTITY)
    doubled = build_cache(tmp_path / 'c', dataset, lambda f: {k: 2 * v for k, v in extractor(f).items()},
                          {**IDENTITY, 'scale': 2}, overwrite=True)
    assert torch.allclose(doubled[0][0]['motion'],
                          2 * build_cache(tmp_path / 'd', dataset, extractor, IDENTITY)[0][0]['motion'], atol=1e-2)
    with pytest.raises(CacheMismatchError, match='scale'):
        CachedFeatureDataset(tmp_path / 'c', cache_identity(IDENTITY, dataset))


def test_crash_mid_build_leaves_no_cache(tmp_path, dataset, extractor):
    calls = []
    def crashing(frames):
        calls.append(len(frames))
        if len(calls) == 3: raise KeyboardInterrupt
        return extractor(frames)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tmp_path / 'c', dataset, crashing, IDENTITY, batch_size=2)
    assert list((tmp_path / 'c').iterdir()) == []  # temporaries removed, no manifest
    with pytest.raises(IncompleteCacheError, match='no manifest.json'):
        CachedFeatureDataset(tmp_path / 'c', cache_identity(IDENTITY, dataset))
    rebuilt = build_cache(tmp_path / 'c', dataset, extractor, IDENTITY, batch_size=2)
    assert len(rebuilt) == 10


def test_crash_while_replacing_leaves_no_stale_cache(tmp_path, dataset, extractor):
    build_cache(tmp_path / 'c', dataset, extractor, IDENTITY)
    def crashing(frames): raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        build_cache(tmp_path / 'c', dataset, crashing, {**IDENTITY, 'seed': 1}, overwrite=True)
    with pytest.raises(IncompleteCacheError):  # the old cache is gone, not silently served under the new name
        CachedFeatureDataset(tmp_path / 'c', cache_identity({**IDENTITY, 'seed': 1}, dataset))
    with pytest.raises(IncompleteCacheError):
        CachedFeatureDataset(tmp_path / 'c', cache_identity(IDENTITY, dataset))


def test_damaged_or_missing_array_is_refused(tmp_path, dataset, extractor):
    build_cache(tmp_path / 'c', dataset, extractor, IDENTITY)
    identity = cache_identity(IDENTITY, dataset)
    np.save(tmp_path / 'c' / 'motion.npy', np.zeros((3, 1, 4, 12), np.float16))
    with pytest.raises(CacheMismatchError, match='motion.npy has shape'):
        CachedFeatureDataset(tmp_path / 'c', identity)
    (tmp_path / 'c' / 'motion.npy').unlink()
    with pytest.raises(IncompleteCacheError, match='motion.npy'):
        CachedFeatureDataset(tmp_path / 'c', identity)


def test_memory_url_cache(dataset, extractor, tmp_path):
    local = build_cache(tmp_path / 'c', dataset, extractor, IDENTITY)
    remote = build_cache('memory://test-video-cache/c', dataset, extractor, IDENTITY)
    for index in range(len(local)):
        assert torch.equal(local[index][0]['semantic'], remote[index][0]['semantic'])
    with pytest.raises(CacheMismatchError):
        CachedFeatureDataset('memory://test-video-cache/c', cache_identity({**IDENTITY, 'seed': 2}, dataset))
    with pytest.raises(IncompleteCacheError):
        CachedFeatureDataset('memory://test-video-cache/never-built', cache_identity(IDENTITY, dataset))


def test_random_view_is_seeded_and_shared_by_joined_streams(tmp_path, root, extractor):
    semantic_set = SSv2Dataset(root, 'train', n_frames=8, size=32)
    motion_set = SSv2Dataset(root, 'train', n_frames=10, size=32, mean=(0.43, 0.39, 0.38), std=(0.23, 0.22, 0.22))
    semantic = build_cache(tmp_path / 's', semantic_set, lambda f: {'semantic': extractor(f)['semantic']},
                           IDENTITY, n_views=3, view='random')
    motion = build_cache(tmp_path / 'm', motion_set, lambda f: {'motion': extractor(f)['motion']},
                         {**IDENTITY, 'backbone': 'tiny-3d'}, n_views=3, view='random')
    views = [semantic._view_of(i) for i in range(10)]
    assert set(views) == {1, 2}  # training views only, drawn per item
    semantic.set_epoch(1)
    assert [semantic._view_of(i) for i in range(10)] != views
    both = JoinedFeatures({'semantic': semantic, 'motion': motion})
    both.set_epoch(2)
    assert [semantic._view_of(i) for i in range(10)] == [motion._view_of(i) for i in range(10)]
    tokens, label = both[4]
    assert set(tokens) == {'semantic', 'motion'} and tokens['motion'].shape == (5, 12)
    fewer = build_cache(tmp_path / 'v', SSv2Dataset(root, 'validation', n_frames=8, size=32), extractor, IDENTITY)
    with pytest.raises(CacheMismatchError, match='different videos'):
        JoinedFeatures([semantic, fewer])
    with pytest.raises(ValueError, match='both hold tokens'):
        JoinedFeatures([semantic, semantic])


def test_dataclass_outputs_and_bad_outputs(tmp_path, dataset, extractor):
    from dataclasses import dataclass
    @dataclass
    class Tokens:
        segments: torch.Tensor
        spatial: torch.Tensor | None = None
    cache = build_cache(tmp_path / 'c', dataset, lambda f: Tokens(extractor(f)['motion']), IDENTITY)
    assert cache.shapes() == {'segments': (4, 12)}
    with pytest.raises(TypeError, match='dict of tensors'):
        build_cache(tmp_path / 'd', dataset, lambda f: extractor(f)['motion'], IDENTITY)
    with pytest.raises(ValueError, match='batch'):
        build_cache(tmp_path / 'e', dataset, lambda f: {'motion': extractor(f)['motion'][0]}, IDENTITY)
    assert not (tmp_path / 'd' / 'manifest.json').exists() and not (tmp_path / 'e' / 'manifest.json').exists()


def test_checkpoint_sha256(tmp_path):
    torch.save({'w': torch.ones(3)}, tmp_path / 'w.pt')
    import hashlib
    assert checkpoint_sha256(tmp_path / 'w.pt') == hashlib.sha256((tmp_path / 'w.pt').read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        checkpoint_sha256(tmp_path / 'missing.pt')
