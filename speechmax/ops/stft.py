"""Short-time Fourier transforms for MelToWave's log-mel -> waveform path, frame-major and cheap, beside their
``torch.stft`` / ``torch.istft`` twins.

Frames are (B, T, n_fft // 2 + 1) complex, bins last (the layout ``torch.fft.rfft`` works in). The phase
convention is the window's own: frame t's spectrum is that of its ``win_length`` windowed samples placed at the
start of an ``n_fft`` buffer, i.e. ``torch.stft``'s (window centred in ``n_fft``) times ``conj(window_ramp)``.
The inverse then needs only the first ``win_length`` samples of each inverse FFT, unshifted, and a Griffin-Lim
loop in this convention is the same loop in torch's with the phases multiplied by ``conj(window_ramp)``.

- :func:`frame_stft` / :func:`frame_stft_ref`: waveform (B, L) -> frames (B, T, F), T = 1 + L // hop, centred
  (reflect-padded) as ``torch.stft(center=True, pad_mode="reflect")``.
- :func:`frame_istft` / :func:`frame_istft_ref`: frames -> waveform (B, length), ``torch.istft(center=True,
  length=length)``: the overlap-add is ceil(win / hop) shifted adds and the window-square envelope is computed
  once per (frames, length, window) and cached, where ``torch.istft`` rebuilds it on every call.
- :func:`mel_to_wave` / :func:`mel_to_wave_ref`: log-mel -> waveform through a pseudo-inverse magnitude and a
  Griffin-Lim phase held fixed, differentiable through the magnitude (MelToWave's arithmetic). The fast one is
  one autograd node with a hand-written backward (one real FFT per frame for the inverse STFT's adjoint), run
  over the batch in chunks of rows so that no (B, T, F) spectrum exists whole: at batch 64 such a tensor is
  13-26 MB, and fresh tensors of that size cost more here in page faults than their arithmetic. With no
  iterations, no relu and power 1 (MelToWave's defaults) the waveform is linear in exp(log-mel): one matrix
  product with a cached synthesis matrix (each mel band's windowed pulse), forward and back, and no FFT.

tests/test_mel_to_wave.py compares each with its twin (outputs and gradients) over shapes and dtypes.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["PHASE_INITS", "window_ramp", "initial_phase", "frame_stft", "frame_stft_ref", "frame_istft",
           "frame_istft_ref", "mel_to_wave", "mel_to_wave_ref"]

PHASE_EPS = 1e-8   # |X| floor when a spectrum's phase X / |X| is taken
CHUNK = 8          # batch rows per pass of the chunked ops: (8, 101, 513) complex64 is 3.3 MB
PHASE_INITS = ("zero", "centered")


def _offset(n_fft: int, win: int) -> int:
    """Where torch puts a ``win``-long window inside ``n_fft`` (centred)."""
    return (n_fft - win) // 2


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def window_ramp(n_fft: int, win_length: int, device=None, dtype=torch.complex64) -> torch.Tensor:
    """(n_fft // 2 + 1,) exp(-2 pi i k off / n_fft), off = (n_fft - win_length) // 2: torch's STFT frame is this
    times this module's frame."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    ang = -2 * math.pi * k * _offset(n_fft, win_length) / n_fft
    return torch.polar(torch.ones_like(ang), ang).to(device=device, dtype=dtype)


def initial_phase(init: str, n_fft: int, win_length: int, torch_convention: bool = False, device=None,
                  dtype=torch.complex64) -> torch.Tensor:
    """(n_fft // 2 + 1,) the phase a Griffin-Lim pass starts from, the same in every frame: "zero" (all ones in
    torch's convention: each frame's inverse FFT is a pulse at the frame's first sample, outside a window shorter
    than n_fft) or "centered" (the phase of a pulse at the window's centre sample, so a frame is its magnitude's
    zero-phase impulse response under the window: with no iterations a pulse train at the hop rate)."""
    if init not in PHASE_INITS:
        raise ValueError(f"unknown phase init {init!r}; expected one of {', '.join(PHASE_INITS)}")
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    off = _offset(n_fft, win_length)
    at = 0 if init == "zero" else off + win_length // 2            # the pulse's sample in torch's n_fft frame
    shift = at if torch_convention else at - off                    # ... or in this module's (window-start) frame
    ang = -2 * math.pi * k * shift / n_fft
    return torch.polar(torch.ones_like(ang), ang).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _initial_phase_cached(init: str, n_fft: int, win_length: int, device, dtype) -> torch.Tensor:
    return initial_phase(init, n_fft, win_length, device=device, dtype=dtype)


def _check_window(n_fft: int, window: torch.Tensor) -> int:
    win = window.shape[-1]
    if window.dim() != 1 or not 0 < win <= n_fft:
        raise ValueError(f"window must be 1-D with 0 < length <= n_fft ({n_fft}), got shape {tuple(window.shape)}")
    return win


def frame_stft(wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """wave (B, L) -> (B, T, n_fft // 2 + 1) complex frames (T = 1 + L // hop for an even n_fft) in the window's
    phase convention (the module docstring): ``torch.stft(wave, n_fft, hop, len(window), window, center=True,
    pad_mode="reflect")``, transposed, times ``conj(window_ramp)``. Differentiable."""
    win = _check_window(n_fft, window)
    L = wave.shape[-1]
    T = 1 + (L + 2 * (n_fft // 2) - n_fft) // hop             # torch.stft's count after centring
    start = _offset(n_fft, win) - n_fft // 2                # frame t's first windowed sample: t * hop + start
    left, right = max(0, -start), max(0, (T - 1) * hop + start + win - L)
    if max(left, right) >= L:
        raise ValueError(f"a {L}-sample waveform is too short to reflect-pad for n_fft {n_fft}")
    lead = wave.shape[:-1]
    x = wave.reshape(-1, 1, L)
    x = F.pad(x, (left, right), mode="reflect")[:, 0] if left or right else x[:, 0]
    seg = x[:, start + left:].unfold(-1, win, hop)[:, :T]               # (B, T, win), a view
    return torch.fft.rfft(seg * window, n=n_fft).reshape(*lead, T, n_fft // 2 + 1)


def frame_stft_ref(wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """:func:`frame_stft` through ``torch.stft``."""
    win = _check_window(n_fft, window)
    spec = torch.stft(wave, n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True)
    return spec.transpose(-1, -2) * window_ramp(n_fft, win, wave.device, spec.dtype).conj()


_ENVELOPES: dict = {}
_ENVELOPES_MAX = 64


def _inverse_envelope(T: int, length: int, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """(length,) 1 / (sum over the T frames of window^2) on the output's samples, the envelope ``torch.istft``
    divides by (and refuses where it is below 1e-11); cached per (frames, length, n_fft, hop, window)."""
    key = (T, length, n_fft, hop, window.device, window.dtype, window.shape[0], window.data_ptr(), window._version)
    hit = _ENVELOPES.get(key)
    if hit is not None and torch.equal(hit[0], window):
        return hit[1]
    w = window.detach()
    crop = n_fft // 2 - _offset(n_fft, w.shape[0])           # output sample 0 in the overlap-add's samples
    env = _overlap_add(w.pow(2).expand(1, T, -1), hop)[0, crop:crop + length]
    if env.shape[0] < length:
        raise ValueError(f"{T} frames of hop {hop} reach {env.shape[0]} output samples, fewer than the {length} "
                         "asked for")
    if env.abs().min() < 1e-11:
        raise ValueError("the window's overlap-add envelope vanishes somewhere (window and hop do not overlap "
                         "enough): the inverse STFT is not defined there")
    if len(_ENVELOPES) >= _ENVELOPES_MAX:
        _ENVELOPES.clear()
    _ENVELOPES[key] = (w.clone(), env.reciprocal())
    return _ENVELOPES[key][1]


def _overlap_add(frames: torch.Tensor, hop: int, window: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, >= win) -> (B, (T + K - 1) * hop): frame t's first win samples (times ``window`` if given, else
    win = the frames' length) added from sample t * hop, as K = ceil(win / hop) shifted adds of (B, T, hop)
    slabs (no index_add, no fold)."""
    B, T = frames.shape[:2]
    win = frames.shape[2] if window is None else window.shape[0]
    K = -(-win // hop)
    out = frames.new_zeros(B, T + K - 1, hop)
    for k in range(K):
        n = min(hop, win - k * hop)
        src = frames[:, :, k * hop:k * hop + n]
        if window is None:
            out[:, k:k + T, :n] += src
        else:
            out[:, k:k + T, :n].addcmul_(src, window[k * hop:k * hop + n])
    return out.view(B, -1)


def frame_istft(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, n_fft // 2 + 1) complex frames in the window's phase convention -> (B, length) waveform:
    ``torch.istft(ramp * spec^T, n_fft, hop, len(window), window, center=True, length=length)``. Each inverse
    FFT's first ``len(window)`` samples are windowed and overlap-added; the envelope comes from a cache.
    Differentiable in ``spec`` (the window is a constant)."""
    win = _check_window(n_fft, window)
    T = spec.shape[-2]
    inv = _inverse_envelope(T, length, n_fft, hop, window)
    frames = torch.fft.irfft(spec.reshape(-1, T, spec.shape[-1]), n=n_fft)[..., :win] * window
    crop = n_fft // 2 - _offset(n_fft, win)
    out = _overlap_add(frames, hop)[:, crop:crop + length] * inv
    return out.reshape(*spec.shape[:-2], length)


def frame_istft_ref(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, length: int) -> torch.Tensor:
    """:func:`frame_istft` through ``torch.istft``."""
    win = _check_window(n_fft, window)
    ramp = window_ramp(n_fft, win, spec.device, spec.dtype)
    return torch.istft((spec * ramp).transpose(-1, -2), n_fft, hop, win, window, center=True, length=length)


def _istft_rows(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, inv: torch.Tensor, length: int,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`frame_istft` without autograd on (b, T, F) rows, the window applied inside the overlap-add."""
    frames = torch.fft.irfft(spec, n=n_fft)
    crop = n_fft // 2 - _offset(n_fft, window.shape[0])
    return torch.mul(_overlap_add(frames, hop, window)[:, crop:crop + length], inv, out=out)


def _chunks(B: int, chunk: int):
    return [(s, min(B, s + chunk)) for s in range(0, B, chunk)]


def _magnitude(log_mel: torch.Tensor, pinv: torch.Tensor, power: float, clip: bool) -> torch.Tensor:
    """(b, n_mels, T) log-mel -> (b, T, F) linear magnitude relu(pinv @ exp(log_mel)) ** (1 / power) (no relu
    unless ``clip``; a power other than 1 clips anyway)."""
    b, n_mels, T = log_mel.shape
    e = torch.exp(log_mel).transpose(1, 2).reshape(b * T, n_mels)
    mag = (e @ pinv.T).view(b, T, -1)
    mag = torch.relu(mag) if clip else mag
    return mag if power == 1.0 else mag.clamp_min(1e-12) ** (1.0 / power)


def _griffin_lim_rows(m: torch.Tensor, phase: torch.Tensor, iters: int, n_fft: int, hop: int, window: torch.Tensor,
                      inv: torch.Tensor, length: int) -> torch.Tensor:
    """``iters`` Griffin-Lim iterations on magnitude rows m (b, T, F) from ``phase``; the unit phase (b, T, F)."""
    T = m.shape[1]
    for _ in range(iters):
        x = frame_stft(_istft_rows(m * phase, n_fft, hop, window, inv, length), n_fft, hop, window)[:, :T]
        r = torch.view_as_real(x)
        rs = torch.addcmul(r[..., 0] * r[..., 0], r[..., 1], r[..., 1]).clamp_min_(PHASE_EPS ** 2).rsqrt_()
        phase = x.mul_(rs)
    return phase


class _MelToWave(torch.autograd.Function):
    """:func:`mel_to_wave` as one autograd node, a chunk of rows at a time in both directions: the magnitude,
    the phase iterations and the inverse STFT forward; the STFT of the gradient (the inverse STFT's adjoint),
    its projection on the fixed phase and the magnitude's backward back (by hand for power 1, from the saved
    exp(log-mel) and magnitude; otherwise recomputed under autograd from the chunk's log-mel)."""

    @staticmethod
    def forward(ctx, log_mel, pinv, window, n_fft, hop, iters, power, init, clip, chunk):
        B, n_mels, T = log_mel.shape
        length = (T - 1) * hop
        inv = _inverse_envelope(T, length, n_fft, hop, window)
        phase0 = _initial_phase_cached(init, n_fft, window.shape[0], log_mel.device, _complex(log_mel.dtype))
        out, phases, saved = log_mel.new_empty(B, length), [], []
        for s, e in _chunks(B, chunk):
            if power == 1.0:
                ex = torch.exp(log_mel[s:e]).transpose(1, 2).reshape(-1, n_mels)      # (b * T, n_mels)
                m = (ex @ pinv.T).view(e - s, T, -1)
                m = m.relu_() if clip else m
                saved.append((ex, m))
            else:
                m = _magnitude(log_mel[s:e], pinv, power, clip)
            phases.append(_griffin_lim_rows(m, phase0, iters, n_fft, hop, window, inv, length) if iters else phase0)
            _istft_rows(m * phases[-1], n_fft, hop, window, inv, length, out=out[s:e])
        ctx.phases, ctx.mags, ctx.geometry = phases, saved, (n_fft, hop, power, clip, chunk)
        ctx.save_for_backward(log_mel, pinv, window, inv)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        log_mel, pinv, window, inv = ctx.saved_tensors
        n_fft, hop, power, clip, chunk = ctx.geometry
        B, n_mels, T = log_mel.shape
        win, length = window.shape[0], grad.shape[1]
        K = -(-win // hop)
        crop = n_fft // 2 - _offset(n_fft, win)
        scale = inv * (2.0 / n_fft)                    # d irfft / d Re X_k = 2 / n_fft * rfft, halved at 0 and n/2
        g_out = torch.empty_like(log_mel)
        for i, (s, e) in enumerate(_chunks(B, chunk)):
            buf = grad.new_empty(e - s, (T + K - 1) * hop)
            buf[:, :crop].zero_()
            buf[:, crop + length:].zero_()
            torch.mul(grad[s:e], scale, out=buf[:, crop:crop + length])
            frames = buf.unfold(-1, win, hop)[:, :T] * window                       # adjoint of the overlap-add
            r = torch.view_as_real(torch.fft.rfft(frames, n=n_fft))                 # (b, T, F, 2)
            p = torch.view_as_real(ctx.phases[i])
            g_mag = torch.addcmul(r[..., 0] * p[..., 0], r[..., 1], p[..., 1])     # Re(r * conj(phase))
            g_mag[..., 0] *= 0.5
            if n_fft % 2 == 0:
                g_mag[..., -1] *= 0.5
            if power == 1.0:
                ex, m = ctx.mags[i]
                if clip:
                    g_mag = torch.ops.aten.threshold_backward(g_mag, m, 0)          # relu
                g_ex = (g_mag.view(-1, g_mag.shape[-1]) @ pinv).mul_(ex)             # (b * T, n_mels)
                g_out[s:e] = g_ex.view(e - s, T, n_mels).transpose(1, 2)
            else:
                with torch.enable_grad():
                    lm = log_mel[s:e].detach().requires_grad_(True)
                    torch.autograd.backward(_magnitude(lm, pinv, power, clip), g_mag)
                g_out[s:e] = lm.grad
        return g_out, None, None, None, None, None, None, None, None, None


_SYNTHESIS: dict = {}


def _synthesis_matrix(pinv: torch.Tensor, window: torch.Tensor, n_fft: int, hop: int, init: str) -> torch.Tensor:
    """(K * n_mels, hop) with K = ceil(win / hop): row (k, j) is slab k of mel band j's windowed frame
    ``irfft(pinv[:, j] * initial_phase(init))[:win] * window`` -- with a fixed phase and no clipping, a frame
    is linear in exp(log-mel), and the overlap-added waveform one matrix product. Cached per arguments."""
    key = (n_fft, hop, init, pinv.device, pinv.dtype, pinv.data_ptr(), pinv._version, window.data_ptr(),
           window._version, tuple(pinv.shape), window.shape[0])
    hit = _SYNTHESIS.get(key)
    if hit is not None and torch.equal(hit[0], pinv) and torch.equal(hit[1], window):
        return hit[2]
    win, n_mels = window.shape[0], pinv.shape[1]
    K = -(-win // hop)
    phase = initial_phase(init, n_fft, win, dtype=torch.complex128, device=pinv.device)
    g = torch.fft.irfft(pinv.detach().double().T * phase, n=n_fft)[:, :win] * window.detach().double()
    g = F.pad(g, (0, K * hop - win)).view(n_mels, K, hop).transpose(0, 1).reshape(K * n_mels, hop)
    if len(_SYNTHESIS) >= _ENVELOPES_MAX:
        _SYNTHESIS.clear()
    _SYNTHESIS[key] = (pinv.detach().clone(), window.detach().clone(), g.to(pinv.dtype).contiguous())
    return _SYNTHESIS[key][2]


class _LinearMelToWave(torch.autograd.Function):
    """:func:`mel_to_wave` with no phase iterations, no clipping and power 1: the waveform is linear in
    e = exp(log-mel), out sample block c = sum over k, j of e[j, c - k] * G[(k, j)] (:func:`_synthesis_matrix`),
    one (B * (T + K - 1), K * n_mels) x (K * n_mels, hop) product forward and its transpose back."""

    @staticmethod
    def forward(ctx, log_mel, g, inv, hop, crop):
        B, n_mels, T = log_mel.shape
        K = g.shape[0] // n_mels
        e = torch.exp(log_mel)
        x = e.new_empty(B, T + K - 1, K, n_mels)                    # x[b, c, k] = e[b, :, c - k], 0 outside
        et = e.transpose(1, 2).contiguous()
        for k in range(K):
            x[:, k:k + T, k] = et
            x[:, :k, k] = 0
            x[:, k + T:, k] = 0
        y = (x.view(-1, K * n_mels) @ g).view(B, -1)
        ctx.save_for_backward(e, g, inv)
        ctx.crop = crop
        return y[:, crop:crop + inv.shape[0]] * inv

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        e, g, inv = ctx.saved_tensors
        B, n_mels, T = e.shape
        K, hop, length = g.shape[0] // n_mels, g.shape[1], inv.shape[0]
        gy = grad.new_empty(B, (T + K - 1) * hop)
        gy[:, :ctx.crop] = 0
        gy[:, ctx.crop + length:] = 0
        torch.mul(grad, inv, out=gy[:, ctx.crop:ctx.crop + length])
        gx = (gy.view(-1, hop) @ g.T).view(B, T + K - 1, K, n_mels)
        ge = gx[:, 0:T, 0].clone()
        for k in range(1, K):
            ge += gx[:, k:k + T, k]
        return ge.transpose(1, 2) * e, None, None, None, None


def mel_to_wave(log_mel: torch.Tensor, pinv: torch.Tensor, window: torch.Tensor, n_fft: int, hop: int,
                iters: int, power: float = 1.0, init: str = "zero", clip: bool = True,
                chunk: int = CHUNK) -> torch.Tensor:
    """log-mel (B, n_mels, T) -> waveform (B, (T - 1) * hop), differentiable in ``log_mel`` through the magnitude.

    The linear magnitude is ``relu(pinv @ exp(log_mel))`` (``pinv``: (n_fft // 2 + 1, n_mels); without the relu
    unless ``clip``), raised to ``1 / power``; the phase is that of ``iters`` Griffin-Lim iterations on it from
    :func:`initial_phase` ``init``, held fixed (no gradient); the waveform is the inverse STFT of magnitude times
    phase. One autograd node that works on ``chunk`` rows of the batch at a time, frame-major (b, T, F) spectra;
    with no iterations, no clipping and power 1 the map is linear in exp(log-mel) and runs as one matrix product
    (:func:`_synthesis_matrix`), no FFT."""
    if log_mel.dim() != 3 or log_mel.shape[1] != pinv.shape[1]:
        raise ValueError(f"log-mel must be (batch, {pinv.shape[1]}, frames), got {tuple(log_mel.shape)}")
    win = _check_window(n_fft, window)
    initial_phase(init, n_fft, win)                                          # refuses an unknown init
    if iters == 0 and not clip and power == 1.0:
        T, window = log_mel.shape[-1], window.to(log_mel.dtype)
        inv = _inverse_envelope(T, (T - 1) * hop, n_fft, hop, window)
        g = _synthesis_matrix(pinv.to(log_mel.dtype), window, n_fft, hop, init)
        return _LinearMelToWave.apply(log_mel, g, inv, hop, n_fft // 2 - _offset(n_fft, win))
    return _MelToWave.apply(log_mel, pinv.detach(), window.detach(), n_fft, hop, iters, power, init, clip, chunk)


def mel_to_wave_ref(log_mel: torch.Tensor, pinv: torch.Tensor, window: torch.Tensor, n_fft: int, hop: int,
                    iters: int, power: float = 1.0, init: str = "zero", clip: bool = True, center: bool = True,
                    pad_mode: str = "reflect") -> torch.Tensor:
    """:func:`mel_to_wave` as MelToWave computed it before: (B, F, T) spectra through ``torch.stft`` /
    ``torch.istft``, the phase as ``spec / |spec|``, autograd throughout; ``center`` and ``pad_mode`` as
    ``torch.stft`` takes them (the fast op has only the defaults)."""
    win = _check_window(n_fft, window)
    mag = pinv @ torch.exp(log_mel)                                          # (B, F, T)
    mag = torch.relu(mag) if clip else mag
    if power != 1.0:
        mag = mag.clamp_min(1e-12) ** (1.0 / power)
    length = (log_mel.shape[-1] - 1) * hop

    def stft(wave):
        return torch.stft(wave, n_fft, hop, win, window, center=center, pad_mode=pad_mode, return_complex=True)

    def istft(spec):
        return torch.istft(spec, n_fft, hop, win, window, center=center, length=length)

    with torch.no_grad():
        phase = initial_phase(init, n_fft, win, torch_convention=True, device=mag.device,
                              dtype=_complex(mag.dtype))[:, None].expand(mag.shape)
        for _ in range(iters):
            spec = stft(istft(mag * phase))[..., :mag.shape[-1]]
            phase = spec / spec.abs().clamp_min(PHASE_EPS)
    return istft(mag * phase)
