"""What every experiment of the evaluation works on -- the models and the real clips -- and the two things done
to them throughout: the classifiers' predictions and the vocoder's synthesis."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import SpeechCommands, build_corpus
from ..features import check_compatible, log_mel
from ..models.registry import load_model
from ..progress import progress_bar
from ..vocoder.griffinlim import griffinlim_synthesize
from ..vocoder.vocoder import Vocoder

EVAL_CORPUS_SEED = 7777   # a corpus seed no shipped model was trained on (1000 classifiers, 2000 vocoder)


@dataclass
class EvalModels:
    classifier: object
    separate: object
    prior: object
    prior_paper: object
    vocoder: object                 # speechmax.Vocoder (Griffin-Lim only when no WaveNet)
    wavenet: bool                   # a WaveNet is there (else the control has no WaveNet column)
    vocoder_note: str | None = None
    names: dict = field(default_factory=dict)


def load_models(classifier="classifier", separate="classifier-separate", prior="prior", prior_paper="prior-paper",
                vocoder="auto") -> EvalModels:
    """Shipped names or paths; ``vocoder``: auto (the shipped WaveNet, else Griffin-Lim only), griffinlim, PATH."""
    clf = load_model(classifier, kind="classifier")
    sep = load_model(separate, kind="classifier")
    pri = load_model(prior, kind="prior")
    pp = load_model(prior_paper, kind="prior")
    voc = Vocoder.for_listeners(vocoder)
    for what, m in (("separate classifier", sep), ("prior", pri), ("paper prior", pp)):
        check_compatible(clf.feature_config, m.feature_config, "classifier", what)
    if voc.model is not None:
        check_compatible(clf.feature_config, voc.feature_config, "classifier", "vocoder")
    return EvalModels(clf, sep, pri, pp, voc, voc.model is not None, voc.preference_note,
                      names=dict(classifier=str(classifier), separate=str(separate), prior=str(prior),
                                 prior_paper=str(prior_paper), vocoder=voc.name if voc.model is not None else
                                 "griffinlim"))


@dataclass
class Clips:
    waves: torch.Tensor      # (N, samples)
    mels: torch.Tensor       # (N, n_mels, frames)
    labels: np.ndarray       # (N,)
    speakers: list
    source: str


def eval_clips(data, out: Path, speakers: int, seed: int, cfg) -> Clips:
    """The test split of ``data``; without it, a fresh corpus of unseen speakers built under ``out``."""
    if data is None:
        root = out / f"corpus-s{EVAL_CORPUS_SEED + seed}-n{speakers}"
        summary = build_corpus(root, speakers=speakers, seed=EVAL_CORPUS_SEED + seed, progress=True)
        splits = [SpeechCommands(root, s, cfg) for s in ("training", "validation", "testing")]
        source = f"fresh offline corpus: {speakers} unseen speakers, seed {EVAL_CORPUS_SEED + seed} ({summary.clips} clips)"
    else:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder (a Speech Commands layout corpus)")
        splits = [SpeechCommands(root, "testing", cfg)]
        source = f"{root} (testing split)"
    parts = [s.waveforms() for s in splits if len(s)]
    if not parts:
        raise ValueError(f"{root}: the test split holds no clips; build a larger corpus or pass another --data")
    waves = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts]).numpy()
    spk = [s for p in parts for s in p[2]]
    return Clips(waves, log_mel(waves, cfg).float(), labels, spk, source)


def pick_per_class(labels: np.ndarray, k: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` indices per class (classes in order, deterministic for the rng)."""
    keep = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            keep += sorted(rng.choice(idx, min(k, len(idx)), replace=False).tolist())
    return np.array(keep, dtype=np.int64)


@torch.no_grad()
def predict(model, mels: torch.Tensor) -> np.ndarray:
    """The classifier's top class of each (N, n_mels, frames) log-mel, (N,)."""
    model.eval()
    return torch.cat([model(mels[i:i + 512]).argmax(-1) for i in range(0, len(mels), 512)]).numpy() \
        if len(mels) else np.zeros(0, np.int64)


def synthesize(models: EvalModels, mels: torch.Tensor, seed: int, threads, wavenet: bool, desc: str,
               quiet: bool) -> np.ndarray:
    """Batched synthesis of (N, n_mels, T) log-mels: WaveNet (``wavenet``) or Griffin-Lim; (N, samples) float32."""
    cfg = models.vocoder.feature_config
    outs = []
    batch = 64 if wavenet else 32
    with progress_bar(not quiet, total=len(mels), unit="clip", desc=desc, leave=False) as bar:
        for i in range(0, len(mels), batch):
            m = mels[i:i + batch]
            if wavenet:
                outs.append(models.vocoder.synthesize(m, backend="auto", seed=seed + i, threads=threads))
            else:
                outs.append(griffinlim_synthesize(m, cfg, n_iter=32, seed=seed))
            bar.update(len(m))
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)
