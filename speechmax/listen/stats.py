"""Listening-test statistics: MOS with a Student-t interval, identification accuracy with a Wilson
interval, the attention-check rule (see the package docstring) and the summary served as JSON.

An answer here is a mapping with keys ``rater_id``, ``role``, ``condition``, ``target`` (the clip's word
or None), ``rating`` (1..5) and ``word`` (the word chosen, or ``"none"``).
"""
from __future__ import annotations

import math
from collections import defaultdict

MIN_REFERENCES = 2
Z95 = 1.959963984540054


def mean_ci(values, level: float = 0.95) -> dict:
    """Mean and two-sided Student-t confidence interval: ``{"n", "mean", "lo", "hi"}``.

    The bounds are None for fewer than two values (no spread to estimate); the mean is None for none.
    """
    from scipy.special import stdtrit

    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    mean = math.fsum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "lo": None, "hi": None}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half}


def wilson_interval(successes: int, n: int, z: float = Z95) -> dict:
    """Proportion and Wilson score interval (95% for the default z): ``{"n", "k", "p", "lo", "hi"}``."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return {"n": 0, "k": 0, "p": None, "lo": None, "hi": None}
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return {"n": n, "k": successes, "p": p, "lo": max(0.0, centre - half), "hi": min(1.0, centre + half)}


def rater_status(answers) -> dict:
    """Apply the attention-check rule to one rater's answers.

    Returns ``{"status": "ok"|"failed"|"pending", "answers": total, "references": n, "reference_correct": k,
    "reference_mos": x, "anchors": m, "anchor_mos": y, "reasons": [...]}``.
    """
    refs = [a for a in answers if a["role"] == "reference"]
    anchors = [a for a in answers if a["role"] == "anchor"]
    correct = sum(a["word"] == a["target"] for a in refs)
    ref_mos = mean_ci([a["rating"] for a in refs])["mean"]
    anchor_mos = mean_ci([a["rating"] for a in anchors])["mean"]
    reasons, applied = [], False
    if len(refs) >= MIN_REFERENCES:
        applied = True
        if correct < len(refs) / 2:
            reasons.append(f"identified {correct} of {len(refs)} references")
    if refs and anchors:
        applied = True
        if anchor_mos >= ref_mos:
            reasons.append(f"rated anchors {anchor_mos:.2f} >= references {ref_mos:.2f}")
    status = "failed" if reasons else ("ok" if applied else "pending")
    return {"status": status, "answers": len(answers), "references": len(refs), "reference_correct": correct,
            "reference_mos": ref_mos, "anchors": len(anchors), "anchor_mos": anchor_mos, "reasons": reasons}


def rater_statuses(answers) -> dict:
    """``rater_status`` of every rater who has answered: rater id → status dict."""
    return {rater: rater_status(given) for rater, given in sorted(_by(answers, "rater_id").items())}


def _scores(answers) -> dict:
    scored = [a for a in answers if a["target"] is not None]
    return {"mos": mean_ci([a["rating"] for a in answers]),
            "accuracy": wilson_interval(sum(a["word"] == a["target"] for a in scored), len(scored))}


def _by(answers, key):
    groups = defaultdict(list)
    for a in answers:
        groups[a[key]].append(a)
    return groups


def summarize(answers, set_name: str = "") -> dict:
    """The results: rater statuses, then MOS and identification accuracy (with 95% intervals) per
    condition, per class within each condition, and per class over all test clips. Answers of failed
    raters are left out of every score."""
    statuses = rater_statuses(answers)
    kept = [a for a in answers if statuses[a["rater_id"]]["status"] != "failed"]
    conditions = []
    for condition, group in sorted(_by(kept, "condition").items()):
        classes = [{"word": word, **_scores(of_word)}
                   for word, of_word in sorted(_by(group, "target").items(), key=lambda kv: kv[0] or "")]
        conditions.append({"condition": condition, "roles": sorted({a["role"] for a in group}),
                           **_scores(group), "classes": classes})
    tests = [a for a in kept if a["role"] == "test" and a["target"] is not None]
    counts = defaultdict(int)
    for s in statuses.values():
        counts[s["status"]] += 1
    return {
        "set": set_name,
        "answers": {"total": len(answers), "included": len(kept)},
        "raters": {"total": len(statuses), "ok": counts["ok"], "pending": counts["pending"],
                   "failed": counts["failed"],
                   "list": [{"rater_id": rater, **s} for rater, s in statuses.items()]},
        "conditions": conditions,
        "classes": [{"word": word, **_scores(of_word)} for word, of_word in sorted(_by(tests, "target").items())],
    }
