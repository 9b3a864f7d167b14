"""Files -> log-mels for synthesis: wavs (resynthesis) and .npy log-mels, one or a folder of them, grouped into
batches of equal length so a folder of 1 s clips is synthesized 64 at a time."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..features import AudioError, FeatureConfig, load_audio, load_log_mel, log_mel
from ..models.inference import find_inputs


@dataclass
class SynthesisJob:
    names: list[str]       # one per item: the input's path relative to the input folder, without suffix
    mel: np.ndarray        # (items, n_mels, frames) float32

    def without(self, names) -> "SynthesisJob":
        """This job less the items named in ``names``."""
        drop = set(names)
        keep = [i for i, n in enumerate(self.names) if n not in drop]
        return SynthesisJob([self.names[i] for i in keep], self.mel[keep])


def _read(path: Path, cfg: FeatureConfig) -> np.ndarray:
    """(k, n_mels, frames) log-mel(s) of one file; AudioError naming the file and the problem."""
    if path.suffix.lower() == ".wav":
        mel = log_mel(torch.from_numpy(load_audio(path, cfg.sample_rate)), cfg).numpy()[None]
    else:
        mel = load_log_mel(path, cfg.n_mels)
    if mel.shape[0] == 0 or mel.shape[-1] < 2:
        raise AudioError(f"{path}: too short to synthesize (shape {mel.shape}; at least 2 frames needed)")
    return mel.astype(np.float32)


def _output_names(root: Path, files: list[Path], counts: list[int]) -> list[list[str]]:
    """Per file, the names of its items: the path relative to ``root`` without suffix (``_i`` appended per
    item of a batch). Where two files would give the same name (``x.wav`` and ``x.npy``; ``x.npy`` of 2 items
    and ``x_0.wav``) the files involved keep their suffix instead (``x.wav``, ``x.npy_0``), so no output
    overwrites another."""
    def names(f: Path, n: int, keep_suffix: bool) -> list[str]:
        rel = f.relative_to(root) if root.is_dir() else Path(f.name)
        stem = str(rel if keep_suffix else rel.with_suffix(""))
        return [stem] if n == 1 else [f"{stem}_{i}" for i in range(n)]

    plain = [names(f, n, False) for f, n in zip(files, counts)]
    seen: dict[str, int] = {}
    for ns in plain:
        for name in ns:
            seen[name] = seen.get(name, 0) + 1
    return [names(f, n, True) if any(seen[name] > 1 for name in ns) else ns
            for f, n, ns in zip(files, counts, plain)]


def load_inputs(path: str | Path, cfg: FeatureConfig, batch: int = 64) -> tuple[list[SynthesisJob], list[str]]:
    """Every wav / .npy under ``path`` (a file or a folder, searched recursively) as batches of equal length.

    Returns (jobs, skipped): in a folder, unreadable files are skipped with the reason; a single unreadable
    file is an error. A (B, n_mels, T) .npy gives items named ``stem_0 ... stem_{B-1}``; names are unique
    (see :func:`_output_names`).
    """
    root = Path(path)
    files = find_inputs(root)
    read, skipped = [], []
    for f in files:
        try:
            read.append((f, _read(f, cfg)))
        except AudioError as e:
            if not root.is_dir():
                raise
            skipped.append(str(e))
    by_frames: dict[int, list[tuple[str, np.ndarray]]] = {}
    for names, mel in zip(_output_names(root, [f for f, _ in read], [len(m) for _, m in read]), (m for _, m in read)):
        for name, m in zip(names, mel):
            by_frames.setdefault(m.shape[-1], []).append((name, m))
    jobs = []
    for items in by_frames.values():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            jobs.append(SynthesisJob([n for n, _ in chunk], np.stack([m for _, m in chunk])))
    return jobs, skipped
