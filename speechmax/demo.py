"""The main job on the shipped defaults, as `make demo` runs it: a quick evaluation (``speechmax evaluate
--quick``: noise -> class with both recipes and modes, the vocoder control, class to class, figures, a
listening set) and a few maximized, vocoded samples per class. Returns what it wrote; the CLI prints it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from . import evaluate
from .maximize import maximize
from .maximize.output import remove_samples, write_samples
from .outputs import prepare_output, write_json


def speak_espeak(word: str, path: Path, voice: str = "en-us") -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")
    subprocess.run([exe, "-v", voice, "-w", str(path), word], check=True, capture_output=True)


RUN_MARKER = "run.json"


def run_demo(out: str | Path, samples_per_class: int = 2, models=None, threads: int | None = None, quiet: bool = False,
             overwrite: bool = False, **evaluate_kwargs) -> dict:
    """``out/report`` (report.html, metrics.json, figures, listening set) and ``out/samples`` (``samples_per_class``
    latent-mode samples per word: .npy, .wav, before/after .png, manifest.json).

    ``out`` is new or empty, or a previous demo with the same settings, which this one resumes; anything else
    is refused (:class:`~speechmax.outputs.OutputFolderError`) before any model is loaded, unless ``overwrite``."""
    out = Path(out)
    settings = json.loads(json.dumps({"command": "demo", "samples_per_class": samples_per_class,
                                      "models": models.names if models is not None else "shipped",
                                      **evaluate_kwargs}, default=str))
    resume = prepare_output(out, RUN_MARKER, settings, what="speechmax demo", overwrite=overwrite,
                            legacy=lambda d: all(p.name in ("report", "samples", "summary.json") for p in d.iterdir()))
    write_json(out / RUN_MARKER, {"settings": settings})
    models = models or evaluate.load_models()
    metrics = evaluate.evaluate(out / "report", quick=True, models=models, threads=threads, quiet=quiet,
                                overwrite=overwrite, **evaluate_kwargs)
    res = maximize(models.classifier, "all", mode="latent", prior=models.prior, n=samples_per_class, seed=1,
                   separate=models.separate, threads=threads, steps=evaluate_kwargs.get("steps"))
    if overwrite and not resume:
        remove_samples(out / "samples")
    manifest = write_samples(res, out / "samples", vocoder=models.vocoder, seed=1, resume=resume)
    summary = {"report": str(out / "report" / "report.html"), "metrics": str(out / "report" / "metrics.json"),
               "listening_set": metrics["listening_set"]["path"], "samples": str(out / "samples"),
               "manifest": str(manifest), "n_samples": len(res.targets),
               "hit_rate": {"classifier": res.hit_rate("classifier"), "separate": res.hit_rate("separate")},
               "vocoder": "griffinlim" if models.vocoder.preferred_backend == "griffinlim" else models.names["vocoder"],
               "vocoder_note": models.vocoder.preference_note,
               "summary": metrics["summary"], "seconds": metrics["timing"]["total"]}
    write_json(out / "summary.json", summary)
    return summary
