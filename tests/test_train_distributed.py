"""speechmax train classifier|prior|vocoder under torchrun (issue 19 item 4): two gloo ranks, each a contiguous slice
of every batch, take the same steps as one process with the same batch -- the logged losses of every step and the
weights (and the optimizer state, and the vocoder's EMA) equal to float rounding, with BatchNorm, dropout and
augmentation on, an epoch's short last batch split unevenly or leaving a rank empty -- rank 0 alone writes, a run
started on two ranks resumes in one process, and ranks started with different settings write nothing."""
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speechmax.distributed import World
from speechmax.models.train import FitConfig, train_classifier
from speechmax.vocoder.train import VocoderTrainConfig, train_vocoder
from torchrun_output import why

HERE = Path(__file__).resolve().parent
WORDS = {"yes": 300.0, "no": 700.0, "up": 1500.0}   # a tone per word, so there is something to learn
TOL = 1e-5


def _wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three words, eight speakers (one for validation, one for testing), two clips each, plus one more
    training clip: 37 training clips, so an epoch ends on a short batch; and two seconds of background noise
    for the augmentation to mix in."""
    root = tmp_path_factory.mktemp("dist-train") / "corpus"
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for word, f in WORDS.items():
        for s in range(8):
            for k in range(3 if (word, s) == ("yes", 0) else 2):
                tone = rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * f * rng.uniform(0.9, 1.1) * t + rng.uniform(0, 6))
                _wav(root / word / f"spk{s}_nohash_{k}.wav", tone + rng.normal(0, 0.02, t.shape))
    for name, s in (("validation_list.txt", 6), ("testing_list.txt", 7)):
        (root / name).write_text("".join(f"{w}/spk{s}_nohash_{k}.wav\n" for w in WORDS for k in range(2)))
    _wav(root / "_background_noise_" / "noise.wav", rng.normal(0, 0.1, 32000))
    return root


def _commands(data: Path, out: Path, epochs: int, what=("classifier", "prior")) -> list[str]:
    """The classifier: batch 8 of 37 clips (the last batch of 5: slices of 3 and 2), BatchNorm, dropout and
    augmentation on. The prior (the deterministic AE): batch 12 (the last batch of 1: rank 1's slice empty)."""
    cmds = {"classifier": ["train", "classifier", "--batch", "8"],
            "prior": ["train", "prior", "--preset", "prior-paper", "--batch", "12",
                      "--classifier", str(out / "clf" / "model")]}
    argv = []
    for w in what:
        argv += [*cmds[w], "--data", str(data), "--out", str(out / ("clf" if w == "classifier" else "prior")),
                 "--epochs", str(epochs), "--threads", "1", "--log-steps", "1", "+"]
    return argv[:-1]


def _train(argv, ranks=None, env=None, writes=None):
    """tests/distributed_train.py alone or under torchrun with ``ranks`` gloo ranks."""
    script = [str(HERE / "distributed_train.py"), *argv]
    cmd = [sys.executable, *script] if ranks is None else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *script]
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), **(env or {})}
    if writes is not None:
        e["WRITES_LOG"] = str(writes)
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)


def _steps(run: Path) -> list[float]:
    return [e["loss"] for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if e["event"] == "step"]


def _epochs(run: Path) -> list[dict]:
    return [{k: e[k] for k in ("epoch", "loss", "val")}
            for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if e["event"] == "epoch"]


def _max_diff(a: dict, b: dict) -> float:
    """The largest difference between tensors of the same names, relative where a value is above 1 (BatchNorm's
    running variances are in the tens: float rounding is 1e-6 of that)."""
    assert a.keys() == b.keys()
    return max((float(((a[k].double() - b[k].double()).abs() / a[k].double().abs().clamp_min(1)).max())
                if a[k].numel() else 0.0) for k in a)


def _is_weight(name: str) -> bool:
    return name.startswith("model.") and not name.rsplit(".", 1)[-1] in ("running_mean", "running_var",
                                                                          "num_batches_tracked", "mean", "std")


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """Two ranks: both models for 3 epochs; and the prior for 3 epochs, killed once its 2nd is saved. Then one
    process: both models for 3 epochs, and the killed run again, which resumes at epoch 3."""
    d = tmp_path_factory.mktemp("dist-runs")
    two, one, resumed = d / "two", d / "one", d / "resumed"
    r = _train(_commands(corpus, two, 3), ranks=2, writes=d / "writes.log")
    assert r.returncode == 0, why(r)
    writes = (d / "writes.log").read_text().splitlines()
    r = _train(_commands(corpus, resumed, 3, what=("prior",)), ranks=2, env={"STOP_AFTER_EPOCH": "2"})
    assert r.returncode != 0 and json.loads((resumed / "prior" / "last.json").read_text())["epoch"] == 2
    r = _train(_commands(corpus, one, 3) + ["+"] + _commands(corpus, resumed, 3, what=("prior",)))
    assert r.returncode == 0, why(r)
    return {"one": one, "two": two, "resumed": resumed, "writes": writes}


@pytest.mark.parametrize("model", ["clf", "prior"])
def test_two_ranks_take_the_same_steps_as_one_process(runs, model):
    one, two = runs["one"] / model, runs["two"] / model
    steps_one, steps_two = _steps(one), _steps(two)
    assert len(steps_one) == len(steps_two) == 3 * (5 if model == "clf" else 4)
    loss_diff = max(abs(a - b) for a, b in zip(steps_one, steps_two))
    last_one, last_two = load_file(str(one / "last.safetensors")), load_file(str(two / "last.safetensors"))
    assert last_one.keys() == last_two.keys() and any(k.startswith("opt.") for k in last_one)
    kinds = {"weights": _is_weight, "buffers": lambda k: k.startswith("model.") and not _is_weight(k),
             "optimizer state": lambda k: k.startswith("opt.")}
    diff = {what: _max_diff({k: v for k, v in last_one.items() if pick(k)}, {k: v for k, v in last_two.items() if pick(k)})
            for what, pick in kinds.items()}
    print(f"{model}: max |loss diff| {loss_diff:.1e} over {len(steps_one)} steps; max diff of "
          + ", ".join(f"{k} {v:.1e}" for k, v in diff.items()))
    assert loss_diff < TOL and max(diff.values()) < TOL
    # the unwrapped model's state dict, no DistributedDataParallel "module." prefixes; the best epoch's weights
    assert not any("module." in k for k in last_two)
    assert _max_diff(load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))) < TOL
    assert [e["epoch"] for e in _epochs(two)] == [1, 2, 3]
    card = json.loads((two / "model.json").read_text())
    assert card["training"]["world_size"] == 2
    assert json.loads((one / "model.json").read_text())["training"]["world_size"] == 1
    assert _epochs(one) == _epochs(two)   # the epochs' mean losses and validation scores, as logged
    if model == "clf":
        assert _epochs(one)[-1]["loss"] < _epochs(one)[0]["loss"]   # it does learn
        assert (two / "confusion.png").is_file() and (two / "config.toml").is_file()


def test_only_rank_0_writes(runs):
    writes = runs["writes"]
    assert writes and {w.split()[0] for w in writes} == {"0"}, sorted(set(writes))
    assert {w.split()[1] for w in writes} == {"run.json", "log", "safetensors", "confusion.png"}


def test_a_run_of_two_ranks_resumes_in_one_process(runs):
    """The prior's first 2 epochs on two ranks (then killed), the 3rd in one process: the same as 3 epochs in one
    process."""
    one, resumed = runs["one"] / "prior", runs["resumed"] / "prior"
    assert [e["epoch"] for e in _epochs(resumed)] == [1, 2, 3]
    assert max(abs(a - b) for a, b in zip(_steps(one), _steps(resumed))) < TOL
    assert _max_diff(load_file(str(one / "last.safetensors")), load_file(str(resumed / "last.safetensors"))) < TOL


def test_ranks_started_with_different_settings_write_nothing(corpus, tmp_path):
    r = _train(_commands(corpus, tmp_path / "run", 1, what=("classifier",)), ranks=2, env={"SEED_BY_RANK": "1"})
    assert r.returncode != 0
    assert "different settings" in r.stderr and "seed" in r.stderr
    assert not (tmp_path / "run" / "clf").exists()


def test_a_batch_that_does_not_divide_among_the_ranks_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="does not divide among 3 ranks"):
        train_classifier(corpus, tmp_path / "run", fc=FitConfig(batch=8), world=World(0, 3), progress=False)
    assert not (tmp_path / "run").exists()


def _vocoder(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """The tiny vocoder (tests/distributed_train.py): batch 4 windows of 800 samples, every step's loss logged."""
    return ["train", "vocoder", "--data", str(data), "--out", str(out), "--steps", str(steps), "--batch", "4",
            "--window", "800", "--threads", "1", "--log-steps", "1", *extra]


@pytest.fixture(scope="module")
def vocoder_runs(corpus, tmp_path_factory):
    """Two ranks: 6 steps; and 3 steps of another run. Then one process: 6 steps, and the other run to step 6."""
    d = tmp_path_factory.mktemp("dist-voc")
    r = _train(_vocoder(corpus, d / "two", 6) + ["+"] + _vocoder(corpus, d / "resumed", 6, "--max-steps", "3"),
               ranks=2, writes=d / "writes.log")
    assert r.returncode == 0, why(r)
    writes = (d / "writes.log").read_text().splitlines()
    r = _train(_vocoder(corpus, d / "one", 6) + ["+"] + _vocoder(corpus, d / "resumed", 6))
    assert r.returncode == 0, why(r)
    return {"one": d / "one", "two": d / "two", "resumed": d / "resumed", "writes": writes}


def test_the_vocoder_on_two_ranks_takes_the_same_steps_as_one_process(vocoder_runs):
    one, two = vocoder_runs["one"], vocoder_runs["two"]
    assert len(_steps(one)) == len(_steps(two)) == 6
    assert max(abs(a - b) for a, b in zip(_steps(one), _steps(two))) < TOL
    a, b = load_file(str(one / "last.safetensors")), load_file(str(two / "last.safetensors"))
    assert {k.split(".")[0] for k in a} == {"model", "ema", "opt"}   # weights, their average, Adam's moments
    assert _max_diff(a, b) < TOL
    assert json.loads((two / "last.json").read_text())["step"] == 6
    starts = [e for e in map(json.loads, (two / "log.jsonl").read_text().splitlines()) if e["event"] == "start"]
    assert starts[0]["world_size"] == 2 and starts[0]["threads"] == 1


def test_the_vocoder_on_two_ranks_writes_from_rank_0_only_and_resumes_in_one_process(vocoder_runs):
    writes = vocoder_runs["writes"]
    assert writes and {w.split()[0] for w in writes} == {"0"}, sorted(set(writes))
    one, resumed = vocoder_runs["one"], vocoder_runs["resumed"]
    assert max(abs(a - b) for a, b in zip(_steps(one), _steps(resumed))) < TOL and len(_steps(resumed)) == 6
    assert _max_diff(load_file(str(one / "last.safetensors")), load_file(str(resumed / "last.safetensors"))) < TOL


def test_a_vocoder_batch_that_does_not_divide_among_the_ranks_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="does not divide among 3 ranks"):
        train_vocoder([corpus], tmp_path / "run", VocoderTrainConfig(batch=4, window=800), world=World(0, 3),
                      progress=False)
    assert not (tmp_path / "run").exists()
