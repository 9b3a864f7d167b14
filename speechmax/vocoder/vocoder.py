"""The drop-in vocoder: log-mel in, 16 kHz waveform out, on the fastest sampler that runs here.

    voc = Vocoder.from_pretrained("default")          # or a path to a vocoder .safetensors + card
    wave = voc(log_mel)                               # (80, T) -> ((T - 1) * 160,) float32 in [-1, 1]
    waves = voc.synthesize(batch_of_mels, backend="cpu", temperature=1.0, seed=0)   # (B, 80, T) -> (B, samples)
    wave = voc.resynthesize("speech.wav")             # through the mel and back
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..features import FeatureConfig, load_audio, log_mel
from ..models.wavenet import WaveNet

DEFAULT_ASSET = "vocoder"
BACKENDS = ("auto", "reference", "cpu", "cpu-bf16", "triton", "cuda", "griffinlim")


def check_seed(seed) -> int:
    """A seed for torch.Generator: an integer in [-2**63, 2**64) (torch folds negatives); anything else is refused."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    if not -2 ** 63 <= int(seed) < 2 ** 64:
        raise ValueError(f"seed must fit in 64 bits ([-2**63, 2**64)), got {seed}")
    return int(seed)


class Vocoder:
    """A WaveNet vocoder with every sampling backend behind one call (and Griffin-Lim as the control)."""

    def __init__(self, model: WaveNet | None, name: str = "custom", feature_config: FeatureConfig | None = None):
        """model: a WaveNet, or None for a Griffin-Lim-only vocoder (``backend="griffinlim"``) on ``feature_config``."""
        self.model = model.eval() if model is not None else None
        self.name = name
        self._feature_config = model.feature_config if model is not None else (feature_config or FeatureConfig())
        # what tools that write audio for people (maximize, the demo, the listening set) should use, and why
        self.preferred_backend = "auto" if model is not None else "griffinlim"
        self.preference_note: str | None = None

    def below_griffinlim(self) -> str | None:
        """Why this WaveNet's card says it is less intelligible than Griffin-Lim, or None (it is not, or its card
        has no quality measurement). Measured by ``speechmax train vocoder --export ... --measure``: the separate
        classifier's accuracy on the same test clips after each vocoder."""
        card = getattr(self.model, "card", None) or {}
        metrics = card.get("metrics") or {}
        acc = metrics.get("separate_accuracy") or {}
        wn, gl = acc.get("wavenet"), acc.get("griffinlim")
        if self.model is None or wn is None or gl is None or wn >= gl:
            return None
        return (f"the WaveNet {self.name!r} measured below Griffin-Lim on {metrics.get('clips', '?')} test clips "
                f"(separate classifier {wn:.1%} vs {gl:.1%}, original {acc.get('original', float('nan')):.1%}): "
                "Griffin-Lim is used; name the vocoder (e.g. 'default') to use the WaveNet anyway")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", device="cpu") -> "Vocoder":
        """``"default"`` (speechmax/assets/vocoder.safetensors), another shipped vocoder's name, or a path to a
        ``.safetensors`` + card written by ``save_wavenet`` / ``speechmax train vocoder --export``."""
        from ..assets import ASSET_DIR
        from ..models.registry import resolve
        from ..models.wavenet import load_wavenet

        name = DEFAULT_ASSET if str(name_or_path) == "default" else name_or_path
        try:
            stem = resolve(name)
        except FileNotFoundError:
            if str(name_or_path) != "default":
                raise FileNotFoundError(f"no vocoder at {name_or_path!r}: not a file, and not a shipped model name") from None
            raise FileNotFoundError(
                f"the default vocoder is not shipped in this version ({ASSET_DIR / 'vocoder.safetensors'} is missing); "
                "train one with `speechmax train vocoder` and pass its path, or use backend='griffinlim'") from None
        return cls(load_wavenet(stem, device=device), name=str(name_or_path))

    @property
    def feature_config(self) -> FeatureConfig:
        return self._feature_config

    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    def __call__(self, mel, **kwargs) -> np.ndarray:
        return self.synthesize(mel, **kwargs)

    def _check_mel(self, mel) -> torch.Tensor:
        n_mels = self.feature_config.n_mels
        if not isinstance(mel, (np.ndarray, torch.Tensor)):
            raise TypeError(f"mel must be a numpy array or a torch tensor, got {type(mel).__name__}")
        m = torch.as_tensor(mel).detach()
        if not m.is_floating_point():
            raise TypeError(f"mel must hold floating-point log-mel values, got dtype {m.dtype}: pass the natural-log "
                            "mel as float (speechmax.log_mel), not integer or boolean data")
        m = m.float().cpu()
        if m.dim() not in (2, 3) or m.shape[-2] != n_mels:
            raise ValueError(f"expected a log-mel of shape ({n_mels}, frames) or (batch, {n_mels}, frames), "
                             f"got shape {tuple(m.shape)}")
        if m.shape[-1] < 2 or (m.dim() == 3 and m.shape[0] == 0):
            raise ValueError(f"the log-mel is empty: shape {tuple(m.shape)}; at least 2 frames are needed "
                             f"({self.feature_config.hop_length} samples per frame after the first)")
        if not torch.isfinite(m).all():
            raise ValueError("the log-mel contains NaN or infinite values")
        return m

    @torch.no_grad()
    def synthesize(self, mel, backend: str = "auto", temperature: float = 1.0, seed: int | None = None,
                   threads: int | None = None, progress=None) -> np.ndarray:
        """Log-mel -> float32 waveform(s) in [-1, 1] at ``sample_rate``.

        mel: (n_mels, frames) or (batch, n_mels, frames), numpy or torch, natural-log mel as
        :func:`speechmax.log_mel` computes it. Returns ((frames - 1) * hop,) or (batch, (frames - 1) * hop).
        backend: auto (the fastest that runs here) | reference | cpu | cpu-bf16 | triton | cuda | griffinlim.
        temperature: softmax temperature of the draws (0 = argmax). seed: the uniforms' seed (None = random);
        the same seed gives the same uniforms on every backend, hence the same samples on the fp32 ones.
        progress: optional callable(n), called as samples are produced (per item).
        """
        from ..ops.wavenet import resolve_backend, sample_wavenet

        if backend not in BACKENDS:
            from ..ops import BackendUnavailable

            raise BackendUnavailable(f"unknown vocoder backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        m = self._check_mel(mel)
        seed = None if seed is None else check_seed(seed)
        squeeze = m.dim() == 2
        if squeeze:
            m = m[None]
        if backend == "griffinlim":
            from .griffinlim import griffinlim_synthesize

            wave = griffinlim_synthesize(m, self.feature_config, seed=seed)
            if progress is not None:
                progress(wave.shape[-1])
            return wave[0] if squeeze else wave
        if self.model is None:
            raise ValueError("this vocoder has no WaveNet (Griffin-Lim only): use backend='griffinlim', "
                             "or load one with Vocoder.from_pretrained")
        backend = resolve_backend(backend, batch=m.shape[0], threads=threads)
        cfg = self.model.cfg
        B, T = m.shape[0], (m.shape[-1] - 1) * cfg.hop_length
        gen = torch.Generator()
        gen.manual_seed(seed) if seed is not None else gen.seed()
        uniforms = torch.rand(B, T, generator=gen)
        q = sample_wavenet(self.model, m, uniforms, temperature, backend=backend, progress=progress, threads=threads)
        wave = self.model.decode(q)
        return wave[0] if squeeze else wave

    def resynthesize(self, wav_path: str | os.PathLike, **kwargs) -> np.ndarray:
        """Read a wav (any rate; resampled), take its log-mel and synthesize it back: (samples,) float32."""
        wave = load_audio(Path(wav_path), self.sample_rate)
        return self.synthesize(log_mel(torch.from_numpy(wave), self.feature_config), **kwargs)
