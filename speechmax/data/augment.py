"""Training-time augmentation, in the feature domain: a batch of log-mel gets gain, a time shift, background
noise at a random SNR (mixed in the linear mel domain) and SpecAugment-style frequency and time masks. One system
for every trainer and for :class:`~speechmax.data.SpeechCommands` (``augment=``)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..features import FeatureConfig, log_mel
from .noise import load_noise_files
from .words import BACKGROUND_NOISE_DIR


class FeatureAugment:
    """Feature-domain augmentation of a batch of log-mel (B, n_mels, frames)."""

    def __init__(self, noise_mels: torch.Tensor | None, cfg: FeatureConfig, p_noise=0.8, snr_db=(0.0, 25.0),
                 max_shift=8, gain_db=8.0, freq_masks=2, freq_width=8, time_masks=2, time_width=10):
        self.noise, self.cfg = noise_mels, cfg
        self.p_noise, self.snr_db, self.max_shift, self.gain_db = p_noise, snr_db, max_shift, gain_db
        self.freq_masks, self.freq_width, self.time_masks, self.time_width = freq_masks, freq_width, time_masks, time_width

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B, M, T = x.shape
        floor = self.cfg.log_min
        x = x + (torch.rand(B, 1, 1, generator=g) * 2 - 1) * self.gain_db / 20 * math.log(10)
        if self.max_shift:
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (B,), generator=g)
            idx = (torch.arange(T)[None] - shifts[:, None])
            valid = (idx >= 0) & (idx < T)
            x = torch.where(valid[:, None], torch.gather(x, 2, idx.clamp(0, T - 1)[:, None].expand(B, M, T)), torch.full_like(x, floor))
        if self.noise is not None and len(self.noise):
            pick = torch.randint(len(self.noise), (B,), generator=g)
            snr = self.snr_db[0] + torch.rand(B, generator=g) * (self.snr_db[1] - self.snr_db[0])
            use = (torch.rand(B, generator=g) < self.p_noise).float()
            x = mix_noise(x, self.noise[pick], snr, self.cfg, use=use)
        for _ in range(self.freq_masks):
            w = torch.randint(0, self.freq_width + 1, (B,), generator=g)
            f0 = (torch.rand(B, generator=g) * (M - w)).long()
            band = torch.arange(M)[None]
            x = x.masked_fill(((band >= f0[:, None]) & (band < (f0 + w)[:, None]))[:, :, None], floor)
        for _ in range(self.time_masks):
            w = torch.randint(0, self.time_width + 1, (B,), generator=g)
            t0 = (torch.rand(B, generator=g) * (T - w)).long()
            fr = torch.arange(T)[None]
            x = x.masked_fill(((fr >= t0[:, None]) & (fr < (t0 + w)[:, None]))[:, None, :], floor)
        return x


def mix_noise(x: torch.Tensor, noise: torch.Tensor, snr_db, cfg: FeatureConfig, use=None) -> torch.Tensor:
    """Log-mel ``x`` (B, n_mels, frames) with log-mel ``noise`` (B, n_mels, frames) mixed in, in the magnitude mel
    domain, each item's noise ``snr_db`` (a number or (B,)) under the item's own level; ``use`` (B,) 0/1 leaves an
    item clean where 0."""
    s, n = torch.exp(x), torch.exp(noise.float())
    snr = torch.as_tensor(snr_db, dtype=s.dtype).expand(len(s))
    gain = torch.sqrt((s ** 2).sum((1, 2)) / ((n ** 2).sum((1, 2)) * 10 ** (snr / 10)))
    if use is not None:
        gain = gain * use
    return torch.log(torch.clamp(s + gain[:, None, None] * n, min=cfg.log_floor))


def noise_log_mels(root, cfg: FeatureConfig, n: int = 512, seed: int = 0, skip=()) -> torch.Tensor | None:
    """Random 1 s crops of the corpus's background noise, as log-mel (n, n_mels, frames); ``skip``: noise file
    names left out (a noise type held out of the augmentation); None when no noise is left."""
    folder = Path(root) / BACKGROUND_NOISE_DIR
    if not folder.is_dir():
        return None
    waves, _ = load_noise_files(folder, cfg.sample_rate, skip=skip)
    waves = [w for w in waves if len(w) > cfg.sample_rate]
    if not waves:
        return None
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        w = waves[rng.integers(len(waves))]
        s = rng.integers(len(w) - cfg.sample_rate)
        crops.append(w[s:s + cfg.sample_rate])
    return log_mel(torch.from_numpy(np.stack(crops)), cfg).float()
