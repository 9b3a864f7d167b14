"""Writing a listening set (format in the package docstring) from audio in numpy arrays, and the hidden
controls every set needs: references (clean clips of a known word) and low-quality anchors.

Torch-free like the rest of ``speechmax.listen``: whoever makes the audio (``speechmax evaluate``) turns it into
numpy first."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..outputs import atomic_path
from .sets import ListeningSet, load_listening_set

ANCHOR_CUTOFF_HZ = 1000
ANCHOR_SNR_DB = 5


@dataclass(frozen=True)
class SetClip:
    """A clip to write: its manifest entry (``extra``: further fields, e.g. where it came from) and its audio,
    (samples,) float32 in [-1, 1] (values outside are clipped)."""
    id: str
    condition: str
    word: str | None
    role: str
    wave: np.ndarray
    extra: dict = field(default_factory=dict)


def anchor(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A low-quality anchor of a (samples,) clip: low-passed at 1 kHz, white noise added at 5 dB SNR."""
    from scipy.signal import butter, sosfilt   # only to write a set: serving one needs no scipy.signal

    sos = butter(6, ANCHOR_CUTOFF_HZ, "low", fs=sample_rate, output="sos")
    x = sosfilt(sos, wave).astype(np.float32)
    p = float(np.mean(x ** 2)) + 1e-12
    x = x + rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(p / 10 ** (ANCHOR_SNR_DB / 10))
    return (x / max(1.0, float(np.abs(x).max()))).astype(np.float32)


def hidden_controls(originals: np.ndarray, resynthesized: np.ndarray, words, per_word: int, sample_rate: int,
                    rng: np.random.Generator) -> list[SetClip]:
    """References and anchors from real clips: up to ``per_word`` references per word (the clip through the same
    vocoder as the clips under test, so only the word, not the sound, tells them apart) and one anchor per word
    (the original degraded by :func:`anchor`).

    originals, resynthesized: (N, samples) the real clips and the same clips vocoded; words: (N,) their words.
    Clip n's ids are ``reference-<word>-<n>`` and ``anchor-<word>-<n>``."""
    out, references, anchors = [], {}, {}
    for n, word in enumerate(words):
        if references.get(word, 0) < per_word:
            references[word] = references.get(word, 0) + 1
            out.append(SetClip(f"reference-{word}-{n}", "reference", word, "reference", resynthesized[n]))
        if word not in anchors:
            anchors[word] = True
            out.append(SetClip(f"anchor-{word}-{n}", "anchor", word, "anchor",
                               anchor(originals[n], sample_rate, rng)))
    return out


def write_listening_set(root, name: str, clips: list[SetClip], sample_rate: int, words, **fields) -> ListeningSet:
    """Write each clip as ``root/<id>.wav`` (16-bit PCM) and ``root/manifest.json`` listing them in order, with
    ``words`` (the answer choices) and any further top-level ``fields`` (e.g. the vocoder); returns the set as
    :func:`load_listening_set` reads it back, so a set that would not load is never left unnoticed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for clip in clips:
        wave = np.asarray(clip.wave, dtype=np.float32)
        if wave.ndim != 1 or not np.isfinite(wave).all():
            raise ValueError(f"clip {clip.id!r}: audio must be a finite (samples,) array, got shape {wave.shape}")
        with atomic_path(root / f"{clip.id}.wav") as tmp:
            sf.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        entries.append({"id": clip.id, "file": f"{clip.id}.wav", "condition": clip.condition, "word": clip.word,
                        "role": clip.role, **clip.extra})
    manifest = {"name": name, **fields, "words": list(words), "clips": entries}
    with atomic_path(root / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return load_listening_set(root)
