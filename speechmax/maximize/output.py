"""A maximization result on disk: per sample a log-mel ``.npy``, a ``.wav`` and a before/after spectrogram
``.png``, and ``manifest.json`` with the settings and every score."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..features import FeatureConfig, fit_length, load_audio, log_mel, save_audio
from ..models.inference import logits_on_audio
from ..outputs import atomic_path, write_json
from ..vocoder.vocoder import Vocoder
from .engine import MaximizeResult


def _top(probs: torch.Tensor, labels) -> dict:
    p, i = probs.max(-1)
    return {"label": labels[int(i)], "prob": round(float(p), 6)}


def _scores(probs: torch.Tensor, target: int, labels) -> dict:
    out = {"top": _top(probs, labels), "probs": [round(float(v), 6) for v in probs]}
    if target >= 0:
        out["target_prob"] = round(float(probs[target]), 6)
    return out


def plot_before_after(path, before, after, title: str, left: str, right: str) -> None:
    """Two log-mel panels (n_mels, frames) side by side on one colour scale, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = float(min(before.min(), after.min()))
    hi = float(max(before.max(), after.max()))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    fig.subplots_adjust(left=0.06, right=0.87, bottom=0.14, top=0.82, wspace=0.05)
    for ax, m, sub in zip(axes, (before, after), (left, right)):
        im = ax.imshow(np.asarray(m), origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(sub, fontsize=9)
        ax.set_xlabel("frame (10 ms)")
    axes[0].set_ylabel("mel band")
    fig.colorbar(im, cax=fig.add_axes([0.89, 0.14, 0.015, 0.68]), label="log-mel")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _caption(res: MaximizeResult, i: int, when: str) -> str:
    pc = res.probs_before if when == "before" else res.probs_after
    ps = res.separate_before if when == "before" else res.separate_after
    t = _top(pc[i], res.labels)
    text = f"{when}: classifier {t['label']} {t['prob']:.2f}"
    if ps is not None:
        s = _top(ps[i], res.separate_labels or res.labels)
        text += f", separate {s['label']} {s['prob']:.2f}"
    return text


MANIFEST = "manifest.json"


def remove_samples(out) -> list[str]:
    """Delete the files a previous :func:`write_samples` in ``out`` listed in its manifest (and the manifest);
    nothing else. Returns the names deleted."""
    out = Path(out)
    try:
        samples = json.loads((out / MANIFEST).read_text())["samples"]
        names = [s[k] for s in samples for k in ("npy", "wav", "png") if s.get(k)] + [MANIFEST]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    gone = []
    for name in names:
        p = out / Path(name).name    # a manifest only ever names files beside it
        if p.is_file():
            p.unlink()
            gone.append(p.name)
    return gone


def write_samples(res: MaximizeResult, out, *, vocoder="auto", feature_config: FeatureConfig | None = None,
                  seed: int = 0, progress=None, resume: bool = False) -> Path:
    """Write every sample of ``res`` under ``out`` and return the manifest's path.

    Files per sample k: ``{k:05d}_{target}_s{start}.npy`` (log-mel (n_mels, frames) after the ascent),
    ``.wav`` (through ``vocoder``: auto = the shipped WaveNet vocoder, else Griffin-Lim; griffinlim; a name or
    path; or a loaded :class:`speechmax.Vocoder`), ``.png`` (before |
    after spectrograms, titled with the target and both classifiers' top label and probability).
    Every file is written atomically; ``resume`` keeps the files already there (a previous, interrupted
    run of the same settings wrote them) and writes only the missing ones. A sample whose audio comes out
    non-finite (e.g. features blown up by a huge step size) gets no ``.wav``: the manifest gives its
    ``wav_skipped`` reason and lists it under ``wav_skipped``; the others are still written.
    ``progress``: optional callable(n), called once per sample written.
    """
    voc = Vocoder.for_listeners(vocoder) if isinstance(vocoder, str) else vocoder
    samples = write_sample_files(res, out, vocoder=voc, feature_config=feature_config, seed=seed, progress=progress,
                                 resume=resume)
    return write_manifest(res, out, samples, voc)


def write_sample_files(res: MaximizeResult, out, *, vocoder="auto", feature_config: FeatureConfig | None = None,
                       seed: int = 0, progress=None, resume: bool = False, index=None) -> list[dict]:
    """The files of :func:`write_samples` (npy, wav, png per sample) and the manifest entry of each, without the
    manifest. index: each row's number in the whole run (default its row), which names its files and seeds its
    audio -- a rank of a torchrun run writes its rows under the numbers one process would give them."""
    if res.features is None:
        raise ValueError("the result has no features (maximize(..., keep_features=False)); nothing to write")
    if res.features_before is None:
        raise ValueError("the result has no scores before the ascent (maximize(..., score_before=False)); "
                         "its before | after pages cannot be written")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    voc = Vocoder.for_listeners(vocoder) if isinstance(vocoder, str) else vocoder
    backend = voc.preferred_backend
    cfg = feature_config or voc.feature_config
    sep_labels = res.separate_labels or res.labels
    sep_index = {label: i for i, label in enumerate(sep_labels)}
    index = list(range(len(res.targets))) if index is None else [int(g) for g in index]
    samples = []
    for i, g in enumerate(index):
        target = int(res.targets[i])
        tname = res.labels[target] if target >= 0 else res.settings.get("objective", "unit").replace(":", "-")
        stem = f"{g:05d}_{tname}_s{int(res.start[i])}"
        feats = res.features[i]
        stopped = int(res.stopped_at[i])
        if not (resume and (out / f"{stem}.npy").is_file()):
            with atomic_path(out / f"{stem}.npy") as tmp:
                np.save(tmp, feats.numpy().astype(np.float32))
        wav, why_no_wav = f"{stem}.wav", None
        if not (resume and (out / wav).is_file()):
            wave = voc.synthesize(feats, backend=backend, seed=seed + g) if torch.isfinite(feats).all() else None
            if wave is None or not np.isfinite(wave).all():
                wav, why_no_wav = None, "non-finite features" if wave is None else "non-finite audio"
            else:
                save_audio(out / wav, wave, cfg.sample_rate)
        title = f"target: {tname}   start {int(res.start[i])}"
        sep_target = sep_index.get(tname, -1) if target >= 0 else -1
        if target >= 0:
            title += f"   P({tname}): classifier {float(res.probs_before[i, target]):.3f} -> " \
                     f"{float(res.probs_after[i, target]):.3f}"
            if res.separate_after is not None and sep_target >= 0:
                title += f", separate {float(res.separate_before[i, sep_target]):.3f} -> " \
                         f"{float(res.separate_after[i, sep_target]):.3f}"
        if stopped >= 0:
            title += f"   (stopped at step {stopped}: non-finite)"
        if not (resume and (out / f"{stem}.png").is_file()):
            with atomic_path(out / f"{stem}.png") as tmp:
                plot_before_after(tmp, res.features_before[i], feats, title, _caption(res, i, "before"),
                                  _caption(res, i, "after"))
        entry = {"index": g, "target": tname if target >= 0 else None, "start": int(res.start[i]),
                 "npy": f"{stem}.npy", "wav": wav, "png": f"{stem}.png",
                 **({"wav_skipped": why_no_wav} if why_no_wav else {}),
                 "stopped_at": stopped if stopped >= 0 else None,
                 "trajectory": [round(v, 6) if math.isfinite(v) else None for v in res.trajectory[i].tolist()],
                 "classifier": {"before": _scores(res.probs_before[i], target, res.labels),
                                "after": _scores(res.probs_after[i], target, res.labels)}}
        if res.separate_after is not None:
            entry["separate"] = {"before": _scores(res.separate_before[i], sep_target, sep_labels),
                                 "after": _scores(res.separate_after[i], sep_target, sep_labels)}
        samples.append(entry)
        if progress is not None:
            progress(1)
    return samples


def write_manifest(res: MaximizeResult, out, samples: list[dict], vocoder) -> Path:
    """``out``/manifest.json: the run's settings, labels, vocoder, hit rates and stopped starts, and ``samples``
    (:func:`write_sample_files`' entries, in index order)."""
    voc = Vocoder.for_listeners(vocoder) if isinstance(vocoder, str) else vocoder
    samples = sorted(samples, key=lambda s: s["index"])
    manifest = {
        "settings": res.settings,
        "labels": list(res.labels),
        **({"separate_labels": list(res.separate_labels), "separate_shared_labels": res.shared_labels()}
           if res.separate_labels is not None else {}),
        "vocoder": {"name": voc.name, "backend": voc.preferred_backend, "fallback_reason": voc.preference_note},
        "hit_rate": {"classifier": res.hit_rate("classifier"), "separate": res.hit_rate("separate")},
        "nan_stopped": res.nan_stopped,
        "wav_skipped": [s["index"] for s in samples if s.get("wav_skipped")],
        "samples": samples,
    }
    path = Path(out) / MANIFEST
    write_json(path, manifest, indent=1)
    return path


def _audio_hits(probs: torch.Tensor, targets: list, labels) -> float | None:
    index = {label: i for i, label in enumerate(labels)}
    pairs = [(int(p), index[t]) for p, t in zip(probs.argmax(-1), targets) if t in index]
    return round(sum(p == t for p, t in pairs) / len(pairs), 6) if pairs else None


@torch.no_grad()
def score_written_audio(out, classifier, separate=None, batch: int = 256) -> dict:
    """The hit rates of what a person hears: every ``.wav`` of the run in ``out``, re-read from disk, scored by
    the classifier (a model that reads waveforms hears the audio itself, a log-mel model its log-mel) and by the
    separate classifier (over the labels it shares with the classifier). Written into the manifest as
    ``hit_rate_audio`` ({"classifier", "separate", "samples"}) and returned."""
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text())
    items = [s for s in manifest["samples"] if s.get("wav") and s.get("target")]
    rates = {"classifier": None, "separate": None, "samples": len(items)}
    if items:
        sr = classifier.feature_config.sample_rate
        n = (classifier.cfg.n_frames - 1) * classifier.feature_config.hop_length
        waves = torch.stack([torch.from_numpy(fit_length(load_audio(Path(out) / s["wav"], sr), n)) for s in items])
        targets = [s["target"] for s in items]
        mels = log_mel(waves, classifier.feature_config).float()   # (frames - 1) * hop samples: frames frames
        rates["classifier"] = _audio_hits(logits_on_audio(classifier, waves, mels, batch), targets,
                                          classifier.cfg.labels or manifest["labels"])
        if separate is not None:   # its FeatureConfig is the classifier's (maximize checked)
            rates["separate"] = _audio_hits(logits_on_audio(separate, waves, mels, batch), targets,
                                            manifest.get("separate_labels") or manifest["labels"])
    manifest["hit_rate_audio"] = rates
    write_json(path, manifest, indent=1)
    return rates
