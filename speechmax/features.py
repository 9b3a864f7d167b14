"""Waveform <-> log-mel features, mu-law coding and audio file I/O.

One :class:`FeatureConfig` is used everywhere: every checkpoint stores the config it was trained
with, and :func:`check_compatible` turns a mismatch into a clear error instead of a shape bug.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .outputs import atomic_path

__all__ = [
    "FeatureConfig", "FeatureMismatchError", "AudioError", "check_compatible", "log_mel", "mel_filterbank",
    "mu_law_encode", "mu_law_decode", "load_audio", "load_log_mel", "save_audio", "n_frames",
]


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end. Defaults: 16 kHz, 40 ms Hann window, 10 ms hop, 80 Slaney mel bands.

    ``log_floor`` is the clamp applied before the natural log (``log(clamp(mel, log_floor))``).
    """
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 640
    hop_length: int = 160
    n_mels: int = 80
    fmin: float = 20.0
    fmax: float = 8000.0
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 1.0
    log_floor: float = 1e-5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown FeatureConfig fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "FeatureConfig":
        """The config in a JSON file of its fields (as :meth:`to_dict` gives them); absent fields keep their
        defaults."""
        try:
            d = json.loads(open(path, encoding="utf-8").read())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"feature config {path}: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"feature config {path}: expected a JSON object of FeatureConfig fields")
        return cls.from_dict(d)

    @property
    def log_min(self) -> float:
        """The smallest value a log-mel can take (silence)."""
        return math.log(self.log_floor)

    def to_torchaudio(self) -> dict:
        """Keyword arguments for ``torchaudio.transforms.MelSpectrogram`` that compute this config's mel (its
        window is torchaudio's default, the periodic Hann); :func:`log_mel` is ``log(clamp(that, log_floor))``."""
        return dict(sample_rate=self.sample_rate, n_fft=self.n_fft, win_length=self.win_length,
                    hop_length=self.hop_length, f_min=self.fmin, f_max=self.fmax, n_mels=self.n_mels,
                    power=self.power, center=self.center, pad_mode=self.pad_mode, norm="slaney", mel_scale="slaney")

    @classmethod
    def from_torchaudio(cls, transform_or_kwargs, log_floor: float = 1e-5) -> "FeatureConfig":
        """The config of a ``torchaudio.transforms.MelSpectrogram``: the module, or the keyword arguments it is
        built with (missing ones take torchaudio's defaults). ``log_floor`` is not torchaudio's: it is the clamp
        of speechmax's log. A ValueError names every setting speechmax cannot express: a window other than
        the periodic Hann, ``pad``, ``normalized``, ``onesided=False``, ``power=None`` (complex output), a
        norm or mel scale other than Slaney."""
        s = _torchaudio_settings(transform_or_kwargs)
        fixed = dict(pad=0, normalized=False, onesided=True, norm="slaney", mel_scale="slaney")
        problems = [f"{k}={s[k]!r} (speechmax: {v!r})" for k, v in fixed.items() if s[k] != v]
        if s["power"] is None:
            problems.append("power=None (a complex spectrogram; speechmax takes |STFT| ** power)")
        if not s["hann"]:
            problems.append("window: not the periodic Hann window torch.hann_window (window_fn / wkwargs)")
        if problems:
            raise ValueError(f"this MelSpectrogram has settings speechmax's FeatureConfig cannot express: {'; '.join(problems)}")
        win = s["win_length"] or s["n_fft"]
        return cls(sample_rate=int(s["sample_rate"]), n_fft=int(s["n_fft"]), win_length=int(win),
                   hop_length=int(s["hop_length"] or win // 2), n_mels=int(s["n_mels"]), fmin=float(s["f_min"]),
                   fmax=float(s["sample_rate"] // 2 if s["f_max"] is None else s["f_max"]), center=bool(s["center"]),
                   pad_mode=str(s["pad_mode"]), power=float(s["power"]), log_floor=log_floor)


# torchaudio.transforms.MelSpectrogram's arguments and defaults (torchaudio 2.x), window_fn/wkwargs aside
_TORCHAUDIO_DEFAULTS = dict(sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0, f_max=None,
                            pad=0, n_mels=128, power=2.0, normalized=False, center=True, pad_mode="reflect",
                            onesided=None, norm=None, mel_scale="htk")


def _torchaudio_settings(obj) -> dict:
    """MelSpectrogram kwargs or module -> its settings by argument name, plus ``hann``: whether the window is
    the periodic Hann (for a module, read from its window tensor; its onesided None means True)."""
    if isinstance(obj, dict):
        unknown = set(obj) - set(_TORCHAUDIO_DEFAULTS) - {"window_fn", "wkwargs"}
        if unknown:
            raise ValueError(f"unknown torchaudio MelSpectrogram arguments: {sorted(unknown)}")
        s = {**_TORCHAUDIO_DEFAULTS, **obj}
        s["hann"] = obj.get("window_fn", torch.hann_window) is torch.hann_window and \
            (obj.get("wkwargs") or {}) in ({}, {"periodic": True})
    elif hasattr(obj, "spectrogram") and hasattr(obj, "mel_scale"):
        spec, mel = obj.spectrogram, obj.mel_scale
        s = dict(sample_rate=obj.sample_rate, n_fft=obj.n_fft, win_length=obj.win_length, hop_length=obj.hop_length,
                 f_min=mel.f_min, f_max=mel.f_max, pad=spec.pad, n_mels=obj.n_mels, power=spec.power,
                 normalized=spec.normalized, center=spec.center, pad_mode=spec.pad_mode, onesided=getattr(spec, "onesided", True),
                 norm=mel.norm, mel_scale=mel.mel_scale)
        window, hann = spec.window.detach().cpu().double(), torch.hann_window(obj.win_length, dtype=torch.float64)
        s["hann"] = window.shape == hann.shape and torch.allclose(window, hann, atol=1e-6)
    else:
        raise TypeError(f"expected a torchaudio.transforms.MelSpectrogram or its keyword arguments, got {type(obj).__name__}")
    s["onesided"] = True if s["onesided"] is None else s["onesided"]
    return s


class FeatureMismatchError(ValueError):
    """Two things that must share a FeatureConfig do not."""


class AudioError(ValueError):
    """An audio file or array that cannot be used; the message names the file and the problem."""


def check_compatible(a: FeatureConfig, b: FeatureConfig, what_a: str = "model", what_b: str = "data") -> None:
    """Raise :class:`FeatureMismatchError` listing every field where ``a`` and ``b`` differ."""
    if a == b:
        return
    da, db = a.to_dict(), b.to_dict()
    diffs = ", ".join(f"{k}: {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k])
    raise FeatureMismatchError(f"feature config of {what_a} differs from {what_b} ({diffs})")


def n_frames(n_samples: int, cfg: FeatureConfig = FeatureConfig()) -> int:
    """Number of mel frames ``log_mel`` gives for ``n_samples`` samples (101 for 1 s at defaults)."""
    if cfg.center:
        return 1 + n_samples // cfg.hop_length
    return 1 + (n_samples - cfg.n_fft) // cfg.hop_length


@lru_cache(maxsize=8)
def _mel_basis(cfg: FeatureConfig) -> np.ndarray:
    import librosa  # the filterbank is librosa's own, so the two front ends agree by construction

    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                               fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney")


def mel_filterbank(cfg: FeatureConfig = FeatureConfig(), device=None, dtype=torch.float32) -> torch.Tensor:
    """Slaney mel filterbank: (n_mels, n_fft // 2 + 1)."""
    return torch.as_tensor(_mel_basis(cfg), device=device, dtype=dtype)


def _hann(cfg: FeatureConfig, device, dtype) -> torch.Tensor:
    return torch.hann_window(cfg.win_length, periodic=True, device=device, dtype=dtype)


def log_mel(wave: torch.Tensor | np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Log-magnitude mel spectrogram, differentiable.

    wave: (samples,) or (batch, samples) float waveform in [-1, 1] at ``cfg.sample_rate``.
    Returns (n_mels, frames) or (batch, n_mels, frames): ``log(clamp(mel_filterbank @ |STFT|, log_floor))``.
    Equal to ``librosa.feature.melspectrogram(power=1.0, pad_mode="reflect")`` + the same log.
    """
    x = torch.as_tensor(wave)
    if not x.is_floating_point():
        raise TypeError(f"log_mel needs a float waveform, got dtype {x.dtype}")
    squeeze = x.dim() == 1
    if squeeze:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"log_mel expects (samples,) or (batch, samples), got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError("log_mel got an empty waveform (0 samples)")
    if not torch.isfinite(x).all():
        raise ValueError("log_mel got NaN or infinite samples")
    frames = n_frames(x.shape[-1], cfg)
    if cfg.center and x.shape[-1] <= cfg.n_fft // 2:
        # reflect padding needs more samples than the pad; zero-extend, then keep the frames the input has
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.shape[-1]))
    # The STFT runs in float64: in fp32, cancellation in near-silent bins puts log-mel errors above 1e-4.
    x64 = x.to(torch.float64)
    spec = torch.stft(x64, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                      window=_hann(cfg, x.device, torch.float64), center=cfg.center, pad_mode=cfg.pad_mode,
                      return_complex=True)[..., :frames]
    mag = spec.abs()
    if cfg.power != 1.0:
        mag = mag ** cfg.power
    mel = torch.matmul(mel_filterbank(cfg, x.device, torch.float64), mag)
    out = torch.log(torch.clamp(mel, min=cfg.log_floor)).to(x.dtype)
    return out[0] if squeeze else out


def mu_law_encode(x: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Waveform in [-1, 1] -> integer classes in [0, channels - 1] (int64)."""
    mu = channels - 1
    x = torch.clamp(torch.as_tensor(x), -1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / math.log1p(mu)
    return torch.clamp(((y + 1) / 2 * mu + 0.5).long(), 0, mu)


def mu_law_decode(q: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Integer classes in [0, channels - 1] -> float32 waveform in [-1, 1]."""
    mu = channels - 1
    y = 2 * torch.as_tensor(q).float() / mu - 1
    return torch.sign(y) * ((1 + mu) ** torch.abs(y) - 1) / mu


_MIN_RATE, _MAX_RATE, _MAX_CHANNELS = 4000, 384000, 8


def _regular_file(path: str | os.PathLike) -> str:
    """``path`` as a string if it is a regular file (or a link to one); AudioError otherwise -- opening a FIFO
    would block forever, and a broken link is a file the user meant to give."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file" + (" (a broken symbolic link)" if os.path.islink(path) else ""))
    if not os.path.isfile(path):
        raise AudioError(f"{path}: not a regular file (a folder, FIFO or device)")
    return path


def _wav_bytes_missing(path: str) -> int:
    """How many bytes a RIFF/WAVE file's data chunk declares beyond the end of the file (0 when whole, not a
    WAV, or written by a streaming writer that left the size open) -- libsndfile reads such a file silently."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        size, pos = os.fstat(f.fileno()).st_size, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            n = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return 0 if n in (0, 0xFFFFFFFF) else max(0, pos + 8 + n - size)
            pos += 8 + n + (n & 1)
    return 0


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as float32 mono at ``sample_rate`` (stereo/multichannel is averaged).

    Raises :class:`AudioError` naming the file for: a missing, unreadable or non-audio file, an empty
    file, 0 samples, NaN/inf samples, a sample rate outside 4-384 kHz, or more than 8 channels. Warns
    (and reads what is there) for a WAV whose data chunk is cut short.
    """
    import soundfile as sf

    path = _regular_file(path)
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for non-audio input
        raise AudioError(f"{path}: not a readable audio file ({e.__class__.__name__}: {str(e).strip()})") from None
    if not (_MIN_RATE <= rate <= _MAX_RATE):
        raise AudioError(f"{path}: unsupported sample rate {rate} Hz (expected {_MIN_RATE}-{_MAX_RATE} Hz)")
    if data.shape[1] > _MAX_CHANNELS:
        raise AudioError(f"{path}: unsupported channel count {data.shape[1]} (expected 1-{_MAX_CHANNELS})")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains 0 samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    missing = _wav_bytes_missing(path)
    if missing:
        warnings.warn(f"{path}: truncated WAV: its data chunk lacks {missing} byte(s); reading the "
                      f"{data.shape[0] / rate:.3f} s that are there", stacklevel=2)
    mono = data.mean(axis=1)
    if rate != sample_rate:
        import soxr  # what librosa's "soxr_hq" calls, without librosa's ~30 ms of overhead per call

        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def fit_length(wave: np.ndarray, n: int, keep: str = "centre", step: int = 160) -> np.ndarray:
    """Exactly ``n`` samples of ``wave`` (samples,). A shorter wave is centred in zeros; a longer one keeps its
    centre (``keep="centre"``: how the corpus loader fits clips to 1 s) or its loudest ``n``-sample stretch,
    searched every ``step`` samples (``keep="loudest"``: how classify fits a long recording to the model)."""
    if keep not in ("centre", "loudest"):
        raise ValueError(f"keep must be 'centre' or 'loudest', got {keep!r}")
    if len(wave) == n:
        return wave
    if len(wave) < n:
        left = (n - len(wave)) // 2
        return np.pad(wave, (left, n - len(wave) - left))
    if keep == "centre":
        start = (len(wave) - n) // 2
    else:
        energy = np.convolve(wave.astype(np.float64) ** 2, np.ones(n), mode="valid")
        start = int(np.argmax(energy[::step])) * step
    return wave[start:start + n]


def load_log_mel(path: str | os.PathLike, n_mels: int = 80) -> np.ndarray:
    """Read a ``.npy`` log-mel, (n_mels, frames) or (batch, n_mels, frames), as float32 (batch, n_mels, frames).

    Raises :class:`AudioError` naming the file for: a missing or non-regular file, anything ``np.load`` cannot
    read without pickles, a non-numeric dtype, another shape, no items or no frames, NaN/inf values.
    """
    path = _regular_file(path)
    try:
        # memory-mapped: a header that declares more data than the file holds fails here, before any allocation
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises several types for non-.npy input
        raise AudioError(f"{path}: not a readable .npy array ({e.__class__.__name__}: {str(e).strip()[:200]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        what = f"dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise AudioError(f"{path}: a log-mel must hold real numbers, got {what}")
    if arr.ndim not in (2, 3) or arr.shape[-2] != n_mels:
        raise AudioError(f"{path}: expected a log-mel ({n_mels}, frames) or (batch, {n_mels}, frames), "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(f"{path}: empty log-mel (shape {arr.shape})")
    arr = arr.reshape(-1, *arr.shape[-2:])
    with np.errstate(over="ignore"):   # values beyond float32 become inf, reported just below
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise AudioError(f"{path}: log-mel contains NaN or infinite values (or values beyond float32)")
    return arr


def save_audio(path: str | os.PathLike, wave, sample_rate: int = 16000) -> None:
    """Write a mono waveform in [-1, 1] as 16-bit PCM WAV (values outside are clipped), atomically: an
    interrupted write never leaves a truncated file under ``path``."""
    import soundfile as sf

    w = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave, dtype=np.float32)
    if w.ndim != 1:
        raise AudioError(f"{os.fspath(path)}: save_audio needs a mono (samples,) array, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise AudioError(f"{os.fspath(path)}: refusing to write NaN or infinite samples")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(w, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
