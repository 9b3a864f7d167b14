"""Planted defects for the debugging benchmark (issue 23): bugs whose place is known, put into one word's training
clips, so a classifier trained on them carries them and the report can be checked for finding them.

Each defect is an audio transform of a training clip (:data:`TRANSFORMS`) or, for ``swap``, two words' training
labels exchanged. :func:`plant` writes a corpus variant: the untouched clips linked, the changed ones written, the
validation and test clips always as they were (a defect lives in training only), and ``defect.json`` saying
what was planted where.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..features import load_audio, save_audio
from .dataset import scan_corpus
from .words import BACKGROUND_NOISE_DIR, TESTING_LIST, VALIDATION_LIST

SR = 16000
FRAME = 320                 # 20 ms frames for finding where the speech is
ACTIVE_DB = -30.0           # a frame within this of the loudest frame is speech

# what each defect does, with its settings (recorded in defect.json)
DEFECTS = {
    "tone": {"hz": 2500.0, "below_db": 25.0, "what": "a faint tone in every training clip"},
    "noise": {"snr_db": 10.0, "what": "one real background-noise type at a fixed SNR in every training clip"},
    "swap": {"what": "the labels of two words exchanged in training"},
    "early": {"within_s": 0.4, "what": "the word always in the first 400 ms of its training clips"},
    "lowpass": {"cutoff_hz": 2000.0, "what": "the training clips low-passed"},
}


class DefectError(ValueError):
    """A defect cannot be planted in this corpus (e.g. background noise needed and none there)."""


def active(wave: np.ndarray) -> np.ndarray:
    """Per sample: whether it lies in a 20 ms frame within :data:`ACTIVE_DB` of the clip's loudest frame."""
    n = len(wave) // FRAME * FRAME
    if n == 0:
        return np.ones(len(wave), bool)
    e = (wave[:n].reshape(-1, FRAME).astype(np.float64) ** 2).mean(1) + 1e-20
    on = 10 * np.log10(e / e.max()) > ACTIVE_DB
    mask = np.repeat(on, FRAME)
    return np.concatenate([mask, np.full(len(wave) - n, on[-1])])


def speech_rms(wave: np.ndarray) -> float:
    """RMS over the clip's speech (its active frames)."""
    a = active(wave)
    return float(np.sqrt(np.mean(wave[a].astype(np.float64) ** 2))) if a.any() else 0.0


def add_tone(wave: np.ndarray, hz: float = 2500.0, below_db: float = 25.0, phase: float = 0.0) -> np.ndarray:
    """A sine of ``hz`` over the whole clip, its RMS ``below_db`` under the speech RMS."""
    amp = speech_rms(wave) * 10 ** (-below_db / 20) * np.sqrt(2)
    t = np.arange(len(wave)) / SR
    return (wave + amp * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of ``noise`` (as long as the clip) mixed in at ``snr_db`` under the speech RMS."""
    if len(noise) < len(wave):
        noise = np.tile(noise, -(-len(wave) // len(noise)))
    start = int(rng.integers(0, len(noise) - len(wave) + 1))
    seg = noise[start:start + len(wave)].astype(np.float64)
    rms = np.sqrt(np.mean(seg ** 2))
    if rms == 0:
        raise DefectError("the background noise is silent")
    return (wave + seg * (speech_rms(wave) * 10 ** (-snr_db / 20) / rms)).astype(np.float32)


def move_early(wave: np.ndarray, within_s: float = 0.4) -> np.ndarray:
    """The word's speech moved to the clip's start (its first active sample at 0): a word up to ``within_s`` long
    lies wholly in the first ``within_s``; a longer one starts there."""
    a = np.flatnonzero(active(wave))
    if len(a) == 0:
        return wave.copy()
    first, last = a[0], a[-1] + 1
    out = np.zeros_like(wave)
    out[:last - first] = wave[first:last]
    return out


def lowpass(wave: np.ndarray, cutoff_hz: float = 2000.0) -> np.ndarray:
    """An 8th-order Butterworth low-pass, forward and back (no phase shift)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, cutoff_hz, fs=SR, output="sos")
    return sosfiltfilt(sos, wave.astype(np.float64)).astype(np.float32)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.abspath(src), dst)


def plant(root, out, defect: str, word: str, other: str | None = None, seed: int = 0) -> dict:
    """A copy of the corpus ``root`` in ``out`` with ``defect`` planted in ``word``'s training clips (``swap``:
    ``word`` and ``other`` exchange their training clips' folders, so each is labelled as the other). Untouched
    files are symbolic links; ``out`` must not exist. Returns the record written to ``out/defect.json``.

    Raises :class:`DefectError` when the defect cannot be planted: an unknown defect or word, ``swap`` without a
    second word, ``noise`` without a background-noise file in the corpus."""
    root, out = Path(root), Path(out)
    if defect not in DEFECTS:
        raise DefectError(f"unknown defect {defect!r}; known: {', '.join(DEFECTS)}")
    items, extra = scan_corpus(root)
    words = sorted({it.word for it in items})
    for w in (word, other) if defect == "swap" else (word,):
        if w is None:
            raise DefectError("swap needs a second word")
        if w not in words:
            raise DefectError(f"word {w!r} has no clips in {root}")
    noise_files = extra["background_noise"]
    if defect == "noise" and not noise_files:
        raise DefectError(f"{root} has no {BACKGROUND_NOISE_DIR}/*.wav: the noise defect needs one")
    if out.exists():
        raise FileExistsError(f"{out} exists: a corpus variant is written into a new folder")
    rng = np.random.default_rng(seed)
    settings = {k: v for k, v in DEFECTS[defect].items() if k != "what"}
    record = {"defect": defect, "what": DEFECTS[defect]["what"], "class": word, "settings": settings, "seed": seed}
    noise = None
    if defect == "noise":
        pick = noise_files[int(rng.integers(len(noise_files)))]
        noise, record["noise_file"] = load_audio(pick, SR), Path(pick).name
    if defect == "swap":
        record["other_class"] = other
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    changed = 0
    for it in items:
        src = root / it.path
        mine = it.split == "training" and it.word in ((word, other) if defect == "swap" else (word,))
        if not mine:
            _link(src, tmp / it.path)
            continue
        changed += 1
        if defect == "swap":   # the same audio, filed under the other word
            _link(src, tmp / (other if it.word == word else word) / Path(it.path).name)
            continue
        wave = load_audio(src, SR)
        if defect == "tone":
            wave = add_tone(wave, settings["hz"], settings["below_db"], phase=float(rng.uniform(0, 2 * np.pi)))
        elif defect == "noise":
            wave = add_noise(wave, noise, settings["snr_db"], rng)
        elif defect == "early":
            wave = move_early(wave, settings["within_s"])
        elif defect == "lowpass":
            wave = lowpass(wave, settings["cutoff_hz"])
        dst = tmp / it.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_audio(dst, wave, SR)
    for name in (VALIDATION_LIST, TESTING_LIST):   # the split lists: val/test clips keep their places
        if (root / name).is_file():
            shutil.copyfile(root / name, tmp / name)
    for f in noise_files:
        _link(Path(f), tmp / BACKGROUND_NOISE_DIR / Path(f).name)
    record["changed_training_clips"] = changed
    (tmp / "defect.json").write_text(json.dumps(record, indent=1) + "\n")
    tmp.rename(out)
    return record
