"""Loading a model by shipped name (``classifier``, ``prior-paper``, ``vocoder``...) or by path."""
from __future__ import annotations

from pathlib import Path

from ..assets import asset_path
from ..weights import WeightsError, read_card
from .classifier import load_classifier
from .external import ModelError, load_external
from .prior import load_prior
from .wavenet import load_wavenet

LOADERS = {"classifier": load_classifier, "prior": load_prior, "vocoder": load_wavenet}


def resolve(name_or_path: str | Path) -> Path:
    """A shipped asset name or a path (with or without suffix) -> path stem of the weights/card pair."""
    p = Path(name_or_path)
    if p.is_dir() and (p / "model.json").exists():   # a folder written by save_pretrained
        return p / "model"
    if p.suffix in (".safetensors", ".json") or p.exists() or p.with_suffix(".json").exists():
        return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return asset_path(str(name_or_path))


def load_model(name_or_path: str | Path, kind: str | None = None, missing_ok: bool = False):
    """Load a classifier, prior or vocoder by shipped name or path; the card's ``kind`` picks the class.

    With ``missing_ok``, a shipped name that does not exist yet gives None instead of an error.
    """
    try:
        stem = resolve(name_or_path)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    if Path(stem).is_dir() and (Path(stem) / "model.json").exists():
        stem = Path(stem) / "model"
    card = read_card(stem)
    if kind is not None and card.get("kind") != kind:
        raise WeightsError(f"{stem}: expected a {kind}, the card says {card.get('kind')!r}")
    if card.get("kind") not in LOADERS:
        raise WeightsError(f"{stem}: unknown model kind {card.get('kind')!r}")
    return LOADERS[card["kind"]](stem)


USER_SUFFIXES = (".pt", ".pt2", ".ts", ".jit")   # TorchScript / torch.export files: a model speechmax did not train


def load_classifier_any(name_or_path, labels=None, input: str | None = None, features=None):
    """The classifier a command was pointed at: a shipped name or speechmax classifier path; or a user's model
    (a TorchScript / ``torch.export`` file, or any path given with ``labels``), which needs its ``labels`` (a file
    or a sequence), its ``input`` kind (default log-mel) and, for a log-mel model, optionally its ``features``
    (a FeatureConfig or a JSON file of one; default speechmax's)."""
    user = labels is not None or Path(str(name_or_path)).suffix in USER_SUFFIXES
    if not user:
        if input is not None or features is not None:
            raise ModelError(f"{name_or_path}: --input and --features describe a model speechmax did not train; "
                             "give its --labels too")
        return load_model(name_or_path, kind="classifier")
    if labels is None:
        raise ModelError(f"{name_or_path}: a model speechmax did not train needs its labels (--labels FILE, one per "
                         "line in output order)")
    return load_external(name_or_path, labels, input=input or "log-mel", features=features)

