"""Step 1, noise -> class: every recipe in both modes climbs ``per_class`` noise starts toward every word.

A run's summary: the success rate per class (the classifier *and* the separate classifier give the target)
with bootstrap 95% intervals, both classifiers' mean-softmax heatmaps (the paper's Fig. 5) and the objective
before and after. For the recipe the later steps use, the first starts of every target keep their features
(before and after), which the vocoder control and the listening set vocode and the figures draw.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..machine import cpu_model
from ..maximize import maximize
from ..maximize.recipes import RECIPES
from ..models.inference import in_label_columns, label_index
from ..progress import progress_bar
from .resume import PartialRun, run_key
from .stats import rounded, success_rates
from .timing import Stage

log = logging.getLogger(__name__)

MODES = ("features", "latent")
KEEP_LIMIT = 8000         # starts a run may keep the features of (8000 x 80 x 101 x 4 B x 2 = 520 MB)
# Starts per piece of a run done in pieces, when a target has more (two of maximize's chunks of 1024): torchrun's
# ranks share out (target, block) pieces, so even one target's starts spread over ranks
BLOCK = 2048


def blocks(per_class: int) -> list[tuple[int, int]]:
    """A target's starts as pieces: (first, end) ranges of at most :data:`BLOCK` starts."""
    return [(a, min(per_class, a + BLOCK)) for a in range(0, per_class, BLOCK)]


def _key(block: tuple[int, int], per_class: int) -> tuple[int, int] | None:
    """How a piece is kept on disk: a whole target as the target (None), a block by its starts."""
    return None if block == (0, per_class) else block


def maximize_recipe(models, mode: str, recipe: str, threads, progress, steps=None, targets="all", **kw):
    """maximize() with the recipe's prior; ``progress``: True for a bar of its own that is cleared once done
    (it sits under the evaluation's overall bar)."""
    prior = None if mode == "features" else (models.prior_paper if recipe == "paper" else models.prior)
    steps = steps if recipe == "speechmax" else None   # --steps tunes speechmax's recipe; the paper's is fixed
    run = lambda tick: maximize(models.classifier, targets, mode=mode, prior=prior,  # noqa: E731
                                separate=models.separate, threads=threads, progress=tick, recipe=recipe,
                                steps=steps, **kw)
    if progress is not True:
        return run(progress)
    n = len(kw["init"]) if kw.get("init") is not None else kw.get("n", 1)
    total = n * (models.classifier.cfg.n_classes if targets == "all" else 1) * (steps or RECIPES[recipe].steps)
    with progress_bar(total=total, unit="step", unit_scale=True, desc=f"maximize {recipe}/{mode}",
                      leave=False) as bar:
        return run(bar.update)


def run_stats(res, n_classes: int) -> dict:
    """The part of a maximize() result a noise run's summary needs, small enough to keep on disk (about 50 KB
    per 10,000 starts): each start's target and both classifiers' top class, per-target sums of both softmaxes,
    the objective's sums before and after, the number of starts stopped. Stats of pieces add up
    (:func:`merge_stats`)."""
    t = res.targets.numpy()
    dtype = np.uint8 if n_classes <= 255 else np.int32
    out = {"targets": t.astype(dtype), "count": np.bincount(t, minlength=n_classes).astype(np.int64)}
    for key, probs in (("classifier", res.probs_after), ("separate", res.separate_after)):
        probs = probs.numpy().astype(np.float64)
        pred = probs.argmax(-1)
        if key == "separate" and res.separate_labels is not None:
            # in the classifier's labels: its top class by index (-1, a label the classifier lacks, never a
            # target; stored as the dtype's largest value), the heatmap's columns its softmax of those labels
            pred = label_index(res.separate_labels, res.labels)[pred]
            pred = np.where(pred < 0, np.iinfo(dtype).max, pred)
            probs = in_label_columns(probs, res.labels, res.separate_labels)
        out[f"pred_{key}"] = pred.astype(dtype)
        sums = np.zeros((n_classes, n_classes))
        for c in np.unique(t):
            sums[c] = probs[t == c].sum(0)
        out[f"sum_{key}"] = sums
    traj = res.trajectory.numpy().astype(np.float64)
    first, last = traj[:, 0], traj[:, -1]
    out["objective"] = np.array([np.nansum(first), np.isfinite(first).sum(), np.nansum(last), np.isfinite(last).sum()])
    out["stopped"] = np.array([len(res.nan_stopped)], dtype=np.int64)
    return out


def merge_stats(parts: list) -> dict:
    cat = ("targets", "pred_classifier", "pred_separate")
    return {k: np.concatenate([p[k] for p in parts]) if k in cat else sum(p[k] for p in parts) for k in parts[0]}


def stats_summary(stats: dict, settings: dict, labels, seed: int) -> dict:
    """A noise run's metrics: success rates with CIs, both mean-softmax heatmaps, the objective, settings."""
    t = stats["targets"].astype(np.int64)
    out = success_rates(t, stats["pred_classifier"].astype(np.int64), stats["pred_separate"].astype(np.int64),
                        labels, seed=seed, scored=settings.get("separate_shared_labels"))
    n = stats["count"].astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["heatmap_separate"] = rounded(np.where(n > 0, stats["sum_separate"] / n, np.nan))
        out["heatmap_classifier"] = rounded(np.where(n > 0, stats["sum_classifier"] / n, np.nan))
    o = stats["objective"]
    out["objective"] = {"before": round(float(o[0] / o[1]), 4) if o[1] else None,
                        "after": round(float(o[2] / o[3]), 4) if o[3] else None}
    out["nan_stopped"] = int(stats["stopped"][0])
    out["settings"] = {k: v for k, v in settings.items() if k not in ("seed",)}
    return out


def run_summary(res, labels, seed: int) -> dict:
    """Metrics of one maximize() result with targets."""
    return stats_summary(run_stats(res, len(labels)), res.settings, labels, seed)


def noise_piece(partial: PartialRun, c: int, models, mode: str, recipe: str, threads, progress, steps,
                per_class: int, seed: int, n_classes: int, block: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """Target ``c`` of a noise run -- its starts ``block`` = (first, end), default all ``per_class`` -- as its
    :func:`run_stats` and meta (seconds, the run's settings, cpu), saved by ``partial``."""
    first, end = block or (0, per_class)
    t0 = time.perf_counter()
    res = maximize_recipe(models, mode, recipe, threads, progress, steps, n=end - first, seed=seed, targets=c,
                          keep_features=False, score_before=False, first_start=first)
    stats = run_stats(res, n_classes)
    settings = dict({k: v for k, v in res.settings.items() if k != "first_start"}, n=per_class)   # the run's
    meta = {"seconds": round(time.perf_counter() - t0, 4), "settings": settings, "cpu": cpu_model()}
    partial.save_target(c, stats, meta, _key((first, end), per_class))
    return stats, meta


def shard_noise(plan: "NoisePlan", models, n_classes: int, world, *, seed: int, steps, threads, quiet: bool,
                advance=None) -> int:
    """This rank's share of the plan's unfinished noise runs under torchrun: the pieces (run, target, block of
    starts) whose place in the list of all pieces the world gives this rank
    (:meth:`~speechmax.distributed.World.owns`), skipping those on disk; each saved as it finishes, so a rank that
    dies loses only the piece it was on. Returns the number computed."""
    done, per = 0, plan.per_class
    bl = blocks(per)
    for r, run in enumerate(plan.runs):
        if run.finished is not None:
            continue
        for c in range(n_classes):
            for k, b in enumerate(bl):
                if not world.owns((r * n_classes + c) * len(bl) + k) or run.partial.has_target(c) \
                        or run.partial.has_target(c, _key(b, per)):
                    continue
                if not quiet:
                    log.info("noise %s: target %d of %d, starts %d-%d (rank %d of %d)", run.name, c + 1, n_classes,
                             b[0], b[1] - 1, world.rank, world.size)
                noise_piece(run.partial, c, models, run.mode, run.recipe, threads, False, steps, per, seed,
                            n_classes, block=b)
                done += 1
                if advance is not None:
                    advance((b[1] - b[0]) / per)
    return done


def maximize_by_target(partial: PartialRun, name: str, models, mode: str, recipe: str, threads, progress, steps,
                       per_class: int, seed: int, labels, quiet: bool, advance=None):
    """A noise run done one piece at a time -- a target, or a block of its starts when it has more than
    :data:`BLOCK` -- each piece's :func:`run_stats` kept by ``partial`` as it finishes (start j's noise depends on
    the seed and j only, so the pieces equal the run done at once). Returns the run's summary and the seconds of
    compute its pieces took, including earlier sittings'. advance: optional callable(n), called with the share of
    a target each piece this sitting computes is, as it is saved (pieces resumed from disk are not counted: they
    are the overall bar's ``initial``)."""
    parts, seconds, by_cpu, resumed, settings = [], 0.0, {}, 0, None
    for c in range(len(labels)):
        whole = partial.load_target(c)   # a whole target: its only piece, or kept whole before blocks existed
        pieces, computed = ([whole] if whole is not None else []), 0
        for b in ([] if whole is not None else blocks(per_class)):
            got = partial.load_target(c, _key(b, per_class))
            if got is None:
                if not quiet:
                    log.info("noise %s: target %d of %d (%s), starts %d-%d", name, c + 1, len(labels), labels[c],
                             b[0], b[1] - 1)
                got = noise_piece(partial, c, models, mode, recipe, threads, progress, steps, per_class, seed,
                                  len(labels), block=b)
                computed += 1
                if advance is not None:
                    advance((b[1] - b[0]) / per_class)
            pieces.append(got)
        resumed += not computed
        for stats, meta in pieces:
            parts.append(stats)
            seconds += meta["seconds"]
            cpu = meta.get("cpu", "not recorded")   # pieces before 2026-11-30 did not say
            by_cpu[cpu] = round(by_cpu.get(cpu, 0.0) + meta["seconds"], 4)
            settings = settings or meta["settings"]
    if resumed and not quiet:
        log.info("noise %s: %d of %d targets resumed from %s", name, resumed, len(labels), partial.folder)
    summary = stats_summary(merge_stats(parts), settings, labels, seed)
    summary["seconds_by_cpu"] = by_cpu
    return summary, round(seconds, 4)


def first_per_target(res, k: int) -> np.ndarray:
    """Indices of the first ``k`` starts of every target in a noise run (targets in class order)."""
    return np.flatnonzero(res.start.numpy() < k)


@dataclass
class NoiseRun:
    name: str                  # recipe/mode
    recipe: str
    mode: str
    partial: PartialRun
    finished: tuple | None     # (summary, kept features or None) from an earlier sitting


@dataclass
class NoisePlan:
    """The four noise runs and what earlier sittings left of them."""
    runs: list
    per_class: int
    k_keep: int                # starts per target whose features the later steps need
    by_target: bool            # too big to keep at once: one target at a time, each kept on disk
    units_done: float          # targets already done, blocks as shares (the overall bar's ``initial``)


def plan_noise(out, models, recipe: str, per_class: int, seed: int, steps, k_keep: int, n_classes: int,
               by_target: bool = False) -> NoisePlan:
    """Every recipe x mode, each with what out/partial/ holds of it under its key. A run too big to keep at once
    is done one target at a time, each kept on disk; so is every run with ``by_target`` (under torchrun) or when
    pieces of one are on disk already (an interrupted run, resumed with any world size)."""
    runs = []
    for run_recipe in RECIPES:
        for mode in MODES:
            name = f"{run_recipe}/{mode}"
            partial = PartialRun(out, name, run_key(models, run_recipe, mode, per_class, seed, steps, k_keep))
            runs.append(NoiseRun(name, run_recipe, mode, partial, partial.load(want_kept=run_recipe == recipe)))
    bl = blocks(per_class)
    pieces = [run.partial.targets_done(n_classes, bl if len(bl) > 1 else None) if run.finished is None else 0
              for run in runs]
    by_target = by_target or per_class * n_classes > KEEP_LIMIT or any(pieces)
    done = sum(n_classes if run.finished is not None else (p if by_target else 0) for run, p in zip(runs, pieces))
    return NoisePlan(runs, per_class, k_keep, by_target, done)


def noise_to_class(plan: NoisePlan, models, labels, *, recipe: str, seed: int, steps, threads, timing: dict,
                   quiet: bool, advance):
    """Run (or resume) the plan's noise runs. Returns their summaries by name, the kept features of ``recipe``'s
    runs by mode ({before, after, targets, start}) and the seconds of compute earlier sittings measured for
    what this one resumed. Each run's seconds go in ``timing`` as ``noise <name>``; ``advance(n)`` as targets
    finish."""
    C = len(labels)
    inner = not quiet   # the per-run bars
    noise, keep, earlier = {}, {}, 0.0
    for run in plan.runs:
        name, mode = run.name, run.mode
        if run.finished is not None:
            noise[name], kept = run.finished
            if kept is not None:
                keep[mode] = kept
            timing[f"noise {name}"] = noise[name]["seconds"]
            earlier += noise[name]["seconds"]
            if not quiet:
                log.info("noise %s: resumed from %s", name, run.partial.summary_file.parent)
            continue
        with Stage(timing, f"noise {name}", quiet):
            if plan.by_target:   # one target at a time, each kept on disk: hours of work resume where they stopped
                noise[name], seconds = maximize_by_target(run.partial, name, models, mode, run.recipe, threads, inner,
                                                          steps, plan.per_class, seed, labels, quiet, advance=advance)
                res = None
            else:
                res = maximize_recipe(models, mode, run.recipe, threads, inner, steps, n=plan.per_class, seed=seed)
                noise[name] = run_summary(res, labels, seed)
                advance(C)
            if run.recipe == recipe:
                k = min(plan.k_keep, plan.per_class)
                small = res if not plan.by_target else maximize_recipe(models, mode, run.recipe, threads, False,
                                                                       steps, n=k, seed=seed)
                sel = first_per_target(small, k)
                keep[mode] = dict(before=small.features_before[sel], after=small.features[sel],
                                  targets=small.targets[sel].numpy(), start=small.start[sel].numpy())
            del res
        # a run done in pieces over several sittings is timed by the compute its pieces measured
        if plan.by_target:
            earlier += max(0.0, seconds - timing[f"noise {name}"])
            timing[f"noise {name}"] = seconds
        noise[name]["seconds"] = timing[f"noise {name}"]
        run.partial.save(noise[name], keep.get(mode) if run.recipe == recipe else None)
    return noise, keep, earlier
