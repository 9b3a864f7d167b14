"""Griffin-Lim mel inversion: the control vocoder that tells what the WaveNet adds.

:func:`griffinlim_synthesize` is batched in torch: the mel -> linear magnitude inversion (non-negative least
squares through the Slaney filterbank, as ``librosa.feature.inverse.mel_to_stft`` solves it) runs as
accelerated projected gradient over every frame of the batch at once, and the fast Griffin-Lim iterations
(momentum 0.99, librosa's algorithm, the same random initial phases for a seed) as batched torch STFTs.
:func:`griffinlim_synthesize_ref` is the librosa original, one clip at a time (~20x slower here, almost all
of it in librosa's per-block L-BFGS-B NNLS).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..features import FeatureConfig, _mel_basis

MOMENTUM = 0.99   # librosa.griffinlim's default ("fast Griffin-Lim")
NNLS_ITERS = 50
# Frames per block of a long input (30 s: ~0.2 GB of float64 work arrays at batch 1, where a 10-minute mel
# took 3.8 GB in one piece) and the overlap of neighbouring blocks (0.5 s), which are cross-faded.
BLOCK_FRAMES = 3000
OVERLAP_FRAMES = 50


def _check(lm: np.ndarray, cfg: FeatureConfig) -> None:
    if lm.ndim not in (2, 3) or lm.shape[-2] != cfg.n_mels:
        raise ValueError(f"log-mel must be ({cfg.n_mels}, frames) or (batch, {cfg.n_mels}, frames), got {lm.shape}")
    if lm.shape[-1] < 2:
        raise ValueError(f"log-mel must have at least 2 frames, got {lm.shape[-1]}")
    if not np.isfinite(lm).all():
        raise ValueError("log-mel contains NaN or infinite values")


def _as_numpy(log_mel) -> np.ndarray:
    return log_mel.detach().cpu().numpy() if isinstance(log_mel, torch.Tensor) else np.asarray(log_mel)


def initial_phases(seed: int | None, shape) -> np.ndarray | None:
    """The random initial phases librosa.griffinlim draws for ``random_state=np.random.default_rng(seed)``
    (None: librosa's all-ones start)."""
    return None if seed is None else 2 * np.pi * np.random.default_rng(seed).random(size=shape)


@functools.lru_cache(maxsize=4)
def _inversion(cfg: FeatureConfig):
    """The filterbank A (n_mels, F), its transpose, pinv(A).T and the gradient step 1 / ||A||^2, float64."""
    A = torch.from_numpy(_mel_basis(cfg)).to(torch.float64)
    return A, A.T.contiguous(), torch.linalg.pinv(A).T.contiguous(), 1.0 / float(torch.linalg.matrix_norm(A, ord=2) ** 2)


def mel_to_magnitude(mel: torch.Tensor, cfg: FeatureConfig, iters: int = NNLS_ITERS) -> torch.Tensor:
    """(B, n_mels, T) mel magnitudes -> (B, n_fft // 2 + 1, T) non-negative x minimising ||basis x - mel||^2
    per frame: FISTA (projected, accelerated gradient) from the clipped pseudo-inverse, librosa's start."""
    A, At, pinv_t, step = _inversion(cfg)
    y = mel.to(torch.float64).transpose(1, 2).reshape(-1, A.shape[0])       # (B*T, n_mels)
    x = (y @ pinv_t).clamp_min(0)
    z, t = x.clone(), 1.0
    for _ in range(iters):
        x_new = (z - step * ((z @ At - y) @ A)).clamp_min(0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x.reshape(mel.shape[0], mel.shape[2], -1).transpose(1, 2)


def griffinlim_synthesize(log_mel, cfg: FeatureConfig = FeatureConfig(), n_iter: int = 64, seed: int | None = 0) -> np.ndarray:
    """log_mel: (n_mels, frames) or (batch, n_mels, frames) -> float32 waveform(s), (frames - 1) * hop samples each.

    Inverts ``exp(log_mel)`` through the Slaney mel filterbank (NNLS) and ``n_iter`` fast Griffin-Lim iterations
    with the same STFT settings as :func:`speechmax.features.log_mel`; every clip starts from the phases
    ``np.random.default_rng(seed)`` gives (None: zero phase), as the reference does. Inputs longer than
    ``BLOCK_FRAMES`` run in cross-faded blocks, so memory does not grow with length.
    """
    lm = _as_numpy(log_mel)
    _check(lm, cfg)
    squeeze = lm.ndim == 2
    lm = torch.from_numpy(lm[None] if squeeze else lm).to(torch.float64)
    T, hop = lm.shape[-1], cfg.hop_length
    if T <= BLOCK_FRAMES:
        wave = _griffinlim_block(lm, cfg, n_iter, seed)
    else:
        # Long input: blocks of BLOCK_FRAMES frames overlapping by OVERLAP_FRAMES, cross-faded, so memory stays
        # that of one block whatever the length. Block frame j is global frame start + j, i.e. sample
        # (start + j) * hop, so the pieces line up; their phases differ, the fade hides the seam.
        wave = np.zeros((lm.shape[0], (T - 1) * hop), np.float32)
        fade = np.linspace(0.0, 1.0, OVERLAP_FRAMES * hop, dtype=np.float32)
        for start in range(0, T - OVERLAP_FRAMES, BLOCK_FRAMES - OVERLAP_FRAMES):
            end = min(T, start + BLOCK_FRAMES)
            piece = _griffinlim_block(lm[..., start:end], cfg, n_iter, seed)
            a = start * hop
            if start > 0:
                n = min(len(fade), piece.shape[-1])
                wave[:, a:a + n] = wave[:, a:a + n] * (1 - fade[:n]) + piece[:, :n] * fade[:n]
                wave[:, a + n:a + piece.shape[-1]] = piece[:, n:]
            else:
                wave[:, :piece.shape[-1]] = piece
            if end == T:
                break
    return wave[0] if squeeze else wave


def _griffinlim_block(lm: torch.Tensor, cfg: FeatureConfig, n_iter: int, seed: int | None) -> np.ndarray:
    """(B, n_mels, T) float64 log-mel -> (B, (T - 1) * hop) float32 waveform, all frames at once."""
    S = mel_to_magnitude(torch.exp(lm), cfg)                                # (B, F, T)
    if cfg.power != 1.0:
        S = S ** (1.0 / cfg.power)
    return griffinlim(S, cfg, (lm.shape[-1] - 1) * cfg.hop_length, n_iter, seed).numpy()


def griffinlim(S: torch.Tensor, cfg: FeatureConfig, length: int, n_iter: int = 64, seed: int | None = 0) -> torch.Tensor:
    """librosa.griffinlim (momentum 0.99), batched: (B, n_fft // 2 + 1, T) magnitudes -> (B, length) float32 in
    [-1, 1]; each item starts from :func:`initial_phases` of ``seed``."""
    S = S.to(torch.float64)
    window = torch.hann_window(cfg.win_length, dtype=torch.float64)
    kw = dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window=window,
              center=cfg.center)
    ph = initial_phases(seed, S.shape[1:])
    angles = (torch.polar(torch.ones_like(S[0]), torch.from_numpy(ph)) if ph is not None
              else torch.ones_like(S[0], dtype=torch.complex128)).expand_as(S) * S
    tprev = None
    for _ in range(n_iter):
        inverse = torch.istft(angles, length=length, **kw)
        rebuilt = torch.stft(inverse, pad_mode=cfg.pad_mode, return_complex=True, **kw)
        angles = rebuilt if tprev is None else rebuilt - (MOMENTUM / (1 + MOMENTUM)) * tprev
        angles = angles / (angles.abs() + 1e-16) * S
        tprev = rebuilt
    return torch.istft(angles, length=length, **kw).clamp(-1.0, 1.0).to(torch.float32)


def griffinlim_synthesize_ref(log_mel, cfg: FeatureConfig = FeatureConfig(), n_iter: int = 64, seed: int | None = 0) -> np.ndarray:
    """The librosa reference of :func:`griffinlim_synthesize`: ``mel_to_stft`` (L-BFGS-B NNLS) and
    ``librosa.griffinlim``, one clip at a time."""
    import librosa

    lm = _as_numpy(log_mel)
    _check(lm, cfg)
    if lm.ndim == 3:
        return np.stack([griffinlim_synthesize_ref(m, cfg, n_iter, seed) for m in lm])
    mel = np.exp(lm.astype(np.float64))
    length = (lm.shape[1] - 1) * cfg.hop_length
    rng = np.random.default_rng(seed) if seed is not None else None
    stft_mag = librosa.feature.inverse.mel_to_stft(mel, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=cfg.power,
                                                    fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney")
    wave = librosa.griffinlim(stft_mag, n_iter=n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
                              n_fft=cfg.n_fft, center=cfg.center, pad_mode=cfg.pad_mode, length=length,
                              init="random" if rng is not None else None, random_state=rng, momentum=MOMENTUM)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
