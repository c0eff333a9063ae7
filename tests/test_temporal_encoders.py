"Temporal TR encoders: shapes, parameter counts, errors, and whether order survives the encoder."
import numpy as np
import pytest
import torch

from neuronb.encoding.simulate import draw_events, render_stimulus
from neuronb.nn.temporal import ENCODERS, MeanPool, TemporalPositionalEncoding, fourier_time_code
from neuronb.temporal.encoders import S3DEncoder, make_encoder  # importing the track registers its encoders

FEATURE_ENCODERS = [k for k in ENCODERS if k != 's3d']


@pytest.mark.parametrize('kind', FEATURE_ENCODERS)
def test_shapes_and_params(kind):
    torch.manual_seed(0)
    enc = make_encoder(kind, 16, 32, d_model=24)
    z = enc(torch.randn(3, 32, 16))
    assert z.shape == (3, 24) and enc.d_model == 24 and torch.isfinite(z).all()
    assert enc.n_params == sum(p.numel() for p in enc.parameters())
    z2, h = enc(torch.randn(3, 32, 16), return_features=True)
    assert z2.shape == (3, 24) and h.shape[:2] == (3, 32)


def test_mean_is_parameter_free_mean():
    x = torch.randn(5, 32, 16)
    enc = make_encoder('mean', 16, 32)
    assert enc.n_params == 0 and enc.d_model == 16 and torch.allclose(enc(x), x.mean(1))


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
    with pytest.raises(ValueError, match=r"unknown temporal encoder 'lstm'; registered: \['hierarchical', 'mean'"):
        make_encoder('lstm', 16, 32)
    # a misspelt or foreign option is an error naming it and the options the encoder takes
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['n_heads'\]; it takes \['n_features', 'n_frames', 'd_model', 'd_hidden'"):
        make_encoder('multiscale', 16, 32, n_heads=2)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['d_embed'\]"):
        make_encoder('transformer', 16, 32, d_embed=64)  # the old name of d_model
    assert ENCODERS.build('multiscale', n_features=16, n_frames=32).d_model == 128
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
    enc = S3DEncoder(3 * 32 * 32, 8, d_model=16, frame_size=(32, 32), checkpoint=tmp_path / 's3d.pt')
    assert torch.equal(enc.features[0][0][0].weight, ref.features[0][0][0].weight)
    with torch.no_grad():
        assert enc(torch.randn(2, 8, 3, 32, 32)).shape == (2, 16)
        assert enc.eval()(torch.randn(1, 8, 3 * 32 * 32)).shape == (1, 16)
    torch.save({'something': torch.zeros(3)}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match=r"bad\.pt does not fit Sequential: missing \d+ key\(s\).*unexpected 1 key\(s\) \['something'\]"):
        S3DEncoder(3 * 32 * 32, 8, frame_size=(32, 32), checkpoint=tmp_path / 'bad.pt')
    wrong = ref.state_dict()
    wrong['features.0.0.0.weight'] = torch.zeros(1, 2, 3)
    torch.save({'state_dict': wrong}, tmp_path / 'wrong_shape.pt')  # a training checkpoint's layout, one bad tensor
    with pytest.raises(ValueError, match=r"0\.0\.0\.weight: checkpoint \(1, 2, 3\) vs model"):
        S3DEncoder(3 * 32 * 32, 8, frame_size=(32, 32), checkpoint=tmp_path / 'wrong_shape.pt')
    with pytest.raises(FileNotFoundError):
        S3DEncoder(3 * 32 * 32, 8, frame_size=(32, 32), checkpoint=tmp_path / 'missing.pt')
    with pytest.raises(ValueError, match='3 \\* H \\* W'):
        S3DEncoder(100, 8, frame_size=(32, 32))


# --- modulation energy ---------------------------------------------------------------------------------------------
def _one_channel(n_frames=32, d_out=4):
    "A ModulationEnergy whose single learned channel reads feature 0 unchanged."
    from neuronb.temporal.encoders import ModulationEnergy
    me = ModulationEnergy(16, n_frames, d_out, d_mod=1)
    with torch.no_grad():
        me.proj.weight.zero_(); me.proj.weight[0, 0] = 1.0; me.proj.bias.zero_()
    return me


@pytest.mark.parametrize('cycles', [1, 3, 7, 12])
def test_modulation_spectrum_peaks_at_the_rate_for_any_phase(cycles):
    me, t = _one_channel(), torch.arange(32) / 32
    for phase in np.linspace(0, 2 * np.pi, 5):
        x = torch.zeros(1, 32, 16)
        x[0, :, 0] = 0.5 * (1 + torch.sin(2 * np.pi * cycles * t + float(phase)))
        s = me.spectrum(x)[0, :, 0]
        assert s.shape == (16,) and int(s.argmax()) + 1 == cycles
    assert torch.allclose(me.frequencies(1.5), torch.arange(1, 17) / 1.5)


def test_modulation_energy_sees_rate_where_the_mean_cannot():
    "Two TRs with equal means, one modulated at 2 cycles per TR and one at 9: the spectrum tells them apart."
    me, t = _one_channel(), torch.arange(32) / 32
    slow, fast = torch.zeros(1, 32, 16), torch.zeros(1, 32, 16)
    slow[0, :, 0] = torch.sin(2 * np.pi * 2 * t); fast[0, :, 0] = torch.sin(2 * np.pi * 9 * t)
    assert torch.allclose(slow.mean(1), fast.mean(1), atol=1e-6)
    s_slow, s_fast = me.spectrum(slow)[0, :, 0], me.spectrum(fast)[0, :, 0]
    assert s_slow[1] > s_slow[8] + 2 and s_fast[8] > s_fast[1] + 2


@pytest.mark.parametrize('kind', ['multiscale', 'hierarchical', 'transformer'])
def test_modulation_branch_is_on_by_default_and_can_be_ablated(kind):
    with_branch, without = make_encoder(kind, 16, 32), make_encoder(kind, 16, 32, modulation=False)
    assert with_branch.modulation is not None and without.modulation is None
    x = torch.randn(3, 32, 16)
    assert with_branch(x).shape == without(x).shape == (3, 128)
    if kind == 'hierarchical':  # a fourth summary beside fine, mid and coarse
        assert 'modulation' in with_branch.levels(x)[0] and 'modulation' not in without.levels(x)[0]
    else:  # a quarter of the embedding is the modulation code, concatenated (not summed)
        with_branch.eval()
        with torch.no_grad(): assert torch.allclose(with_branch(x)[:, 96:], with_branch.modulation(x))
        with pytest.raises(ValueError, match='d_model must be >= 2'):
            make_encoder(kind, 16, 32, d_model=1)


def test_modulation_energy_errors_and_bf16():
    from neuronb.temporal.encoders import ModulationEnergy
    with pytest.raises(ValueError, match=r'max_cycles must be in \[1, n_frames // 2 = 16\]'):
        ModulationEnergy(16, 32, 8, max_cycles=17)
    with pytest.raises(ValueError, match='d_mod'):
        ModulationEnergy(16, 32, 8, d_mod=0)
    enc = make_encoder('multiscale', 16, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        z = enc(torch.randn(2, 32, 16))
    assert z.shape == (2, 128) and torch.isfinite(z.float()).all()


@pytest.mark.parametrize('seed', [0, 1])
def test_modulation_energy_learns_the_rate_the_mean_cannot_see(seed):
    "On simulated stimuli, ModulationEnergy + a linear output trained to regress the modulation rate (log Hz)"
    "reaches a held-out R^2 > 0.7; a linear model of the TR mean, trained the same way, stays near 0."
    from neuronb.encoding.simulate import simulate_encoding
    from neuronb.temporal.encoders import ModulationEnergy
    sim = simulate_encoding(n_runs=2, n_tr_per_run=300, n_voxels_per_group=2, seed=seed)
    x = torch.tensor(sim['stimulus']); x = (x - x.mean((0, 1))) / x.std((0, 1))
    y = torch.tensor(np.log(sim['rate']), dtype=torch.float32); y = (y - y.mean()) / y.std()
    r2 = {}
    for name in ('modulation', 'mean'):
        torch.manual_seed(seed)
        net = ModulationEnergy(16, 32, 1) if name == 'modulation' else torch.nn.Linear(16, 1)
        f = net if name == 'modulation' else (lambda v: net(v.mean(1)))
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
        for _ in range(300):
            opt.zero_grad(); ((f(x[:400])[:, 0] - y[:400]) ** 2).mean().backward(); opt.step()
        with torch.no_grad(): r2[name] = float(1 - ((f(x[400:])[:, 0] - y[400:]) ** 2).mean() / y[400:].var())
    assert r2['modulation'] > 0.7 and r2['mean'] < 0.1, r2
