"""How good is a vocoder, measured the way the card reports it.

On ``per_class`` speaker-disjoint test clips per word: the separate classifier's accuracy on (a) the original
audio, (b) WaveNet resynthesis and (c) Griffin-Lim resynthesis — each re-featurized from audio — and the STOI
of (b) and (c) against (a), over the clips long enough for STOI (:func:`stoi_scored_clips`). A few
resynthesized examples are written beside the card.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..data import SpeechCommands
from ..features import log_mel, save_audio
from ..ops.backends import available_backends
from ..ops.wavenet import sample_wavenet, sample_wavenet_ref
from .griffinlim import griffinlim_synthesize


def pick_test_clips(root, per_class: int, seed: int = 0):
    """``per_class`` test-split clips of each word (deterministic), as (waves (N, 16000), labels (N,), names)."""
    ds = SpeechCommands(root, "testing")
    w, y, _ = ds.waveforms()
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(ds.labels)):
        idx = np.flatnonzero(y.numpy() == c)
        keep += sorted(rng.choice(idx, min(per_class, len(idx)), replace=False).tolist())
    names = [str(ds.files[ds.items[i][0]].path) for i in keep]
    return w[keep], y[keep], names


def synthesize_wavenet(model, mel: torch.Tensor, seed: int, batch: int = 64, progress=None,
                       temperature: float = 1.0) -> np.ndarray:
    """mel (N, n_mels, T) -> waveforms (N, (T - 1) * hop), on the fused fp32 sampler where the extension runs
    (its draws equal the reference's; ``auto`` may pick bf16), else on the reference."""
    fused = available_backends()["cpu"]
    g = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(0, len(mel), batch):
        m = mel[i:i + batch]
        u = torch.rand(len(m), (m.shape[-1] - 1) * model.cfg.hop_length, generator=g)
        if fused:
            q = sample_wavenet(model, m, u, temperature, backend="cpu")
        else:
            q = sample_wavenet_ref(model, m, u, temperature)
        outs.append(model.decode(q))
        if progress is not None:
            progress(len(m))
    return np.concatenate(outs).astype(np.float32)


def stoi_scored_clips(waves: np.ndarray, sample_rate: int) -> list[int]:
    """Indices of the clips STOI can score. pystoi drops frames more than 40 dB below the loudest and, when
    fewer than 30 frames (384 ms) of speech remain, warns and returns 1e-5 whatever the degraded audio is:
    about 3 in 10 of the corpus's one-second words. Averaging those in would score the original against
    itself at 0.69, so they are left out (and counted) instead."""
    import warnings

    from pystoi import stoi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [i for i, w in enumerate(waves) if stoi(w, w, sample_rate) > 0.5]


HNR_FLOOR_HZ = 75.0
MCD_COEFFS = 24


def voiced_hnr_db(waves: np.ndarray, sample_rate: int) -> float:
    """Mean harmonics-to-noise ratio (dB) over the voiced frames of ``waves`` (N, samples), pooled: Praat's
    cross-correlation method, 10 ms steps, 75 Hz pitch floor; frames Praat leaves undefined (-200 dB: no
    periodicity found) are not voiced and are left out, as Praat's own "Get mean" does."""
    import parselmouth

    values = []
    for w in waves:
        h = parselmouth.Sound(np.asarray(w, dtype=np.float64), sampling_frequency=sample_rate).to_harmonicity_cc(
            time_step=0.01, minimum_pitch=HNR_FLOOR_HZ).values.ravel()
        values.append(h[h > -199.0])
    values = np.concatenate(values) if values else np.zeros(0)
    return round(float(values.mean()), 2) if values.size else float("nan")


def mel_cepstral_distortion_db(reference: torch.Tensor, degraded: torch.Tensor, floor_db: float = 40.0,
                               dynamic_range_db: float = 60.0) -> float:
    """Mel-cepstral distortion (dB) between two aligned log-mel batches (N, n_mels, frames): cepstra c1..c24
    from a DCT-II (orthonormal) of each natural-log mel frame, MCD = 10 / ln 10 * sqrt(2 * sum (dc)^2), averaged
    over the reference's speech frames (mean log-mel within ``floor_db`` of the clip's loudest frame). Both mels
    are floored ``dynamic_range_db`` below the reference clip's loudest band: band-limited voices leave the upper
    bands at the log floor (1e-5), where any vocoder's faint noise would otherwise dominate the distance."""
    n_mels = reference.shape[1]
    k = torch.arange(n_mels, dtype=torch.float64)
    dct = torch.cos(torch.pi / n_mels * (k[None] + 0.5) * k[:, None]) * math.sqrt(2.0 / n_mels)
    dct[0] /= math.sqrt(2.0)
    T = min(reference.shape[-1], degraded.shape[-1])
    ref, deg = reference[..., :T].double(), degraded[..., :T].double()
    low = ref.amax(dim=(1, 2), keepdim=True) - dynamic_range_db * math.log(10.0) / 20.0
    ref, deg = torch.maximum(ref, low), torch.maximum(deg, low)
    diff = torch.einsum("cm,nmt->nct", dct[1:MCD_COEFFS + 1], ref - deg)
    per_frame = 10.0 / math.log(10.0) * torch.sqrt(2.0 * (diff ** 2).sum(1))          # (N, T)
    energy_db = 20.0 / math.log(10.0) * ref.mean(1)                                  # (N, T), dB of the mean log-mel
    speech = energy_db >= energy_db.max(-1, keepdim=True).values - floor_db
    return round(float(per_frame[speech].mean()), 3)


def vocoder_quality(model, root, separate, per_class: int = 10, seed: int = 0, examples_dir=None,
                    n_examples: int = 6, griffinlim_iters: int = 32, progress=None, temperature: float = 1.0) -> dict:
    from pystoi import stoi

    cfg = model.feature_config
    waves, y, names = pick_test_clips(root, per_class, seed)
    mel = log_mel(waves, cfg).float()
    wn = synthesize_wavenet(model, mel, seed, progress=progress, temperature=temperature)
    gl = np.concatenate([griffinlim_synthesize(mel[i:i + 32], cfg, n_iter=griffinlim_iters, seed=seed)
                         for i in range(0, len(mel), 32)])

    @torch.no_grad()
    def accuracy(audio) -> float:
        feats = log_mel(torch.as_tensor(audio), cfg).float()
        separate.eval()
        pred = torch.cat([separate(feats[i:i + 256]).argmax(-1) for i in range(0, len(feats), 256)])
        return round(float((pred == y).float().mean()), 4)

    orig = waves.numpy()
    n = min(orig.shape[1], wn.shape[1], gl.shape[1])
    scored = stoi_scored_clips(orig[:, :n], cfg.sample_rate)
    stoi_of = lambda deg: round(float(np.mean([stoi(orig[i, :n], deg[i, :n], cfg.sample_rate) for i in scored])), 4) \
        if scored else None  # noqa: E731
    metrics = {"clips": len(y), "per_class": per_class,
               "separate_accuracy": {"original": accuracy(orig), "wavenet": accuracy(wn), "griffinlim": accuracy(gl)},
               "stoi": {"wavenet": stoi_of(wn), "griffinlim": stoi_of(gl)}, "stoi_clips": len(scored),
               "hnr_db": {k: voiced_hnr_db(a[:, :n], cfg.sample_rate) for k, a in (("original", orig), ("wavenet", wn), ("griffinlim", gl))},
               "mcd_db": {"original": 0.0, **{k: mel_cepstral_distortion_db(mel, log_mel(torch.as_tensor(a), cfg).float())
                                              for k, a in (("wavenet", wn), ("griffinlim", gl))}},
               "temperature": temperature}
    acc = metrics["separate_accuracy"]
    st = metrics["stoi"]
    metrics["bar_met"] = bool(acc["wavenet"] >= 0.9 * acc["original"] and bool(scored) and st["wavenet"] >= st["griffinlim"])
    if examples_dir is not None:
        ex = Path(examples_dir)
        files = []
        for i in np.linspace(0, len(y) - 1, n_examples).astype(int):
            stem = Path(names[i]).parent.name + "_" + Path(names[i]).stem[:8]
            for kind, audio in (("original", orig[i]), ("wavenet", wn[i]), ("griffinlim", gl[i])):
                save_audio(ex / f"{stem}_{kind}.wav", audio, cfg.sample_rate)
                files.append(f"{ex.name}/{stem}_{kind}.wav")
        metrics["examples"] = files
    return metrics
