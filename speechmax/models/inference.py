"""Running a classifier on files: wavs and log-mel .npy files, one or a folder of them."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..features import AudioError, FeatureConfig, fit_length, load_audio, load_log_mel, log_mel, n_frames

INPUT_SUFFIXES = (".wav", ".npy")


def find_inputs(path: str | Path) -> list[Path]:
    """A .wav/.npy file, or every .wav/.npy entry under a folder (recursively, sorted). A folder's broken links,
    FIFOs and the like are listed too, so the loaders count them as skipped instead of dropping them unseen."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in INPUT_SUFFIXES and not f.is_dir())
        if not files:
            raise FileNotFoundError(f"{p}: no .wav or .npy files in this folder")
        return files
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.suffix.lower() not in INPUT_SUFFIXES:
        raise ValueError(f"{p}: expected a .wav, a .npy log-mel or a folder, got a {p.suffix or 'suffix-less'} file")
    return [p]


def fit_frames(lm: np.ndarray, frames: int, floor: float) -> np.ndarray:
    """Pad (with silence) or centre-crop a log-mel (n_mels, T) to ``frames`` frames."""
    T = lm.shape[-1]
    if T == frames:
        return lm
    if T < frames:
        left = (frames - T) // 2
        return np.pad(lm, ((0, 0), (left, frames - T - left)), constant_values=floor)
    s = (T - frames) // 2
    return lm[:, s:s + frames]


# A clip this short holds no word: padded with silence it scores as whatever silence scores as.
MIN_SECONDS = 0.1


def load_features(path: Path, cfg: FeatureConfig, frames: int, audio: bool = False) -> tuple[list[str], np.ndarray]:
    """(names, log-mel (k, n_mels, frames)) for one file: a wav gives one item, a .npy (n_mels, T) one,
    a .npy (B, n_mels, T) B items named ``file.npy[i]``. With ``audio`` (for a model that reads waveforms) a wav
    gives its audio, (1, (frames - 1) * hop), and a .npy log-mel is refused. AudioError for an unreadable file or
    one of at most ``MIN_SECONDS``."""
    min_samples = int(MIN_SECONDS * cfg.sample_rate)
    if path.suffix.lower() == ".wav":
        wave = load_audio(path, cfg.sample_rate)
        if len(wave) <= min_samples:
            raise AudioError(f"{path}: too short to classify ({len(wave) / cfg.sample_rate:.3f} s; more than "
                             f"{MIN_SECONDS} s needed)")
        wave = fit_length(wave, (frames - 1) * cfg.hop_length, keep="loudest", step=cfg.hop_length)
        return [str(path)], (wave[None] if audio else log_mel(torch.from_numpy(wave), cfg).numpy()[None])
    if audio:
        raise AudioError(f"{path}: a log-mel, and the model reads audio: give it the .wav")
    arr = load_log_mel(path, cfg.n_mels)
    if arr.shape[-1] <= n_frames(min_samples, cfg):
        raise AudioError(f"{path}: too short to classify ({arr.shape[-1]} frames; more than "
                         f"{n_frames(min_samples, cfg)} needed)")
    names = [str(path)] if len(arr) == 1 else [f"{path}[{i}]" for i in range(len(arr))]
    return names, np.stack([fit_frames(a, frames, cfg.log_min) for a in arr]).astype(np.float32)


def load_clips(inputs: str | Path, cfg: FeatureConfig, frames: int, progress=None, audio: bool = False
               ) -> tuple[list[str], np.ndarray | None, list[str]]:
    """(names, log-mel (k, n_mels, frames) or None, skipped) for every wav / log-mel under ``inputs`` (with
    ``audio``, the wavs' audio (k, samples) instead: see :func:`load_features`).

    In a folder an unreadable file is skipped (its reason in ``skipped``; one warning names them all);
    a single unreadable file is an error. ``None`` when nothing was readable.
    """
    files = find_inputs(inputs)
    names, feats, skipped = [], [], []
    for f in files:
        try:
            n, x = load_features(f, cfg, frames, audio)
        except AudioError as e:
            if len(files) == 1 and not Path(inputs).is_dir():
                raise
            skipped.append(f"{e}")
            continue
        names += n
        feats.append(x)
        if progress is not None:
            progress(1)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unusable file(s): " + "; ".join(skipped[:20])
                      + (" ..." if len(skipped) > 20 else ""), stacklevel=2)
    return names, (np.concatenate(feats) if feats else None), skipped


@dataclass
class Prediction:
    path: str
    label: str
    prob: float

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "prob": round(self.prob, 6)}


@torch.no_grad()
def classify_files(model, inputs: str | Path, batch: int = 256, progress=None) -> tuple[list[Prediction], list[str]]:
    """Top label and probability for every wav / log-mel under ``inputs``.

    Returns (predictions, skipped): a folder's unreadable files are skipped (one warning names them);
    a single unreadable file is an error.
    """
    audio = getattr(model, "input", "log-mel") == "waveform"   # a user's waveform model hears the wav itself
    names, x, skipped = load_clips(inputs, model.feature_config, model.cfg.n_frames, progress, audio=audio)
    labels = model.cfg.labels or tuple(str(i) for i in range(model.cfg.n_classes))
    if x is None:
        return [], skipped
    x = torch.from_numpy(x)
    model.eval()
    run = model.classify_waveform if audio else model
    probs = torch.cat([torch.softmax(run(x[i:i + batch]), -1) for i in range(0, len(x), batch)])
    p, idx = probs.max(-1)
    return [Prediction(nm, labels[int(i)], float(q)) for nm, i, q in zip(names, idx, p)], skipped


def folder_accuracy(predictions: list[Prediction], labels) -> dict | None:
    """How often ``predictions`` are right where the folder layout names the word (Speech Commands:
    ``WORD/clip.wav``); None when no file's folder is one of ``labels``.

    Returns {"accuracy": share right, "labelled": files counted, "per_class": {word: {"accuracy", "n"}} (words
    with files), "confusions": [{"label", "predicted", "count"}, ...] (wrong pairs, most frequent first)}.
    """
    pairs = [(Path(p.path).parent.name, p.label) for p in predictions]
    pairs = [(true, pred) for true, pred in pairs if true in labels]
    if not pairs:
        return None
    per_class, confusions = {}, {}
    for true, pred in pairs:
        right, n = per_class.get(true, (0, 0))
        per_class[true] = (right + (pred == true), n + 1)
        if pred != true:
            confusions[(true, pred)] = confusions.get((true, pred), 0) + 1
    return {"accuracy": round(sum(r for r, _ in per_class.values()) / len(pairs), 6), "labelled": len(pairs),
            "per_class": {w: {"accuracy": round(per_class[w][0] / per_class[w][1], 6), "n": per_class[w][1]}
                          for w in labels if w in per_class},
            "confusions": [{"label": t, "predicted": p, "count": c}
                           for (t, p), c in sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))]}


def label_index(source, target) -> np.ndarray:
    """(len(source),) int64: each of ``source``'s labels' index in ``target``, -1 where ``target`` lacks it --
    how two classifiers with different vocabularies are compared (only on the labels they share)."""
    where = {label: i for i, label in enumerate(target)}
    return np.array([where.get(label, -1) for label in source], dtype=np.int64)


def in_label_columns(probs, labels, their_labels) -> np.ndarray:
    """(N, len(labels)) float64: a classifier's softmax ``probs`` (N, len(their_labels)) rearranged into the
    columns of ``labels`` (another classifier's), 0 where it lacks the label."""
    cols = label_index(labels, their_labels)
    probs = np.asarray(probs, dtype=np.float64)
    return np.where(cols >= 0, probs[:, np.maximum(cols, 0)], 0.0)


def _fit_samples(waves: torch.Tensor, n: int) -> torch.Tensor:
    """(N, samples) -> (N, n): the centre ``n`` samples, or zero-padded evenly on both sides."""
    T = waves.shape[-1]
    if T >= n:
        return waves[..., (T - n) // 2:(T - n) // 2 + n]
    left = (n - T) // 2
    return torch.nn.functional.pad(waves, (left, n - T - left))


@torch.no_grad()
def logits_on_audio(model, waves: torch.Tensor, mels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """The model's logits for real audio (N, samples) as a person hears it: a model that reads waveforms gets the
    audio itself (its own front end), a log-mel model the audio's log-mel (``mels`` if already computed, else
    computed here under the model's FeatureConfig)."""
    model.eval()
    if getattr(model, "input", "log-mel") == "waveform":
        heard, run = _fit_samples(waves, model.samples), model.classify_waveform
    else:
        heard, run = (mels if mels is not None else log_mel(waves, model.feature_config).float()), model
    if not len(heard):
        return torch.zeros(0, model.cfg.n_classes)
    return torch.cat([run(heard[i:i + batch]) for i in range(0, len(heard), batch)])
