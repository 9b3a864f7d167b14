"""Anomaly detectors: how the maximized samples of each class depart from real clips of that word.

Generic: they read log-mels and a FeatureConfig only (numpy; no torch, no knowledge of the model), so the same
code runs on speechmax's models, a user's model, or arrays a test builds. Each measure of a sample --

- ``band_energy``: its mean level in every mel band (dB), adjacent bands that depart together grouped into a
  span in Hz (the band edges are the config's Slaney mel centres, halfway between neighbours);
- ``placement``: the energy centroid and the onset (first frame within :data:`ONSET_DB` of the loudest), in ms;
- ``noise_floor``: the level (dB) and the spectral flatness of its quietest :data:`QUIET_SHARE` of frames;
- ``confusion``: what a separate classifier hears in the maximized samples of a word against what it hears
  in real clips of it (mean softmax; given by the caller, e.g. a noise run's ``heatmap_separate``)

-- is compared as a standardized difference: (maximized mean - real mean) / real clips' SD, the SD floored at
:data:`SD_FLOOR` of the measure's unit so a measure real clips barely vary in does not blow up. One scale for
every kind, so kinds are ranked together; the raw difference (dB, ms, flatness, probability) is kept for the
sentence. Intervals: percentile bootstrap resampling maximized samples and real clips independently, from a
numpy Generator seeded by the caller, so a result is reproducible to the last digit.

Maximized samples share departures every word has (overall level, a noise floor far above a TTS corpus's digital
silence, an onset at 0 ms). ``find_anomalies(..., centre=True)`` takes out, per measure, the median departure
over the words compared before standardizing, so what is left is what sets one word apart from the others of the
same model (the debugging benchmark's rule; the evaluation report keeps the plain comparison).

The same detectors read attribution maps (:func:`attribution_measures`, :func:`attribution_anomalies`): a
word's clips' attribution against the other words' clips', so a saliency baseline is scored by the same rule.
"""
from __future__ import annotations

import math

import numpy as np

from .stats import BOOTSTRAP, LEVEL

THRESHOLD = 3.0      # reported: |effect| >= this many real-clip SDs *and* the 95% CI on one side of 0
TOP_K = 5            # anomalies kept per class, strongest first
MIN_REAL = 3         # real clips of a word needed for a spread to standardize by (and to resample)
MIN_MAXIMIZED = 1    # maximized samples of a word needed (one sample is still compared with the real spread)
QUIET_SHARE = 0.2    # the quietest 20% of a sample's frames are its "silent part" (every sample has some)
ONSET_DB = 20.0      # onset: the first frame within 20 dB of the sample's loudest frame
# the smallest spread a measure is standardized by, in its unit: below that, differences are not meaningful
SD_FLOOR = {"band_energy": 1.0, "placement": 10.0, "noise_floor": 1.0, "flatness": 0.02, "confusion": 0.05}
SCALARS = (("placement", "energy centroid", "ms", "placement"), ("placement", "onset", "ms", "placement"),
           ("noise_floor", "noise floor level", "dB", "noise_floor"),
           ("noise_floor", "noise floor flatness", "", "flatness"))   # (kind, what, unit, floor key)


def db_per_log_unit(cfg) -> float:
    """dB per unit of the config's natural-log mel (power 1: a magnitude, 20 log10; power 2: 10 log10)."""
    return 20.0 / (math.log(10.0) * cfg.power)


def band_edges_hz(cfg) -> np.ndarray:
    """(n_mels, 2): each mel band's [lo, hi] in Hz -- halfway to its neighbours' centres, so adjacent bands tile
    fmin..fmax and a run of bands a..b spans [edges[a, 0], edges[b, 1]]."""
    import librosa   # librosa's Slaney mel points: the filterbank speechmax.features builds is librosa's own

    pts = librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax, htk=False)
    mids = (pts[:-1] + pts[1:]) / 2
    return np.stack([mids[:-1], mids[1:]], axis=1)


def quiet_frames(log_mels, cfg) -> np.ndarray:
    """(N, k) the indices of each sample's quietest :data:`QUIET_SHARE` of frames (by total mel power), quietest
    first: its "silent part"."""
    return _quietest(np.exp(np.asarray(log_mels, dtype=np.float64) * (2.0 / cfg.power)).sum(1))


def _quietest(energy: np.ndarray) -> np.ndarray:
    """(N, k) the :data:`QUIET_SHARE` lowest of (N, frames) frame energies, lowest first."""
    k = max(1, int(round(QUIET_SHARE * energy.shape[1])))
    return np.argsort(energy, axis=1, kind="stable")[:, :k]


def sample_measures(log_mels, cfg, batch: int = 256, quiet=None) -> np.ndarray:
    """(N, n_mels + 4) measures of (N, n_mels, frames) log-mels: the band levels (dB, mean over frames), then
    the energy centroid and onset (ms), the noise floor level (dB) and flatness of the quietest frames -- or,
    given ``quiet`` ((N, k) frame indices, e.g. :func:`quiet_frames` of the clips these samples started from),
    of those frames. Done ``batch`` samples at a time (a real corpus's test split holds thousands of clips)."""
    log_mels = np.asarray(log_mels)
    if len(log_mels) > batch:
        return np.concatenate([sample_measures(log_mels[i:i + batch], cfg, batch,
                                               None if quiet is None else quiet[i:i + batch])
                               for i in range(0, len(log_mels), batch)])
    x = log_mels.astype(np.float64)
    n, _, frames = x.shape
    db = x * db_per_log_unit(cfg)
    power = np.exp(x * (2.0 / cfg.power))                       # (N, bands, frames) mel power
    energy = power.sum(1)                                       # (N, frames)
    frame_db = 10 * np.log10(np.maximum(energy, 1e-30))
    ms = np.arange(frames) * cfg.hop_length / cfg.sample_rate * 1000
    centroid = (energy * ms).sum(1) / np.maximum(energy.sum(1), 1e-30)
    onset = ms[np.argmax(frame_db >= frame_db.max(1, keepdims=True) - ONSET_DB, axis=1)]
    if quiet is None:
        quiet = _quietest(energy)                               # (N, k)
    floor_db = np.take_along_axis(frame_db, quiet, 1).mean(1)
    qp = np.take_along_axis(power, quiet[:, None, :], 2)        # (N, bands, k)
    flat = np.exp(np.log(np.maximum(qp, 1e-30)).mean(1)) / np.maximum(qp.mean(1), 1e-30)
    return np.concatenate([db.mean(2), np.stack([centroid, onset, floor_db, flat.mean(1)], 1)], axis=1)


def attribution_measures(attr, log_mels, cfg) -> np.ndarray:
    """(N, n_mels + 4) measures of (N, n_mels, frames) attribution maps in :func:`sample_measures`' columns,
    read on |attr| as if it were energy: each band's share of the clip's attribution (dB, so a band the model
    leans on twice as hard is +3 dB), the attribution's centroid and onset (ms), the share on the clip's
    quietest frames (by the clip's own ``log_mels`` energy; dB) and its flatness across bands there."""
    a = np.abs(np.asarray(attr, dtype=np.float64)) + 1e-12
    x = np.asarray(log_mels, dtype=np.float64)
    n, _, frames = a.shape
    total = a.sum((1, 2))
    band_db = 10 * np.log10(a.sum(2) / total[:, None])
    per_frame = a.sum(1)
    ms = np.arange(frames) * cfg.hop_length / cfg.sample_rate * 1000
    centroid = (per_frame * ms).sum(1) / total
    frame_db = 10 * np.log10(per_frame)
    onset = ms[np.argmax(frame_db >= frame_db.max(1, keepdims=True) - ONSET_DB, axis=1)]
    quiet = quiet_frames(x, cfg)
    qa = np.take_along_axis(a, quiet[:, None, :], 2)
    share_db = 10 * np.log10(qa.sum((1, 2)) / total)
    flat = (np.exp(np.log(qa).mean(1)) / qa.mean(1)).mean(1)
    return np.concatenate([band_db, np.stack([centroid, onset, share_db, flat], 1)], axis=1)


def _effect(x, y, floor):
    """Standardized difference of means over the sample axis (-2): x (..., N, F) maximized, y (..., M, F) real."""
    diff = x.mean(-2) - y.mean(-2)
    return diff / np.maximum(y.std(-2, ddof=1), floor), diff


def _bootstrap(x, y, floor, rng, reps):
    """(F, 2) percentile intervals of the effect, resampling x's and y's rows independently."""
    ix = rng.integers(0, len(x), (reps, len(x)))
    iy = rng.integers(0, len(y), (reps, len(y)))
    z, _ = _effect(x[ix], y[iy], floor)
    return np.quantile(z, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0).T


def _spans(z, threshold):
    """Runs of adjacent bands whose z is beyond ``threshold`` with one sign: [(first, last), ...]."""
    sign = np.where(z >= threshold, 1, np.where(z <= -threshold, -1, 0))
    out, start = [], None
    for i, s in enumerate(np.append(sign, 0)):
        if start is not None and s != sign[start]:
            out.append((start, i - 1))
            start = None
        if start is None and s != 0:
            start = i
    return out


def _r(v, d=2):
    return round(float(v), d)


def class_anomalies(x, y, edges, rng, *, confusion=None, reps=BOOTSTRAP, threshold=THRESHOLD, top=TOP_K,
                    spread=None, confusion_centre=(0.0, SD_FLOOR["confusion"])):
    """The anomalies of one word: x (N, F) / y (M, F) :func:`sample_measures` of its maximized samples / real
    clips, edges :func:`band_edges_hz`. confusion: optional (heard (C,) mean softmax of the maximized samples,
    real (M, C) softmax of the real clips, labels, the word's own index) -- the maximized side a fixed mean over
    many starts, so only the real clips are resampled. spread: optional (F,) a further floor per measure column
    (how much the words' departures differ from each other; see :func:`find_anomalies`' ``centre``);
    confusion_centre: (shift, floor) for the confusion (:func:`_confusion_centre`; default: none, the plain
    floor). Returns (anomalies
    strongest first with their rank, the bands' z (n_mels,))."""
    bands = len(edges)
    spread = np.zeros(x.shape[1]) if spread is None else np.asarray(spread, dtype=np.float64)
    band_floor = np.maximum(SD_FLOOR["band_energy"], spread[:bands])
    band_z, _ = _effect(x[:, :bands], y[:, :bands], band_floor)
    cand = []   # (kind, what, unit, floor, x column, y column, extra)
    for a, b in _spans(band_z, threshold):
        cand.append(("band_energy", "band energy", "dB", band_floor[a:b + 1].mean(), x[:, a:b + 1].mean(1),
                     y[:, a:b + 1].mean(1), {"band_hz": [_r(edges[a, 0], 0), _r(edges[b, 1], 0)],
                                             "bands": [a, b]}))
    for j, (kind, what, unit, key) in enumerate(SCALARS):
        cand.append((kind, what, unit, max(SD_FLOOR[key], spread[bands + j]), x[:, bands + j], y[:, bands + j], {}))
    xs = np.stack([c[4] for c in cand], 1)
    ys = np.stack([c[5] for c in cand], 1)
    floors = np.array([c[3] for c in cand])
    z, diff = _effect(xs, ys, floors)
    ci = _bootstrap(xs, ys, floors, rng, reps)
    found = [dict(kind=c[0], what=c[1], **c[6], effect=_r(z[i]), ci=[_r(ci[i, 0]), _r(ci[i, 1])], raw=_r(diff[i]),
                  unit=c[2], maximized=_r(xs[:, i].mean()), real=_r(ys[:, i].mean()))
             for i, c in enumerate(cand)]
    if confusion is not None:
        heard, real, labels, own = confusion
        shift, floor = confusion_centre
        heard = np.asarray(heard, dtype=np.float64)
        real = np.asarray(real, dtype=np.float64)
        zc, dc = _effect(heard[None] - shift, real, floor)
        zc[own] = -np.inf   # the word itself is not a confusion
        c = int(np.argmax(zc))
        iy = rng.integers(0, len(real), (reps, len(real)))
        zb, _ = _effect(heard[None, None, c:c + 1] - shift, real[iy][..., c:c + 1], floor)
        lo, hi = np.quantile(zb[:, 0], [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        found.append(dict(kind="confusion", what=f"separate classifier hears '{labels[c]}'", heard_as=labels[c],
                          effect=_r(zc[c]), ci=[_r(lo), _r(hi)], raw=_r(dc[c], 4), unit="p",
                          maximized=_r(heard[c], 4), real=_r(real[:, c].mean(), 4)))
    kept = [a for a in found if (a["effect"] >= threshold and a["ci"][0] > 0)
            or (a["effect"] <= -threshold and a["ci"][1] < 0)]
    kept.sort(key=lambda a: -abs(a["effect"]))
    return [dict(a, rank=k + 1) for k, a in enumerate(kept[:top])], band_z


def _skip_reason(word, n_x, n_y, what="maximized sample(s)"):
    return (f"the reference corpus has no clip of '{word}'" if n_y == 0 else
            f"{n_y} real clip(s) of '{word}', needs {MIN_REAL} for a spread and a bootstrap" if n_y < MIN_REAL else
            f"{n_x} {what} of '{word}', needs {MIN_MAXIMIZED}" if n_x < MIN_MAXIMIZED else None)


def _confusion_centre(confusion, compared, real_labels) -> tuple[float, float]:
    """(shift, floor) for centred confusions: over the compared words, each word's strongest confusion (the
    largest rise of another word's probability, maximized mean - real mean), their median and, as the floor a
    confusion is standardized by, at least 1.4826 x their median absolute deviation -- a word's confusion must
    stand out among the words' of the same model, as every centred measure must."""
    heat, real = np.asarray(confusion["heatmap"], dtype=np.float64), np.asarray(confusion["real_probs"], np.float64)
    top = []
    for c in compared:
        if not np.all(np.isfinite(heat[c])):
            continue
        rise = heat[c] - real[real_labels == c].mean(0)
        rise[c] = -np.inf
        top.append(rise.max())
    if not top:
        return 0.0, SD_FLOOR["confusion"]
    mid = float(np.median(top))
    return mid, max(SD_FLOOR["confusion"], 1.4826 * float(np.median(np.abs(np.array(top) - mid))))


def find_anomalies(maximized, targets, real, real_labels, labels, cfg, *, seed: int, confusion=None,
                   reps: int = BOOTSTRAP, threshold: float = THRESHOLD, top: int = TOP_K,
                   centre: bool = False, starts=None) -> dict:
    """Per word of ``labels``, the strongest departures of its maximized samples from its real clips.

    maximized: (N, n_mels, frames) log-mels with ``targets`` (N,) class indices; real: (M, n_mels, frames)
    log-mels with ``real_labels`` (M,); cfg: their FeatureConfig (n_mels, fmin, fmax, sample_rate, hop_length,
    power). confusion: optional dict(heatmap=(C, C) the separate classifier's mean softmax per target over the
    maximized samples, real_probs=(M, C) its softmax on the real clips, columns in ``labels``' order). A word
    with no real clip, fewer than :data:`MIN_REAL`, or fewer than :data:`MIN_MAXIMIZED` samples is skipped with
    the reason. Returns {"per_class": {word: [anomaly, ...]}, "skipped": {word: reason}, "band_z": (C, n_mels)
    z-scores (None where skipped), "band_hz": edges, "threshold", "top", "min_real", "min_maximized"}; an anomaly
    is {"kind", "what", ["band_hz", "bands"], "effect" (z), "ci" [lo, hi], "raw", "unit", "maximized", "real",
    ["heard_as"], "rank"}.

    centre: take out of every word's maximized measures the median over the compared words of (maximized mean -
    real mean), measure by measure (the departures all maximized samples share; see the module's doc), and
    standardize by at least the spread of those departures over the words (1.4826 x their median absolute
    deviation): a word's departure must stand out among the words' of the same model, not only among its real
    clips. The result then records ``"centred"`` and ``"spread"`` per measure. Confusions likewise: a word's
    strongest confusion is centred on the words' median and standardized by at least their spread
    (:func:`_confusion_centre`; recorded as ``"confusion_centre"`` [shift, floor]).

    starts: optional (maximized starts, real starts), log-mels row for row beside ``maximized`` and ``real``:
    every measure is then a row's change from its start (a band's dB gained, the centroid's shift, ...), for two
    ascents from the same clips -- a model's against a reference model's -- compared start for start, so the
    clips' own spread drops out and what is left is what the two ascents did differently. The noise floor is then
    read, before and after, on the frames that were quietest in the start: re-picking a sample's quietest frames
    after the ascent would pick the ones it happened to lower, so any change -- even one that raises the start's
    silent part -- would read as a lower floor.
    """
    rng = np.random.default_rng(seed)
    targets, real_labels = np.asarray(targets), np.asarray(real_labels)
    edges = band_edges_hz(cfg)
    if starts is None:
        x_all, y_all = sample_measures(maximized, cfg), sample_measures(real, cfg)
    else:
        x0, y0 = (np.asarray(a) for a in starts)
        if x0.shape != np.shape(maximized) or y0.shape != np.shape(real):
            raise ValueError(f"starts must be shaped as the samples: {x0.shape} / {y0.shape} for "
                             f"{np.shape(maximized)} / {np.shape(real)}")
        qx, qy = quiet_frames(x0, cfg), quiet_frames(y0, cfg)
        x_all = sample_measures(maximized, cfg, quiet=qx) - sample_measures(x0, cfg, quiet=qx)
        y_all = sample_measures(real, cfg, quiet=qy) - sample_measures(y0, cfg, quiet=qy)
    compared = [c for c, word in enumerate(labels)
                if _skip_reason(word, (targets == c).sum(), (real_labels == c).sum()) is None]
    shift, spread = np.zeros(x_all.shape[1]), None
    conf_centre = (0.0, SD_FLOOR["confusion"])
    if centre and compared:
        dep = np.array([x_all[targets == c].mean(0) - y_all[real_labels == c].mean(0) for c in compared])
        shift = np.median(dep, 0)
        spread = 1.4826 * np.median(np.abs(dep - shift), 0)
        if confusion is not None:
            conf_centre = _confusion_centre(confusion, compared, real_labels)
    per_class, skipped, band_z = {}, {}, []
    for c, word in enumerate(labels):
        x, y = x_all[targets == c] - shift, y_all[real_labels == c]
        reason = _skip_reason(word, len(x), len(y))
        if reason:
            skipped[word] = reason
            band_z.append([None] * cfg.n_mels)
            continue
        conf = None
        if confusion is not None:
            conf = (confusion["heatmap"][c], np.asarray(confusion["real_probs"])[real_labels == c], labels, c)
            if not np.all(np.isfinite(conf[0])):
                conf = None
        per_class[word], z = class_anomalies(x, y, edges, rng, confusion=conf, reps=reps, threshold=threshold,
                                             top=top, spread=spread, confusion_centre=conf_centre)
        band_z.append([_r(v) for v in z])
    out = {"per_class": per_class, "skipped": skipped, "band_z": band_z,
           "band_hz": [[_r(lo, 1), _r(hi, 1)] for lo, hi in edges], "threshold": threshold, "top": top,
           "min_real": MIN_REAL, "min_maximized": MIN_MAXIMIZED}
    if centre:
        out["centred"] = [_r(v) for v in shift]
        out["spread"] = None if spread is None else [_r(v) for v in spread]
        out["confusion_centre"] = [_r(v, 4) for v in conf_centre]
    return out


def attribution_anomalies(attr, log_mels, clip_labels, labels, cfg, *, seed: int, reps: int = BOOTSTRAP,
                          threshold: float = THRESHOLD, top: int = TOP_K) -> dict:
    """Per word of ``labels``, how the attribution maps of its clips toward it depart from the other words'
    clips' maps toward theirs -- the same detectors, standardized by the other words' spread. attr, log_mels:
    (M, n_mels, frames) each clip's attribution map and log-mel; clip_labels (M,). Returns {"per_class",
    "skipped", "threshold", "top"} as :func:`find_anomalies` (no confusion: an attribution names no other
    word)."""
    rng = np.random.default_rng(seed)
    clip_labels = np.asarray(clip_labels)
    edges = band_edges_hz(cfg)
    m = attribution_measures(attr, log_mels, cfg)
    per_class, skipped = {}, {}
    for c, word in enumerate(labels):
        x, y = m[clip_labels == c], m[clip_labels != c]
        reason = _skip_reason(word, len(x), len(y), what="clip(s) with an attribution")
        if reason is None and len(x) < MIN_REAL:
            reason = f"{len(x)} clip(s) of '{word}', needs {MIN_REAL} for a bootstrap"
        if reason:
            skipped[word] = reason
            continue
        per_class[word], _ = class_anomalies(x, y, edges, rng, reps=reps, threshold=threshold, top=top)
    return {"per_class": per_class, "skipped": skipped, "threshold": threshold, "top": top}
