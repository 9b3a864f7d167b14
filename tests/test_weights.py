import json

import pytest
import torch

from speechmax.weights import WeightsError, load_weights, read_card, save_weights


def test_round_trip_verifies_sha(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    card = save_weights(tmp_path / "m", tensors, {"kind": "test", "config": {"x": 1}, "metrics": {"acc": 0.5}})
    loaded, card2 = load_weights(tmp_path / "m", kind="test")
    assert card2 == read_card(card) and card2["metrics"] == {"acc": 0.5} and len(card2["sha256"]) == 64
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v)


def test_tampered_file_is_refused(tmp_path):
    save_weights(tmp_path / "m", {"w": torch.zeros(10)}, {"kind": "test"})
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="does not match"):
        load_weights(tmp_path / "m")


def test_wrong_kind_missing_files_and_bad_card(tmp_path):
    save_weights(tmp_path / "m", {"w": torch.zeros(1)}, {"kind": "prior"})
    with pytest.raises(WeightsError, match="expected a 'vocoder'"):
        load_weights(tmp_path / "m.safetensors", kind="vocoder")
    with pytest.raises(WeightsError, match="card not found"):
        load_weights(tmp_path / "nothing")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_weights(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({"kind": "prior", "sha256": "0" * 64}))
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(tmp_path / "m")


def test_no_pickle_loading_in_the_package():
    """Weights are safetensors only: nothing in the package may call torch.load or pickle.load."""
    import pathlib

    import speechmax

    root = pathlib.Path(speechmax.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py")
                 if any(s in p.read_text() for s in ("torch.load(", "pickle.load", "pickle.loads"))]
    assert offenders == []
