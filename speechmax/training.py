"""Pieces every trainer shares: resumable checkpoints (weights + EMA + optimizer state, all safetensors),
an exponential moving average of weights, and a JSON-lines log.

A checkpoint is one fixed path, overwritten: ``DIR/last.safetensors`` + ``DIR/last.json``. Optimizer state is
flattened to tensors named ``opt.<param>.<key>`` so nothing is ever pickled.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from .weights import WeightsError, load_weights, save_weights


class EMA:
    """Exponential moving average of a model's parameters (buffers copied as they are)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        # warm-up: early on, average over fewer steps so the EMA is not dominated by the random init
        d = self.decay if step is None else min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def _optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, st in opt.state.items():
        for k, v in st.items():
            out[f"opt.{names[id(p)]}.{k}"] = torch.as_tensor(v).clone()
    return out


def _load_optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict) -> None:
    params = dict(model.named_parameters())
    for key, v in tensors.items():
        if not key.startswith("opt."):
            continue
        name, k = key[4:].rsplit(".", 1)
        if name not in params:
            raise WeightsError(f"checkpoint has optimizer state for unknown parameter {name!r}")
        opt.state[params[name]][k] = v


def save_checkpoint(run_dir: str | Path, model, opt, ema: EMA | None, state: dict) -> Path:
    """Overwrite ``run_dir/last`` with weights, EMA weights, optimizer state and ``state`` (step, config...)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    tensors.update(_optimizer_tensors(model, opt))
    return save_weights(Path(run_dir) / "last", tensors, dict(state, kind="checkpoint", saved_at=time.time()))


def load_checkpoint(run_dir: str | Path, model, opt=None, ema: EMA | None = None) -> dict | None:
    """Restore ``run_dir/last`` into model / opt / ema if it exists; returns its state dict, else None."""
    path = Path(run_dir) / "last"
    if not path.with_suffix(".json").exists():
        return None
    tensors, card = load_weights(path, kind="checkpoint")
    sub = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    model.load_state_dict(sub("model."))
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.model.load_state_dict(sub("ema."))
    if opt is not None:
        _load_optimizer_tensors(model, opt, tensors)
    return card


class JsonLog:
    """Append-only JSON-lines log of training events."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **event) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(event, time=round(time.time(), 1))) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
