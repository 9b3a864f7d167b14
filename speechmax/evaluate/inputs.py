"""What every experiment of the evaluation works on -- the models and the real clips -- and the two things done
to them throughout: the classifiers' predictions and the vocoder's synthesis."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import SpeechCommands, build_corpus, scan_corpus
from ..data.words import SILENCE_LABEL, UNKNOWN_LABEL, WORDS
from ..features import check_compatible, log_mel
from ..models.external import ModelError
from ..models.inference import label_index, logits_on_audio
from ..models.registry import load_classifier_any, load_model
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

    @property
    def labels(self) -> tuple:
        """The classifier's labels: the classes every part of the evaluation is about."""
        return tuple(self.classifier.cfg.labels) or WORDS[:self.classifier.cfg.n_classes]

    @property
    def separate_labels(self) -> tuple:
        return tuple(self.separate.cfg.labels) or WORDS[:self.separate.cfg.n_classes]

    @property
    def separate_index(self) -> np.ndarray:
        """Each of the separate classifier's classes as the classifier's index (-1: a label the classifier lacks)."""
        return label_index(self.separate_labels, self.labels)

    def unscored(self) -> list[str]:
        """The classifier's labels the separate classifier lacks: no success can be scored for them."""
        theirs = set(self.separate_labels)
        return [label for label in self.labels if label not in theirs]

    def scored_classes(self) -> list[int]:
        """The classifier's class indices the separate classifier has too."""
        theirs = set(self.separate_labels)
        return [c for c, label in enumerate(self.labels) if label in theirs]


def spec_name(spec):
    """How a model given by name or by a spec (:func:`load_classifier_any`'s keywords) is recorded in the settings:
    the name alone when nothing else is set (as older evaluations recorded it), else the set keywords."""
    if not isinstance(spec, dict):
        return str(spec)
    kept = {k: str(v) for k, v in spec.items() if v is not None}
    return kept["name_or_path"] if list(kept) == ["name_or_path"] else kept


def _classifier(spec):
    return load_classifier_any(**spec) if isinstance(spec, dict) else load_classifier_any(spec)


def load_models(classifier="classifier", separate="classifier-separate", prior="prior", prior_paper="prior-paper",
                vocoder="auto") -> EvalModels:
    """Shipped names or paths; ``vocoder``: auto (the shipped WaveNet, else Griffin-Lim only), griffinlim, PATH.
    ``classifier`` and ``separate`` may also be a user's model: a dict of :func:`load_classifier_any`'s keywords
    (``name_or_path``, ``labels``, ``input``, ``features``)."""
    clf = _classifier(classifier)
    sep = _classifier(separate)
    pri = load_model(prior, kind="prior")
    pp = load_model(prior_paper, kind="prior")
    voc = Vocoder.for_listeners(vocoder)
    for what, m in (("separate classifier", sep), ("prior", pri), ("paper prior", pp)):
        check_compatible(clf.feature_config, m.feature_config, "classifier", what)
    if voc.model is not None:
        check_compatible(clf.feature_config, voc.feature_config, "classifier", "vocoder")
    models = EvalModels(clf, sep, pri, pp, voc, voc.model is not None, voc.preference_note,
                        names=dict(classifier=spec_name(classifier), separate=spec_name(separate), prior=str(prior),
                                   prior_paper=str(prior_paper),
                                   vocoder=voc.name if voc.model is not None else "griffinlim"))
    if not set(models.labels) & set(models.separate_labels):
        raise ModelError(f"the classifier ({', '.join(models.labels)}) and the separate classifier "
                         f"({', '.join(models.separate_labels)}) share no label: nothing could be scored")
    return models


@dataclass
class Clips:
    waves: torch.Tensor      # (N, samples)
    mels: torch.Tensor       # (N, n_mels, frames)
    labels: np.ndarray       # (N,)
    speakers: list
    source: str
    missing: list = field(default_factory=list)   # the classifier's labels the corpus has no clip of


def eval_clips(data, out: Path, speakers: int, seed: int, cfg, labels=WORDS) -> Clips:
    """The test split of ``data``; without it, a fresh corpus of unseen speakers built under ``out``. Clips are
    labelled by the classifier's ``labels`` (its vocabulary's rules: other words become ``_unknown_`` if it has
    that label, else are left out); ``missing`` lists its labels of which the corpus has no clip."""
    if data is None:
        root = out / f"corpus-s{EVAL_CORPUS_SEED + seed}-n{speakers}"
        summary = build_corpus(root, speakers=speakers, seed=EVAL_CORPUS_SEED + seed, progress=True)
        names = ("training", "validation", "testing")
        source = f"fresh offline corpus: {speakers} unseen speakers, seed {EVAL_CORPUS_SEED + seed} ({summary.clips} clips)"
    else:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder (a Speech Commands layout corpus)")
        names = ("testing",)
        source = f"{root} (testing split)"
    labels = tuple(labels)
    with warnings.catch_warnings():   # SpeechCommands below warns about the corpus once
        warnings.simplefilter("ignore")
        words = {item.word for item in scan_corpus(root)[0]}
    missing = [w for w in labels if w not in words and w not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    task = "35" if labels == WORDS else [w for w in labels if w not in missing]
    splits = [SpeechCommands(root, s, cfg, task=task, seed=seed) for s in names]
    parts = [s.waveforms() for s in splits if len(s)]
    if not parts:
        raise ValueError(f"{root}: the test split holds no clips; build a larger corpus or pass another --data")
    waves = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts]).numpy()
    if task != "35":   # the index of the corpus's label in the classifier's labels
        y = label_index(task, labels)[y]
    spk = [s for p in parts for s in p[2]]
    return Clips(waves, log_mel(waves, cfg).float(), y, spk, source, missing)


def pick_per_class(labels: np.ndarray, k: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` indices per class (classes in order, deterministic for the rng)."""
    keep = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            keep += sorted(rng.choice(idx, min(k, len(idx)), replace=False).tolist())
    return np.array(keep, dtype=np.int64)


@torch.no_grad()
def predict(model, mels: torch.Tensor, waves: torch.Tensor | None = None) -> np.ndarray:
    """The classifier's top class of each (N, n_mels, frames) log-mel, (N,); given the ``waves`` the log-mels
    came from, a model that reads waveforms hears those instead (:func:`logits_on_audio`)."""
    model.eval()
    if waves is not None:
        return logits_on_audio(model, waves, mels, batch=512).argmax(-1).numpy()
    return torch.cat([model(mels[i:i + 512]).argmax(-1) for i in range(0, len(mels), 512)]).numpy() \
        if len(mels) else np.zeros(0, np.int64)


def predict_separate(models: EvalModels, mels: torch.Tensor, waves: torch.Tensor | None = None) -> np.ndarray:
    """The separate classifier's top class of each clip as the classifier's label index (-1: a word the
    classifier does not have, which never equals a target)."""
    return models.separate_index[predict(models.separate, mels, waves)] if len(mels) else np.zeros(0, np.int64)


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
