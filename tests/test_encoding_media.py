"""Audio and video features of stimulus files (`neuronb.encoding.audio`, `neuronb.encoding.video_features`)."""
import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch
import torchvision

from neuronb.encoding.audio import audio_features, envelope_onsets, log_mel, mel_centres, modulation_spectrum, read_audio
from neuronb.encoding.video_features import make_backbone, motion_energy, read_frames, video_features

SFREQ = 16000
ROOT = Path(os.environ.get('NEURONB_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))


def _am_tone(carrier=1000.0, modulation=4.0, seconds=2.0):
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    return (0.5 * np.sin(2 * np.pi * carrier * t) * (1 + np.sin(2 * np.pi * modulation * t)) / 2).astype(np.float32)


@pytest.mark.parametrize('carrier', [500.0, 2000.0])
def test_log_mel_peaks_at_the_tone(carrier):
    mel = log_mel(_am_tone(carrier), SFREQ, rate=100, n_mels=40)
    centres = mel_centres(40, 50.0, SFREQ / 2)
    assert mel.shape == (200, 40)
    assert int(mel.mean(0).argmax()) == int(np.abs(centres - carrier).argmin())


@pytest.mark.parametrize('modulation, band', [(4.0, 4.0), (8.0, 8.0)])
def test_modulation_spectrum_finds_the_am_rate(modulation, band):
    mel = log_mel(_am_tone(modulation=modulation), SFREQ, rate=100, n_mels=40)
    mod, centres = modulation_spectrum(mel, rate=100, n_groups=1)
    assert centres[int(mod[50:150].mean(0).argmax())] == band


def test_envelope_onsets_at_bursts():
    x = np.zeros(SFREQ, np.float32)
    for start in (0.1, 0.45, 0.7):
        x[int(start * SFREQ):int((start + 0.05) * SFREQ)] = 0.3
    env = envelope_onsets(x, SFREQ, rate=100)
    assert np.sort(np.argsort(env[:, 1])[-3:]).tolist() == [10, 45, 70]


def test_audio_errors_name_file_and_field(tmp_path):
    path = tmp_path / 'story.wav'
    soundfile.write(path, _am_tone(), SFREQ)
    with pytest.raises(ValueError, match=r'story.wav: sampling rate 16000 Hz, expected 44100 Hz \(expected_sfreq\)'):
        read_audio(path, expected_sfreq=44100)
    with pytest.raises(FileNotFoundError, match='absent.wav'): audio_features(tmp_path / 'absent.wav')
    with pytest.raises(ValueError, match='story.wav: a frame rate of 30 Hz'): audio_features(path, rate=30)
    (tmp_path / 'text.wav').write_text('not audio')
    with pytest.raises(ValueError, match='text.wav is not a readable audio file'): read_audio(tmp_path / 'text.wav')
    with pytest.raises(ValueError, match='kinds'): audio_features(path, kinds=('pitch',))
    resampled, sfreq = read_audio(path, sfreq=8000)
    assert sfreq == 8000 and len(resampled) == SFREQ


def test_audio_features_cached_and_aligned(tmp_path):
    path = tmp_path / 'tone.wav'
    soundfile.write(path, _am_tone(), SFREQ)
    features = audio_features(path, rate=50, n_mels=16, n_groups=2, cache_dir=tmp_path / 'cache')
    assert features.values.shape == (100, 16 + 2 * 4 + 2) and features.names[16] == 'mod_0_2hz'
    x = features.to_trs(tr=1.0, n_frames=10)
    assert x.shape == (2, 10, 26)
    soundfile.write(path, _am_tone(carrier=3000.0), SFREQ)  # same name, new content: recomputed
    changed = audio_features(path, rate=50, n_mels=16, n_groups=2, cache_dir=tmp_path / 'cache')
    assert not np.allclose(changed.values, features.values) and len(list((tmp_path / 'cache').iterdir())) == 2


def _write_movie(path, frames, fps=25):
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], 'yuv420p'
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')): container.mux(packet)
        for packet in stream.encode(): container.mux(packet)


def _square_movie(speed, n=25, size=48):
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i, 18:30, 4 + speed * i:16 + speed * i] = 255
    return frames


@pytest.fixture(scope='module')
def movies(tmp_path_factory):
    folder = tmp_path_factory.mktemp('movies')
    _write_movie(folder / 'moving.mp4', _square_movie(1))
    _write_movie(folder / 'static.mp4', _square_movie(0))
    return folder


def test_motion_energy_moving_vs_static(movies):
    moving = motion_energy(read_frames(movies / 'moving.mp4', rate=10, size=None))
    static = motion_energy(read_frames(movies / 'static.mp4', rate=10, size=None))
    assert moving.shape == (10, 5) and static.shape == (10, 5)
    assert moving[1:, 0].mean() > 0.005 and static[1:, 0].mean() < 1e-3
    assert moving[1:, 3:].sum() < moving[1:, 1:3].sum() * 2  # square in the top half mostly: rows 18-30 of 48


def test_video_features_shape_cache_and_short_video(movies, tmp_path):
    features = video_features(movies / 'moving.mp4', rate=5, size=32, cache_dir=tmp_path / 'cache')
    assert features.values.shape == (5, 512 + 5) and features.rate == 5.0
    again = video_features(movies / 'moving.mp4', rate=5, size=32, cache_dir=tmp_path / 'cache')
    assert np.array_equal(features.values, again.values) and len(list((tmp_path / 'cache').iterdir())) == 1
    video_features(movies / 'moving.mp4', rate=5, size=32, seed=1, cache_dir=tmp_path / 'cache')  # another backbone init
    assert len(list((tmp_path / 'cache').iterdir())) == 2
    with pytest.raises(ValueError, match=r'moving.mp4\) end at 1 s, before the run ends'):
        features.to_trs(tr=0.4, n_frames=2, n_trs=5)  # events up to 2 s, movie of 1 s
    with pytest.raises(FileNotFoundError, match='gone.mp4'): video_features(movies / 'gone.mp4')
    (tmp_path / 'bad.mp4').write_bytes(b'not a movie')
    with pytest.raises(ValueError, match='bad.mp4 is not a readable video'): read_frames(tmp_path / 'bad.mp4', rate=5)


def test_backbone_checkpoint_loads_and_wrong_one_is_named(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / 'r18.pt')
    loaded = make_backbone('resnet18', checkpoint=tmp_path / 'r18.pt', seed=5)
    reference.fc = torch.nn.Identity()
    reference.eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(loaded(x), reference(x), atol=1e-5)
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'wrong.pt')
    with pytest.raises(ValueError, match=r'wrong.pt.*conv1.weight'): make_backbone('resnet18', checkpoint=tmp_path / 'wrong.pt')
    with pytest.raises(ValueError, match='unknown torchvision model'): make_backbone('not_a_model')


@pytest.mark.skipif(not (ROOT / 'video').is_dir(), reason=f"real clips not found at {ROOT / 'video'} (set NEURONB_SHARED_DATA)")
def test_real_clip_decodes_at_rate():
    clip = sorted((ROOT / 'video').glob('*.mp4'))[0]
    frames = read_frames(clip, rate=4, size=32)
    assert frames.shape[1:] == (32, 32, 3) and 30 <= len(frames) <= 45
    assert motion_energy(frames)[1:, 0].mean() > 1e-3
