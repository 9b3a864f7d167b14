"""Griffin-Lim mel inversion (librosa): the control vocoder that tells what the WaveNet adds."""
from __future__ import annotations

import numpy as np
import torch

from ..features import FeatureConfig


def griffinlim_synthesize(log_mel, cfg: FeatureConfig = FeatureConfig(), n_iter: int = 64, seed: int | None = 0) -> np.ndarray:
    """log_mel: (n_mels, frames) or (batch, n_mels, frames) -> float32 waveform(s), (frames - 1) * hop samples each.

    Inverts ``exp(log_mel)`` through the Slaney mel filterbank (NNLS) and ``n_iter`` Griffin-Lim iterations
    with the same STFT settings as :func:`speechmax.features.log_mel`.
    """
    import librosa

    lm = log_mel.detach().cpu().numpy() if isinstance(log_mel, torch.Tensor) else np.asarray(log_mel)
    if lm.ndim == 3:
        return np.stack([griffinlim_synthesize(m, cfg, n_iter, seed) for m in lm])
    if lm.ndim != 2 or lm.shape[0] != cfg.n_mels:
        raise ValueError(f"log-mel must be ({cfg.n_mels}, frames) or (batch, {cfg.n_mels}, frames), got {lm.shape}")
    if lm.shape[1] < 2:
        raise ValueError(f"log-mel must have at least 2 frames, got {lm.shape[1]}")
    if not np.isfinite(lm).all():
        raise ValueError("log-mel contains NaN or infinite values")
    mel = np.exp(lm.astype(np.float64))
    length = (lm.shape[1] - 1) * cfg.hop_length
    rng = np.random.default_rng(seed) if seed is not None else None
    stft_mag = librosa.feature.inverse.mel_to_stft(mel, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=cfg.power,
                                                    fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney")
    wave = librosa.griffinlim(stft_mag, n_iter=n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
                              n_fft=cfg.n_fft, center=cfg.center, pad_mode=cfg.pad_mode, length=length,
                              init="random" if rng is not None else None, random_state=rng)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
