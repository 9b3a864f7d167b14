"""Loaders: :class:`SpeechCommands` over any v0.02-layout folder (the real corpus or a built one), and
:func:`vocoder_files`, the continuous speech and word clips for vocoder training by split.

A split's clips are read once (mono, 16 kHz, fitted to 1 s: shorter ones centred in zeros, longer ones
centre-cropped) and cached as one int16 array; log-mels of that array are cached beside it, keyed by the
file list and the FeatureConfig. Later epochs and runs load the arrays instead of decoding files.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np
import torch

from speechmax.features import AudioError, FeatureConfig, fit_length, load_audio, log_mel, n_frames
from speechmax.progress import progress_bar

from .augment import FeatureAugment, noise_log_mels
from .noise import load_noise_files
from .words import (BACKGROUND_NOISE_DIR, SILENCE_LABEL, SPLITS, TESTING_LIST, UNKNOWN_LABEL,
                    VALIDATION_LIST, WORDS, labels, speaker_of, which_set)

__all__ = ["ClipItem", "CorpusError", "SpeechCommands", "vocoder_files", "load_split", "scan_corpus", "Split"]

_CACHE_VERSION = 1
_MEL_BATCH = 256


class CorpusError(ValueError):
    """A corpus split holds clips but none of them can be read."""


@dataclass(frozen=True)
class ClipItem:
    """One clip of a v0.02 tree: ``path`` relative to the root (``word/<speaker>_nohash_<k>.wav``)."""
    path: str
    word: str
    speaker: str
    split: str


def _read_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {ln.strip().replace("\\", "/") for ln in path.read_text(errors="replace").splitlines() if ln.strip()}


def scan_corpus(root, validation_percentage: float = 10.0, testing_percentage: float = 10.0):
    """Every ``*.wav`` in the word folders of ``root`` with its split; returns (items, extra).

    Splits come from ``validation_list.txt`` / ``testing_list.txt``; for a missing list, TensorFlow's hash
    rule decides that split (warned once). Folders starting with ``_`` or ``.`` are not words.
    ``extra``: ``unknown_folders`` (not one of the 35 words), ``background_noise`` (wav paths),
    ``missing_lists``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such corpus folder")
    val, test = _read_list(root / VALIDATION_LIST), _read_list(root / TESTING_LIST)
    missing = [name for name, lst in ((VALIDATION_LIST, val), (TESTING_LIST, test)) if lst is None]
    items, unknown = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        files = sorted(f.name for f in d.iterdir() if f.suffix.lower() == ".wav" and not f.name.startswith("."))
        if files and d.name not in WORDS:
            unknown.append(d.name)
        for name in files:
            rel = f"{d.name}/{name}"
            if val is not None and rel in val:
                split = "validation"
            elif test is not None and rel in test:
                split = "testing"
            else:
                rule = which_set(name, validation_percentage, testing_percentage)
                split = rule if (rule == "validation" and val is None) or (rule == "testing" and test is None) \
                    else "training"
            items.append(ClipItem(rel, d.name, speaker_of(name), split))
    if missing and items:
        warnings.warn(f"{root}: no {' or '.join(missing)}; using TensorFlow's hash rule for "
                      f"{'that split' if len(missing) == 1 else 'the splits'}", stacklevel=2)
    noise_dir = root / BACKGROUND_NOISE_DIR
    noise = sorted(str(p) for p in noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
    return items, {"unknown_folders": unknown, "background_noise": noise, "missing_lists": missing}


def _file_key(root: Path, items) -> str:
    h = hashlib.sha1(f"v{_CACHE_VERSION}".encode())
    for it in items:
        try:
            st = (root / it.path).stat()
        except OSError:   # a broken link or an entry that cannot be read: load_audio names it, the split skips it
            h.update(f"{it.path}\0unreadable\n".encode())
            continue
        h.update(f"{it.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _cache_dir(root: Path, cache_dir) -> Path | None:
    path = Path(cache_dir) if cache_dir is not None else root / ".cache"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        warnings.warn(f"cannot write the feature cache in {path} ({e}); features are recomputed each run "
                      "(pass cache_dir= a writable folder)", stacklevel=3)
        return None
    return path


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def _progress(total: int, desc: str, enabled: bool):
    return progress_bar(enabled, total=total, desc=desc, unit="clip")


class SpeechCommands(torch.utils.data.Dataset):
    """A Speech Commands v0.02-layout folder as a torch Dataset of (log-mel, label, speaker).

    root: the corpus folder (real v0.02 or built by :func:`speechmax.data.build_corpus`).
    split: "training", "validation" or "testing" (official lists, else TensorFlow's hash rule).
    task: a vocabulary (:func:`~speechmax.data.words.labels`): "35" (the 35 words; folders that are not one of
        them are skipped with a warning), a list of words of one's own (each needs its folder), or "12"
        (TensorFlow's ``_silence_``, ``_unknown_`` + 10 words; other words, including unknown folders,
        become ``_unknown_``, sampled down to ``unknown_percentage`` % of the known words, and
        ``silence_percentage`` % ``_silence_`` items are made from the background noise).
    augment: None/False, True (a :class:`~speechmax.data.augment.FeatureAugment` with the corpus's background
        noise) or a FeatureAugment: applied to the item's log-mel on every access, drawn from torch's generator
        (``_silence_`` items stay as they are).
    cache_dir: where the int16 waveforms and log-mels of the split are cached (default ``root/.cache``).

    Items: (float32 tensor (n_mels, frames) = 80x101 at defaults, int label, str speaker). Unreadable or
    corrupt files are skipped, listed in ``skipped`` and named in one warning. ``files`` are the readable
    :class:`ClipItem` of the split (the rows of the caches); ``items`` are (row or -1 for a silence item,
    label, speaker). For training in memory use :meth:`tensors` (features, with a FeatureAugment per batch)
    or :meth:`waveforms`.
    """

    def __init__(self, root, split: str = "training", cfg: FeatureConfig = FeatureConfig(), task: str = "35",
                 augment=None, cache_dir=None, silence_percentage: float = 10.0,
                 unknown_percentage: float = 10.0, seed: int = 0, progress: bool = False):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        self.root, self.split, self.cfg, self.task = Path(root), split, cfg, task
        self.labels = labels(task)
        self.augment = FeatureAugment(noise_log_mels(self.root, cfg), cfg) if augment is True else (augment or None)
        self.clip_samples = cfg.sample_rate  # 1 s
        self.progress = progress
        all_items, extra = scan_corpus(self.root)
        split_items = [it for it in all_items if it.split == split]
        self._cache = _cache_dir(self.root, cache_dir)
        self._waves, self.files, self.skipped = self._load_waves(split_items)
        self._mels = None
        if split_items and not self.files:
            raise CorpusError(f"{self.root}: none of the {len(split_items)} clip(s) of the {split} split can be read: "
                              + "; ".join(self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else ""))
        if extra["unknown_folders"] and task == "35":
            warnings.warn(f"{self.root}: skipping folder(s) that are not Speech Commands words: "
                          f"{', '.join(extra['unknown_folders'])}", stacklevel=2)
        missing = [w for w in self.labels if w not in (SILENCE_LABEL, UNKNOWN_LABEL)
                   and w not in {it.word for it in all_items}]
        if missing and all_items and not isinstance(task, str):
            raise CorpusError(f"{self.root}: no clips of {', '.join(missing)} (the vocabulary asks for them; the "
                              "corpus has a folder per word)")
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} unreadable clip(s) of the {split} split: "
                          + "; ".join(self.skipped[:20]) + (" ..." if len(self.skipped) > 20 else ""), stacklevel=2)
        self._noise = [torch.from_numpy(w) for w in self._load_noise(extra["background_noise"])]
        # items: (row in the wave cache and in ``files``, or -1 for silence; label; speaker)
        self.items = self._select(self.files, np.random.default_rng([seed, SPLITS.index(split)]),
                                  silence_percentage, unknown_percentage)
        self._silence_seed = seed
        self._mel_cache()  # here, once, rather than in every DataLoader worker

    # --- building the item list -------------------------------------------------------------------
    def _select(self, items, rng, silence_percentage, unknown_percentage):
        index = {name: i for i, name in enumerate(self.labels)}
        words = set(index) - {SILENCE_LABEL, UNKNOWN_LABEL}
        known = [(row, index[it.word], it.speaker) for row, it in enumerate(items) if it.word in words]
        if UNKNOWN_LABEL not in index and SILENCE_LABEL not in index:
            return known
        unknown = [(row, index[UNKNOWN_LABEL], it.speaker) for row, it in enumerate(items)
                   if it.word not in words] if UNKNOWN_LABEL in index else []
        n_unknown = min(len(unknown), math.ceil(len(known) * unknown_percentage / 100))
        keep = sorted(rng.choice(len(unknown), size=n_unknown, replace=False).tolist()) if n_unknown else []
        n_silence = math.ceil(len(known) * silence_percentage / 100) if SILENCE_LABEL in index else 0
        if n_silence and not self._noise:
            warnings.warn(f"{self.root}: no background noise; _silence_ items are all-zero clips", stacklevel=3)
        silence = [(-1, index[SILENCE_LABEL], SILENCE_LABEL)] * n_silence if n_silence else []
        return known + [unknown[k] for k in keep] + silence

    def _load_noise(self, paths):
        waves, problems = load_noise_files(self.root / BACKGROUND_NOISE_DIR, self.cfg.sample_rate)
        if problems:
            warnings.warn(f"skipped {len(problems)} unreadable background noise file(s): " + "; ".join(problems),
                          stacklevel=3)
        return [w for w in waves if len(w) > 0]

    def _load_waves(self, items):
        """int16 (n_ok, clip_samples) for the readable items (cached), the readable items, the problems."""
        key = self._wave_key = _file_key(self.root, items) + f"-{self.cfg.sample_rate}"
        wav_path = self._cache / f"{self.split}-waves-{key}.npy" if self._cache else None
        meta_path = self._cache / f"{self.split}-waves-{key}.json" if self._cache else None
        if wav_path is not None and wav_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            bad = set(meta["bad"])
            ok = [it for it in items if it.path not in bad]
            waves = np.load(wav_path, mmap_mode="r")
            if len(waves) == len(ok):
                return waves, ok, meta["problems"]
        waves = np.zeros((len(items), self.clip_samples), dtype=np.int16)
        ok, bad, problems = [], [], []
        with _progress(len(items), f"reading {self.split}", self.progress) as bar:
            for it in items:
                try:
                    w = fit_length(load_audio(self.root / it.path, self.cfg.sample_rate), self.clip_samples)
                    waves[len(ok)] = np.round(np.clip(w, -1.0, 1.0) * 32767).astype(np.int16)
                    ok.append(it)
                except AudioError as e:
                    bad.append(it.path)
                    problems.append(str(e))
                bar.update(1)
        waves = waves[:len(ok)]
        if wav_path is not None:
            _save_npy(wav_path, waves)
            meta_path.write_text(json.dumps({"bad": bad, "problems": problems}))
        return waves, ok, problems

    def _mel_cache(self) -> np.ndarray:
        """float32 (n_ok, n_mels, frames): log-mel of every cached waveform (computed once, then cached)."""
        if self._mels is not None:
            return self._mels
        path = None
        if self._cache is not None:
            cfg_key = hashlib.sha1(json.dumps(self.cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
            path = self._cache / f"{self.split}-mel-{self._wave_key}-{cfg_key}.npy"
            if path.is_file():
                self._mels = np.load(path, mmap_mode="r")
                return self._mels
        mels = np.empty((len(self._waves), self.cfg.n_mels, self._frames()), dtype=np.float32)
        with _progress(len(mels), f"log-mel {self.split}", self.progress) as bar:
            for i in range(0, len(mels), _MEL_BATCH):
                chunk = torch.from_numpy(np.asarray(self._waves[i:i + _MEL_BATCH], dtype=np.float32) / 32768.0)
                mels[i:i + len(chunk)] = log_mel(chunk, self.cfg).numpy()
                bar.update(len(chunk))
        if path is not None:
            _save_npy(path, mels)
        self._mels = mels
        return mels

    def _frames(self) -> int:
        return n_frames(self.clip_samples, self.cfg)

    # --- access ---------------------------------------------------------------------------------------
    def _silence_wave(self, rng: np.random.Generator) -> np.ndarray:
        if not self._noise:
            return np.zeros(self.clip_samples, dtype=np.float32)
        src = self._noise[rng.integers(len(self._noise))].numpy()
        if len(src) < self.clip_samples:
            src = np.tile(src, self.clip_samples // len(src) + 1)
        start = rng.integers(len(src) - self.clip_samples + 1)
        seg = src[start:start + self.clip_samples]
        rms = np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-12
        return (seg * (10 ** (rng.uniform(-60.0, -20.0) / 20) / rms)).astype(np.float32)

    def waveform(self, i: int) -> torch.Tensor:
        """The un-augmented 1 s waveform of item ``i``: float32 (clip_samples,)."""
        row, _, _ = self.items[i]
        if row < 0:  # silence items are fixed per index, so validation/testing are reproducible
            return torch.from_numpy(self._silence_wave(np.random.default_rng([self._silence_seed, i])))
        return torch.from_numpy(np.asarray(self._waves[row], dtype=np.float32) / 32768.0)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        row, label, speaker = self.items[i]
        mel = torch.from_numpy(np.array(self._mel_cache()[row])) if row >= 0 else log_mel(self.waveform(i), self.cfg)
        if self.augment is not None and row >= 0:   # silence stays silence: no speech to shift or mix against
            g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ())))
            mel = self.augment(mel[None], g)[0]
        return mel, label, speaker

    def tensors(self):
        """The whole split without augmentation, in memory: (X float32 (N, n_mels, frames), y int64 (N,),
        speakers list[str]). The first call computes and caches the log-mels; later ones load them."""
        mels = self._mel_cache()
        rows = np.array([r for r, _, _ in self.items], dtype=np.int64)
        x = torch.empty(len(self.items), self.cfg.n_mels, self._frames())
        file_pos = np.flatnonzero(rows >= 0)
        if len(file_pos):
            x[torch.from_numpy(file_pos)] = torch.from_numpy(np.asarray(mels[rows[file_pos]]))
        silent = np.flatnonzero(rows < 0)
        if len(silent):
            x[torch.from_numpy(silent)] = log_mel(torch.stack([self.waveform(int(i)) for i in silent]), self.cfg)
        y = torch.tensor([lab for _, lab, _ in self.items], dtype=torch.int64)
        return Split(x, y, [s for _, _, s in self.items])

    def waveforms(self):
        """The whole split's un-augmented waveforms, in memory: (W float32 (N, samples), y int64 (N,),
        speakers list[str])."""
        w = torch.stack([self.waveform(i) for i in range(len(self.items))]) if self.items else \
            torch.empty(0, self.clip_samples)
        y = torch.tensor([lab for _, lab, _ in self.items], dtype=torch.int64)
        return w, y, [s for _, _, s in self.items]

    @property
    def noise(self) -> list[torch.Tensor]:
        """The background noise recordings (float32 tensors at the corpus rate)."""
        return self._noise


def load_split(root, split: str, cfg: FeatureConfig = FeatureConfig(), task: str = "35", cache_dir=None,
               progress: bool = False) -> Split:
    """``SpeechCommands(root, split, cfg, task, cache_dir=...).tensors()``, refusing an empty split (a corpus
    with too few speakers for the split rule)."""
    data = SpeechCommands(root, split, cfg, task=task, cache_dir=cache_dir, progress=progress).tensors()
    if len(data.y) == 0:
        raise ValueError(f"the {split} split of {root} is empty: the corpus needs more speakers "
                         "(splits are by speaker, about 80/10/10)")
    return data


class Split(NamedTuple):
    """A whole split in memory."""
    x: torch.Tensor        # (N, n_mels, frames) float32 log-mel
    y: torch.Tensor        # (N,) int64 labels
    speakers: list[str]


def vocoder_files(roots) -> dict[str, list[Path]]:
    """Every ``.wav`` under ``roots`` (a folder or a list; background noise excluded) for vocoder training, by
    split: TensorFlow's hash rule on the speaker (:func:`speaker_of`: the name before ``_nohash_``, else the
    folder), so a speaker's word clips and continuous speech land in the same split. Sorted within each root."""
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    out = {split: [] for split in SPLITS}
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such data folder")
        for p in sorted(root.rglob("*.wav")):
            if BACKGROUND_NOISE_DIR not in p.parts:
                out[which_set(p)].append(p)
    return out
