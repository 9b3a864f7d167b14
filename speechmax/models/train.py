"""Training classifiers and priors on cached log-mel features of a v0.02-layout corpus.

Augmentation runs on the features so the mel is computed once per clip: background noise mixed in the mel
magnitude domain at a random SNR, time shift, gain and SpecAugment masks. Each epoch validates; the best
epoch is kept; ``OUT/last`` holds a resumable checkpoint; the final card is measured on the speaker-disjoint
test split (accuracy, per-class accuracy, confusion matrix PNG).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Split, load_split
from ..data.augment import FeatureAugment, noise_log_mels
from ..data.words import labels as task_labels
from ..features import FeatureConfig, check_compatible, log_mel
from ..outputs import prepare_output, write_json
from ..progress import progress_bar
from ..training import JsonLog, load_checkpoint, save_checkpoint
from .classifier import PRESETS as CLASSIFIER_PRESETS
from .classifier import Classifier, save_classifier
from .prior import PRESETS as PRIOR_PRESETS
from .prior import Prior, save_prior


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    bf16: bool = False
    augment: bool = True
    label_smoothing: float = 0.05
    kl_warmup_epochs: int = 5      # priors: beta ramps 0 -> 1 over these epochs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _batches(n: int, batch: int, g: torch.Generator | None):
    order = torch.randperm(n, generator=g) if g is not None else torch.arange(n)
    for i in range(0, n, batch):
        yield order[i:i + batch]


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Softmax probabilities (N, n_classes) for log-mel x (N, n_mels, frames)."""
    model.eval()
    return torch.cat([torch.softmax(model(x[i:i + batch]), -1) for i in range(0, len(x), batch)])


def classification_metrics(probs: torch.Tensor, y: torch.Tensor, labels) -> dict:
    pred = probs.argmax(-1)
    n = len(labels)
    conf = torch.zeros(n, n, dtype=torch.long)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    per_class = {labels[i]: round(float(conf[i, i] / conf[i].sum()), 4) if conf[i].sum() else None for i in range(n)}
    return {"accuracy": round(float((pred == y).float().mean()), 4), "n": int(len(y)), "per_class_accuracy": per_class,
            "confusion": conf.tolist()}


def plot_confusion(conf, labels, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(conf, dtype=float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8), dpi=100)
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _corpus_info(root) -> dict:
    """What the card says about the training corpus: its folder and, for a built corpus, its settings."""
    info = {"root": str(root)}
    p = Path(root) / "corpus.json"
    if p.exists():
        try:
            meta = json.loads(p.read_text())
        except json.JSONDecodeError:
            return info
        settings = meta.get("settings", {})
        info.update({k: settings[k] for k in ("format", "seed", "speakers", "engines", "engine_versions") if k in settings})
        info.update({k: meta[k] for k in ("clips", "splits") if k in meta})
    return info


RUN_MARKER = "run.json"   # a run's settings, written before it trains: a rerun with them resumes from out/last
# What a run writes in its folder: --overwrite replaces these, and leaves anything else there alone.
RUN_FILES = ("last.safetensors", "last.json", "best.safetensors", "log.jsonl", "model.safetensors", "model.json",
             "confusion.png", "confusion.json")


def _is_fit_run(out: Path) -> bool:
    """A classifier or prior run from before :data:`RUN_MARKER`: its checkpoint counts epochs (a vocoder's steps)."""
    try:
        card = json.loads((out / "last.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and card.get("kind") == "checkpoint" and "epoch" in card


def prepare_run(out: Path, what: str, settings: dict, fc: FitConfig, overwrite: bool) -> None:
    """Make ``out`` ready to train: new or empty, or a run of the same ``what`` with the same ``settings`` and
    FitConfig (save ``epochs``: a rerun with more extends it), which resumes from out/last; anything else is
    an :class:`~speechmax.outputs.OutputFolderError` before any data is read, unless ``overwrite`` (the run's
    own files are then removed, so it starts afresh)."""
    settings = {"command": f"train {what}", **settings, **{k: v for k, v in fc.to_dict().items() if k != "epochs"}}
    resume = prepare_output(out, RUN_MARKER, settings, what=f"speechmax train {what} run", overwrite=overwrite,
                            legacy=_is_fit_run)
    if overwrite and not resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    write_json(out / RUN_MARKER, {"settings": settings})


def _fit(model, out: Path, fc: FitConfig, train: Split, val: Split, step_fn, val_fn, progress: bool, tag: str):
    """Shared epoch loop: resumes from out/last, keeps the best validation score in out/best."""
    log = JsonLog(out / "log.jsonl")
    opt = torch.optim.AdamW(model.parameters(), lr=fc.lr, weight_decay=fc.weight_decay)
    state = load_checkpoint(out, model, opt) or {}
    epoch, best = int(state.get("epoch", 0)), float(state.get("best", -math.inf))
    steps_per_epoch = math.ceil(len(train.x) / fc.batch)
    total = fc.epochs * steps_per_epoch
    best_path = out / "best.safetensors"
    for ep in range(epoch, fc.epochs):
        model.train()
        g = torch.Generator().manual_seed(fc.seed * 1000 + ep)
        bar = progress_bar(progress, total=steps_per_epoch, desc=f"{tag} epoch {ep + 1}/{fc.epochs}", unit="batch",
                           mininterval=10)
        t0, losses = time.time(), []
        for i, idx in enumerate(_batches(len(train.x), fc.batch, g)):
            step = ep * steps_per_epoch + i
            lr = fc.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fc.bf16):
                loss = step_fn(idx, g, ep)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        bar.close()
        score = val_fn()
        log.write(event="epoch", epoch=ep + 1, loss=round(float(np.mean(losses)), 4), val=round(score, 4),
                  seconds=round(time.time() - t0, 1))
        if score > best:
            best = score
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(best_path))
        save_checkpoint(out, model, opt, None, {"epoch": ep + 1, "best": best})
    from safetensors.torch import load_file

    if best_path.exists():
        model.load_state_dict(load_file(str(best_path)))
    return best


def feature_range(x: torch.Tensor) -> dict:
    """Per-band min and max of training features x: (N, n_mels, frames), as the card's ``feature_range`` (the
    bounds maximize's Clamp keeps the features in)."""
    return {"low": [round(float(v), 4) for v in x.amin(dim=(0, 2))],
            "high": [round(float(v), 4) for v in x.amax(dim=(0, 2))],
            "what": f"per-band min/max of the log-mel over the {len(x)} training clips"}


def train_classifier(data, out, preset: str = "classifier", arch: str | None = None, fc: FitConfig = FitConfig(),
                     feature_cfg: FeatureConfig = FeatureConfig(), progress: bool = True, threads: int | None = None,
                     overwrite: bool = False, words=None) -> dict:
    """Train a classifier preset (classifier | classifier-separate | classifier-paper) on ``data``; write
    ``out/model.safetensors`` + card and ``out/confusion.png``. Returns the card's metrics. ``out``: see
    :func:`prepare_run`. ``words``: the vocabulary (a list of words in label order, each a folder of ``data``;
    ``_unknown_`` / ``_silence_`` among them collect the other words / background noise), default the 35."""
    out = Path(out)
    labels = task_labels(words if words is not None else "35")
    prepare_run(out, "classifier", {"preset": preset, "arch": arch, "data": str(Path(data).resolve()),
                                    "features": feature_cfg.to_dict(),
                                    **({"words": list(labels)} if words is not None else {})}, fc, overwrite)
    if threads:
        torch.set_num_threads(threads)
    cfg = CLASSIFIER_PRESETS[preset] if arch is None else dataclasses.replace(CLASSIFIER_PRESETS[preset], arch=arch)
    cfg = dataclasses.replace(cfg, labels=tuple(labels), n_classes=len(labels))
    task = labels if words is not None else "35"
    train = load_split(data, "training", feature_cfg, task=task, progress=progress)
    val = load_split(data, "validation", feature_cfg, task=task, progress=progress)
    torch.manual_seed(fc.seed)
    model = Classifier(cfg, feature_cfg)
    model.norm.set_stats(train.x[:5000])
    augment = FeatureAugment(noise_log_mels(data, feature_cfg, seed=fc.seed), feature_cfg) if fc.augment else None

    def step_fn(idx, g, ep):
        x = train.x[idx]
        if augment is not None:
            x = augment(x, g)
        return F.cross_entropy(model(x).float(), train.y[idx], label_smoothing=fc.label_smoothing)

    def val_fn():
        return classification_metrics(predict(model, val.x), val.y, labels)["accuracy"]

    t0 = time.time()
    best = _fit(model, out, fc, train, val, step_fn, val_fn, progress, preset)
    test = load_split(data, "testing", feature_cfg, task=task, progress=progress)
    metrics = classification_metrics(predict(model, test.x), test.y, labels)
    plot_confusion(metrics["confusion"], labels, out / "confusion.png",
                   f"{preset} ({cfg.arch}) on the test split: accuracy {metrics['accuracy']:.3f}")
    card = {"preset": preset, "training": dict(fc.to_dict(), best_val_accuracy=best, seconds=round(time.time() - t0)),
            "training_data": dict(_corpus_info(data), train_clips=len(train.x), val_clips=len(val.x), test_clips=len(test.x)),
            "metrics": {"test_accuracy": metrics["accuracy"], "val_accuracy": best, "test_clips": metrics["n"],
                        "per_class_accuracy": metrics["per_class_accuracy"]},
            "confusion_png": "confusion.png", "feature_range": feature_range(train.x)}
    save_classifier(model, out / "model", **card)
    (out / "confusion.json").write_text(json.dumps(metrics["confusion"]))
    return card["metrics"]


def train_prior(data, out, preset: str = "prior", fc: FitConfig = FitConfig(lr=1e-3, augment=False),
                feature_cfg: FeatureConfig = FeatureConfig(), classifier=None, progress: bool = True,
                threads: int | None = None, overwrite: bool = False) -> dict:
    """Train a prior preset (prior = VAE | prior-paper = deterministic AE); measure on the test split the
    reconstruction error and, given a classifier, its accuracy on reconstructions and the classes that
    decoded z ~ N(0, I) fall into. ``out``: see :func:`prepare_run`."""
    out = Path(out)
    prepare_run(out, "prior", {"preset": preset, "data": str(Path(data).resolve()),
                               "features": feature_cfg.to_dict()}, fc, overwrite)
    if threads:
        torch.set_num_threads(threads)
    cfg = PRIOR_PRESETS[preset]
    train = load_split(data, "training", feature_cfg, progress=progress)
    val = load_split(data, "validation", feature_cfg, progress=progress)
    torch.manual_seed(fc.seed)
    model = Prior(cfg, feature_cfg)
    model.norm.set_stats(train.x[:5000])

    def step_fn(idx, g, ep):
        beta = min(1.0, (ep + 1) / max(fc.kl_warmup_epochs, 1))
        return model.loss(train.x[idx], beta=beta)[0]

    @torch.no_grad()
    def val_fn():
        model.eval()
        return -float(np.mean([model.loss(val.x[i:i + 512])[0].item() for i in range(0, len(val.x), 512)]))

    t0 = time.time()
    best = _fit(model, out, fc, train, val, step_fn, val_fn, progress, preset)
    test = load_split(data, "testing", feature_cfg, progress=progress)
    metrics = prior_metrics(model, test, classifier)
    card = {"preset": preset, "training": dict(fc.to_dict(), best_val_neg_loss=best, seconds=round(time.time() - t0)),
            "training_data": dict(_corpus_info(data), train_clips=len(train.x)), "metrics": metrics,
            "why_this_decoder": ("frame-wise 1-D conv decoder (linear -> nearest x2 -> conv1d -> ReLU, twice -> conv1d): "
                                 "only GEMM-shaped ops, so the fused latent-maximization backward keeps each sample's "
                                 "activations in cache" if cfg.arch == "vae" else "the seed paper's deterministic conv AE")}
    save_prior(model, out / "model", **card)
    return metrics


@torch.no_grad()
def prior_metrics(model: Prior, test: Split, classifier: Classifier | None, n_random: int = 2000, seed: int = 0) -> dict:
    model.eval()
    rec = torch.cat([model.reconstruct(test.x[i:i + 512]) for i in range(0, len(test.x), 512)])
    out = {"test_recon_mse": round(float(((rec - test.x) ** 2).mean()), 4)}
    if classifier is not None:
        check_compatible(classifier.feature_config, model.feature_config, "classifier", "prior")
        labels = classifier.cfg.labels
        out["classifier_accuracy_on_reconstructions"] = classification_metrics(predict(classifier, rec), test.y, labels)["accuracy"]
        out["classifier_accuracy_on_originals"] = classification_metrics(predict(classifier, test.x), test.y, labels)["accuracy"]
        if model.is_variational:
            g = torch.Generator().manual_seed(seed)
            pred = predict(classifier, model.sample(n_random, generator=g)).argmax(-1)
            counts = torch.bincount(pred, minlength=len(labels))
            out["random_z_classes_covered"] = int((counts > 0).sum())
            out["random_z_class_counts"] = {labels[i]: int(c) for i, c in enumerate(counts)}
    return out
