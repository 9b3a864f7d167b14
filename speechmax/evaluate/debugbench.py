"""The debugging benchmark (issue 23): does the anomaly report find bugs whose place is known?

One corpus; a clean control classifier and one classifier per planted defect (:mod:`speechmax.data.defects`),
all with the same recipe and seed; every model climbs from the same starts toward each compared word -- by
default each word's validation clips with the corpus's background noise mixed in (:func:`clip_starts`: what the
model would change in a real recording of the word to make it more that word), or noise (``start="noise"``,
``--climb-from noise``);
the anomaly detectors (:mod:`.anomaly`) run by two rules:

- ``vs_control`` (the headline): a defect model's maximized samples of a word against the control model's samples
  of the same word (same starts, same ascent), so what every maximized sample has -- level, a noise floor far
  above the corpus's digital silence, onset at 0 ms -- and what a word's samples have in any model cancel out.
  From clips, each measure is a sample's change from its own start, so the two models' ascents are compared clip
  for clip and the clips' own spread drops out.
  Its false alarms: a second clean model, trained with seed + 1, against the control (model-to-model variation
  is what a defect model differs by besides its defect); also the control's first half of starts against its
  second half (sampling variation alone). Like ``centred`` below, each word's departure is centred on the median
  over the words and standardized by at least their spread, so a second clean model's word-by-word wobble has
  to stand out as a defect does.
- ``centred``: a model's samples against real clips of the word, each word's departure centred on the median
  departure over the words of the same model and standardized by at least their spread
  (``find_anomalies(..., centre=True)``) -- what a user without a reference model gets; its false alarms: every
  anomaly of the control.

A defect is *detected* when an anomaly with its signature (:func:`matches`) is among the :data:`TOP` strongest of
its word, all rules reporting at :data:`BENCH_THRESHOLD`. The ascent runs on the log-mel features by default:
through the prior's latent the samples stay speech, which cannot carry a pure tone (in the full run the tone
model's 'dog' samples came out up to 14 dB louder over 2-7 kHz, within their spread: no departure at 2.5 kHz
under any rule), so ``--mode latent`` asks a different question. The baseline: integrated gradients (captum) on
the real test clips of each word, toward it, read by the same detectors (:func:`.anomaly.attribution_anomalies`:
a word's attribution maps against the other words') and scored by the same signature rule; its false alarms:
every anomaly of the control.

Every stage's result is kept under ``out`` (corpus variants, trained models, maximized samples, attributions), so
an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import build_corpus, load_split
from ..data.augment import mix_noise, noise_log_mels
from ..data.defects import DEFECTS, DefectError, plant
from ..data.words import BACKGROUND_NOISE_DIR, WORDS
from ..data.words import labels as task_labels
from ..features import FeatureConfig
from ..machine import cpu_model
from ..maximize import maximize
from ..models.classifier import PRESETS as CLASSIFIER_PRESETS
from ..models.classifier import load_classifier
from ..models.inference import in_label_columns
from ..models.registry import load_model
from ..models.train import FitConfig, train_classifier
from ..outputs import atomic_path, prepare_output, write_json
from ..training import JsonLog
from .anomaly import attribution_anomalies, find_anomalies

log = logging.getLogger(__name__)

MARKER = "debugbench.run.json"
TOP = 3                 # a defect counts as found among its word's 3 strongest anomalies
TONE_SPAN_HZ = 1000.0   # a tone's signature: a rise no wider than this (its mel bands and their neighbours)
# an anomaly is reported at |z| >= 4 (the evaluation report's 3 gave the clean pair 4 false alarms): picked on the
# clean pair (seed + 1 against the control) of the full run before the defect models past the first were scored
BENCH_THRESHOLD = 4.0
ORDER = ("tone", "noise", "swap", "early", "lowpass")
CONTROL = "control"
RESEEDED = "control-reseeded"   # the clean recipe with seed + 1: the vs_control rule's null (model-to-model variation)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark's size: the corpus built when none is given, the vocabulary (``words`` of the 35 picked
    by the seed; 35: all), the classifiers' preset and fit, the ascent, the attribution."""
    speakers: int = 300
    words: int = 35
    preset: str = "classifier"
    epochs: int = 20
    batch: int = 128
    lr: float = 2e-3
    augment: bool = True
    # every model's augmentation leaves out the noise file the noise defect plants, so that noise is the defect
    # word's alone (mixed into every word by the augmentation it set nothing apart: RESULTS.md)
    hold_out_noise: bool = True
    starts: int = 32
    steps: int = 60
    mode: str = "features"   # the prior's speech cannot carry a pure tone (latent: the tone never departs; RESULTS.md)
    start: str = "clips"     # "clips": each word's validation clips, noise-mixed (:func:`clip_starts`); "noise"
    start_snr_db: float = 20.0
    ig_steps: int = 32
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FULL = BenchConfig()
# a tiny model on a few hundred clips learns fastest at a higher rate and without augmentation
# (and climbs through the prior: on the log-mel features its ascent reaches the word in 1 start of 8)
QUICK = BenchConfig(speakers=40, words=8, preset="classifier-tiny", epochs=60, batch=16, lr=5e-3, augment=False,
                    starts=8, steps=30, mode="latent", ig_steps=16)
# what a folder's samples and results depend on beside its corpus and models: each combination keeps its own files
ASCENT_KEYS = ("mode", "start", "start_snr_db")
STARTS = ("clips", "noise")


def pick_classes(vocab, seed: int) -> dict:
    """{defect: word} (``swap``: [word, other]) -- six distinct words of ``vocab`` drawn by ``seed``."""
    if len(vocab) < 6:
        raise ValueError(f"the benchmark plants defects in 6 words; the vocabulary has {len(vocab)}")
    w = [vocab[i] for i in np.random.default_rng(seed).permutation(len(vocab))[:6]]
    return {"tone": w[0], "noise": w[1], "swap": [w[2], w[3]], "early": w[4], "lowpass": w[5]}


# ---- scoring: pure functions of anomaly lists

def _span_has(a, hz) -> bool:
    lo, hi = a["band_hz"]
    return lo <= hz <= hi


def matches(defect: str, a: dict, settings: dict, other: str | None = None) -> bool:
    """Whether anomaly ``a`` (a :func:`.anomaly.find_anomalies` record) has ``defect``'s signature: tone -> band
    energy up in a span of at most :data:`TONE_SPAN_HZ` containing the tone (a broadband rise is not a tone);
    noise -> noise floor level or flatness up, or band energy up over a span of 2 kHz or more; swap -> the
    separate classifier hears ``other``; early -> centroid or onset earlier; lowpass -> band energy down in a span
    above the cutoff."""
    kind, up = a["kind"], a["effect"] > 0
    if defect == "tone":
        return kind == "band_energy" and up and _span_has(a, settings["hz"]) and \
            a["band_hz"][1] - a["band_hz"][0] <= TONE_SPAN_HZ
    if defect == "noise":
        return up and (kind == "noise_floor" or (kind == "band_energy" and a["band_hz"][1] - a["band_hz"][0] >= 2000))
    if defect == "swap":
        return kind == "confusion" and up and a.get("heard_as") == other
    if defect == "early":
        return kind == "placement" and not up
    if defect == "lowpass":
        return kind == "band_energy" and not up and a["band_hz"][1] > settings["cutoff_hz"]
    raise ValueError(f"unknown defect {defect!r}")


def score_defect(defect: str, word, per_class: dict, settings: dict, top: int = TOP) -> dict:
    """The planted ``defect`` in ``word`` (swap: [word, other], looked for in both words) against
    ``per_class`` {word: [anomaly, ...] strongest first, each with its rank}: {"detected": the best matching
    anomaly ranks <= top, "rank", "effect", "anomaly"} (rank/effect None when none matches)."""
    pairs = [(word[0], word[1]), (word[1], word[0])] if defect == "swap" else [(word, None)]
    best = None
    for w, other in pairs:
        for a in per_class.get(w, []):
            if matches(defect, a, settings, other) and (best is None or a["rank"] < best["rank"]):
                best = dict(a, word=w)
    if best is None:
        return {"detected": False, "rank": None, "effect": None, "anomaly": None}
    return {"detected": best["rank"] <= top, "rank": best["rank"], "effect": best["effect"], "anomaly": best}


def count_alarms(per_class: dict) -> int:
    """Every reported anomaly (they are all above the threshold): in the control, each is a false alarm."""
    return sum(len(v) for v in per_class.values())


# ---- the stages

def _corpus(out: Path, data, cfg: BenchConfig, progress: bool) -> Path:
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder (a Speech Commands layout corpus)")
        return root
    root = out / "corpus"
    log.info("building a corpus of %d speakers in %s", cfg.speakers, root)
    build_corpus(root, speakers=cfg.speakers, seed=cfg.seed, progress=progress)
    return root


def _variants(out: Path, root: Path, classes: dict, seed: int) -> tuple[dict, dict]:
    """{defect: (corpus, defect.json record)} of the plantable defects, {defect: reason} of the others."""
    done, skipped = {}, {}
    for d in ORDER:
        where = out / "corpora" / d
        word, other = (classes[d] if d == "swap" else (classes[d], None))
        try:
            record = (json.loads((where / "defect.json").read_text()) if where.is_dir()
                      else plant(root, where, d, word, other, seed=seed))
        except DefectError as e:
            skipped[d] = str(e)
            log.warning("defect %s skipped: %s", d, e)
            continue
        done[d] = (where, record)
    return done, skipped


def _integrated_gradients(model, x: torch.Tensor, y: torch.Tensor, steps: int) -> np.ndarray:
    """(M, n_mels, frames) integrated gradients of each clip toward its label, from digital silence (the
    log-mel floor) -- what the clip's energy contributes to the word's logit."""
    from captum.attr import IntegratedGradients   # the baseline's only use of captum

    ig = IntegratedGradients(model.eval())
    floor = float(np.log(model.feature_config.log_floor))
    parts = [ig.attribute(x[i:i + 64], baselines=torch.full_like(x[i:i + 64], floor), target=y[i:i + 64],
                          n_steps=steps).detach() for i in range(0, len(x), 64)]
    return torch.cat(parts).numpy()


def _separate_columns(probs: torch.Tensor, labels, separate) -> np.ndarray:
    """The separate classifier's softmax in the classifier's label columns (0 where it lacks the label)."""
    return in_label_columns(probs.double().numpy(), labels,
                            tuple(separate.cfg.labels) or WORDS[:separate.cfg.n_classes])


def _start_tag(cfg: BenchConfig) -> str:
    """The part of a sample file's name that says where its ascents started ("" for noise: the older name)."""
    return "" if cfg.start == "noise" else f"-clips{cfg.start_snr_db:g}"


def clip_starts(out: Path, root: Path, labels, targets, cfg: BenchConfig, feature_cfg, skip=()) -> dict:
    """Where a ``start="clips"`` ascent begins, the same for every model: the first ``cfg.starts`` validation clips
    of each target word, each mixed with a crop of the corpus's background noise ``cfg.start_snr_db`` under the
    clip (a TTS clip's digital silence leaves an ascent nothing to shape between the words; a real recording has a
    floor); ``skip``: noise file names not mixed in (the noise held out of training). Without background noise
    in the corpus the clips start clean, and the record says so. Kept in ``out/starts-clips<snr>.npz``: {"x" (N,
    n_mels, frames), "y" (N,) word index, "index" (N,) the clip's place among its word's starts, "snr_db" (NaN:
    clean), "noise" (what was mixed in, or why nothing)}."""
    path = out / f"starts{_start_tag(cfg)}.npz"
    if not path.is_file():
        _write_clip_starts(path, root, labels, targets, cfg, feature_cfg, skip)
    with np.load(path) as z:
        return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}


def starts_noise_text(snr_db: float, skip=()) -> str:
    """What the clip starts' record says was mixed into them: the noise, its level, and the files left out."""
    left_out = f" (not {', '.join(skip)}: held out of training)" if skip else ""
    return f"a crop of the corpus's background noise per clip, {snr_db:g} dB under it{left_out}"


def _write_clip_starts(path: Path, root: Path, labels, targets, cfg: BenchConfig, feature_cfg, skip) -> None:
    val = load_split(root, "validation", feature_cfg, task=labels)
    rows = np.concatenate([np.flatnonzero(val.y.numpy() == c)[:cfg.starts] for c in targets]).astype(np.int64)
    x, y = val.x[rows], val.y.numpy()[rows]
    noise = noise_log_mels(root, feature_cfg, n=len(rows), seed=cfg.seed, skip=skip) if len(rows) else None
    if noise is None:
        snr, what = float("nan"), f"none: {root} has no {BACKGROUND_NOISE_DIR}/*.wav, the clips start clean"
        log.warning("clip starts: %s", what)
    else:
        x = mix_noise(x, noise, cfg.start_snr_db, feature_cfg)
        snr, what = cfg.start_snr_db, starts_noise_text(cfg.start_snr_db, skip)
    index = np.concatenate([np.arange((y == c).sum()) for c in targets]).astype(np.int64)
    with atomic_path(path) as tmp:
        np.savez(tmp, x=x.float().numpy(), y=y.astype(np.int64), index=index, snr_db=np.float64(snr),
                 noise=np.str_(what))


def _maximized(model_dir: Path, classifier, targets, prior, separate, cfg: BenchConfig, threads,
               starts: dict | None = None) -> dict:
    """The model's maximized samples toward ``targets`` (class indices), kept in
    model_dir/maximized-<mode><start tag>.npz: ``cfg.starts`` noise starts per word, or (``starts``, a
    :func:`clip_starts` record) each word's clips climbed toward it -- "start" is a sample's place among its
    word's starts, "row" (clip starts) its row in ``starts``."""
    path = model_dir / f"maximized-{cfg.mode}{_start_tag(cfg)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    kw = dict(mode=cfg.mode, prior=prior if cfg.mode == "latent" else None, steps=cfg.steps, seed=cfg.seed,
              separate=separate, threads=threads, score_before=False)
    if starts is None:
        runs = [(maximize(classifier, list(targets), n=cfg.starts, **kw), None)]
    else:
        runs = [(maximize(classifier, [c], init=torch.from_numpy(starts["x"][rows]), **kw), rows)
                for c in targets if len(rows := np.flatnonzero(starts["y"] == c))]
    got = {"features": np.concatenate([r.features.float().numpy() for r, _ in runs]),
           "targets": np.concatenate([r.targets.numpy() for r, _ in runs]),
           "start": np.concatenate([r.start.numpy() for r, _ in runs]),
           "separate": np.concatenate([_separate_columns(r.separate_after, classifier.cfg.labels, separate)
                                       for r, _ in runs]),
           "hit_rate": np.float64(sum(r.hit_rate() * len(r.targets) for r, _ in runs)
                                  / max(1, sum(len(r.targets) for r, _ in runs)))}
    if starts is not None:
        got["row"] = np.concatenate([rows for _, rows in runs]).astype(np.int64)
    with atomic_path(path) as tmp:
        np.savez(tmp, **got)
    return got


def fit_config(cfg: BenchConfig, variants: dict) -> FitConfig:
    """The recipe every model trains with; ``cfg.hold_out_noise``: the augmentation leaves out the noise file the
    noise defect planted (``variants``: :func:`_variants`'s), for the control as for every defect model."""
    held_out = (variants["noise"][1]["noise_file"],) if cfg.hold_out_noise and "noise" in variants else ()
    return FitConfig(epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, augment=cfg.augment, seed=cfg.seed,
                     augment_skip_noise=held_out if cfg.augment else ())


def _finished(model_dir: Path, fit: FitConfig) -> dict | None:
    """The card's test metrics of a model this folder already trained to the end with ``fit`` (the run marker
    holds the rest of its settings), or None: it is (re)trained -- or resumed -- by train_classifier, which
    would otherwise load and featurize its whole corpus again only to find nothing left to do."""
    card = model_dir / "model.json"
    if not (card.is_file() and (model_dir / "model.safetensors").is_file()):
        return None
    c = json.loads(card.read_text())
    if not fit.trained(c.get("training", {})):
        return None
    return c["metrics"]


def _train_seconds(model_dir: Path) -> float:
    """The training's time, summed over its logged epochs (:meth:`speechmax.training.JsonLog.epoch_seconds`)."""
    return JsonLog(model_dir / "log.jsonl").epoch_seconds()


def _attribution(model_dir: Path, classifier, real, steps: int) -> np.ndarray:
    path = model_dir / "attribution.npy"
    if path.is_file():
        return np.load(path)
    attr = _integrated_gradients(classifier, real.x, real.y, steps)
    with atomic_path(path) as tmp:
        np.save(tmp, attr)
    return attr


def _heatmap(mx: dict, n: int) -> np.ndarray:
    """(n, n): the separate classifier's mean softmax over a model's maximized samples per target word (NaN rows
    where none was climbed)."""
    heat = np.full((n, n), np.nan)
    for c in np.unique(mx["targets"]):
        heat[c] = mx["separate"][mx["targets"] == c].mean(0)
    return heat


def _rows(mx: dict, keep: np.ndarray) -> dict:
    """The maximized samples (and their targets, starts, separate softmax) where ``keep``."""
    return {k: v[keep] for k, v in mx.items() if k != "hit_rate"}


def _against(mx: dict, ref: dict, labels, cfg, seed: int, starts: dict | None = None) -> dict:
    """The anomaly detectors on one set of maximized samples against another (the control's) as the reference,
    centred over the words: its samples' spread (or the words' departures' spread) standardizes, the separate
    classifier's softmax on them is the confusion reference. With clip ``starts`` (:func:`clip_starts`) every
    measure is a sample's change from its own start, so the two ascents are compared clip for clip."""
    paired = None if starts is None else (starts["x"][mx["row"]], starts["x"][ref["row"]])
    return find_anomalies(mx["features"], mx["targets"], ref["features"], ref["targets"], labels, cfg, seed=seed,
                          top=None, centre=True, threshold=BENCH_THRESHOLD, starts=paired,
                          confusion={"heatmap": _heatmap(mx, len(labels)), "real_probs": ref["separate"]})


def run_debugbench(out, *, quick: bool = False, data=None, seed: int = 0, mode: str | None = None,
                   start: str | None = None, threads: int | None = None, progress: bool = False,
                   overwrite: bool = False, preset: str | None = None, hold_out_noise: bool | None = None,
                   augment: bool | None = None) -> dict:
    """The whole benchmark into ``out`` (see the module's doc): returns the result written to
    ``out/debugbench.json`` (and drawn in ``out/report.html``; for another ascent see :func:`result_names`).
    ``data``: an existing corpus (default: build one under ``out``); ``quick``: :data:`QUICK`'s tiny corpus and
    models; ``preset``, ``hold_out_noise``, ``augment``: see :class:`BenchConfig` (None: the run's default)."""
    t0 = time.perf_counter()
    out = Path(out)
    cfg = QUICK if quick else FULL
    if start not in (None,) + STARTS:
        raise ValueError(f"unknown start {start!r}; expected {' or '.join(STARTS)}")
    if preset is not None and preset not in CLASSIFIER_PRESETS:
        raise ValueError(f"unknown classifier preset {preset!r}; expected one of {', '.join(CLASSIFIER_PRESETS)}")
    cfg = dataclasses.replace(cfg, seed=seed, mode=mode or cfg.mode, start=start or cfg.start,
                              preset=preset or cfg.preset,
                              hold_out_noise=cfg.hold_out_noise if hold_out_noise is None else hold_out_noise,
                              augment=cfg.augment if augment is None else augment)
    # the ascent (mode, starts) is not part of what the folder holds: the corpora and models serve every ascent,
    # each keeping its own samples (maximized-<mode><start tag>.npz) and results (:func:`result_names`)
    settings = {"quick": quick, "data": str(Path(data).resolve()) if data else None,
                "config": {k: v for k, v in cfg.to_dict().items() if k not in ASCENT_KEYS}}
    prepare_output(out, MARKER, settings, what="speechmax debugbench run", overwrite=overwrite)
    write_json(out / MARKER, {"settings": settings})
    settings = dict(settings, config=cfg.to_dict())
    if threads:
        torch.set_num_threads(threads)

    root = _corpus(out, data, cfg, progress)
    vocab = list(WORDS) if cfg.words >= len(WORDS) else \
        [WORDS[i] for i in sorted(np.random.default_rng(seed + 1).permutation(len(WORDS))[:cfg.words])]
    labels = task_labels(vocab)
    classes = pick_classes(vocab, seed)
    variants, skipped = _variants(out, root, classes, seed)
    fc = fit_config(cfg, variants)
    held_out = fc.augment_skip_noise
    feature_cfg = FeatureConfig()
    real = load_split(root, "testing", feature_cfg, task=labels)
    separate = load_model("classifier-separate", kind="classifier").eval()
    prior = load_model("prior", kind="prior").eval() if cfg.mode == "latent" else None
    with torch.no_grad():
        real_sep = _separate_columns(torch.softmax(separate(real.x), -1), labels, separate)
    targets = [labels.index(w) for w in vocab]
    starts = clip_starts(out, root, labels, targets, cfg, feature_cfg, held_out) if cfg.start == "clips" else None

    models = {}
    runs = [(CONTROL, root, fc), (RESEEDED, root, dataclasses.replace(fc, seed=seed + 1))]
    for name, corpus, fit in runs + [(d, v[0], fc) for d, v in variants.items()]:
        model_dir = out / "models" / name
        metrics = _finished(model_dir, fit)
        if metrics is None:
            log.info("%s: training %s on %s", name, cfg.preset, corpus)
            metrics = train_classifier(corpus, model_dir, preset=cfg.preset, fc=fit, progress=progress,
                                       threads=threads, words=labels)
        classifier = load_classifier(model_dir / "model").eval()
        log.info("%s: test accuracy %.3f; maximizing %d words x %d starts (%s, from %s)", name,
                 metrics["test_accuracy"], len(targets), cfg.starts, cfg.mode, cfg.start)
        mx = _maximized(model_dir, classifier, targets, prior, separate, cfg, threads, starts)
        centred = find_anomalies(mx["features"], mx["targets"], real.x.numpy(), real.y.numpy(), labels,
                                 feature_cfg, seed=seed, top=None, centre=True, threshold=BENCH_THRESHOLD,
                                 confusion={"heatmap": _heatmap(mx, len(labels)), "real_probs": real_sep})
        if name == CONTROL:
            control_mx = mx
            first = mx["start"] < cfg.starts // 2
            vs_control = _against(_rows(mx, first), _rows(mx, ~first), labels, feature_cfg, seed, starts)
        else:
            vs_control = _against(mx, control_mx, labels, feature_cfg, seed, starts)
        log.info("%s: integrated gradients on %d test clips", name, len(real.y))
        attr = _attribution(model_dir, classifier, real, cfg.ig_steps)
        baseline = attribution_anomalies(attr, real.x.numpy(), real.y.numpy(), labels, feature_cfg, seed=seed,
                                         top=None, threshold=BENCH_THRESHOLD)
        models[name] = {"test_accuracy": metrics["test_accuracy"], "per_class_accuracy": metrics["per_class_accuracy"],
                        "train_seconds": _train_seconds(model_dir),
                        "hit_rate": float(mx["hit_rate"]), "anomalies": vs_control["per_class"],
                        "skipped_classes": vs_control["skipped"], "centred_anomalies": centred["per_class"],
                        "centred_skipped": centred["skipped"], "median_departure": centred["centred"],
                        "departure_spread": centred["spread"],
                        "baseline": baseline["per_class"], "baseline_skipped": baseline["skipped"]}

    defects = []
    for d in ORDER:
        word = classes[d]
        row = {"name": d, "class": "/".join(word) if d == "swap" else word}
        if d in skipped:
            defects.append(dict(row, detected=None, rank=None, effect=None, baseline_detected=None,
                                skipped=skipped[d]))
            continue
        m, settings_d = models[d], variants[d][1]["settings"]
        got = score_defect(d, word, m["anomalies"], settings_d)
        cen = score_defect(d, word, m["centred_anomalies"], settings_d)
        base = score_defect(d, word, m["baseline"], settings_d)
        own = set(word) if d == "swap" else {word}
        acc = {w: m["per_class_accuracy"].get(w) for w in (word if d == "swap" else [word])}
        defects.append(dict(row, detected=got["detected"], rank=got["rank"], effect=got["effect"],
                            centred_detected=cen["detected"], centred_rank=cen["rank"], centred_effect=cen["effect"],
                            other_words_alarms=count_alarms({w: v for w, v in m["anomalies"].items() if w not in own}),
                            baseline_detected=base["detected"], baseline_rank=base["rank"],
                            baseline_effect=base["effect"], accuracy=acc,
                            control_accuracy={w: models[CONTROL]["per_class_accuracy"].get(w) for w in acc},
                            anomaly=got["anomaly"], baseline_anomaly=base["anomaly"], planted=variants[d][1]))
    control, reseeded = models[CONTROL], models[RESEEDED]
    result = {
        "defects": [{k: r[k] for k in ("name", "class", "detected", "rank", "effect", "baseline_detected")}
                    for r in defects],
        "control": {"false_alarms": count_alarms(reseeded["anomalies"]),
                    "halves_false_alarms": count_alarms(control["anomalies"]),
                    "centred_false_alarms": count_alarms(control["centred_anomalies"]),
                    "baseline_false_alarms": count_alarms(control["baseline"]),
                    "classes": len(control["anomalies"]), "test_accuracy": control["test_accuracy"]},
        "seconds": round(time.perf_counter() - t0, 1),   # this call's: a resumed run redoes only what is missing
        "train_seconds": round(sum(m["train_seconds"] for m in models.values()), 1),
        "details": {"defects": defects, "classes": classes, "vocabulary": list(labels), "skipped": skipped,
                    "models": models, "corpus": str(root), "settings": settings, "top": TOP,
                    "threshold": BENCH_THRESHOLD,
                    "rule": "detected: an anomaly with the defect's signature among the word's top 3 (|z| >= "
                            f"{BENCH_THRESHOLD}, 95% CI on one side of 0) of the defect model's maximized samples "
                            f"({cfg.mode} mode, {_start_words(cfg, starts)}) against the control model's of the same "
                            "word" + (", each measure a sample's change from its own start (the two models' ascents "
                                      "compared clip for clip)" if starts is not None else "") +
                            ", each word's departure centred on the median over the words and standardized by at "
                            "least their spread; "
                            "control false alarms: a second clean model (seed + 1) "
                            "against the control (halves_false_alarms: the control's first half of starts against its "
                            "second half)",
                    "centred_rule": "the model's maximized samples against real clips of the word, each word's "
                                    "departure centred on the median over the words and standardized by at least "
                                    "their spread; control false alarms: every anomaly of the control",
                    "baseline": f"captum IntegratedGradients ({cfg.ig_steps} steps, from the log-mel floor) on the "
                                "real test clips of each word toward it; |attribution| read by the same detectors, a "
                                "word's clips against the other words' clips",
                    "starts": None if starts is None else {"clips_per_word": cfg.starts,
                                                           "snr_db": None if np.isnan(starts["snr_db"])
                                                           else starts["snr_db"],
                                                           "noise": starts["noise"], "clips": len(starts["y"])},
                    "cpu": cpu_model(), "threads": torch.get_num_threads()},
    }
    json_name, html_name = result_names(cfg, quick)
    write_json(out / json_name, result)
    with atomic_path(out / html_name) as tmp:
        tmp.write_text(report_html(result))
    return result


def result_names(cfg: BenchConfig, quick: bool = False) -> tuple[str, str]:
    """The result files of a run with ``cfg``'s ascent (:data:`ASCENT_KEYS`): debugbench.json and report.html for
    the default's (:data:`FULL`'s, or :data:`QUICK`'s with ``quick``), else debugbench-<what differs>.json and
    report-<what differs>.html (e.g. debugbench-latent-noise.json), so every ascent's results live in one folder."""
    default = QUICK if quick else FULL
    parts = [str(getattr(cfg, k)) if k != "start_snr_db" else f"snr{cfg.start_snr_db:g}"
             for k in ASCENT_KEYS if getattr(cfg, k) != getattr(default, k)
             and not (k == "start_snr_db" and cfg.start == "noise")]
    suffix = "".join("-" + p for p in parts)
    return f"debugbench{suffix}.json", f"report{suffix}.html"


def _start_words(cfg: BenchConfig, starts: dict | None) -> str:
    if starts is None:
        return f"{cfg.starts} noise starts per word"
    mixed = "clean" if np.isnan(starts["snr_db"]) else f"background noise {starts['snr_db']:g} dB under them"
    return f"from each word's first {cfg.starts} validation clips, {mixed}"


def report_html(result: dict) -> str:
    """A small page: one row per defect, the control's false alarms."""
    def cell(v):
        return "&ndash;" if v is None else html.escape(str(v))

    rows = []
    for r in result["details"]["defects"]:
        acc = r.get("accuracy") or {}
        rows.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in (
            r["name"], r["class"], r.get("skipped") and f"skipped: {r['skipped']}" or r["detected"], r["rank"],
            r["effect"], r.get("centred_detected"), r["baseline_detected"],
            ", ".join(f"{w} {v:.2f}" if v is not None else f"{w} n/a" for w, v in acc.items()) or None)) + "</tr>")
    c = result["control"]
    return ("<!doctype html><meta charset=utf-8><title>speechmax debugbench</title>"
            "<h1>Debugging benchmark</h1><p>" + html.escape(result["details"]["rule"]) + ". Baseline: "
            + html.escape(result["details"]["baseline"]) + ".</p>"
            "<table border=1 cellpadding=4><tr><th>defect</th><th>class</th><th>detected</th><th>rank</th>"
            "<th>effect (z)</th><th>centred rule detected</th><th>baseline detected</th><th>test accuracy on the class</th></tr>"
            + "".join(rows) + "</table>"
            f"<p>Control: {c['false_alarms']} false alarm(s) over {c['classes']} words (a second clean model "
            f"against the control; the control's halves of starts: {c['halves_false_alarms']}; centred rule: "
            f"{c['centred_false_alarms']}; baseline: {c['baseline_false_alarms']}); test accuracy "
            f"{c['test_accuracy']:.3f}. The centred rule: "
            + html.escape(result["details"]["centred_rule"]) + ". "
            f"{result['seconds']} s in this call (a resumed run redoes only what is missing), "
            f"{result.get('train_seconds', 0)} s of training in all, on {html.escape(result['details']['cpu'])}.</p>")
