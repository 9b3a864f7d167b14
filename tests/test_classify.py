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
from speechmax.models.inference import classify_files, fit_length


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


def test_fit_length_keeps_the_loudest_second():
    w = np.zeros(48000, np.float32)
    w[30000:31000] = 1.0
    out = fit_length(w, 16000)
    assert len(out) == 16000 and out.max() == 1.0


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
