"""Step 3, class to class: ``k`` real clips per word, each climbed toward every word in both modes; the success
matrix (source word A x target word B: both classifiers then give B)."""
from __future__ import annotations

import numpy as np

from .inputs import Clips, EvalModels, pick_per_class
from .noise import MODES, maximize_recipe
from .stats import pair_matrix, rounded
from .timing import Stage


def class_to_class(models: EvalModels, clips: Clips, k: int, recipe: str, *, seed: int, steps, threads,
                   timing: dict, quiet: bool, advance):
    """Returns the metrics by mode, the runs by mode -- (maximize() result, source word of each start) -- and the
    rows of ``clips`` climbed (start j of every target is clip ``src[j]``), which the t-SNE and the listening set
    take up. Each mode is a stage ``class-to-class <mode>`` of ``timing``."""
    C = len(models.labels)
    src = pick_per_class(clips.labels, k, C, np.random.default_rng(seed))
    metrics, runs = {}, {}
    for mode in MODES:
        name = f"class-to-class {mode}"
        with Stage(timing, name, quiet, advance):
            res = maximize_recipe(models, mode, recipe, threads, not quiet, steps, init=clips.mels[src], seed=seed)
            source = clips.labels[src][res.start.numpy()]
            t = res.targets.numpy()
            heard = models.separate_index[res.separate_after.argmax(-1).numpy()]   # in the classifier's labels
            hits = (res.probs_after.argmax(-1).numpy() == t) & (heard == t)
            off = (source != t) & np.isin(t, models.scored_classes())
            metrics[mode] = {"matrix": rounded(pair_matrix(source, t, hits, C)),
                             "success_off_diagonal": round(float(hits[off].mean()), 4) if off.any() else None,
                             "hit_rate": {"classifier": res.hit_rate("classifier"),
                                          "separate": res.hit_rate("separate")},
                             "clips": int(len(src)), "starts": int(len(t))}
            runs[mode] = (res, source)
        metrics[mode]["seconds"] = timing[name]
    return metrics, runs, src
