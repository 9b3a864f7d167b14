"""Training classifiers and priors on cached log-mel features of a v0.02-layout corpus.

Augmentation runs on the features so the mel is computed once per clip: background noise mixed in the mel
magnitude domain at a random SNR, time shift, gain and SpecAugment masks. Each epoch validates; the best
epoch is kept; ``OUT/last`` holds a resumable checkpoint; the final card is measured on the speaker-disjoint
test split (accuracy, per-class accuracy, confusion matrix PNG).

Under ``torchrun`` (:mod:`speechmax.distributed`; gloo on CPU) the models train data-parallel
(DistributedDataParallel): the batch of ``FitConfig.batch`` clips that one process would take at a step (the
same seeded permutation on every rank) is cut into one contiguous slice per rank, so the batch must divide by the
world size. The gradients are averaged over the ranks, BatchNorm statistics taken over the whole batch and dropout
masks and augmentation drawn for the whole batch (:func:`speechmax.training.rank_independent`): the ranks
together take the same steps as one process, to float rounding, and a run resumes on any number of ranks. What
differs: a VAE prior's latent noise is each rank's own draw. Validation is shared out by chunks; rank 0 alone
writes the log, checkpoints, card and plots.
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

from .. import distributed
from ..data import Split, load_split
from ..data.augment import FeatureAugment, noise_log_mels
from ..data.words import labels as task_labels
from ..features import FeatureConfig, check_compatible, log_mel
from ..outputs import prepare_output, write_json
from ..progress import progress_bar
from ..distributed import World
from ..training import JsonLog, batch_slice, load_checkpoint, rank_independent, save_checkpoint
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
    augment_skip_noise: tuple = ()   # background-noise file names the augmentation leaves out
    label_smoothing: float = 0.05
    kl_warmup_epochs: int = 5      # priors: beta ramps 0 -> 1 over these epochs

    def to_dict(self) -> dict:
        """As JSON holds it (the tuple a list), so a card's or marker's record compares equal; no
        ``augment_skip_noise`` when it is empty, as the records from before it."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        if not d["augment_skip_noise"]:
            del d["augment_skip_noise"]
        return d

    def trained(self, record: dict) -> bool:
        """Whether a card's ``training`` record was trained with this fit (a field the record lacks counts as its
        default, as it was before the field existed)."""
        mine, default = (json.loads(json.dumps(dataclasses.asdict(f))) for f in (self, FitConfig()))
        return all(record.get(k, default[k]) == v for k, v in mine.items())


def _batches(n: int, batch: int, g: torch.Generator | None):
    order = torch.randperm(n, generator=g) if g is not None else torch.arange(n)
    for i in range(0, n, batch):
        yield order[i:i + batch]


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Softmax probabilities (N, n_classes) for log-mel x (N, n_mels, frames)."""
    model.eval()
    return torch.cat([torch.softmax(model(x[i:i + batch]), -1) for i in range(0, len(x), batch)])


def _chunks(world: World, n: int, fn, size: int = 512) -> list:
    """``fn(start, stop)`` for every chunk of ``size`` of ``range(n)``, in order; under torchrun each rank computes
    every ``world.size``-th chunk and every rank gets them all (the same chunks as one process, so the same
    numbers)."""
    bounds = [(i, min(i + size, n)) for i in range(0, n, size)]
    mine = {j: fn(*b) for j, b in enumerate(bounds) if world.owns(j)}
    if not world.distributed:
        return [mine[j] for j in range(len(bounds))]
    every = {}
    for part in distributed.gather(world, mine):
        every.update(part)
    return [every[j] for j in range(len(bounds))]


def predict_shared(world: World, model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """:func:`predict` with the chunks shared out among the ranks; every rank gets all the probabilities."""
    if not world.distributed:
        return predict(model, x)
    return torch.cat(_chunks(world, len(x), lambda a, b: predict(model, x[a:b])))


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


def _start(out: Path, what: str, settings: dict, fc: FitConfig, overwrite: bool, world: World | None,
           threads: int | None) -> World:
    """Before any data is read: this process's world (joining torchrun's group), the batch checked against it,
    the ranks' settings compared, ``out`` made ready by rank 0 (:func:`prepare_run`) while the others wait, and
    the threads set (under torchrun, default: this machine's cores shared among its ranks)."""
    world = distributed.current() if world is None else world
    if fc.batch % world.size:
        raise ValueError(f"--batch {fc.batch} does not divide among {world.size} ranks: under torchrun every rank "
                         f"takes an equal slice of each batch (give a multiple of {world.size})")
    distributed.check_same_settings(world, {"command": f"train {what}", "out": str(Path(out).resolve()),
                                            "overwrite": overwrite, **settings, **fc.to_dict()})
    distributed.main_first(world, lambda: prepare_run(out, what, settings, fc, overwrite))
    if threads is None and world.distributed:
        threads = world.default_threads()
    if threads:
        torch.set_num_threads(threads)
    return world


def _load(world: World, data, split: str, feature_cfg: FeatureConfig, progress: bool, **kwargs) -> Split:
    """A split, read (and its features cached) by rank 0 first, then by the others from the cache."""
    def load():
        return load_split(data, split, feature_cfg, progress=progress and world.is_main, **kwargs)

    got = distributed.main_first(world, load)
    return load() if got is None else got


class _Step(torch.nn.Module):
    """A training step's loss as a module's forward, so DistributedDataParallel sees the model run."""

    def __init__(self, model, step_fn):
        super().__init__()
        self.model, self.step_fn = model, step_fn

    def forward(self, idx, part, g, ep):
        return self.step_fn(idx, part, g, ep)


def _slices(n: int, world: World) -> list[tuple[int, int]]:
    """The ranks' contiguous slices of a batch of ``n``: equal when ``n`` divides (every full batch), else the
    first ``n % size`` ranks one more."""
    q, r = divmod(n, world.size)
    starts = [k * q + min(k, r) for k in range(world.size + 1)]
    return list(zip(starts[:-1], starts[1:]))


def _fit(model, out: Path, fc: FitConfig, train: Split, val: Split, step_fn, val_fn, progress: bool, tag: str,
         world: World = World(), log_steps: int = 0, own_noise: bool = False):
    """Shared epoch loop: resumes from out/last -- torch's generator included, so dropout and noise draw what an
    uninterrupted run draws -- and keeps the best validation score in out/best.

    ``step_fn(idx, part, g, ep)``: the mean loss over the items ``idx[part]`` of the batch ``idx`` (draws from
    ``g`` made for the whole batch, so they do not depend on ``part``). Under torchrun (``world``), each rank
    runs its slice of every batch through DistributedDataParallel; rank 0 alone writes. ``log_steps``: also log
    the whole batch's loss every this many steps (event "step"; 0: never). ``own_noise``: each rank draws its own
    noise (a VAE's); the checkpoint keeps rank 0's generator, so on resuming the ranks are seeded apart again."""
    opt = torch.optim.AdamW(model.parameters(), lr=fc.lr, weight_decay=fc.weight_decay)
    state = load_checkpoint(out, model, opt) or {}   # every rank reads it: the same state everywhere
    epoch, best = int(state.get("epoch", 0)), float(state.get("best", -math.inf))
    if own_noise and epoch:
        torch.manual_seed(fc.seed + 1_000_003 * (world.rank + 1) + 7_919 * epoch)
    net = _Step(model, step_fn)
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net)
    log = JsonLog(out / "log.jsonl") if world.is_main else None
    steps_per_epoch = math.ceil(len(train.x) / fc.batch)
    total = fc.epochs * steps_per_epoch
    best_path = out / "best.safetensors"
    for ep in range(epoch, fc.epochs):
        model.train()
        g = torch.Generator().manual_seed(fc.seed * 1000 + ep)
        bar = progress_bar(progress and world.is_main, total=steps_per_epoch, desc=f"{tag} epoch {ep + 1}/{fc.epochs}",
                           unit="batch", mininterval=10)
        t0, losses = time.time(), []
        for i, idx in enumerate(_batches(len(train.x), fc.batch, g)):
            step = ep * steps_per_epoch + i
            lr = fc.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = lr
            if world.distributed:
                start, stop = _slices(len(idx), world)[world.rank]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fc.bf16), \
                        batch_slice(start, stop, len(idx)):
                    loss = net(idx, slice(start, stop), g, ep)
                # DDP averages the ranks' gradients: weigh each rank's mean by its share of the batch, so the
                # average is the whole batch's mean (a slice may be short, or empty, in an epoch's last batch)
                share = (stop - start) / len(idx)
                if (stop - start) * world.size != len(idx):
                    loss = loss * (share * world.size)
                part_loss = loss.item() / world.size if stop > start else 0.0
            else:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fc.bf16):
                    loss = net(idx, slice(None), g, ep)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(part_loss if world.distributed else loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]) * world.size:.3f}")
        bar.close()
        if world.distributed:   # the whole batches' losses: the ranks' parts summed
            losses = distributed.all_reduce_sum(world, torch.tensor(losses, dtype=torch.float64)).tolist()
        score = val_fn()
        if world.is_main:
            if log_steps:
                for i, value in enumerate(losses):
                    if (ep * steps_per_epoch + i) % log_steps == 0:
                        log.write(event="step", step=ep * steps_per_epoch + i + 1, epoch=ep + 1, loss=value)
            log.write(event="epoch", epoch=ep + 1, loss=round(float(np.mean(losses)), 4), val=round(score, 4),
                      seconds=round(time.time() - t0, 1))
        if score > best:   # the same score on every rank, so the same decision
            best = score
            if world.is_main:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(best_path))
        if world.is_main:
            save_checkpoint(out, model, opt, None, {"epoch": ep + 1, "best": best}, rng=True)
    from safetensors.torch import load_file

    distributed.barrier(world)   # rank 0's best.safetensors is written
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
                     overwrite: bool = False, words=None, world: World | None = None, log_steps: int = 0) -> dict:
    """Train a classifier preset (classifier | classifier-separate | classifier-paper) on ``data``; write
    ``out/model.safetensors`` + card and ``out/confusion.png``. Returns the card's metrics. ``out``: see
    :func:`prepare_run`. ``words``: the vocabulary (a list of words in label order, each a folder of ``data``;
    ``_unknown_`` / ``_silence_`` among them collect the other words / background noise), default the 35.
    ``world``: the torchrun world (default: the one this process is in; see the module's doc) -- every rank
    returns the metrics, rank 0 alone writes. ``log_steps``: see :func:`_fit`."""
    out = Path(out)
    labels = task_labels(words if words is not None else "35")
    world = _start(out, "classifier", {"preset": preset, "arch": arch, "data": str(Path(data).resolve()),
                                       "features": feature_cfg.to_dict(),
                                       **({"words": list(labels)} if words is not None else {})},
                   fc, overwrite, world, threads)
    cfg = CLASSIFIER_PRESETS[preset] if arch is None else dataclasses.replace(CLASSIFIER_PRESETS[preset], arch=arch)
    cfg = dataclasses.replace(cfg, labels=tuple(labels), n_classes=len(labels))
    task = labels if words is not None else "35"
    train = _load(world, data, "training", feature_cfg, progress, task=task)
    val = _load(world, data, "validation", feature_cfg, progress, task=task)
    torch.manual_seed(fc.seed)
    model = Classifier(cfg, feature_cfg)
    model.norm.set_stats(train.x[:5000])
    rank_independent(model, world)
    augment = FeatureAugment(noise_log_mels(data, feature_cfg, seed=fc.seed, skip=fc.augment_skip_noise),
                             feature_cfg) if fc.augment else None

    def step_fn(idx, part, g, ep):
        x = train.x[idx]
        if augment is not None:
            x = augment(x, g)   # the whole batch, so an item's draws do not depend on the rank's slice
        return F.cross_entropy(model(x[part]).float(), train.y[idx[part]], label_smoothing=fc.label_smoothing)

    def val_fn():
        return classification_metrics(predict_shared(world, model, val.x), val.y, labels)["accuracy"]

    t0 = time.time()
    best = _fit(model, out, fc, train, val, step_fn, val_fn, progress, preset, world, log_steps)
    test = _load(world, data, "testing", feature_cfg, progress, task=task)
    metrics = classification_metrics(predict_shared(world, model, test.x), test.y, labels)
    # seconds: every call's epochs (a resumed run's too); seconds_this_call: this call, measuring included
    card = {"preset": preset, "training": dict(fc.to_dict(), best_val_accuracy=best,
                                               seconds=JsonLog(out / "log.jsonl").epoch_seconds(),
                                               seconds_this_call=round(time.time() - t0), **world.describe()),
            "training_data": dict(_corpus_info(data), train_clips=len(train.x), val_clips=len(val.x), test_clips=len(test.x)),
            "metrics": {"test_accuracy": metrics["accuracy"], "val_accuracy": best, "test_clips": metrics["n"],
                        "per_class_accuracy": metrics["per_class_accuracy"]},
            "confusion_png": "confusion.png", "feature_range": feature_range(train.x)}

    def write():
        plot_confusion(metrics["confusion"], labels, out / "confusion.png",
                       f"{preset} ({cfg.arch}) on the test split: accuracy {metrics['accuracy']:.3f}")
        save_classifier(model, out / "model", **card)
        (out / "confusion.json").write_text(json.dumps(metrics["confusion"]))

    distributed.main_first(world, write)
    return card["metrics"]


def train_prior(data, out, preset: str = "prior", fc: FitConfig = FitConfig(lr=1e-3, augment=False),
                feature_cfg: FeatureConfig = FeatureConfig(), classifier=None, progress: bool = True,
                threads: int | None = None, overwrite: bool = False, world: World | None = None,
                log_steps: int = 0) -> dict | None:
    """Train a prior preset (prior = VAE | prior-paper = deterministic AE); measure on the test split the
    reconstruction error and, given a classifier, its accuracy on reconstructions and the classes that
    decoded z ~ N(0, I) fall into. ``out``: see :func:`prepare_run`. ``world``: the torchrun world (default:
    the one this process is in; see the module's doc) -- rank 0 measures, writes and returns the metrics, the
    other ranks return None. ``log_steps``: see :func:`_fit`."""
    out = Path(out)
    world = _start(out, "prior", {"preset": preset, "data": str(Path(data).resolve()),
                                  "features": feature_cfg.to_dict()}, fc, overwrite, world, threads)
    cfg = PRIOR_PRESETS[preset]
    train = _load(world, data, "training", feature_cfg, progress)
    val = _load(world, data, "validation", feature_cfg, progress)
    torch.manual_seed(fc.seed)
    model = Prior(cfg, feature_cfg)
    model.norm.set_stats(train.x[:5000])
    rank_independent(model, world)
    if world.distributed and model.is_variational:
        torch.manual_seed(fc.seed + 1_000_003 * (world.rank + 1))   # each rank its own latent noise

    def step_fn(idx, part, g, ep):
        beta = min(1.0, (ep + 1) / max(fc.kl_warmup_epochs, 1))
        return model.loss(train.x[idx[part]], beta=beta)[0]

    @torch.no_grad()
    def val_fn():
        model.eval()
        return -float(np.mean(_chunks(world, len(val.x), lambda a, b: model.loss(val.x[a:b])[0].item())))

    t0 = time.time()
    best = _fit(model, out, fc, train, val, step_fn, val_fn, progress, preset, world, log_steps,
                own_noise=world.distributed and model.is_variational)

    def measure_and_write():
        test = load_split(data, "testing", feature_cfg, progress=progress)
        # a classifier with a vocabulary of its own (train classifier --words) is scored on its own labels
        own = classifier is not None and tuple(classifier.cfg.labels) != tuple(task_labels("35"))
        clf_test = (load_split(data, "testing", feature_cfg, task=list(classifier.cfg.labels), progress=progress)
                    if own else None)
        metrics = prior_metrics(model, test, classifier, classifier_test=clf_test)
        card = {"preset": preset, "training": dict(fc.to_dict(), best_val_neg_loss=best,
                                                   seconds=JsonLog(out / "log.jsonl").epoch_seconds(),
                                                   seconds_this_call=round(time.time() - t0), **world.describe()),
                "training_data": dict(_corpus_info(data), train_clips=len(train.x)), "metrics": metrics,
                "why_this_decoder": ("frame-wise 1-D conv decoder (linear -> nearest x2 -> conv1d -> ReLU, twice -> "
                                     "conv1d): only GEMM-shaped ops, so the fused latent-maximization backward keeps "
                                     "each sample's activations in cache" if cfg.arch == "vae"
                                     else "the seed paper's deterministic conv AE")}
        save_prior(model, out / "model", **card)
        return metrics

    return distributed.main_first(world, measure_and_write)   # the test split is one pass: rank 0 alone


@torch.no_grad()
def prior_metrics(model: Prior, test: Split, classifier: Classifier | None, n_random: int = 2000, seed: int = 0,
                  classifier_test: Split | None = None) -> dict:
    """Reconstruction error on ``test``; given a classifier, its accuracy on the reconstructions and originals
    of ``classifier_test`` (default ``test``: the split with the classifier's own labels, when they are not the
    corpus's 35) and the classes decoded z ~ N(0, I) fall into."""
    model.eval()
    reconstruct = lambda x: torch.cat([model.reconstruct(x[i:i + 512]) for i in range(0, len(x), 512)])  # noqa: E731
    rec = reconstruct(test.x)
    out = {"test_recon_mse": round(float(((rec - test.x) ** 2).mean()), 4)}
    if classifier is not None:
        check_compatible(classifier.feature_config, model.feature_config, "classifier", "prior")
        labels = classifier.cfg.labels
        ct = test if classifier_test is None else classifier_test
        crec = rec if classifier_test is None else reconstruct(ct.x)
        out["classifier_accuracy_on_reconstructions"] = classification_metrics(predict(classifier, crec), ct.y, labels)["accuracy"]
        out["classifier_accuracy_on_originals"] = classification_metrics(predict(classifier, ct.x), ct.y, labels)["accuracy"]
        if model.is_variational:
            g = torch.Generator().manual_seed(seed)
            pred = predict(classifier, model.sample(n_random, generator=g)).argmax(-1)
            counts = torch.bincount(pred, minlength=len(labels))
            out["random_z_classes_covered"] = int((counts > 0).sum())
            out["random_z_class_counts"] = {labels[i]: int(c) for i, c in enumerate(counts)}
    return out
