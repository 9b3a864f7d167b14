"""speechmax train classifier|prior end to end on a tiny corpus the test builds: the loss falls, the best
epoch and the card (test-split metrics, confusion matrix) are written, and a second call resumes."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from speechmax.cli import main
from speechmax.models.registry import load_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")
    from speechmax.data import build_corpus

    root = tmp_path_factory.mktemp("tiny") / "corpus"
    build_corpus(root, speakers=6, seed=11, workers=2, engines=["espeak-ng"])
    # Splits are by speaker; with 6 speakers the hash rule may leave a split empty, so name one speaker
    # for validation and one for testing in the lists (the v0.02 lists win over the rule).
    speakers = sorted({p.name.split("_nohash_")[0] for p in (root / "yes").glob("*.wav")})
    for name, spk in (("validation_list.txt", speakers[0]), ("testing_list.txt", speakers[1])):
        (root / name).write_text("".join(f"{p.parent.name}/{p.name}\n" for p in sorted(root.glob(f"*/{spk}_nohash_*.wav"))))
    return root


def epochs(run: Path) -> list[dict]:
    return [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if e.get("event") == "epoch"]


def test_train_classifier_and_prior_on_a_tiny_corpus(corpus, tmp_path, capsys):
    run = tmp_path / "clf"
    common = ["--data", str(corpus), "--batch", "16", "--threads", "1"]
    assert main(["train", "classifier", *common, "--out", str(run), "--epochs", "3", "--no-augment"]) == 0
    log = epochs(run)
    assert [e["epoch"] for e in log] == [1, 2, 3] and log[-1]["loss"] < log[0]["loss"]
    card = json.loads((run / "model.json").read_text())
    m = card["metrics"]
    assert m["test_clips"] == 35 and 0 <= m["test_accuracy"] <= 1 and len(m["per_class_accuracy"]) == 35
    assert (run / "confusion.png").stat().st_size > 10_000 and (run / "last.safetensors").is_file()
    clf = load_model(run / "model", kind="classifier")
    assert clf.cfg.n_classes == 35
    # the training features' per-band range, which maximize's Clamp keeps samples in
    from speechmax.ops.maximize import classifier_feature_range

    low, high = classifier_feature_range(clf)
    assert low.shape == high.shape == (80,) and (low < high).all()
    assert torch.equal(low, torch.tensor(card["feature_range"]["low"]))
    assert low.min() >= clf.feature_config.log_min - 1e-4

    # resume: one more epoch continues from epoch 3 rather than starting again
    assert main(["train", "classifier", *common, "--out", str(run), "--epochs", "4", "--no-augment"]) == 0
    assert [e["epoch"] for e in epochs(run)] == [1, 2, 3, 4]
    # the card times every call's epochs, not only the last call's one (a regression: it held the last call's)
    t = json.loads((run / "model.json").read_text())["training"]
    assert t["seconds"] == pytest.approx(sum(e["seconds"] for e in epochs(run)), abs=0.05)
    assert t["seconds"] >= card["training"]["seconds"] and t["seconds_this_call"] >= 0

    prior_run = tmp_path / "prior"
    assert main(["train", "prior", *common, "--out", str(prior_run), "--epochs", "2",
                 "--classifier", str(run / "model")]) == 0
    plog = epochs(prior_run)
    assert len(plog) == 2 and plog[-1]["loss"] < plog[0]["loss"]
    pm = json.loads((prior_run / "model.json").read_text())["metrics"]
    assert pm["test_recon_mse"] > 0 and 0 <= pm["classifier_accuracy_on_reconstructions"] <= 1
    assert sum(pm["random_z_class_counts"].values()) == 2000
    capsys.readouterr()


def test_train_classifier_on_a_vocabulary_of_its_own(corpus, tmp_path):
    """--words: three words in the given label order, and _unknown_ collecting the other 32 (issue 18 item 4)."""
    run = tmp_path / "words"
    args = ["train", "classifier", "--data", str(corpus), "--batch", "16", "--threads", "1", "--epochs", "1",
            "--no-augment", "--out", str(run), "--words", "yes,no,_unknown_,up"]
    assert main(args) == 0
    clf = load_model(run / "model", kind="classifier")
    assert clf.cfg.labels == ("yes", "no", "_unknown_", "up") and clf.cfg.n_classes == 4
    card = json.loads((run / "model.json").read_text())
    assert set(card["metrics"]["per_class_accuracy"]) == {"yes", "no", "_unknown_", "up"}
    # a prior measured with that classifier scores it on its own four labels (a regression: the corpus's 35
    # test labels went into its 4-class confusion and the run failed after training)
    prior_run = tmp_path / "prior-words"
    assert main(["train", "prior", "--data", str(corpus), "--batch", "16", "--threads", "1", "--epochs", "1",
                 "--out", str(prior_run), "--classifier", str(run / "model")]) == 0
    pm = json.loads((prior_run / "model.json").read_text())["metrics"]
    assert 0 <= pm["classifier_accuracy_on_originals"] <= 1
    assert set(pm["random_z_class_counts"]) == {"yes", "no", "_unknown_", "up"}
    with pytest.raises(ValueError, match="no clips of hello"):
        from speechmax.models.train import train_classifier
        train_classifier(corpus, tmp_path / "hello", words=["yes", "hello"], progress=False)
    with pytest.raises(ValueError, match="repeats yes"):
        from speechmax.data import labels
        labels(["yes", "no", "yes"])


def test_a_resumed_run_draws_the_dropout_an_uninterrupted_one_draws(corpus, tmp_path, capsys, monkeypatch):
    """Regression: the checkpoint did not keep torch's generator, so a run stopped after epoch 1 and resumed drew
    other dropout masks than the run that never stopped, and ended with other weights. Now they end bit for bit
    the same."""
    from speechmax.models import train
    from speechmax.weights import load_weights

    common = ["train", "classifier", "--data", str(corpus), "--batch", "16", "--threads", "1", "--seed", "5",
              "--epochs", "2"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    save = train.save_checkpoint

    def save_then_stop(*args, **kwargs):   # the run is stopped (Ctrl-C) right after its first checkpoint
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    assert main([*common, "--out", str(tmp_path / "resumed")]) == 130
    monkeypatch.setattr(train, "save_checkpoint", save)
    assert main([*common, "--out", str(tmp_path / "resumed")]) == 0
    straight, resumed = (load_weights(tmp_path / run / "last", kind="checkpoint")[0] for run in ("straight", "resumed"))
    assert straight.keys() == resumed.keys() and "rng.torch" in straight
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, differ
    capsys.readouterr()
