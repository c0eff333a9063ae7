"""The four real clips in ../shared/data/video (avi, mp4, mkv) through the SSv2 decoder and both frozen backbones.

Random-init backbones (no weights can be downloaded here); the token shapes are those documented in
nbs/video/04_backbones.ipynb. Skips with a reason when the folder is absent (set NEURONB_SHARED_DATA)."""
import os
from pathlib import Path

import pytest
import torch

from neuronb.video.backbones import MotionBackbone, SemanticBackbone
from neuronb.video.data import decode_clip, transform_frames

ROOT = Path(os.environ.get('NEURONB_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
VIDEO = ROOT / 'video'
pytestmark = pytest.mark.skipif(not VIDEO.is_dir(), reason=f"real video clips not found at {VIDEO} (set NEURONB_SHARED_DATA)")
CLIPS = sorted(p for p in VIDEO.glob('*') if p.suffix in ('.avi', '.mp4', '.mkv')) if VIDEO.is_dir() else []


@pytest.fixture(scope='module')
def backbones():
    torch.set_num_threads(1)
    semantic = SemanticBackbone('dinov3_tiny', n_frames=8, frame_size=224)
    motion = MotionBackbone('r3d_tiny', n_frames=16, frame_size=112, spatial_tokens=True)
    return semantic, motion


def test_four_clips_present():
    assert len(CLIPS) == 4 and {p.suffix for p in CLIPS} == {'.avi', '.mp4', '.mkv'}


@pytest.mark.parametrize('clip', CLIPS, ids=[p.name for p in CLIPS])
def test_real_clip_tokens(clip, backbones):
    semantic, motion = backbones
    frames8, index8 = decode_clip(clip, 8, short='repeat')
    frames16, index16 = decode_clip(clip, 16, short='repeat')
    assert frames8.shape[0] == 8 and frames8.shape[-1] == 3 and (index8[1:] >= index8[:-1]).all()
    semantic_in = transform_frames(frames8, size=224, mean=semantic.mean, std=semantic.std)[None]
    motion_in = transform_frames(frames16, size=112, mean=motion.mean, std=motion.std)[None]
    s = semantic(semantic_in)
    m = motion(motion_in)
    # documented shapes: 14x14 patches per frame after the 5 prefix tokens; 8 dense layer4 positions from 16 frames
    assert s.patches.shape == (1, 8, 196, 96) and s.cls.shape == (1, 8, 96) and s.registers.shape == (1, 8, 4, 96)
    assert m.segments.shape == (1, 8, 128) and m.spatial.shape == (1, 8, 7, 7, 128)
    assert torch.isfinite(s.patches).all() and torch.isfinite(m.segments).all()
    # real content: tokens differ across frames and across time (a constant clip would give equal ones)
    assert (s.patches[0, 0] - s.patches[0, -1]).abs().mean() > 1e-3
    assert (m.segments[0, 0] - m.segments[0, -1]).abs().mean() > 1e-4
