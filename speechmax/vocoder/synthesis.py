"""Files -> log-mels for synthesis: wavs (resynthesis) and .npy log-mels, one or a folder of them, grouped into
batches of equal length so a folder of 1 s clips is synthesized 64 at a time."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..features import AudioError, FeatureConfig, load_audio, log_mel


@dataclass
class SynthesisJob:
    names: list[str]       # one per item: the input's path relative to the input folder, without suffix
    mel: np.ndarray        # (items, n_mels, frames) float32


def _read(path: Path, cfg: FeatureConfig) -> np.ndarray:
    """(k, n_mels, frames) log-mel(s) of one file; AudioError naming the file and the problem."""
    if path.suffix.lower() == ".wav":
        mel = log_mel(torch.from_numpy(load_audio(path, cfg.sample_rate)), cfg).numpy()[None]
    else:
        try:
            mel = np.load(path, allow_pickle=False)
        except Exception as e:
            raise AudioError(f"{path}: not a readable .npy array ({e})") from None
        if mel.ndim not in (2, 3) or mel.shape[-2] != cfg.n_mels:
            raise AudioError(f"{path}: expected a log-mel ({cfg.n_mels}, frames) or (batch, {cfg.n_mels}, frames), "
                             f"got shape {mel.shape}")
        mel = mel.reshape(-1, *mel.shape[-2:])
        if not np.isfinite(mel).all():
            raise AudioError(f"{path}: log-mel contains NaN or infinite values")
    if mel.shape[0] == 0 or mel.shape[-1] < 2:
        raise AudioError(f"{path}: too short to synthesize (shape {mel.shape}; at least 2 frames needed)")
    return mel.astype(np.float32)


def load_inputs(path: str | Path, cfg: FeatureConfig, batch: int = 64) -> tuple[list[SynthesisJob], list[str]]:
    """Every wav / .npy under ``path`` (a file or a folder, searched recursively) as batches of equal length.

    Returns (jobs, skipped): in a folder, unreadable files are skipped with the reason; a single unreadable
    file is an error. A (B, n_mels, T) .npy gives items named ``stem_0 ... stem_{B-1}``.
    """
    from ..models.inference import find_inputs

    root = Path(path)
    files = find_inputs(root)
    by_frames: dict[int, list[tuple[str, np.ndarray]]] = {}
    skipped = []
    for f in files:
        try:
            mel = _read(f, cfg)
        except AudioError as e:
            if len(files) == 1:
                raise
            skipped.append(str(e))
            continue
        stem = str(f.relative_to(root).with_suffix("")) if root.is_dir() else f.stem
        names = [stem] if len(mel) == 1 else [f"{stem}_{i}" for i in range(len(mel))]
        for name, m in zip(names, mel):
            by_frames.setdefault(m.shape[-1], []).append((name, m))
    jobs = []
    for items in by_frames.values():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            jobs.append(SynthesisJob([n for n, _ in chunk], np.stack([m for _, m in chunk])))
    return jobs, skipped
