"""The evaluation: the seed paper's experiments with uncertainty, and the controls that isolate the vocoder.

:func:`evaluate` runs, on the shipped defaults or any models given, one module a step:

1. noise -> class (:mod:`.noise`) in features and latent modes, with the paper's recipe and with speechmax's:
   the separate classifier's mean-softmax heatmap per target (the paper's Fig. 5) and the per-class success
   rate (classifier *and* separate classifier give the target) with bootstrap 95% intervals;
2. the vocoder control (:mod:`.control`): the separate classifier on the pre-vocoder features, and on the same
   samples after WaveNet and after Griffin-Lim, re-featurized from audio -- for real clips and maximized
   samples, per class;
3. class to class (:mod:`.class_to_class`): real clips of word A climbed toward every word B, the success matrix;
4. figures (:mod:`.latents`): t-SNE of latents (Fig. 4), spectrogram grids before/after (Fig. 2), the heatmaps
   and success charts of steps 1 and 3;
5. a listening set for ``speechmax listen`` (:mod:`.listening`: maximized samples, hidden references,
   low-quality anchors);
6. anomalies (:mod:`.debugging`): per word, how its maximized samples depart from its real clips (band energy
   in Hz, placement in time, noise floor, the separate classifier's confusions; effect sizes with bootstrap
   intervals, :mod:`.anomaly`), and each misclassified real clip beside the prototypes of its true and its
   predicted word (:mod:`.prototypes`);
7. a debugging summary in words (:mod:`.report`); everything in ``metrics.json`` and ``report.html``.

What an interrupted run keeps, and how a rerun takes it up, is :mod:`.resume`.
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__, distributed
from ..maximize.recipes import DEFAULT_RECIPE, RECIPES
from ..outputs import prepare_output, write_json
from .class_to_class import class_to_class
from .control import vocoder_control
from .debugging import debug_anomalies
from .inputs import EvalModels, eval_clips, load_models, predict, predict_separate, spec_name
from .latents import draw_figures, tsne
from .listening import listening_set
from .noise import noise_to_class, plan_noise, shard_noise
from .report import debugging_summary, write_report
from .resume import RUN_MARKER, is_evaluation
from .timing import Stage

log = logging.getLogger(__name__)

QUICK_PER_CLASS = 20
# stages after noise -> class, a unit each of the overall bar (noise -> class: a unit per target and run)
LATER_STAGES = ("vocoder control", "class-to-class features", "class-to-class latent", "figures", "t-SNE",
                "listening set", "anomalies")


def evaluate(out, *, per_class: int | None = None, quick: bool = False, data=None,
             models: EvalModels | dict | None = None, speakers: int | None = None, seed: int = 0,
             threads: int | None = None, listen_per_class: int | None = None, control_per_class: int | None = None,
             c2c_per_class: int | None = None, steps: int | None = None, recipe: str = DEFAULT_RECIPE,
             quiet: bool = False, overwrite: bool = False, progress=None, world=None) -> dict | None:
    """Run the evaluation into ``out`` (report.html, metrics.json, figures/, listening/); returns the metrics.

    ``out`` is new or empty, or a previous evaluation with the same settings, which this one resumes (finished
    noise runs are kept in out/partial/); anything else is refused (:class:`~speechmax.outputs.OutputFolderError`)
    before any model is loaded, unless ``overwrite``. models: :class:`EvalModels`, or the names
    :func:`load_models` takes (a dict; default the shipped ones), loaded once ``out`` is accepted.

    per_class: noise starts per class and recipe/mode (default 10,000 as in the paper; ``quick`` 20).
    data: a corpus whose test split is used; None builds a fresh corpus of ``speakers`` unseen speakers
    (default 30; quick 8). listen_per_class / control_per_class / c2c_per_class: samples per class in the
    listening set, the vocoder control, and real clips per word climbed toward every word (defaults 3 / 10 /
    3; quick 1 / 2 / 1). steps: ascent steps of speechmax's recipe (default 60; the paper's keeps 20).
    recipe: the recipe (:data:`speechmax.maximize.RECIPES`) of the parts that use one -- class to class, the
    vocoder control and the listening set; noise -> class always compares every recipe.
    progress: the run's overall bar, or None for none: a callable given tqdm's keywords (total, initial, desc,
    unit) once the clips are ready, returning a bar with ``update(n)`` and ``close()`` --
    :func:`speechmax.progress.progress_bar` (what the CLI passes) for a tqdm bar with an ETA across targets.
    Its units are every target of every noise run plus one per later stage; the targets resumed from
    out/partial/ are its ``initial``, so the ETA counts only the work left. Stages advance it as they finish;
    the per-run bars (shown unless ``quiet``) are cleared under it.
    world: the torchrun world (:mod:`speechmax.distributed`; default: the one this process is in). With more
    than one rank, every rank computes its share of the noise runs' pieces (by target) into out/partial/, then
    rank 0 alone does the rest, with the threads of its machine's ranks, and returns the metrics; the other ranks
    return None. The result is the same for
    any world size (start j's noise depends only on the seed and j); threads default to this machine's cores
    divided among its ranks.
    """
    t_start = time.perf_counter()
    out = Path(out)
    per_class = int(per_class if per_class is not None else (QUICK_PER_CLASS if quick else 10_000))
    speakers = int(speakers if speakers is not None else (8 if quick else 30))
    listen_k = int(listen_per_class if listen_per_class is not None else (1 if quick else 3))
    control_k = int(control_per_class if control_per_class is not None else (2 if quick else 10))
    c2c_k = int(c2c_per_class if c2c_per_class is not None else (1 if quick else 3))
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of: {', '.join(RECIPES)}")
    for name, v in (("per_class", per_class), ("speakers", speakers), ("listen_per_class", listen_k),
                    ("control_per_class", control_k), ("c2c_per_class", c2c_k)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if isinstance(models, EvalModels):
        names = models.names
    else:
        names = {k: str(p.default) for k, p in inspect.signature(load_models).parameters.items()}
        names.update({k: spec_name(v) for k, v in (models or {}).items()})
    settings = {"command": "evaluate", "quick": quick, "per_class": per_class,
                "data": None if data is None else str(Path(data).resolve()), "speakers": speakers, "seed": seed,
                "listen_per_class": listen_k, "control_per_class": control_k, "c2c_per_class": c2c_k,
                "steps": steps, "recipe": recipe, "models": names}
    world = distributed.current() if world is None else world
    distributed.check_same_settings(world, settings)   # every rank runs the same evaluation, or none writes

    def accept_out():
        prepare_output(out, RUN_MARKER, settings, what="speechmax evaluation", overwrite=overwrite,
                       legacy=is_evaluation)
        write_json(out / RUN_MARKER, {"settings": settings})
        (out / "figures").mkdir(exist_ok=True)

    distributed.main_first(world, accept_out)
    fig_dir = out / "figures"
    if threads is None and world.distributed:
        threads = world.default_threads()   # the cores shared among this machine's ranks
    if threads is not None:
        torch.set_num_threads(int(threads))
    if not isinstance(models, EvalModels):
        models = load_models(**(models or {}))
    labels = models.labels
    if world.distributed:
        # every rank does its share of the noise runs' pieces; rank 0 then finds them all on disk and goes on
        # alone (the later stages are small next to the noise runs)
        plan = plan_noise(out, models, recipe, per_class, seed, steps, max(listen_k, control_k), len(labels),
                          by_target=True)
        mine = shard_noise(plan, models, len(labels), world, seed=seed, steps=steps, threads=threads, quiet=quiet)
        done = distributed.gather(world, mine)
        distributed.barrier(world)
        if not world.is_main:
            return None
        if not quiet:
            log.info("noise pieces by rank: %s", done)
        # rank 0 goes on alone: it takes the threads of this machine's ranks, idle from here
        threads = int(threads or torch.get_num_threads()) * world.local_size
        torch.set_num_threads(threads)
    timing: dict = {}
    metrics = {"version": __version__, "settings": {
        "quick": quick, "per_class": per_class, "seed": seed, "threads": torch.get_num_threads(),
        **world.describe(),
        "listen_per_class": listen_k, "control_per_class": control_k, "c2c_per_class": c2c_k,
        "models": models.names, "vocoder_note": models.vocoder_note, "labels": list(labels),
        "separate_labels": list(models.separate_labels), "unscored": models.unscored(),
        "recipe": recipe, "recipes": {k: {"steps": steps if steps and k == "speechmax" else r.steps, "about": r.about}
                                      for k, r in RECIPES.items()}}}

    with Stage(timing, "clips", quiet):
        clips = eval_clips(data, out, speakers, seed, models.classifier.feature_config, labels)
        clip_pred = predict(models.classifier, clips.mels, clips.waves)
        on = np.isin(clips.labels, models.scored_classes())
        metrics["data"] = {"source": clips.source, "clips": int(len(clips.labels)),
                           "speakers": len(set(clips.speakers)), "labels_without_clips": clips.missing,
                           "classifier_accuracy": round(float((clip_pred == clips.labels).mean()), 4),
                           "separate_accuracy": round(float((predict_separate(models, clips.mels[on], clips.waves[on])
                                                             == clips.labels[on]).mean()), 4) if on.any() else None}

    # what out/partial/ holds is done already: the overall bar starts there, so its ETA counts the work left
    plan = plan_noise(out, models, recipe, per_class, seed, steps, max(listen_k, control_k), len(labels),
                      by_target=world.distributed)
    bar = progress(total=len(plan.runs) * len(labels) + len(LATER_STAGES), initial=plan.units_done,
                   desc="evaluate", unit="unit") if progress else None
    tick = bar.update if bar is not None else (lambda n: None)
    shared = dict(seed=seed, steps=steps, threads=threads, timing=timing, quiet=quiet, advance=tick)
    try:
        # 1. noise -> class; each finished run is kept in out/partial/, so an interrupted long run resumes
        metrics["noise_to_class"], keep, earlier = noise_to_class(plan, models, labels, recipe=recipe, **shared)

        # 2. the vocoder control, on real clips and the noise samples of step 1
        with Stage(timing, "vocoder control", quiet, tick):
            metrics["vocoder_control"], control_figure, audio = vocoder_control(
                models, clips, keep, control_k, labels, seed, threads, quiet, fig_dir)

        # 3. class to class
        metrics["class_to_class"], c2c_runs, src = class_to_class(models, clips, c2c_k, recipe, **shared)

        # 4. figures
        with Stage(timing, "figures", quiet, tick):
            figs = draw_figures(metrics["noise_to_class"], metrics["class_to_class"], keep, labels, fig_dir,
                                per_class, recipe)
        with Stage(timing, "t-SNE", quiet, tick):
            figs["t-SNE"], metrics["tsne"] = tsne(c2c_runs["latent"][0], clips, src, clip_pred, labels, fig_dir,
                                                  seed)
        figs["vocoder control"] = control_figure

        # 5. the listening set: samples of steps 1 and 3, reusing the audio of step 2
        with Stage(timing, "listening set", quiet, tick):
            metrics["listening_set"] = listening_set(models, clips, keep, c2c_runs, src, audio, listen_k, labels,
                                                     out / "listening", seed, threads, quiet)

        # 6. anomalies: maximized samples against real clips, misclassified clips against the prototypes
        with Stage(timing, "anomalies", quiet, tick):
            metrics["anomalies"], metrics["misclassified"], found = debug_anomalies(
                models, clips, clip_pred, keep, metrics["noise_to_class"], labels, recipe, seed, fig_dir)
            figs.update(found)

        # 7. the debugging summary, metrics.json and report.html
        metrics["summary"] = debugging_summary(metrics, labels)
        timing["this sitting"] = round(time.perf_counter() - t_start, 2)
        timing["total"] = round(timing["this sitting"] + earlier, 2)
        metrics["timing"] = timing
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
        write_report(out / "report.html", metrics, figs)
        return metrics
    finally:
        if bar is not None:
            bar.close()
