"""The numbers of the evaluation report: success rates with bootstrap confidence intervals, mean-softmax
heatmaps, class-to-class matrices, and the sentences of the debugging summary."""
from __future__ import annotations

import numpy as np

BOOTSTRAP = 2000   # resamples per interval
LEVEL = 0.95


def bootstrap_rate(hits, rng: np.random.Generator, reps: int = BOOTSTRAP, level: float = LEVEL) -> dict:
    """Share of True in ``hits`` with a percentile-bootstrap interval (resampling the starts with replacement).

    The bootstrap distribution of a mean of 0/1 values is Binomial(n, rate) / n, so it is drawn as such:
    the same distribution as resampling the array, without materialising (reps, n) indices.
    """
    hits = np.asarray(hits, dtype=bool)
    n = int(hits.size)
    if n == 0:
        return {"rate": None, "lo": None, "hi": None, "n": 0}
    rate = float(hits.mean())
    draws = rng.binomial(n, rate, size=reps) / n
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"rate": round(rate, 4), "lo": round(float(lo), 4), "hi": round(float(hi), 4), "n": n}


def success_rates(targets, pred_classifier, pred_separate, labels, seed: int = 0, scored=None) -> dict:
    """Success = the classifier and the separate classifier both give the target. Per class and overall
    (the mean over classes, bootstrapped stratified by class), each with a 95% bootstrap interval; also
    each classifier's own hit rate. scored: the labels the separate classifier has (None: all): success and the
    separate hit rate count only targets among them; the others are listed as ``unscored``."""
    targets, pc, ps = (np.asarray(a) for a in (targets, pred_classifier, pred_separate))
    rng = np.random.default_rng(seed)
    hits = (pc == targets) & (ps == targets)
    scored = set(labels if scored is None else scored)
    on = np.isin(targets, [c for c, word in enumerate(labels) if word in scored])
    per_class, draws = {}, []
    for c, word in enumerate(labels):
        h = hits[targets == c]
        if h.size == 0 or word not in scored:
            continue
        per_class[word] = bootstrap_rate(h, rng)
        draws.append(rng.binomial(h.size, h.mean(), size=BOOTSTRAP) / h.size)
    overall = {"rate": None, "lo": None, "hi": None, "n": int(on.sum())}
    if draws:
        rates = np.array([v["rate"] for v in per_class.values()])
        lo, hi = np.quantile(np.mean(draws, axis=0), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        overall = {"rate": round(float(rates.mean()), 4), "lo": round(float(lo), 4), "hi": round(float(hi), 4),
                   "n": int(on.sum())}
    out = {"overall": overall, "per_class": per_class,
           "hit_rate": {"classifier": round(float((pc == targets).mean()), 4) if targets.size else None,
                        "separate": round(float((ps[on] == targets[on]).mean()), 4) if on.any() else None}}
    unscored = [word for word in labels if word not in scored]
    if unscored:
        out["unscored"] = unscored
    return out


def mean_softmax(targets, probs, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes): row t = the mean softmax over the samples climbed toward t (NaN rows for
    targets without samples) -- the paper's Fig. 5 heatmap."""
    targets, probs = np.asarray(targets), np.asarray(probs, dtype=np.float64)
    out = np.full((n_classes, n_classes), np.nan)
    for t in range(n_classes):
        sel = targets == t
        if sel.any():
            out[t] = probs[sel].mean(0)
    return out


def pair_matrix(sources, targets, hits, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes): share of hits for clips of word A (row) climbed toward word B (column)."""
    out = np.full((n_classes, n_classes), np.nan)
    sources, targets, hits = np.asarray(sources), np.asarray(targets), np.asarray(hits, dtype=np.float64)
    for a in range(n_classes):
        for b in range(n_classes):
            sel = (sources == a) & (targets == b)
            if sel.any():
                out[a, b] = hits[sel].mean()
    return out


def rounded(m: np.ndarray, digits: int = 4) -> list:
    """A matrix as nested lists for JSON (NaN -> None)."""
    return [[None if not np.isfinite(v) else round(float(v), digits) for v in row] for row in np.asarray(m)]


def top_confusions(heatmap: np.ndarray, labels, k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells of a target x class mean-softmax heatmap: what the separate classifier
    hears instead of the target."""
    h = np.array(heatmap, dtype=np.float64)
    np.fill_diagonal(h, -np.inf)
    h[~np.isfinite(h)] = -np.inf
    order = np.argsort(-h, axis=None, kind="stable")[:k]   # ties in row-major order
    out = []
    for flat in order:
        t, c = divmod(int(flat), h.shape[1])
        if not np.isfinite(h[t, c]):
            break
        out.append({"target": labels[t], "heard_as": labels[c], "mean_prob": round(float(h[t, c]), 4)})
    return out
