"""Stimulus features onto the TR grid (`neuronb.encoding.stimuli.align_to_trs`) and the feature cache."""
import numpy as np
import pytest

from neuronb.encoding.stimuli import FrameFeatures, align_to_trs, cached_features, feature_key, frame_times


def _ramp(n=40):
    return np.stack([np.arange(float(n)), np.ones(n)], axis=1)


def test_exact_values_at_a_rate():
    "10 Hz ramp, TR 2 s, 4 frames: frame j of TR k is the mean of samples 20k + 5j .. 20k + 5j + 4."
    x = align_to_trs(_ramp(), tr=2.0, n_frames=4, rate=10.0)
    assert x.shape == (2, 4, 2) and x.dtype == np.float32
    expected = np.array([[2, 7, 12, 17], [22, 27, 32, 37]], dtype=float)
    assert np.array_equal(x[..., 0], expected) and np.array_equal(x[..., 1], np.ones((2, 4)))


def test_times_equal_rate_and_onset_shift_with_fill():
    values = _ramp()
    by_rate = align_to_trs(values, 2.0, 4, rate=10.0)
    assert np.allclose(align_to_trs(values, 2.0, 4, times=np.arange(40) / 10.0), by_rate)
    shifted = align_to_trs(values, 2.0, 4, rate=10.0, onset=1.0, n_trs=2, fill=-1.0)
    assert np.allclose(shifted[0, :, 0], [-1, -1, 2, 7]) and np.allclose(shifted[1, :, 0], [12, 17, 22, 27])
    # samples before the run (negative onset) are dropped
    early = align_to_trs(values, 2.0, 4, rate=10.0, onset=-1.0)
    assert early.shape == (1, 4, 2) and np.allclose(early[0, :, 0], [12, 17, 22, 27])


def test_interp_at_frame_centres():
    slow = np.arange(12.0)[:, None]  # 3 Hz: sample i centred at (i + 0.5) / 3 s
    y = align_to_trs(slow, 2.0, 4, rate=3.0, method='interp')
    centres = frame_times(2, 2.0, 4, where='center')
    assert np.allclose(y[..., 0], np.clip(3 * centres - 0.5, 0, 11), atol=1e-5)


def test_events_boxcar():
    t = np.arange(1000) / 10.0
    box = ((t >= 12.0) & (t < 15.0)).astype(np.float32)[:, None]
    x = align_to_trs(box, tr=2.0, n_frames=4, rate=10.0)
    assert x.shape == (50, 4, 1) and x.sum() == 6.0
    assert x[6].ravel().tolist() == [1, 1, 1, 1] and x[7].ravel().tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize('call, words', [
    (lambda v: align_to_trs(v, 2.0, 4, rate=10.0, n_trs=3, source='story.wav'), ['story.wav', 'end at 4 s', 'need 6 s']),
    (lambda v: align_to_trs(v, 2.0, 3, rate=10.0, source='story.wav'), ['story.wav', 'n_frames that divide', "method='interp'"]),
    (lambda v: align_to_trs(v, 2.0, 4, times=np.r_[np.arange(20), np.arange(20)] / 10.0), ['strictly increasing', 'sample 20']),
    (lambda v: align_to_trs(v, 2.0, 4, rate=10.0, onset=0.5), ['after the run starts', 'fill=']),
    (lambda v: align_to_trs(v[:10], 2.0, 4, times=np.arange(10) * 2.0), ['holds no sample', "method='interp'"]),
    (lambda v: align_to_trs(v, 2.0, 4), ['exactly one of times']),
    (lambda v: align_to_trs(v, 2.0, 4, rate=10.0, times=np.arange(40) / 10.0), ['exactly one of times']),
    (lambda v: align_to_trs(v[:, 0], 2.0, 4, rate=10.0), ['1-D']),
    (lambda v: align_to_trs(np.full_like(v, np.nan), 2.0, 4, rate=10.0), ['NaN']),
    (lambda v: align_to_trs(v, -2.0, 4, rate=10.0), ['tr must be a positive number']),
    (lambda v: align_to_trs(v, 2.0, 0, rate=10.0), ['n_frames must be an integer']),
    (lambda v: align_to_trs(v, 2.0, 4, rate=10.0, method='nearest'), ["method must be 'mean' or 'interp'"]),
])
def test_errors_name_the_problem(call, words):
    with pytest.raises(ValueError) as info:
        call(_ramp())
    for word in words: assert word in str(info.value), (word, str(info.value))


def test_frame_features_to_trs_names_the_file():
    features = FrameFeatures(_ramp(), ['up', 'one'], rate=10.0, source='clip.mp4')
    assert np.allclose(features.to_trs(2.0, 4), align_to_trs(_ramp(), 2.0, 4, rate=10.0))
    with pytest.raises(ValueError, match='clip.mp4'): features.to_trs(2.0, 4, n_trs=5)


def test_cache_hits_and_invalidation(tmp_path):
    stimulus = tmp_path / 'stimulus.bin'
    stimulus.write_bytes(b'first version')
    calls = []
    def compute(scale):
        calls.append(scale)
        return np.arange(6.0).reshape(3, 2) * scale
    cache = tmp_path / 'cache'
    a = cached_features(stimulus, 'demo', {'scale': 2}, lambda: compute(2), cache)
    b = cached_features(stimulus, 'demo', {'scale': 2}, lambda: compute(2), cache)
    assert np.array_equal(a, b) and calls == [2]
    cached_features(stimulus, 'demo', {'scale': 3}, lambda: compute(3), cache)  # new parameter
    cached_features(stimulus, 'other', {'scale': 2}, lambda: compute(2), cache)  # new extractor
    stimulus.write_bytes(b'second version')  # new content, same name
    cached_features(stimulus, 'demo', {'scale': 2}, lambda: compute(2), cache)
    assert calls == [2, 3, 2, 2] and len(list(cache.iterdir())) == 4
    assert not [p for p in cache.iterdir() if '.tmp-' in p.name], 'no temporary files left'


def test_cache_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.wav'): feature_key(tmp_path / 'missing.wav', 'demo', {})
    stimulus = tmp_path / 's.bin'
    stimulus.write_bytes(b'x')
    cached_features(stimulus, 'demo', {}, lambda: np.ones(3), tmp_path / 'cache')
    entry = next((tmp_path / 'cache').iterdir())
    entry.write_bytes(b'garbage')
    with pytest.raises(ValueError, match='unreadable'):
        cached_features(stimulus, 'demo', {}, lambda: np.ones(3), tmp_path / 'cache')
    # a failing computation writes nothing
    def broken(): raise RuntimeError('extractor failed')
    with pytest.raises(RuntimeError): cached_features(stimulus, 'broken', {}, broken, tmp_path / 'cache2')
    assert not (tmp_path / 'cache2').exists() or not list((tmp_path / 'cache2').iterdir())
