"""Shipped weights: ``NAME.safetensors`` + ``NAME.json`` cards in this folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechmax.weights import read_card

ASSET_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Asset:
    name: str
    path: Path  # the .safetensors file
    sha256: str
    kind: str
    metrics: dict


def list_assets() -> dict[str, Asset]:
    """Every shipped model with a card, by name."""
    out = {}
    for card_file in sorted(ASSET_DIR.glob("*.json")):
        card = read_card(card_file)
        if "sha256" not in card:
            continue
        out[card_file.stem] = Asset(card_file.stem, card_file.with_suffix(".safetensors"), card["sha256"],
                                    card.get("kind", ""), card.get("metrics", {}))
    return out


def asset_path(name: str) -> Path:
    """Path (without suffix) of a shipped asset, or a clear error listing those that ship."""
    assets = list_assets()
    if name not in assets:
        shipped = ", ".join(assets) or "none"
        raise FileNotFoundError(f"no shipped asset named {name!r} (shipped: {shipped})")
    return assets[name].path.with_suffix("")
