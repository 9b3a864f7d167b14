"""Step 6, anomalies: what the maximized samples of each word have that its real clips do not
(:mod:`.anomaly`), and the real clips the classifier gets wrong beside the prototypes of their true and their
predicted word (:mod:`.prototypes`). The detectors read arrays only; this step hands them the evaluation's
samples, clips and the separate classifier's softmax, and draws the report's figures."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..models.inference import in_label_columns, logits_on_audio
from . import figures
from .anomaly import MIN_REAL, ONSET_DB, QUIET_SHARE, SD_FLOOR, find_anomalies
from .inputs import Clips, EvalModels
from .prototypes import compare_to_prototypes
from .stats import BOOTSTRAP, LEVEL


@torch.no_grad()
def separate_probs(models: EvalModels, clips: Clips) -> np.ndarray:
    """(M, C) the separate classifier's softmax on the real clips, in the classifier's label columns (0 for a
    label it lacks) -- as the noise runs' ``heatmap_separate`` is."""
    probs = torch.softmax(logits_on_audio(models.separate, clips.waves, clips.mels, batch=512).double(), -1).numpy()
    return in_label_columns(probs, models.labels, models.separate_labels)


def _slug(word: str) -> str:
    return re.sub(r"[^\w-]+", "_", word)


def debug_anomalies(models: EvalModels, clips: Clips, clip_pred, keep: dict, noise: dict, labels, recipe: str,
                    seed: int, fig_dir: Path) -> tuple[dict, dict, dict]:
    """The anomaly report and the misclassified clips against the prototypes, on the kept features after the
    ascent of ``recipe``'s latent run (its features run when there is no latent one). Returns (anomalies metrics,
    misclassified metrics, {title: PNG}) -- the gallery's PNGs in fig_dir/misclassified/."""
    mode = "latent" if "latent" in keep else "features"
    run = f"{recipe}/{mode}"
    cfg = models.classifier.feature_config
    kept = keep[mode]
    protos, targets = kept["after"].float().numpy(), np.asarray(kept["targets"])
    real = clips.mels.numpy()
    source = f"{run}: the kept samples after the ascent"
    anomalies = find_anomalies(protos, targets, real, clips.labels, labels, cfg, seed=seed, confusion={
        "heatmap": np.array(noise[run]["heatmap_separate"], dtype=float), "real_probs": separate_probs(models, clips)})
    anomalies["settings"] = {
        "source": source, "mode": mode, "recipe": recipe,
        "maximized_per_class": int(np.bincount(targets, minlength=len(labels)).max()) if len(targets) else 0,
        "real_clips": int(len(real)), "min_real": MIN_REAL,
        "effect": "(maximized mean - real mean) / real clips' SD, the SD floored at sd_floor (units: dB, ms, "
                  "flatness, probability)",
        "sd_floor": SD_FLOOR, "bootstrap": BOOTSTRAP, "level": LEVEL, "seed": seed, "quiet_share": QUIET_SHARE,
        "onset_db": ONSET_DB,
        "confusion": f"noise_to_class['{run}'].heatmap_separate against the separate classifier's softmax on the "
                     "real clips of the word (only the real clips resampled)"}
    figs = {"anomalies": figures.band_heatmap(
        fig_dir / "anomalies-band-z.png", anomalies["band_z"], labels, anomalies["band_hz"], anomalies["threshold"],
        f"band energy of maximized samples vs real clips of the word ({run}): z per mel band")}

    wrong = compare_to_prototypes(real, clips.labels, clip_pred, protos, targets, labels, cfg)
    wrong["source"] = source
    gallery = fig_dir / "misclassified"
    gallery.mkdir(exist_ok=True)
    for k, case in enumerate(wrong["cases"]):
        name = f"misclassified {k + 1}: '{case['true']}' clip given as '{case['predicted']}'"
        case["figure"] = f"misclassified/case{k + 1}-{_slug(case['true'])}-as-{_slug(case['predicted'])}.png"
        figs[name] = figures.prototype_case(
            fig_dir / case["figure"], real[case["clip"]], protos[case["wrong_prototype"]],
            protos[case["true_prototype"]],
            (f"prototype '{case['predicted']}'", f"clip {case['clip']} ('{case['true']}')",
             f"prototype '{case['true']}'"), anomalies["band_hz"], case.pop("pull_bands"), name)
    return anomalies, wrong, figs
