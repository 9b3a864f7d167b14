"""Step 5, the listening set for ``speechmax listen``: which samples go in, vocoded to numpy audio; the set itself
(files, manifest, references and anchors) is written by :mod:`speechmax.listen.build`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..listen.build import SetClip, hidden_controls, write_listening_set
from .inputs import Clips, EvalModels, synthesize
from .noise import MODES

SET_NAME = "speechmax-evaluate"


def listening_set(models: EvalModels, clips: Clips, keep: dict, c2c_runs: dict, src, audio: dict, k: int, labels,
                  root: Path, seed: int, threads, quiet: bool) -> dict:
    """``k`` clips per word and condition (features/latent x noise, real-before, real-after), hidden references
    (real clips resynthesized, known word) and low-quality anchors, in ``root``. The noise samples and real
    clips the vocoder control already vocoded (``audio``) are reused; the rest is vocoded here."""
    sr = models.vocoder.sample_rate
    primary = "wavenet" if models.wavenet and models.vocoder.preferred_backend != "griffinlim" else "griffinlim"
    picks = []   # (id, condition, word, extra manifest fields, audio or None, log-mel to vocode or None)
    for mode in MODES:
        kp, g = keep[mode], audio[f"{mode} mode"]
        vocoded = {int(i): n for n, i in enumerate(g["index"])}
        for i in np.flatnonzero(kp["start"] < k):
            word = labels[kp["targets"][i]]
            n = vocoded.get(int(i))
            picks.append((f"{mode}-noise-{word}-{kp['start'][i]}", f"{mode}/noise", word, {},
                          None if n is None else g[primary][n], kp["after"][i]))
        res, source = c2c_runs[mode]
        for c, word in enumerate(labels):
            mine = [j for j in range(len(src)) if clips.labels[src[j]] == c][:k]
            for j in mine:   # before: the clip as the ascent saw it (latent mode: the prior's reconstruction)
                picks.append((f"{mode}-real-before-{word}-{j}", f"{mode}/real-before", word,
                              {"source_clip": int(src[j])}, None, res.features_before[j]))
            # after: clips of other words climbed toward this one
            for i in np.flatnonzero((res.targets.numpy() == c) & (source != c))[:k]:
                picks.append((f"{mode}-real-after-{word}-{int(source[i])}-{int(res.start[i])}", f"{mode}/real-after",
                              word, {"source_word": labels[int(source[i])]}, None, res.features[i]))
    mels = [mel for *_, wave, mel in picks if wave is None]
    vocoded = iter(synthesize(models, torch.stack(mels), seed + 3, threads, primary == "wavenet", "listening set",
                              quiet) if mels else ())
    set_clips = [SetClip(cid, condition, word, "test", next(vocoded) if wave is None else wave, extra)
                 for cid, condition, word, extra, wave, _ in picks]
    real = audio["real clips"]
    set_clips += hidden_controls(clips.waves[real["index"]].numpy(), real[primary],
                                 [labels[int(clips.labels[i])] for i in real["index"]], k, sr,
                                 np.random.default_rng(seed + 2))
    write_listening_set(root, SET_NAME, set_clips, sr, labels,
                        vocoder=models.names["vocoder"] if primary == "wavenet" else "griffinlim")
    counts: dict = {}
    for clip in set_clips:
        counts[clip.condition] = counts.get(clip.condition, 0) + 1
    return {"path": str(root), "clips": len(set_clips), "per_condition": counts, "vocoder": primary}
