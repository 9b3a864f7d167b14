"""Background noise: synthetic coloured noise for ``_background_noise_/`` and loading noise recordings."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from speechmax.features import AudioError, load_audio, save_audio

__all__ = ["COLOURS", "coloured_noise", "write_background_noise", "load_noise_files"]

# Power spectral density exponent: PSD ~ f**exponent.
COLOURS = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


def coloured_noise(colour: str, n: int, rng: np.random.Generator, rms_db: float = -20.0) -> np.ndarray:
    """``n`` samples of white/pink/brown/blue noise (PSD ~ f^0, f^-1, f^-2, f^1) at ``rms_db`` dBFS, float32."""
    if colour not in COLOURS:
        raise ValueError(f"unknown noise colour {colour!r} (expected one of {', '.join(COLOURS)})")
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]  # no DC blow-up for the red colours
    spec *= f ** (COLOURS[colour] / 2)
    x = np.fft.irfft(spec, n)
    x -= x.mean()
    x *= 10 ** (rms_db / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-12)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def write_background_noise(folder: str | os.PathLike, seed: int, seconds: float = 60.0, noise_dir=None,
                           sample_rate: int = 16000) -> list[Path]:
    """Write ``<colour>_noise.wav`` for each colour, plus every readable recording under ``noise_dir``
    (converted to 16 kHz mono PCM16). Unreadable recordings are skipped with one warning."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, colour in enumerate(COLOURS):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        path = folder / f"{colour}_noise.wav"
        save_audio(path, coloured_noise(colour, int(seconds * sample_rate), rng), sample_rate)
        written.append(path)
    if noise_dir is not None:
        noise_dir = Path(noise_dir)
        if not noise_dir.is_dir():
            raise FileNotFoundError(f"--noise-dir {noise_dir}: no such folder")
        bad = []
        for src in sorted(p for p in noise_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
            try:
                wave = load_audio(src, sample_rate)
            except AudioError as e:
                bad.append(str(e))
                continue
            dst = folder / (src.stem + ".wav")
            if dst in written:
                dst = folder / f"{src.stem}_{len(written)}.wav"
            save_audio(dst, wave, sample_rate)
            written.append(dst)
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable noise file(s): " + "; ".join(bad), stacklevel=2)
    return written


def load_noise_files(folder: str | os.PathLike, sample_rate: int = 16000,
                     skip=()) -> tuple[list[np.ndarray], list[str]]:
    """All readable ``*.wav`` under ``folder`` but those named in ``skip`` (file names), as float32 16 kHz mono;
    returns (waves, problems)."""
    waves, problems = [], []
    folder = Path(folder)
    if not folder.is_dir():
        return waves, problems
    skip = set(skip)
    for path in sorted(p for p in folder.glob("*.wav") if p.name not in skip):
        try:
            waves.append(load_audio(path, sample_rate))
        except AudioError as e:
            problems.append(str(e))
    return waves, problems
