"""The evaluation: the seed paper's experiments with uncertainty, and the controls that isolate the vocoder.

:func:`evaluate` runs, on the shipped defaults or any models given:

1. noise -> class in features and latent modes, with the paper's preset and with speechmax's recipe:
   the separate classifier's mean-softmax heatmap per target (the paper's Fig. 5) and the per-class success
   rate (classifier *and* separate classifier give the target) with bootstrap 95% intervals;
2. the vocoder control: the separate classifier on the pre-vocoder features, and on the same samples after
   WaveNet and after Griffin-Lim, re-featurized from audio -- for real clips and maximized samples, per class;
3. class to class: real clips of word A climbed toward every word B, the success matrix;
4. figures: t-SNE of latents (Fig. 4), spectrogram grids before/after (Fig. 2);
5. a listening set for ``speechmax listen`` (maximized samples, hidden references, low-quality anchors);
6. a debugging summary in words; everything in ``metrics.json`` and ``report.html``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..features import log_mel, save_audio
from ..maximize.recipes import DEFAULT_RECIPE, RECIPES
from ..outputs import prepare_output, write_json
from ..progress import progress_bar
from . import figures
from .stats import pair_matrix, rounded, success_rates, top_confusions

log = logging.getLogger(__name__)

MODES = ("features", "latent")
QUICK_PER_CLASS = 20
EVAL_CORPUS_SEED = 7777   # a corpus seed no shipped model was trained on (1000 classifiers, 2000 vocoder)
KEEP_LIMIT = 8000         # starts a run may keep the features of (8000 x 80 x 101 x 4 B x 2 = 520 MB)
# stages after noise -> class, a unit each of the overall bar (noise -> class: a unit per target and run)
LATER_STAGES = ("class-to-class features", "class-to-class latent", "figures", "t-SNE", "vocoder control",
                "listening set")
RUN_MARKER = "run.json"   # an evaluation's settings, written before its compute: a rerun with them resumes


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
    from ..features import check_compatible
    from ..maximize.output import load_vocoder
    from ..models.registry import load_model

    clf = load_model(classifier, kind="classifier")
    sep = load_model(separate, kind="classifier")
    pri = load_model(prior, kind="prior")
    pp = load_model(prior_paper, kind="prior")
    voc, backend, why = load_vocoder(vocoder)
    for what, m in (("separate classifier", sep), ("prior", pri), ("paper prior", pp)):
        check_compatible(clf.feature_config, m.feature_config, "classifier", what)
    if voc.model is not None:
        check_compatible(clf.feature_config, voc.feature_config, "classifier", "vocoder")
    return EvalModels(clf, sep, pri, pp, voc, voc.model is not None, why,
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
    from ..data import SpeechCommands, build_corpus

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


class Stage:
    """Times a stage, logs it and records the seconds in ``timing``; ``advance(1)`` once it finished, if given."""

    def __init__(self, timing: dict, name: str, quiet: bool, advance=None):
        self.timing, self.name, self.quiet, self.advance = timing, name, quiet, advance

    def __enter__(self):
        self.t0 = time.perf_counter()
        if not self.quiet:
            log.info("%s ...", self.name)
        return self

    def __exit__(self, *exc):
        self.timing[self.name] = round(time.perf_counter() - self.t0, 2)
        if not self.quiet and exc[0] is None:
            log.info("%s: %.1f s", self.name, self.timing[self.name])
        if self.advance is not None and exc[0] is None:
            self.advance(1)


def _run_stats(res, n_classes: int) -> dict:
    """The part of a maximize() result a noise run's summary needs, small enough to keep on disk (about 50 KB
    per 10,000 starts): each start's target and both classifiers' top class, per-target sums of both softmaxes,
    the objective's sums before and after, the number of starts stopped. Stats of pieces add up
    (:func:`_merge_stats`)."""
    t = res.targets.numpy()
    dtype = np.uint8 if n_classes <= 255 else np.int32
    out = {"targets": t.astype(dtype), "count": np.bincount(t, minlength=n_classes).astype(np.int64)}
    for key, probs in (("classifier", res.probs_after), ("separate", res.separate_after)):
        probs = probs.numpy().astype(np.float64)
        out[f"pred_{key}"] = probs.argmax(-1).astype(dtype)
        sums = np.zeros((n_classes, n_classes))
        for c in np.unique(t):
            sums[c] = probs[t == c].sum(0)
        out[f"sum_{key}"] = sums
    traj = res.trajectory.numpy().astype(np.float64)
    first, last = traj[:, 0], traj[:, -1]
    out["objective"] = np.array([np.nansum(first), np.isfinite(first).sum(), np.nansum(last), np.isfinite(last).sum()])
    out["stopped"] = np.array([len(res.nan_stopped)], dtype=np.int64)
    return out


def _merge_stats(parts: list) -> dict:
    cat = ("targets", "pred_classifier", "pred_separate")
    return {k: np.concatenate([p[k] for p in parts]) if k in cat else sum(p[k] for p in parts) for k in parts[0]}


def _summary(stats: dict, settings: dict, labels, seed: int) -> dict:
    """A noise run's metrics: success rates with CIs, both mean-softmax heatmaps, the objective, settings."""
    t = stats["targets"].astype(np.int64)
    out = success_rates(t, stats["pred_classifier"].astype(np.int64), stats["pred_separate"].astype(np.int64),
                        labels, seed=seed)
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


def _run_summary(res, labels, seed: int) -> dict:
    """Metrics of one maximize() result with targets."""
    return _summary(_run_stats(res, len(labels)), res.settings, labels, seed)


def _maximize(models: EvalModels, mode: str, recipe: str, threads, progress, steps=None, targets="all", **kw):
    """maximize() with the recipe's prior; ``progress``: True for a bar of its own that is cleared once done
    (it sits under the evaluation's overall bar)."""
    from ..maximize import maximize

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


def _maximize_by_target(out: Path, name: str, key: str, models: EvalModels, mode: str, recipe: str, threads,
                        progress, steps, per_class: int, seed: int, labels, quiet: bool, advance=None):
    """A noise run done one target at a time, each target's :func:`_run_stats` saved in out/partial/ as it
    finishes (start j's noise depends on the seed and j only, so the pieces equal the run done at once).
    Returns the run's summary and the seconds of compute its pieces took, including earlier sittings'.
    advance: optional callable(n), called with 1 as each target this sitting computes is saved (targets
    resumed from disk are not counted: see :func:`_targets_done`)."""
    from safetensors.numpy import load_file, save_file

    folder = _target_folder(out, name, key)
    folder.mkdir(parents=True, exist_ok=True)
    parts, seconds, by_cpu, resumed, settings = [], 0.0, {}, 0, None
    for c in range(len(labels)):
        path = folder / f"target{c:03d}.safetensors"
        if path.is_file():
            stats = load_file(str(path))
            meta = json.loads(stats.pop("meta").tobytes().decode())
            resumed += 1
        else:
            if not quiet:
                log.info("noise %s: target %d of %d (%s)", name, c + 1, len(labels), labels[c])
            t0 = time.perf_counter()
            res = _maximize(models, mode, recipe, threads, progress, steps, n=per_class, seed=seed, targets=c,
                            keep_features=False, score_before=False)
            stats = _run_stats(res, len(labels))
            meta = {"seconds": round(time.perf_counter() - t0, 4), "settings": res.settings, "cpu": cpu_model()}
            del res
            tmp = path.with_suffix(".tmp")
            save_file({**stats, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}, str(tmp))
            tmp.replace(path)
            if advance is not None:
                advance(1)
        parts.append(stats)
        seconds += meta["seconds"]
        cpu = meta.get("cpu", "not recorded")   # pieces before 2026-11-30 did not say
        by_cpu[cpu] = round(by_cpu.get(cpu, 0.0) + meta["seconds"], 4)
        settings = settings or meta["settings"]
    if resumed and not quiet:
        log.info("noise %s: %d of %d targets resumed from %s", name, resumed, len(labels), folder)
    summary = _summary(_merge_stats(parts), settings, labels, seed)
    summary["seconds_by_cpu"] = by_cpu
    return summary, round(seconds, 4)


def _target_folder(out: Path, name: str, key: str) -> Path:
    return out / "partial" / f"noise-{name.replace('/', '-')}-{key}"


def _targets_done(out: Path, name: str, key: str, n_classes: int) -> int:
    """Targets of a by-target noise run already on disk (what :func:`_maximize_by_target` will resume)."""
    folder = _target_folder(out, name, key)
    return sum((folder / f"target{c:03d}.safetensors").is_file() for c in range(n_classes))


def cpu_model() -> str:
    """The CPU's model name (pieces of a long run may be measured on different machines), or the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "unknown"


def _first_per_target(res, k: int) -> np.ndarray:
    """Indices of the first ``k`` starts of every target in a noise run (targets in class order)."""
    return np.flatnonzero(res.start.numpy() < k)


def _synthesize(models: EvalModels, mels: torch.Tensor, seed: int, threads, wavenet: bool, desc: str, quiet: bool):
    """Batched synthesis of (N, n_mels, T) log-mels: WaveNet (``wavenet``) or Griffin-Lim; (N, samples) float32."""
    from ..vocoder.griffinlim import griffinlim_synthesize

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


@torch.no_grad()
def _predict(model, mels: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(mels[i:i + 512]).argmax(-1) for i in range(0, len(mels), 512)]).numpy() \
        if len(mels) else np.zeros(0, np.int64)


def _control_group(models, mels, words, audio_wn, audio_gl, labels, seed) -> dict:
    """Separate classifier on the features, after WaveNet and after Griffin-Lim (re-featurized from audio):
    how often it gives the intended word, per class, and how often the vocoded sample keeps its pre-vocoder
    prediction."""
    from .stats import bootstrap_rate

    cfg = models.classifier.feature_config
    rng = np.random.default_rng(seed)
    pre = _predict(models.separate, mels)
    out = {"n": int(len(words)), "features": bootstrap_rate(pre == words, rng)}
    per_class = {w: {"features": round(float((pre[words == c] == c).mean()), 4)}
                 for c, w in enumerate(labels) if (words == c).any()}
    for kind, audio in (("wavenet", audio_wn), ("griffinlim", audio_gl)):
        if audio is None:
            out[kind] = None
            continue
        post = _predict(models.separate, log_mel(torch.from_numpy(audio), cfg).float())
        out[kind] = bootstrap_rate(post == words, rng)
        out[kind]["agrees_with_features"] = round(float((post == pre).mean()), 4)
        for c, w in enumerate(labels):
            if (words == c).any():
                per_class[w][kind] = round(float((post[words == c] == c).mean()), 4)
    out["per_class"] = per_class
    return out


def _anchor(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A low-quality anchor: the clip low-passed at 1 kHz with white noise at 5 dB SNR."""
    from scipy.signal import butter, sosfilt

    sos = butter(6, 1000, "low", fs=sr, output="sos")
    x = sosfilt(sos, wave).astype(np.float32)
    p = float(np.mean(x ** 2)) + 1e-12
    x = x + rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(p / 10 ** 0.5)
    return (x / max(1.0, float(np.abs(x).max()))).astype(np.float32)


def evaluate(out, *, per_class: int | None = None, quick: bool = False, data=None,
             models: EvalModels | dict | None = None, speakers: int | None = None, seed: int = 0,
             threads: int | None = None, listen_per_class: int | None = None, control_per_class: int | None = None,
             c2c_per_class: int | None = None, steps: int | None = None, recipe: str = DEFAULT_RECIPE,
             quiet: bool = False, overwrite: bool = False, progress=None) -> dict:
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
    """
    from .report import debugging_summary, write_report

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
        import inspect

        names = {k: str(p.default) for k, p in inspect.signature(load_models).parameters.items()}
        names.update({k: str(v) for k, v in (models or {}).items()})
    settings = {"command": "evaluate", "quick": quick, "per_class": per_class, "data": None if data is None else str(Path(data).resolve()),
                "speakers": speakers, "seed": seed, "listen_per_class": listen_k, "control_per_class": control_k,
                "c2c_per_class": c2c_k, "steps": steps, "recipe": recipe, "models": names}
    prepare_output(out, RUN_MARKER, settings, what="speechmax evaluation", overwrite=overwrite,
                   legacy=_is_evaluation)
    write_json(out / RUN_MARKER, {"settings": settings})
    fig_dir, listen_dir = out / "figures", out / "listening"
    fig_dir.mkdir(exist_ok=True)
    if threads is not None:
        torch.set_num_threads(int(threads))
    if not isinstance(models, EvalModels):
        models = load_models(**(models or {}))
    clf = models.classifier
    labels = tuple(clf.cfg.labels)
    C = len(labels)
    cfg = clf.feature_config
    timing: dict = {}
    inner = not quiet   # the per-run bars (maximize, synthesis)
    metrics = {"version": _version(), "settings": {
        "quick": quick, "per_class": per_class, "seed": seed, "threads": torch.get_num_threads(),
        "listen_per_class": listen_k, "control_per_class": control_k, "c2c_per_class": c2c_k,
        "models": models.names, "vocoder_note": models.vocoder_note,
        "recipe": recipe, "recipes": {k: {"steps": steps if steps and k == "speechmax" else r.steps, "about": r.about}
                                      for k, r in RECIPES.items()}}}

    with Stage(timing, "clips", quiet):
        clips = eval_clips(data, out, speakers, seed, cfg)
        clip_pred = _predict(clf, clips.mels)
        metrics["data"] = {"source": clips.source, "clips": int(len(clips.labels)),
                           "speakers": len(set(clips.speakers)),
                           "classifier_accuracy": round(float((clip_pred == clips.labels).mean()), 4),
                           "separate_accuracy": round(float((_predict(models.separate, clips.mels) ==
                                                             clips.labels).mean()), 4)}

    # the overall bar: C units per noise run (a target each), one per later stage; what out/partial/ holds is
    # done already, so the bar starts there and its ETA counts the work left
    k_keep = max(listen_k, control_k)
    big = per_class * C > KEEP_LIMIT   # noise runs go one target at a time, each kept on disk
    plan, resumed = {}, 0
    for run_recipe in RECIPES:
        for mode in MODES:
            name = f"{run_recipe}/{mode}"
            key = _run_key(models, run_recipe, mode, per_class, seed, steps, k_keep)
            cached = _load_partial(out, name, key, run_recipe == recipe)
            plan[name] = key, cached
            resumed += C if cached is not None else (_targets_done(out, name, key, C) if big else 0)
    units = len(plan) * C + len(LATER_STAGES)
    bar = progress(total=units, initial=resumed, desc="evaluate", unit="unit") if progress else None
    tick = bar.update if bar is not None else (lambda n: None)
    try:
        # 1. noise -> class; each finished run is kept in out/partial/, so an interrupted long run resumes
        noise, keep = {}, {}
        earlier = 0.0   # seconds of compute that earlier sittings measured for what this one resumed
        for run_recipe in RECIPES:
            for mode in MODES:
                name = f"{run_recipe}/{mode}"
                key, cached = plan[name]
                if cached is not None:
                    noise[name], kept = cached
                    if kept is not None:
                        keep[mode] = kept
                    timing[f"noise {name}"] = noise[name]["seconds"]
                    earlier += noise[name]["seconds"]
                    if not quiet:
                        log.info("noise %s: resumed from %s", name, out / "partial")
                    continue
                with Stage(timing, f"noise {name}", quiet):
                    if big:   # one target at a time, each kept on disk: hours of work resume where they stopped
                        noise[name], seconds = _maximize_by_target(out, name, key, models, mode, run_recipe, threads,
                                                                   inner, steps, per_class, seed, labels, quiet,
                                                                   advance=tick)
                        res = None
                    else:
                        res = _maximize(models, mode, run_recipe, threads, inner, steps, n=per_class, seed=seed)
                        noise[name] = _run_summary(res, labels, seed)
                        tick(C)
                    if run_recipe == recipe:
                        small = res if not big else _maximize(models, mode, run_recipe, threads, False, steps,
                                                              n=min(k_keep, per_class), seed=seed)
                        sel = _first_per_target(small, min(k_keep, per_class))
                        keep[mode] = dict(before=small.features_before[sel], after=small.features[sel],
                                          targets=small.targets[sel].numpy(), start=small.start[sel].numpy())
                    del res
                # a run done in pieces over several sittings is timed by the compute its pieces measured
                if big:
                    earlier += max(0.0, seconds - timing[f"noise {name}"])
                noise[name]["seconds"] = timing[f"noise {name}"] = seconds if big else timing[f"noise {name}"]
                _save_partial(out, name, key, noise[name], keep.get(mode) if run_recipe == recipe else None)
        metrics["noise_to_class"] = noise

        # 3. class to class (the chosen recipe, both modes) -- before the vocoder, which needs its samples
        rng = np.random.default_rng(seed)
        src = pick_per_class(clips.labels, c2c_k, C, rng)
        c2c, c2c_res = {}, {}
        for mode in MODES:
            with Stage(timing, f"class-to-class {mode}", quiet, tick):
                res = _maximize(models, mode, recipe, threads, inner, steps, init=clips.mels[src], seed=seed)
                j = res.start.numpy()
                source = clips.labels[src][j]
                t = res.targets.numpy()
                hits = (res.probs_after.argmax(-1).numpy() == t) & (res.separate_after.argmax(-1).numpy() == t)
                off = source != t
                c2c[mode] = {"matrix": rounded(pair_matrix(source, t, hits, C)),
                             "success_off_diagonal": round(float(hits[off].mean()), 4) if off.any() else None,
                             "hit_rate": {"classifier": res.hit_rate("classifier"),
                                          "separate": res.hit_rate("separate")},
                             "clips": int(len(src)), "starts": int(len(t)),
                             "seconds": timing.get(f"class-to-class {mode}")}
                c2c_res[mode] = (res, source)
            c2c[mode]["seconds"] = timing[f"class-to-class {mode}"]
        metrics["class_to_class"] = c2c

        # 4. figures: t-SNE of the latent class-to-class run, spectrogram grids, heatmaps, success charts
        figs = {}
        with Stage(timing, "figures", quiet, tick):
            for name, m in noise.items():
                slug = name.replace("/", "-")
                figs[f"heatmap {name}"] = figures.heatmap(
                    fig_dir / f"heatmap-{slug}.png", np.array(m["heatmap_separate"], dtype=float), labels,
                    f"{name}: separate classifier's mean softmax per target (n = {per_class} per class)",
                    "class heard by the separate classifier", "target")
            for r in RECIPES:
                figs[f"success {r}"] = figures.success_chart(
                    fig_dir / f"success-{r}.png", {f"{r}/{m}": noise[f"{r}/{m}"]["per_class"] for m in MODES},
                    labels, f"noise -> class, {r} recipe: both classifiers give the target (95% bootstrap CI)")
            for mode in MODES:
                figs[f"class-to-class {mode}"] = figures.heatmap(
                    fig_dir / f"class-to-class-{mode}.png", np.array(c2c[mode]["matrix"], dtype=float), labels,
                    f"class to class ({mode} mode): real clips of A climbed toward B, success rate",
                    "target B", "source word A")
                k = keep[mode]
                first = [int(np.flatnonzero(k["targets"] == c)[0]) for c in range(C)]
                figs[f"spectrograms {mode}"] = figures.spectrogram_grid(
                    fig_dir / f"spectrograms-{mode}.png", k["before"][first].numpy(), k["after"][first].numpy(), labels,
                    f"noise -> class, {mode} mode ({recipe} recipe): start | result per target")
        with Stage(timing, "t-SNE", quiet, tick):
            figs["t-SNE"], metrics["tsne"] = _tsne(c2c_res["latent"], clips, src, clip_pred, labels, fig_dir, seed)

        # 2. vocoder control, and 5. the listening set (shares the vocoded audio)
        with Stage(timing, "vocoder control", quiet, tick):
            metrics["vocoder_control"], audio = _vocoder_control(models, clips, keep, control_k, labels, seed, threads,
                                                                 quiet)
            figs["vocoder control"] = figures.control_chart(
                fig_dir / "vocoder-control.png",
                {g: v for g, v in metrics["vocoder_control"]["groups"].items()},
                "vocoder control: the separate classifier before and after the vocoder")
        with Stage(timing, "listening set", quiet, tick):
            metrics["listening_set"] = _listening_set(models, clips, keep, c2c_res, src, audio, listen_k, labels,
                                                      listen_dir, seed, threads, quiet)

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


def _is_evaluation(out: Path) -> bool:
    """An evaluation from before :data:`RUN_MARKER` (as checkpoints/evaluate): only names evaluate writes."""
    own = {"metrics.json", "report.html", "figures", "listening", "partial"}
    return all(p.name in own or p.name.startswith("corpus-s") for p in out.iterdir())


def _run_key(models: EvalModels, recipe, mode, per_class, seed, steps, k_keep) -> str:
    """What a noise run's result depends on: the models' weights, the recipe and the sizes."""
    import hashlib

    weights = [getattr(m, "card", {}).get("sha256") or name for name, m in (
        ("classifier", models.classifier), ("separate", models.separate),
        ("prior", models.prior if recipe == "speechmax" else models.prior_paper))]
    # spelled as before the recipes moved to speechmax.maximize, so the committed partial runs still resume
    spelled = {"preset": "paper"} if recipe == "paper" else {"steps": RECIPES[recipe].steps}
    spec = json.dumps([weights, recipe, mode, per_class, seed, steps, k_keep, spelled], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _partial_paths(out: Path, name: str):
    stem = out / "partial" / f"noise-{name.replace('/', '-')}"
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def _save_partial(out: Path, name: str, key: str, summary: dict, kept: dict | None) -> None:
    from safetensors.torch import save_file

    js, st = _partial_paths(out, name)
    js.parent.mkdir(exist_ok=True)
    if kept is not None:
        save_file({"before": kept["before"].contiguous(), "after": kept["after"].contiguous(),
                   "targets": torch.from_numpy(kept["targets"]), "start": torch.from_numpy(kept["start"])}, str(st))
    tmp = js.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "summary": summary, "kept": kept is not None}))
    tmp.replace(js)   # the JSON lands last: a run counts as done only once everything is on disk


def _load_partial(out: Path, name: str, key: str, want_kept: bool):
    from safetensors.torch import load_file

    js, st = _partial_paths(out, name)
    try:
        d = json.loads(js.read_text())
    except (OSError, ValueError):
        return None
    if d.get("key") != key or (want_kept and not (d.get("kept") and st.is_file())):
        return None
    kept = None
    if want_kept:
        t = load_file(str(st))
        kept = dict(before=t["before"], after=t["after"], targets=t["targets"].numpy(), start=t["start"].numpy())
    return d["summary"], kept


def _version() -> str:
    from .. import __version__

    return __version__


def _tsne(run, clips: Clips, src, clip_pred, labels, fig_dir: Path, seed: int, max_points: int = 2500):
    from sklearn.manifold import TSNE

    res, source = run
    n_clips = len(src)
    rng = np.random.default_rng(seed)
    after = np.arange(len(res.targets))
    if len(after) + n_clips > max_points:
        after = np.sort(rng.choice(after, max_points - n_clips, replace=False))
    before_z = res.latents_before[:n_clips].numpy()          # start j of the first target = clip j
    pts = np.concatenate([before_z, res.latents[after].numpy()])
    classes = np.concatenate([clips.labels[src], res.targets.numpy()[after]])
    spk = [clips.speakers[i] for i in src] + [clips.speakers[src[j]] for j in res.start.numpy()[after]]
    stage = np.array(["before"] * n_clips + ["after"] * len(after))
    wrong = np.concatenate([clip_pred[src] != clips.labels[src], np.zeros(len(after), bool)])
    emb = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(pts) - 1) / 3)), init="pca",
               random_state=seed).fit_transform(pts.astype(np.float64))
    path = figures.tsne_plot(fig_dir / "tsne-latent.png", emb, classes, spk, stage, wrong, labels,
                             "t-SNE of the prior's latents: real clips encoded (o) and after climbing toward each "
                             "word (^); x = a start the classifier misclassified")
    return path, {"points": int(len(pts)), "clips": n_clips, "misclassified_starts": int(wrong.sum())}


def _vocoder_control(models, clips: Clips, keep, k: int, labels, seed, threads, quiet):
    """Real clips and the chosen recipe's noise samples, k per class, through WaveNet and Griffin-Lim."""
    rng = np.random.default_rng(seed + 1)
    real = pick_per_class(clips.labels, k, len(labels), rng)
    groups = {"real clips": (clips.mels[real], clips.labels[real])}
    index = {"real clips": real}   # rows of clips / of keep[mode] that each group's audio follows
    for mode in MODES:
        sel = np.flatnonzero(keep[mode]["start"] < k)
        groups[f"{mode} mode"] = (keep[mode]["after"][sel], keep[mode]["targets"][sel])
        index[f"{mode} mode"] = sel
    audio, result = {}, {}
    for g, (mels, words) in groups.items():
        wn = _synthesize(models, mels, seed, threads, True, f"WaveNet {g}", quiet) if models.wavenet else None
        gl = _synthesize(models, mels, seed, threads, False, f"Griffin-Lim {g}", quiet)
        audio[g] = dict(wavenet=wn, griffinlim=gl, index=index[g])
        result[g] = _control_group(models, mels, np.asarray(words), wn, gl, labels, seed)
    note = f"no WaveNet vocoder ({models.vocoder_note}): Griffin-Lim only" if not models.wavenet else \
        (f"listening set and samples through Griffin-Lim: {models.vocoder_note}" if models.vocoder_note else None)
    return {"groups": result, "wavenet_available": models.wavenet, "note": note}, audio


def _listening_set(models, clips: Clips, keep, c2c_res, src, audio, k: int, labels, root: Path, seed, threads,
                   quiet) -> dict:
    """``k`` clips per word and condition (features/latent x noise, real-before, real-after), hidden references
    (real clips resynthesized, known word) and low-quality anchors; manifest in speechmax.listen's format."""
    root.mkdir(parents=True, exist_ok=True)
    sr = models.vocoder.sample_rate
    primary = "wavenet" if models.wavenet and models.vocoder.preferred_backend != "griffinlim" else "griffinlim"
    entries, pending = [], []   # pending: (id, mel) still to vocode

    def add(cid, condition, word, role, wave=None, mel=None, **extra):
        entries.append({"id": cid, "file": f"{cid}.wav", "condition": condition, "word": labels[word],
                        "role": role, **extra})
        if wave is not None:
            save_audio(root / f"{cid}.wav", wave, sr)
        else:
            pending.append((cid, mel))

    for mode in MODES:
        kp, g = keep[mode], audio[f"{mode} mode"]
        vocoded = {int(i): n for n, i in enumerate(g["index"])}
        for i in np.flatnonzero(kp["start"] < k):
            cid = f"{mode}-noise-{labels[kp['targets'][i]]}-{kp['start'][i]}"
            n = vocoded.get(int(i))
            add(cid, f"{mode}/noise", int(kp["targets"][i]), "test",
                wave=None if n is None else g[primary][n], mel=kp["after"][i])
        res, source = c2c_res[mode]
        n_src = len(src)
        for c in range(len(labels)):
            mine = [j for j in range(n_src) if clips.labels[src[j]] == c][:k]
            for j in mine:   # before: the clip as the ascent saw it (latent mode: the prior's reconstruction)
                add(f"{mode}-real-before-{labels[c]}-{j}", f"{mode}/real-before", c, "test",
                    mel=res.features_before[j], source_clip=int(src[j]))
            # after: clips of other words climbed toward c
            cand = np.flatnonzero((res.targets.numpy() == c) & (source != c))[:k]
            for i in cand:
                add(f"{mode}-real-after-{labels[c]}-{int(source[i])}-{int(res.start[i])}", f"{mode}/real-after", c,
                    "test", mel=res.features[i], source_word=labels[int(source[i])])
    real = audio["real clips"]
    rng = np.random.default_rng(seed + 2)
    for n, i in enumerate(real["index"]):
        w = int(clips.labels[i])
        if sum(1 for e in entries if e["role"] == "reference" and e["word"] == labels[w]) < k:
            add(f"reference-{labels[w]}-{n}", "reference", w, "reference", wave=real[primary][n])
        if sum(1 for e in entries if e["role"] == "anchor" and e["word"] == labels[w]) < 1:
            add(f"anchor-{labels[w]}-{n}", "anchor", w, "anchor", wave=_anchor(clips.waves[i].numpy(), sr, rng))
    if pending:
        mels = torch.stack([m for _, m in pending])
        waves = _synthesize(models, mels, seed + 3, threads, primary == "wavenet", "listening set", quiet)
        for (cid, _), w in zip(pending, waves):
            save_audio(root / f"{cid}.wav", w, sr)
    manifest = {"name": "speechmax-evaluate", "vocoder": models.names["vocoder"] if primary == "wavenet" else
                "griffinlim", "clips": entries}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    counts: dict = {}
    for e in entries:
        counts[e["condition"]] = counts.get(e["condition"], 0) + 1
    return {"path": str(root), "clips": len(entries), "per_condition": counts, "vocoder": primary}
