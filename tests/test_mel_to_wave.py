"""speechmax.ops.stft against its torch.stft / torch.istft twins, and MelToWave's forward against forward_ref:
outputs and gradients over shapes, dtypes, phase starts and iteration counts (speed lives in
benchmarks/external_wave_path.py)."""
import functools

import pytest
import torch

from speechmax.features import FeatureConfig, mel_filterbank
from speechmax.models.external import MelToWave
from speechmax.ops import stft as S

# (n_fft, win_length, hop, samples): speechmax's default, the README example's front end, window = n_fft, a window
# that is no multiple of the hop, and an odd n_fft
GEOMETRIES = [(1024, 640, 160, 16000), (512, 400, 160, 4000), (256, 256, 64, 1000), (64, 50, 16, 333),
              (63, 40, 10, 200)]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def rel(a, b):
    return ((a - b).abs().norm() / b.abs().norm()).item()


def _window(win, dtype):
    return torch.hann_window(win, periodic=True, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_frame_stft_matches_torch_stft(geometry, dtype):
    n_fft, win, hop, L = geometry
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(3, L, dtype=dtype, generator=g).requires_grad_(True)
    w = _window(win, dtype)
    fast, ref = S.frame_stft(wave, n_fft, hop, w), S.frame_stft_ref(wave, n_fft, hop, w)
    assert fast.shape == ref.shape == (3, 1 + (L - n_fft % 2) // hop, n_fft // 2 + 1) and fast.dtype == ref.dtype
    assert rel(fast, ref) < TOL[dtype]
    cot = torch.randn(fast.shape, dtype=fast.dtype, generator=g)
    (ga,) = torch.autograd.grad((fast * cot).real.sum(), wave)
    (gb,) = torch.autograd.grad((ref * cot).real.sum(), wave)
    assert rel(ga, gb) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_frame_istft_matches_torch_istft(geometry, dtype):
    n_fft, win, hop, L = geometry
    T = 1 + (L - n_fft % 2) // hop
    length = (T - 1) * hop
    g = torch.Generator().manual_seed(1)
    spec = torch.complex(torch.randn(2, T, n_fft // 2 + 1, dtype=dtype, generator=g),
                         torch.randn(2, T, n_fft // 2 + 1, dtype=dtype, generator=g)).requires_grad_(True)
    w = _window(win, dtype)
    fast, ref = S.frame_istft(spec, n_fft, hop, w, length), S.frame_istft_ref(spec, n_fft, hop, w, length)
    assert fast.shape == ref.shape == (2, length)
    assert rel(fast, ref) < TOL[dtype]
    cot = torch.randn(fast.shape, dtype=dtype, generator=g)
    (ga,) = torch.autograd.grad((fast * cot).sum(), spec)
    (gb,) = torch.autograd.grad((ref * cot).sum(), spec)
    assert rel(ga, gb) < TOL[dtype]


def test_stft_round_trip_and_the_window_convention():
    n_fft, win, hop, L = GEOMETRIES[0]
    w = _window(win, torch.float64)
    wave = torch.randn(2, L, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert rel(S.frame_istft(S.frame_stft(wave, n_fft, hop, w), n_fft, hop, w, L), wave) < 1e-12
    # torch's frame = ramp * ours; the "centered" start is (-1)^k in torch's convention for speechmax's config
    k = torch.arange(n_fft // 2 + 1)
    torch_centered = S.initial_phase("centered", n_fft, win, torch_convention=True, dtype=torch.complex128)
    assert torch.allclose(torch_centered, (1.0 - 2 * (k % 2)).to(torch.complex128), atol=1e-12)
    ours = S.initial_phase("centered", n_fft, win, dtype=torch.complex128)
    assert torch.allclose(ours * S.window_ramp(n_fft, win, dtype=torch.complex128), torch_centered, atol=1e-12)


@functools.lru_cache(maxsize=None)
def _pinv(cfg):
    return torch.linalg.pinv(mel_filterbank(cfg, dtype=torch.float64))


def _mel_case(dtype, B, T, power=1.0, seed=0):
    cfg = FeatureConfig(power=power)
    pinv = _pinv(cfg).to(dtype, copy=True)
    g = torch.Generator().manual_seed(seed)
    # a loud band-limited blob over a quiet floor, like a word's log-mel
    lm = torch.randn(B, cfg.n_mels, T, dtype=dtype, generator=g) * 0.5 - 6
    lm[:, 5:40, T // 4:3 * T // 4] += 4
    return cfg, pinv, _window(cfg.win_length, dtype), lm


# fp32 Griffin-Lim iterations divide by |X|, which amplifies rounding in the quietest bins: looser after them
M2W_TOL = {(torch.float32, 0): 1e-5, (torch.float32, 1): 2e-3, (torch.float64, 0): 1e-11, (torch.float64, 1): 1e-8}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", S.PHASE_INITS)
@pytest.mark.parametrize("iters", [0, 2])
@pytest.mark.parametrize("B,T,chunk", [(1, 11, 8), (5, 21, 2), (7, 31, 3)])
def test_mel_to_wave_matches_its_reference(dtype, init, iters, B, T, chunk):
    cfg, pinv, w, lm = _mel_case(dtype, B, T)
    lm.requires_grad_(True)
    args = (pinv, w, cfg.n_fft, cfg.hop_length, iters, cfg.power, init)
    fast, ref = S.mel_to_wave(lm, *args, chunk=chunk), S.mel_to_wave_ref(lm, *args)
    assert fast.shape == ref.shape == (B, (T - 1) * cfg.hop_length) and fast.dtype == ref.dtype == dtype
    tol = M2W_TOL[dtype, min(iters, 1)]
    assert rel(fast, ref) < tol
    cot = torch.randn(fast.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    (ga,) = torch.autograd.grad((fast * cot).sum(), lm)
    assert torch.isfinite(ga).all() and ga.abs().sum() > 0
    if dtype == torch.float32 and iters:
        # the fp32 twin's own gradient is as far from exact as the tolerance (rel 2.2e-3 from float64 for the
        # 7 x 31 zero-phase case on an AMD EPYC, where the fast op's is 5.3e-4): both ops in fp32 could differ by
        # their two roundings, so the fast op is held to the twin computed in float64 on the same input
        x64 = lm.detach().double().requires_grad_(True)
        ref = S.mel_to_wave_ref(x64, pinv.double(), w.double(), *args[2:])
        cot = cot.double()
        lm = x64
    (gb,) = torch.autograd.grad((ref * cot).sum(), lm)
    assert rel(ga.double(), gb.double()) < tol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", S.PHASE_INITS)
@pytest.mark.parametrize("B,T", [(1, 11), (5, 21), (7, 31)])
def test_linear_mel_to_wave_matches_its_reference(dtype, init, B, T):
    """No iterations, no clipping: the fast op is one matrix product (no FFT); the twin still goes through
    torch.istft."""
    cfg, pinv, w, lm = _mel_case(dtype, B, T)
    lm.requires_grad_(True)
    args = (pinv, w, cfg.n_fft, cfg.hop_length, 0, 1.0, init, False)
    fast, ref = S.mel_to_wave(lm, *args), S.mel_to_wave_ref(lm, *args)
    assert "Linear" in type(fast.grad_fn).__name__
    assert fast.shape == ref.shape == (B, (T - 1) * cfg.hop_length) and fast.dtype == ref.dtype == dtype
    assert rel(fast, ref) < M2W_TOL[dtype, 0]
    cot = torch.randn(fast.shape, dtype=dtype, generator=torch.Generator().manual_seed(5))
    (ga,) = torch.autograd.grad((fast * cot).sum(), lm)
    (gb,) = torch.autograd.grad((ref * cot).sum(), lm)
    assert rel(ga, gb) < M2W_TOL[dtype, 0]
    # the synthesis matrix is cached, and follows the pseudo-inverse's values
    pinv.mul_(2)
    again = S.mel_to_wave(lm.detach(), *args)
    assert rel(again, 2 * fast.detach()) < M2W_TOL[dtype, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init,power,clip", [("zero", 1.0, True), ("centered", 2.0, True), ("zero", 1.0, False)])
def test_mel_to_wave_one_iteration_and_a_power_spectrum(dtype, init, power, clip):
    cfg, pinv, w, lm = _mel_case(dtype, 3, 21, power=power)
    lm.requires_grad_(True)
    args = (pinv, w, cfg.n_fft, cfg.hop_length, 1, power, init, clip)
    fast, ref = S.mel_to_wave(lm, *args, chunk=2), S.mel_to_wave_ref(lm, *args)
    assert rel(fast, ref) < M2W_TOL[dtype, 1]
    (ga,) = torch.autograd.grad(fast.pow(2).sum(), lm)
    (gb,) = torch.autograd.grad(ref.pow(2).sum(), lm)
    assert rel(ga, gb) < M2W_TOL[dtype, 1]


@pytest.mark.parametrize("init,iters,clip", [("zero", 2, True), ("centered", 0, False)])
def test_mel_to_wave_module_forward_matches_forward_ref(init, iters, clip):
    cfg, _, _, lm = _mel_case(torch.float32, 4, 101)
    m = MelToWave(cfg, iters=iters, init=init, clip=clip)
    lm.requires_grad_(True)
    fast, ref = m(lm), m.forward_ref(lm)
    assert fast.shape == (4, 16000) and rel(fast, ref) < 2e-3
    (ga,) = torch.autograd.grad(fast.pow(2).sum(), lm)
    (gb,) = torch.autograd.grad(ref.pow(2).sum(), lm)
    assert rel(ga, gb) < 2e-3
    # a config the fast op does not cover (zero padding) takes the reference path
    flat = MelToWave(FeatureConfig(pad_mode="constant"), iters=1, init=init, clip=clip)
    assert torch.equal(flat(lm.detach()), flat.forward_ref(lm.detach()))


def test_envelope_cache_follows_the_window():
    n_fft, win, hop, L = GEOMETRIES[1]
    T = 1 + L // hop
    spec = torch.randn(1, T, n_fft // 2 + 1, dtype=torch.complex128, generator=torch.Generator().manual_seed(4))
    w = _window(win, torch.float64)
    first = S.frame_istft(spec, n_fft, hop, w, (T - 1) * hop)
    w.mul_(0.5).add_(0.25)                                      # same tensor, new values
    again = S.frame_istft(spec, n_fft, hop, w, (T - 1) * hop)
    assert rel(again, S.frame_istft_ref(spec, n_fft, hop, w, (T - 1) * hop)) < 1e-12
    assert rel(again, first) > 1e-3


def test_refusals():
    w = _window(64, torch.float32)
    spec = torch.zeros(1, 5, 33, dtype=torch.complex64)
    with pytest.raises(ValueError, match="envelope vanishes"):
        S.frame_istft(spec, 64, 80, w, 4 * 80)                  # hop > window: gaps between frames
    with pytest.raises(ValueError, match="fewer than"):
        S.frame_istft(spec, 64, 16, w, 1000)
    with pytest.raises(ValueError, match="phase init"):
        MelToWave(FeatureConfig(), init="random")
    with pytest.raises(ValueError, match="log-mel must be"):
        S.mel_to_wave(torch.zeros(1, 40, 5), torch.zeros(513, 80), _window(640, torch.float32), 1024, 160, 0)
