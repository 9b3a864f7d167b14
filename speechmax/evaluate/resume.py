"""What an evaluation keeps so that a rerun with the same settings resumes it, even on another machine.

``out/run.json`` records the settings before any compute (:data:`RUN_MARKER`, checked by
:func:`speechmax.outputs.prepare_output`). Each noise run keeps its progress in ``out/partial/`` through a
:class:`PartialRun`: once finished, its summary (and, for the recipe the later steps use, the features they
need); while a run too big to do at once goes one target at a time, each finished target's statistics. The file
names are those of the committed partial runs of the full evaluation (checkpoints/evaluate), which must keep
resuming.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import numpy as st_numpy
from safetensors import torch as st_torch

from ..maximize.recipes import RECIPES

RUN_MARKER = "run.json"   # an evaluation's settings, written before its compute: a rerun with them resumes


def is_evaluation(out: Path) -> bool:
    """An evaluation from before :data:`RUN_MARKER` (as checkpoints/evaluate): only names evaluate writes."""
    own = {"metrics.json", "report.html", "figures", "listening", "partial"}
    return all(p.name in own or p.name.startswith("corpus-s") for p in out.iterdir())


def run_key(models, recipe: str, mode: str, per_class: int, seed: int, steps, k_keep: int) -> str:
    """What a noise run's result depends on: the models' weights, the recipe and the sizes."""
    weights = [getattr(m, "card", {}).get("sha256") or name for name, m in (
        ("classifier", models.classifier), ("separate", models.separate),
        ("prior", models.prior if recipe == "speechmax" else models.prior_paper))]
    # spelled as before the recipes moved to speechmax.maximize, so the committed partial runs still resume
    spelled = {"preset": "paper"} if recipe == "paper" else {"steps": RECIPES[recipe].steps}
    spec = json.dumps([weights, recipe, mode, per_class, seed, steps, k_keep, spelled], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


class PartialRun:
    """The progress of noise run ``name`` (recipe/mode) under ``out/partial/``, valid for :func:`run_key` ``key``.

    The finished run: ``noise-<name>.json`` (key, summary) and ``noise-<name>.safetensors`` (the kept features:
    before, after, targets, start). Its targets: ``noise-<name>-<key>/target<c>.safetensors``, each a target's
    statistics and a ``meta`` (seconds, settings, cpu) -- or, when a target's starts come in blocks (under
    torchrun, many starts), ``target<c>-starts<first>-<end>.safetensors`` per block. Every file is written under another name and renamed, so
    what is there is whole; the run's JSON lands last, so a run counts as finished only once all of it is there.
    """

    def __init__(self, out: Path, name: str, key: str):
        stem = Path(out) / "partial" / f"noise-{name.replace('/', '-')}"
        self.summary_file, self.kept_file = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        self.folder = stem.with_name(f"{stem.name}-{key}")
        self.key = key

    def load(self, want_kept: bool) -> tuple[dict, dict | None] | None:
        """(summary, kept features or None) of the finished run, or None when it is not finished under this key
        (or its kept features are wanted and missing)."""
        try:
            d = json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return None
        if d.get("key") != self.key or (want_kept and not (d.get("kept") and self.kept_file.is_file())):
            return None
        kept = None
        if want_kept:
            t = st_torch.load_file(str(self.kept_file))
            kept = dict(before=t["before"], after=t["after"], targets=t["targets"].numpy(), start=t["start"].numpy())
        return d["summary"], kept

    def save(self, summary: dict, kept: dict | None) -> None:
        """The finished run's summary, and its kept features (before, after: tensors; targets, start: arrays)."""
        self.summary_file.parent.mkdir(exist_ok=True)
        if kept is not None:
            st_torch.save_file({"before": kept["before"].contiguous(), "after": kept["after"].contiguous(),
                                "targets": torch.from_numpy(kept["targets"]), "start": torch.from_numpy(kept["start"])},
                               str(self.kept_file))
        tmp = self.summary_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "summary": summary, "kept": kept is not None}))
        tmp.replace(self.summary_file)

    def _target_file(self, c: int, block: tuple[int, int] | None = None) -> Path:
        if block is None:
            return self.folder / f"target{c:03d}.safetensors"
        return self.folder / f"target{c:03d}-starts{block[0]:06d}-{block[1]:06d}.safetensors"

    def targets_done(self, n_classes: int, blocks: list | None = None) -> float:
        """Targets done: whole, or the share of ``blocks`` (start ranges) done."""
        if not self.folder.is_dir():
            return 0
        done = 0.0
        for c in range(n_classes):
            if self._target_file(c).is_file():
                done += 1
            elif blocks:
                done += sum(self._target_file(c, b).is_file() for b in blocks) / len(blocks)
        return done

    def has_target(self, c: int, block: tuple[int, int] | None = None) -> bool:
        return self._target_file(c, block).is_file()

    def load_target(self, c: int, block: tuple[int, int] | None = None) -> tuple[dict, dict] | None:
        """(statistics, meta) of target ``c`` (or of its starts ``block`` = (first, end)), or None when not done."""
        path = self._target_file(c, block)
        if not path.is_file():
            return None
        stats = st_numpy.load_file(str(path))
        return stats, json.loads(stats.pop("meta").tobytes().decode())

    def save_target(self, c: int, stats: dict, meta: dict, block: tuple[int, int] | None = None) -> None:
        path = self._target_file(c, block)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        st_numpy.save_file({**stats, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}, str(tmp))
        tmp.replace(path)
