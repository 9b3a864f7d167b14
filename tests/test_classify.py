"""speechmax classify on wavs, log-mel .npy files and folders, with a tiny classifier built here."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from speechmax.data.words import WORDS
from speechmax.features import AudioError, save_audio
from speechmax.models.classifier import Classifier, ClassifierConfig, save_classifier
from speechmax.features import fit_length
from speechmax.models.inference import classify_files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    m = Classifier(ClassifierConfig(channels=(8, 8), kernel=3, labels=WORDS)).eval()
    path = tmp_path_factory.mktemp("clf") / "tiny"
    save_classifier(m, path)
    return m, path


@pytest.fixture
def inputs(tmp_path, rng):
    save_audio(tmp_path / "a.wav", 0.1 * rng.standard_normal(16000))
    save_audio(tmp_path / "sub" / "short.wav", 0.1 * rng.standard_normal(3000))
    np.save(tmp_path / "one.npy", rng.standard_normal((80, 101)).astype(np.float32))
    np.save(tmp_path / "sub" / "batch.npy", rng.standard_normal((3, 80, 60)).astype(np.float32))
    return tmp_path


def test_folder_of_wavs_and_npys(tiny, inputs):
    preds, skipped = classify_files(tiny[0], inputs)
    names = [p.path for p in preds]
    assert len(preds) == 6 and skipped == []
    assert any(n.endswith("batch.npy[2]") for n in names)
    assert all(p.label in WORDS and 0 < p.prob <= 1 for p in preds)


def test_bad_files_in_a_folder_are_skipped_single_bad_file_is_an_error(tiny, inputs):
    (inputs / "broken.wav").write_text("not audio")
    np.save(inputs / "wrong.npy", np.zeros((40, 10), np.float32))
    with pytest.warns(UserWarning, match="skipped 2"):
        preds, skipped = classify_files(tiny[0], inputs)
    assert len(preds) == 6 and len(skipped) == 2
    with pytest.raises(AudioError, match="broken.wav"):
        classify_files(tiny[0], inputs / "broken.wav")
    with pytest.raises(FileNotFoundError):
        classify_files(tiny[0], inputs / "missing.wav")


def test_fit_length_keeps_the_loudest_second_or_the_centre():
    w = np.zeros(48000, np.float32)
    w[30000:31000] = 1.0
    out = fit_length(w, 16000, keep="loudest")
    assert len(out) == 16000 and out.max() == 1.0
    assert np.array_equal(fit_length(np.arange(10.0), 4), [3.0, 4.0, 5.0, 6.0])             # the centre
    assert np.array_equal(fit_length(np.ones(2, np.float32), 5), [0, 1, 1, 0, 0])           # centred in zeros
    with pytest.raises(ValueError, match="keep"):
        fit_length(w, 10, keep="middle")


def test_cli_json_contract(tiny, inputs):
    r = subprocess.run([sys.executable, "-m", "speechmax", "classify", str(inputs / "a.wav"), "--model", str(tiny[1]),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == str(tiny[1]) and len(out["predictions"]) == 1
    assert set(out["predictions"][0]) == {"path", "label", "prob"}
    r = subprocess.run([sys.executable, "-m", "speechmax", "classify", str(inputs / "a.wav"), "--model", "no-such-model"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no shipped asset named 'no-such-model'" in r.stderr


def test_folder_accuracy_per_class_and_confusions():
    from speechmax.models.inference import Prediction, folder_accuracy

    preds = [Prediction(f"sc/{true}/{i}.wav", pred, 0.9) for i, (true, pred) in enumerate(
        [("yes", "yes"), ("yes", "no"), ("yes", "no"), ("no", "no"), ("up", "down")])]
    preds.append(Prediction("sc/_background_noise_/x.wav", "up", 0.5))   # no word in its folder: not counted
    acc = folder_accuracy(preds, WORDS)
    assert acc["accuracy"] == pytest.approx(2 / 5) and acc["labelled"] == 5
    assert acc["per_class"] == {"yes": {"accuracy": pytest.approx(1 / 3), "n": 3}, "no": {"accuracy": 1.0, "n": 1},
                                "up": {"accuracy": 0.0, "n": 1}}
    assert acc["confusions"] == [{"label": "yes", "predicted": "no", "count": 2},
                                 {"label": "up", "predicted": "down", "count": 1}]
    assert folder_accuracy([Prediction("clips/a.wav", "yes", 0.9)], WORDS) is None


def test_cli_reports_accuracy_when_folders_name_the_words(tiny, tmp_path, rng, capsys):
    from speechmax.cli import main

    for word in ("yes", "no", "_background_noise_"):
        (tmp_path / word).mkdir()
        for i in range(2):
            np.save(tmp_path / word / f"{i}.npy", rng.standard_normal((80, 101)).astype(np.float32))
    assert main(["classify", str(tmp_path), "--model", str(tiny[1]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    labelled = [p for p in out["predictions"] if "_background_noise_" not in p["path"]]
    right = sum(p["label"] == p["path"].split("/")[-2] for p in labelled)
    assert len(out["predictions"]) == 6 and out["labelled"] == 4
    assert out["accuracy"] == pytest.approx(right / 4)
    assert set(out["per_class"]) == {"yes", "no"} and all(v["n"] == 2 for v in out["per_class"].values())
    assert sum(c["count"] for c in out["confusions"]) == 4 - right
    assert main(["classify", str(tmp_path), "--model", str(tiny[1])]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"accuracy: {100 * right / 4:.1f}% (4 file(s)")
    assert main(["classify", str(tmp_path / "yes" / "0.npy"), "--model", str(tiny[1]), "--json"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)   # a single file in a word's folder counts too
