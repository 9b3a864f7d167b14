"""Misclassified real clips against the maximized prototypes (the seed paper's proposed use of them): each clip the
classifier gets wrong beside the nearest prototype of its true word and of the word it was given, and where in
frequency and time it is closer to the wrong one.

Nearness is the log-mel Euclidean distance: it needs nothing from the model, so it works the same for speechmax's
models and a user's TorchScript / torch.export classifier (whose layers may not take a forward hook), and the
squared difference it sums splits by band and frame, which is what names the bands and time spans. Numpy only.
"""
from __future__ import annotations

import numpy as np

from .anomaly import band_edges_hz

METHOD = "log-mel euclidean distance"
GALLERY = 6      # worst cases drawn in the report
PULL_SPANS = 2   # band spans named per clip / per class


def _runs(positive):
    """Runs of True in a 1-d bool array: [(first, last), ...]."""
    edges = np.diff(np.concatenate([[0], positive.astype(np.int8), [0]]))
    return [(int(a), int(b)) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1)]


def pull_spans(pull, k: int = PULL_SPANS):
    """The ``k`` runs of adjacent positive entries of ``pull`` (n,) with the largest sums, strongest first."""
    runs = _runs(np.asarray(pull) > 0)
    return sorted(runs, key=lambda r: -float(np.sum(pull[r[0]:r[1] + 1])))[:k]


def compare_to_prototypes(clips, clip_labels, clip_pred, protos, proto_targets, labels, cfg,
                          gallery: int = GALLERY) -> dict:
    """Every misclassified clip (``clip_pred`` != ``clip_labels``) of (M, n_mels, frames) log-mels ``clips`` against
    the prototypes ``protos`` (N, n_mels, frames) maximized toward ``proto_targets`` (N,).

    For each clip the nearest prototype of its true and of its predicted word; pull = (clip - true)^2 -
    (clip - wrong)^2, positive where the clip is nearer the wrong word; its sum over frames names the bands (Hz),
    over bands the time span (ms). Returns {"method", "per_class": {word: {"clips", "misclassified",
    "most_common_wrong", "wrong_count", "pull_bands_hz"}}, "cases": the ``gallery`` worst (by how much nearer the
    wrong prototype the clip is, relative to both distances), "without_prototype": clips whose true or predicted
    word has none}; each case holds the indices ``clip``, ``true_prototype``, ``wrong_prototype`` for drawing."""
    clips, protos = np.asarray(clips, dtype=np.float64), np.asarray(protos, dtype=np.float64)
    clip_labels, clip_pred, proto_targets = (np.asarray(a) for a in (clip_labels, clip_pred, proto_targets))
    edges = band_edges_hz(cfg)
    ms_per_frame = cfg.hop_length / cfg.sample_rate * 1000
    hz = lambda a, b: [round(float(edges[a, 0])), round(float(edges[b, 1]))]  # noqa: E731
    wrong = np.flatnonzero(clip_pred != clip_labels)
    cases, band_pull, lost = [], {}, 0
    for i in wrong:
        t, p = int(clip_labels[i]), int(clip_pred[i])
        mine, theirs = np.flatnonzero(proto_targets == t), np.flatnonzero(proto_targets == p)
        if not len(mine) or not len(theirs):
            lost += 1
            continue
        d = {j: float(((protos[j] - clips[i]) ** 2).sum()) for j in np.concatenate([mine, theirs]).tolist()}
        a, b = min(mine.tolist(), key=d.get), min(theirs.tolist(), key=d.get)
        pull = (clips[i] - protos[a]) ** 2 - (clips[i] - protos[b]) ** 2
        bands, frames = pull.mean(1), pull.mean(0)
        band_pull.setdefault((t, p), []).append(bands)
        time, spans = pull_spans(frames, 1), pull_spans(bands)
        cases.append({"clip": int(i), "true": labels[t], "predicted": labels[p], "true_prototype": a,
                      "wrong_prototype": b, "nearer": "predicted" if d[b] < d[a] else "true",
                      "margin": round((d[a] - d[b]) / max(d[a] + d[b], 1e-12), 4),
                      "pull_bands_hz": [hz(*s) for s in spans], "pull_bands": [list(s) for s in spans],
                      "pull_ms": [round(time[0][0] * ms_per_frame), round((time[0][1] + 1) * ms_per_frame)]
                      if time else None})
    per_class = {}
    for c, word in enumerate(labels):
        mine = clip_labels == c
        if not mine.any():
            continue
        wrong_of = clip_pred[mine & (clip_pred != c)]
        entry = {"clips": int(mine.sum()), "misclassified": int(len(wrong_of)), "most_common_wrong": None,
                 "wrong_count": 0, "pull_bands_hz": []}
        if len(wrong_of):
            p = int(np.bincount(wrong_of).argmax())   # ties: the lower class index
            entry.update(most_common_wrong=labels[p], wrong_count=int((wrong_of == p).sum()))
            if (c, p) in band_pull:
                entry["pull_bands_hz"] = [hz(*s) for s in pull_spans(np.mean(band_pull[(c, p)], axis=0))]
        per_class[word] = entry
    cases.sort(key=lambda x: (-x["margin"], x["clip"]))
    return {"method": METHOD, "misclassified": int(len(wrong)), "without_prototype": lost,
            "per_class": per_class, "cases": cases[:gallery]}
