"Temporal TR encoders: shapes, parameter counts, errors, and whether order survives the encoder."
import numpy as np
import pytest
import torch

from neuronb.encoding.simulate import draw_events, render_stimulus
from neuronb.temporal.encoders import (ENCODERS, MeanPool, S3DEncoder, TemporalPositionalEncoding, fourier_time_code,
                                       make_encoder)

FEATURE_ENCODERS = [k for k in ENCODERS if k != 's3d']


@pytest.mark.parametrize('kind', FEATURE_ENCODERS)
def test_shapes_and_params(kind):
    torch.manual_seed(0)
    enc = make_encoder(kind, 16, 32, d_embed=24)
    z = enc(torch.randn(3, 32, 16))
    assert z.shape == (3, 24) and enc.d_embed == 24 and torch.isfinite(z).all()
    assert enc.n_params == sum(p.numel() for p in enc.parameters())
    z2, h = enc(torch.randn(3, 32, 16), return_features=True)
    assert z2.shape == (3, 24) and h.shape[:2] == (3, 32)


def test_mean_is_parameter_free_mean():
    x = torch.randn(5, 32, 16)
    enc = make_encoder('mean', 16, 32)
    assert enc.n_params == 0 and enc.d_embed == 16 and torch.allclose(enc(x), x.mean(1))


@pytest.mark.parametrize('kind', FEATURE_ENCODERS)
def test_shape_errors_name_the_expected_shape(kind):
    enc = make_encoder(kind, 16, 32)
    with pytest.raises(ValueError, match=r'n_features=16.*12 features'):
        enc(torch.randn(2, 32, 12))
    with pytest.raises(ValueError, match=r'n_frames=32.*30 frames'):
        enc(torch.randn(2, 30, 16))
    with pytest.raises(ValueError, match=r'\(batch, n_frames=32, n_features=16\)'):
        enc(torch.randn(32, 16))


def test_registry_and_constructor_errors():
    with pytest.raises(ValueError, match='unknown encoder'):
        make_encoder('lstm', 16, 32)
    with pytest.raises(TypeError, match='does not take'):
        make_encoder('multiscale', 16, 32, strict=True, n_heads=2)
    assert make_encoder('multiscale', 16, 32, n_heads=2).d_embed == 128  # non-strict drops foreign options
    with pytest.raises(ValueError, match='must divide'):
        make_encoder('multiscale', 16, 32, n_segments=5)
    with pytest.raises(ValueError, match='must divide'):
        make_encoder('hierarchical', 16, 32, mid_stride=6)
    with pytest.raises(ValueError, match='positive int'):
        MeanPool(0, 32)


def test_positional_encoding_modes():
    code = fourier_time_code(32, 4)
    assert code.shape == (32, 9) and torch.all((code[:, 0] > 0) & (code[:, 0] < 1))
    assert TemporalPositionalEncoding(16, 32, mode='concat')(torch.zeros(2, 32, 16)).shape == (2, 32, 25)
    add = TemporalPositionalEncoding(16, 32, mode='add')
    assert torch.allclose(add(torch.zeros(1, 32, 16))[0, :, :9], code)
    assert TemporalPositionalEncoding(8, 32, mode='add', kind='learned').code.shape == (32, 8)
    with pytest.raises(ValueError, match='Nyquist'):
        fourier_time_code(8, 5)
    with pytest.raises(ValueError, match='d_model >= 1 \\+ 2 n_freqs'):
        TemporalPositionalEncoding(4, 32, mode='add')


def _swapped_pairs(seed, n=6, n_frames=32, n_features=16, tr=1.5):
    "TRs and the same TRs with the two events' order swapped (same background, onsets, modulation)."
    rng = np.random.default_rng(seed)
    ev = draw_events(n, n_frames, tr, 5, (1.0, 8.0), rng)
    bg = rng.standard_normal((n, n_frames, n_features))
    a = render_stimulus(ev, bg, tr)
    b = render_stimulus({**ev, 'order': 1 - ev['order']}, bg, tr)
    return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_order_information_survives_temporal_encoders_not_the_mean(seed):
    a, b = _swapped_pairs(seed)
    assert (a - b).abs().amax() > 1  # the frames differ
    torch.manual_seed(seed)
    for kind in FEATURE_ENCODERS:
        enc = make_encoder(kind, 16, 32).eval()
        with torch.no_grad():
            d = (enc(a) - enc(b)).norm(dim=1)
        if kind == 'mean':
            assert d.max() < 1e-5, d  # identical means: order is invisible by construction
        else:
            assert d.min() > 1e-3, (kind, d)  # every swapped pair is told apart, even untrained


def test_s3d_forward_and_local_checkpoint(tmp_path):
    from torchvision.models.video import s3d
    torch.manual_seed(0)
    ref = s3d(weights=None)
    torch.save(ref.state_dict(), tmp_path / 's3d.pt')
    enc = S3DEncoder(3 * 32 * 32, 8, d_embed=16, frame_size=(32, 32), checkpoint=tmp_path / 's3d.pt')
    assert torch.equal(enc.features[0][0][0].weight, ref.features[0][0][0].weight)
    with torch.no_grad():
        assert enc(torch.randn(2, 8, 3, 32, 32)).shape == (2, 16)
        assert enc.eval()(torch.randn(1, 8, 3 * 32 * 32)).shape == (1, 16)
    torch.save({'something': torch.zeros(3)}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match='not a torchvision s3d state dict'):
        S3DEncoder(3 * 32 * 32, 8, frame_size=(32, 32), checkpoint=tmp_path / 'bad.pt')
    with pytest.raises(FileNotFoundError):
        S3DEncoder(3 * 32 * 32, 8, frame_size=(32, 32), checkpoint=tmp_path / 'missing.pt')
    with pytest.raises(ValueError, match='3 \\* H \\* W'):
        S3DEncoder(100, 8, frame_size=(32, 32))
