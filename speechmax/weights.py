"""Model weights as safetensors beside a JSON card.

``NAME.safetensors`` holds tensors only; ``NAME.json`` (the card) holds what a person or a loader needs:
``kind``, ``config``, ``feature_config``, ``training_data``, ``metrics`` and the ``sha256`` of the
weights file, verified on every load. Nothing here ever unpickles.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

__all__ = ["WeightsError", "save_weights", "load_weights", "read_card", "sha256_file", "card_path", "weights_path"]


class WeightsError(ValueError):
    """Weights or card missing, tampered with, or not what the caller expected."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def weights_path(path: str | os.PathLike) -> Path:
    return _stem(path).with_suffix(".safetensors")


def card_path(path: str | os.PathLike) -> Path:
    return _stem(path).with_suffix(".json")


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], card: dict) -> Path:
    """Write ``path.safetensors`` and ``path.json``; the card gets the weights' sha256. Returns the card path.

    Both files are written to temporaries and renamed, so a crash never leaves a half-written pair.
    """
    from safetensors.torch import save_file

    wpath, cpath = weights_path(path), card_path(path)
    wpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = wpath.with_suffix(".safetensors.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    card = dict(card, sha256=sha256_file(tmp), weights=wpath.name)
    ctmp = cpath.with_suffix(".json.tmp")
    ctmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, wpath)
    os.replace(ctmp, cpath)
    return cpath


def _jsonable(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"card value of type {type(o).__name__} is not JSON-serialisable")


def read_card(path: str | os.PathLike) -> dict:
    cpath = card_path(path)
    if not cpath.exists():
        raise WeightsError(f"{cpath}: model card not found")
    try:
        card = json.loads(cpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{cpath}: model card is not valid JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(card, dict):
        raise WeightsError(f"{cpath}: model card must be a JSON object, got a {type(card).__name__}")
    return card


def load_weights(path: str | os.PathLike, kind: str | None = None, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, card), verifying the sha256 recorded in the card and, if given, the card's ``kind``."""
    from safetensors.torch import load_file

    card = read_card(path)
    wpath = weights_path(path)
    if not wpath.exists():
        raise WeightsError(f"{wpath}: weights file not found")
    if kind is not None and card.get("kind") != kind:
        raise WeightsError(f"{card_path(path)}: expected a {kind!r} model, the card says {card.get('kind')!r}")
    digest = sha256_file(wpath)
    if digest != card.get("sha256"):
        raise WeightsError(f"{wpath}: sha256 {digest[:12]}... does not match the card's "
                           f"{str(card.get('sha256'))[:12]}... (file changed or corrupted)")
    try:
        return load_file(str(wpath), device=str(device)), card
    except Exception as e:  # safetensors raises its own types for a truncated or malformed file
        raise WeightsError(f"{wpath}: not a readable safetensors file ({e.__class__.__name__}: "
                           f"{str(e).strip()[:200]})") from None


def save_model(model, path: str | os.PathLike, kind: str, **card) -> Path:
    """Save a speechmax model (anything with ``cfg`` and ``feature_config``) with its card."""
    return save_weights(path, model.state_dict(), dict(card, kind=kind, config=model.cfg.to_dict(),
                                                        feature_config=model.feature_config.to_dict()))


def load_model_from_card(path: str | os.PathLike, kind: str, build, device="cpu"):
    """Load weights saved by :func:`save_model`: ``build(card)`` makes the empty model, whose shapes must
    match the weights exactly; sha256 and ``kind`` are checked. Returns the model in eval mode, card attached."""
    tensors, card = load_weights(path, kind=kind, device=device)
    try:
        model = build(card)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise WeightsError(f"{path}: {kind} card does not match its weights ({str(e).splitlines()[0]})") from None
    model.card = card
    return model.eval()
