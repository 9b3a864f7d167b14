"""Step 2, the vocoder control: the separate classifier on the pre-vocoder features, and on the same samples after
WaveNet and after Griffin-Lim, re-featurized from the audio -- for real clips and for the noise samples of both
modes, per class. A sample recognised before the vocoder but not after was lost by the vocoder, not the
classifier."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..features import log_mel
from . import figures
from .inputs import Clips, EvalModels, pick_per_class, predict_separate, synthesize
from .noise import MODES
from .stats import bootstrap_rate


def vocoder_control(models: EvalModels, clips: Clips, keep: dict, k: int, labels, seed: int, threads, quiet: bool,
                    fig_dir: Path):
    """Real clips and the noise samples ``keep`` holds (by mode), ``k`` per class, through WaveNet and Griffin-Lim.

    Returns the metrics, the control's figure, and the audio by group -- {"wavenet", "griffinlim": (n, samples)
    or None, "index": the rows of ``clips`` (real clips) or of ``keep[mode]`` the audio follows} -- which the
    listening set reuses."""
    rng = np.random.default_rng(seed + 1)
    real = pick_per_class(clips.labels, k, len(labels), rng)
    scored = models.scored_classes()   # the separate classifier judges only the words it has
    real = real[np.isin(clips.labels[real], scored)]
    groups = {"real clips": (clips.mels[real], clips.labels[real])}
    index = {"real clips": real}
    for mode in MODES:
        sel = np.flatnonzero((keep[mode]["start"] < k) & np.isin(keep[mode]["targets"], scored))
        groups[f"{mode} mode"] = (keep[mode]["after"][sel], keep[mode]["targets"][sel])
        index[f"{mode} mode"] = sel
    audio, result = {}, {}
    for g, (mels, words) in groups.items():
        wn = synthesize(models, mels, seed, threads, True, f"WaveNet {g}", quiet) if models.wavenet else None
        gl = synthesize(models, mels, seed, threads, False, f"Griffin-Lim {g}", quiet)
        audio[g] = dict(wavenet=wn, griffinlim=gl, index=index[g])
        result[g] = _control_group(models, mels, np.asarray(words), wn, gl, labels, seed)
    note = f"no WaveNet vocoder ({models.vocoder_note}): Griffin-Lim only" if not models.wavenet else \
        (f"listening set and samples through Griffin-Lim: {models.vocoder_note}" if models.vocoder_note else None)
    figure = figures.control_chart(fig_dir / "vocoder-control.png", result,
                                   "vocoder control: the separate classifier before and after the vocoder")
    return {"groups": result, "wavenet_available": models.wavenet, "note": note}, figure, audio


def _control_group(models: EvalModels, mels, words, audio_wn, audio_gl, labels, seed: int) -> dict:
    """Separate classifier on the features, after WaveNet and after Griffin-Lim (re-featurized from audio):
    how often it gives the intended word, per class, and how often the vocoded sample keeps its pre-vocoder
    prediction."""
    cfg = models.classifier.feature_config
    rng = np.random.default_rng(seed)
    pre = predict_separate(models, mels)
    out = {"n": int(len(words)), "features": bootstrap_rate(pre == words, rng)}
    per_class = {w: {"features": round(float((pre[words == c] == c).mean()), 4)}
                 for c, w in enumerate(labels) if (words == c).any()}
    for kind, audio in (("wavenet", audio_wn), ("griffinlim", audio_gl)):
        if audio is None:
            out[kind] = None
            continue
        wave = torch.from_numpy(audio)
        post = predict_separate(models, log_mel(wave, cfg).float(), wave)
        out[kind] = bootstrap_rate(post == words, rng)
        out[kind]["agrees_with_features"] = round(float((post == pre).mean()), 4)
        for c, w in enumerate(labels):
            if (words == c).any():
                per_class[w][kind] = round(float((post[words == c] == c).mean()), 4)
    out["per_class"] = per_class
    return out
