"""A user's classifier (issue 18): a plain nn.Module, TorchScript or torch.export program over log-mel or
waveform, with its labels, behind speechmax's classifier interface -- and every bad input named."""
import logging

import pytest
import torch
import torch.nn as nn

from speechmax.features import FeatureConfig, log_mel, mel_filterbank
from speechmax.maximize import maximize
from speechmax.models.external import (ExternalClassifier, MelToWave, ModelError, load_external, load_program,
                                       read_labels)
from speechmax.ops.maximize import Unit

LABELS = ("up", "down", "left")


class MelNet(nn.Module):
    """log-mel (B, 80, T) -> logits."""

    def __init__(self, n=len(LABELS), mels=80):
        super().__init__()
        self.conv = nn.Conv1d(mels, 8, 3, padding=1)
        self.fc = nn.Linear(8, n)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(-1))


class WaveNetKWS(nn.Module):
    """16 kHz audio (B, samples) -> logits, with its own front end (STFT, 40 mel bands, log)."""

    def __init__(self, n=len(LABELS)):
        super().__init__()
        self.register_buffer("window", torch.hann_window(400))
        self.register_buffer("fb", mel_filterbank(FeatureConfig(n_fft=512, n_mels=40)))
        self.body = MelNet(n, mels=40)

    def forward(self, wave):
        spec = torch.stft(wave, 512, 160, 400, self.window, return_complex=True).abs()
        return self.body(torch.log(self.fb @ spec + 1e-6))


def _model(cls=MelNet, **kw):
    torch.manual_seed(0)
    return cls(**kw).eval()


def test_labels_file(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("up\ndown\nleft\n\n")
    assert read_labels(f) == LABELS
    f.write_text("up\n\ndown\n")
    with pytest.raises(ModelError, match=r"blank line\(s\) \[2\]"):
        read_labels(f)
    f.write_text("up\ndown\nup\n")
    with pytest.raises(ModelError, match="duplicate label.*up"):
        read_labels(f)
    f.write_text("")
    with pytest.raises(ModelError, match="empty"):
        read_labels(f)


def test_torchscript_and_export_load_and_agree(tmp_path):
    m = _model()
    x = torch.randn(2, 80, 101)
    torch.jit.save(torch.jit.script(m), tmp_path / "m.pt")
    ep = torch.export.export(m, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(ep, tmp_path / "m.pt2")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    want = m(x)
    for name in ("m.pt", "m.pt2"):
        clf = load_external(tmp_path / name, tmp_path / "labels.txt", input="log-mel")
        assert clf.cfg.labels == LABELS and clf.cfg.n_frames == 101
        torch.testing.assert_close(clf(x), want)


def test_pickles_are_refused(tmp_path):
    torch.save(_model(), tmp_path / "pickled.pt")
    with pytest.raises(ModelError, match="pickled model.*torch.jit.save"):
        load_program(tmp_path / "pickled.pt")
    torch.save(_model().state_dict(), tmp_path / "state.pt")
    with pytest.raises(ModelError, match="pickled"):
        load_program(tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="no pickles"):
        load_program(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_program(tmp_path / "missing.pt")


def test_bad_models_are_named_with_the_input_they_got():
    with pytest.raises(ModelError, match=r"gave \(2, 3\).*expected logits \(2, 4\).*4 labels"):
        ExternalClassifier(_model(), LABELS + ("right",))
    with pytest.raises(ModelError, match=r"failed on log-mel input of shape \(2, 64, 101\)"):   # 80-band model, 64 bands
        ExternalClassifier(_model(), LABELS, feature_config=FeatureConfig(n_mels=64))

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("kaboom")

    with pytest.raises(ModelError, match=r"failed on waveform input of shape \(2, 16000\).*kaboom"):
        ExternalClassifier(Broken(), LABELS, input="waveform")

    class Argmax(MelNet):
        def forward(self, x):
            return torch.nn.functional.one_hot(super().forward(x).argmax(-1), len(LABELS)).float()

    with pytest.raises(ModelError, match="not differentiable"):
        ExternalClassifier(_model(Argmax), LABELS)
    with pytest.raises(ModelError, match="input kind"):
        ExternalClassifier(_model(), LABELS, input="mfcc")


def test_mel_to_wave_is_differentiable_and_keeps_the_mel():
    cfg = FeatureConfig()
    t = torch.arange(16000) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.hann_window(16000)
    mel = log_mel(wave[None], cfg).float().requires_grad_(True)
    back = MelToWave(cfg)(mel)
    assert back.shape == (1, 16000)
    back.pow(2).sum().backward()
    assert torch.isfinite(mel.grad).all() and mel.grad.abs().sum() > 0
    # with enough phase iterations the resynthesis' own mel is close to the one it came from where there is energy
    # (the default needs none: a window-centred phase reaches the model as the written audio does; RESULTS.md)
    loud = mel.detach() > mel.detach().max() - 4
    errs = [(log_mel(MelToWave(cfg, iters=n)(mel.detach()), cfg) - mel.detach())[loud].abs().median()
            for n in (0, 16)]
    assert errs[1] < 0.5 and errs[1] < errs[0], errs


@pytest.mark.parametrize("kind", ["log-mel", "waveform"])
def test_maximize_runs_through_autograd_and_says_so(kind, caplog):
    clf = ExternalClassifier(_model(WaveNetKWS) if kind == "waveform" else _model(), LABELS, input=kind)
    with caplog.at_level(logging.INFO, logger="speechmax"):
        res = maximize(clf, "all", n=2, steps=3, seed=0)
    assert res.settings["backend"] == "autograd" and "arch 'external'" in res.settings["fallback_reason"]
    assert sum("autograd backend" in r.message for r in caplog.records) == 1
    assert res.features.shape == (6, 80, 101) and res.labels == LABELS
    first, last = res.trajectory[:, 0], res.trajectory[:, -1]
    assert (last > first).float().mean() >= 0.5      # the ascent climbs


def test_layer_objectives_by_module_name():
    clf = ExternalClassifier(_model(), LABELS)
    assert clf.layer_names() == ["conv", "fc"]
    acts = clf.activations(torch.zeros(1, 80, 101))
    assert list(acts) == ["conv", "fc", "logits"] and acts["conv"].shape == (1, 8, 101)
    res = maximize(clf, None, objective=Unit("conv", 3), n=2, steps=4, seed=0)
    assert (res.trajectory[:, -1] > res.trajectory[:, 0]).all()
    with pytest.raises(ValueError, match="unknown layer.*conv, fc"):
        maximize(clf, None, objective=Unit("nope", 0), n=1, steps=1)


def test_objective_names_a_module_channel():
    from speechmax.maximize import parse_objective

    assert parse_objective("body.conv:3") == Unit("body.conv", 3) == parse_objective("unit:body.conv:3")
    assert parse_objective("logit") == "logit"
    with pytest.raises(ValueError, match="LAYER:CHANNEL"):
        parse_objective("body.conv")


def test_the_separate_classifier_scores_only_shared_labels():
    from speechmax.models.classifier import Classifier, ClassifierConfig

    clf = ExternalClassifier(_model(), LABELS)                     # up, down, left
    torch.manual_seed(1)
    sep = Classifier(ClassifierConfig(arch="cnn2d", channels=(4, 4), n_classes=3, labels=("left", "yes", "up"))).eval()
    res = maximize(clf, "all", n=2, steps=2, seed=0, separate=sep)
    assert res.shared_labels() == ["up", "left"] and res.settings["separate_shared_labels"] == ["up", "left"]
    top = res.separate_after.argmax(-1)
    want = {"up": 2, "left": 0}
    hits = [int(top[i]) == want[LABELS[t]] for i, t in enumerate(res.targets.tolist()) if LABELS[t] in want]
    assert len(hits) == 4 and res.hit_rate("separate") == pytest.approx(sum(hits) / 4)


def test_cli_classify_on_a_user_model(tmp_path):
    import json
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    m = _model(WaveNetKWS)
    torch.jit.save(torch.jit.script(m), tmp_path / "kws.pt")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    for word in ("up", "left"):
        (tmp_path / "clips" / word).mkdir(parents=True)
        sf.write(tmp_path / "clips" / word / "a_nohash_0.wav", np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    run = lambda *a: subprocess.run([sys.executable, "-m", "speechmax", "classify", str(tmp_path / "clips"),  # noqa: E731
                                     "--model", str(tmp_path / "kws.pt"), *a], capture_output=True, text=True)
    out = run("--labels", str(tmp_path / "labels.txt"), "--input", "waveform", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    want = torch.softmax(m(torch.from_numpy(np.stack([sf.read(tmp_path / "clips" / w / "a_nohash_0.wav",
                                                                dtype="float32")[0] for w in ("left", "up")]))), -1)
    got = [p["prob"] for p in report["predictions"]]
    np.testing.assert_allclose(got, want.max(-1).values.detach().numpy(), atol=1e-5)
    assert report["labelled"] == 2 and 0 <= report["accuracy"] <= 1
    out = run("--input", "waveform")
    assert out.returncode == 2 and "needs its labels" in out.stderr


@pytest.mark.parametrize("mode", ["features", "latent"])
def test_cli_maximize_on_a_user_waveform_model_scores_the_written_audio(tmp_path, mode):
    import json

    import numpy as np

    from speechmax.cli import main

    torch.jit.save(torch.jit.script(_model(WaveNetKWS)), tmp_path / "kws.pt")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "run"
    args = ["maximize", "--model", str(tmp_path / "kws.pt"), "--labels", str(tmp_path / "labels.txt"),
            "--input", "waveform", "--target", "up,left", "--starts", "2", "--steps", "2", "--mode", mode,
            "--vocoder", "griffinlim", "--out", str(out), "--json"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    audio = manifest["hit_rate_audio"]
    assert audio["samples"] == 4 and audio["classifier"] is not None
    # the separate classifier (speechmax's 35 words) has all three of this model's labels
    assert manifest["separate_shared_labels"] == list(LABELS) and audio["separate"] is not None
    # re-scoring by hand: the model on the wavs as written
    from speechmax.features import load_audio
    waves = torch.from_numpy(np.stack([load_audio(out / s["wav"]) for s in manifest["samples"]]))
    top = _model(WaveNetKWS)(waves).argmax(-1).tolist()
    assert audio["classifier"] == pytest.approx(np.mean([LABELS[t] == s["target"]
                                                         for t, s in zip(top, manifest["samples"])]))


def _readme_example():
    """The worked example's code (the ```python block starting '# kws.py') and shell lines, from the README."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Your own classifier"):]
    code = re.search(r"```python\n(# kws\.py.*?)```", section, re.S).group(1)
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    lines = [line.split("#")[0].strip() for line in shell.splitlines()]
    return code, [line for line in lines if line]


@pytest.mark.slow
def test_readme_worked_example(tmp_path):
    """The README's worked example, as written: a torch-only waveform keyword spotter (TensorFlow's 12-class
    vocabulary) trained on a built corpus, then classify (.pt2), maximize --mode latent and evaluate --quick
    (TorchScript) on it."""
    import json
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    code, commands = _readme_example()
    (tmp_path / "kws.py").write_text(code)
    exe = Path(sys.executable)
    outputs = []
    for line in commands:
        argv = shlex.split(line)
        argv = [str(exe.with_name("speechmax"))] + argv[1:] if argv[0] == "speechmax" else \
            [str(exe)] + argv[1:] if argv[0] == "python" else argv
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        outputs.append(r.stdout)
    assert {"kws.pt", "kws.pt2", "labels.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert "accuracy:" in outputs[2]
    summary = json.loads(outputs[3])
    assert summary["hit_rate_scored_on"] == "written audio" and summary["samples"] == 8
    assert summary["hit_rate"]["classifier"] is not None and summary["hit_rate"]["separate"] is not None
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    assert summary["separate_shared_labels"] == words
    m = json.loads((tmp_path / "runs" / "kws-eval" / "metrics.json").read_text())
    assert m["settings"]["labels"] == ["_silence_", "_unknown_"] + words
    assert m["settings"]["unscored"] == ["_silence_", "_unknown_"] and m["data"]["labels_without_clips"] == []
    assert set(m["noise_to_class"]["speechmax/latent"]["per_class"]) == set(words)
    assert (tmp_path / "runs" / "kws-eval" / "report.html").exists() and "report:" in outputs[4]


def test_diversity_keeps_one_targets_starts_apart():
    from speechmax.maximize import Diversity
    from speechmax.ops.maximize import _similarity_to_same_target

    clf = ExternalClassifier(_model(), LABELS)
    runs = {w: maximize(clf, ["up", "down"], n=4, steps=30, lr=0.05, seed=0, regularizers=[Diversity(w)] if w else [])
            for w in (0.0, 5.0)}
    sim = {w: float(_similarity_to_same_target(r.features, r.targets).mean()) for w, r in runs.items()}
    assert sim[5.0] < sim[0.0] - 0.05, sim
    assert runs[5.0].settings["backend"] == "autograd"
    # a non-finite sample takes no part in the others' similarity
    f = torch.randn(4, 80, 101)
    f[1] = float("nan")
    s = _similarity_to_same_target(f, torch.tensor([0, 0, 0, 1]))
    assert torch.isfinite(s).all() and s[1] == 0 and s[3] == 0


def test_success_is_scored_on_shared_labels_only():
    import numpy as np

    from speechmax.evaluate.stats import success_rates
    from speechmax.models.inference import label_index

    assert label_index(("down", "up", "yes"), ("up", "down", "left")).tolist() == [1, 0, -1]
    labels = ("up", "down", "left")
    t = np.array([0, 0, 1, 1, 2, 2])
    pc = t.copy()
    ps = np.array([0, 9, 1, 1, 2, 2])   # 9: a word the classifier lacks
    s = success_rates(t, pc, ps, labels, scored=("up", "down"))
    assert set(s["per_class"]) == {"up", "down"} and s["unscored"] == ["left"]
    assert s["overall"]["rate"] == pytest.approx(0.75) and s["overall"]["n"] == 4
    assert s["hit_rate"]["separate"] == pytest.approx(0.75) and s["hit_rate"]["classifier"] == 1.0
    assert "unscored" not in success_rates(t, pc, ps, labels)


def test_cli_evaluate_on_a_user_model_and_a_user_separate_classifier(tmp_path):
    """evaluate --model (TorchScript, waveform, a vocabulary with _unknown_ and a word no corpus has) with a
    torch.export separate classifier (log-mel, other labels in another order): every part scores only the
    labels both have, clips are labelled by the model's vocabulary, and the outputs say so."""
    import json
    import shutil

    import numpy as np

    from speechmax.cli import main
    from speechmax.models.prior import save_prior

    from test_maximize import tiny_prior

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    pytest.importorskip("sklearn")
    labels = ("up", "down", "left", "_unknown_", "zebra")
    sep_labels = ("down", "yes", "up")
    torch.jit.save(torch.jit.script(_model(WaveNetKWS, n=len(labels))), tmp_path / "kws.pt")
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    sep = _model(MelNet, n=len(sep_labels))
    torch.export.save(torch.export.export(sep, (torch.randn(2, 80, 101),),
                                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), tmp_path / "sep.pt2")
    (tmp_path / "sep.txt").write_text("\n".join(sep_labels) + "\n")
    for name, seed, arch in (("prior", 0, "vae"), ("pp", 1, "paper")):
        save_prior(tiny_prior(seed=seed, arch=arch), tmp_path / name)
    out = tmp_path / "eval"
    argv = ["evaluate", "--quick", "--out", str(out), "--model", str(tmp_path / "kws.pt"),
            "--labels", str(tmp_path / "labels.txt"), "--input", "waveform",
            "--separate", str(tmp_path / "sep.pt2"), "--separate-labels", str(tmp_path / "sep.txt"),
            "--separate-input", "log-mel", "--prior", str(tmp_path / "prior"), "--prior-paper", str(tmp_path / "pp"),
            "--vocoder", "griffinlim", "--speakers", "2", "--per-class", "2", "--steps", "2",
            "--control-per-class", "1", "--threads", "1", "--json"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["labels"] == list(labels) and m["settings"]["separate_labels"] == list(sep_labels)
    assert m["settings"]["unscored"] == ["left", "_unknown_", "zebra"]
    assert m["settings"]["models"]["classifier"]["input"] == "waveform"
    assert m["data"]["labels_without_clips"] == ["zebra"]
    for name, run in m["noise_to_class"].items():
        assert set(run["per_class"]) <= {"up", "down"} and run["unscored"] == ["left", "_unknown_", "zebra"], name
        heat = np.array(run["heatmap_separate"], dtype=float)
        assert heat.shape == (5, 5) and (heat[:, 2:] == 0).all(), name   # the separate lacks left, _unknown_, zebra
        assert np.array(run["heatmap_classifier"], dtype=float).shape == (5, 5)
        assert run["overall"]["n"] == 2 * 2, name
    for mode, c2c in m["class_to_class"].items():
        assert np.array(c2c["matrix"], dtype=float).shape == (5, 5), mode
    real = m["vocoder_control"]["groups"]["real clips"]
    assert set(real["per_class"]) <= {"up", "down"} and real["n"] >= 1
    assert any("not scored: left, _unknown_, zebra" in line for line in m["summary"])
    assert any("no example of zebra" in line for line in m["summary"])
    # the anomaly report compares the words the corpus has, and names the one it lacks
    assert m["anomalies"]["skipped"]["zebra"] == "the reference corpus has no clip of 'zebra'"
    assert set(m["anomalies"]["per_class"]) | set(m["anomalies"]["skipped"]) == set(labels)
    assert m["misclassified"]["method"] == "log-mel euclidean distance"
    listening = json.loads((out / "listening" / "manifest.json").read_text())
    assert listening["words"] == list(labels)   # the listening app offers the model's vocabulary


def test_a_model_returning_nan_stops_those_starts_and_keeps_the_rest():
    class SometimesNaN(MelNet):
        """NaN logits for inputs whose first feature is positive (about half of the noise starts)."""

        def forward(self, x):
            out = super().forward(x)
            return torch.where((x[:, 0, 0] > 0)[:, None], torch.full_like(out, float("nan")), out)

    clf = ExternalClassifier(_model(SometimesNaN), LABELS)
    res = maximize(clf, "all", n=4, steps=3, seed=0)
    stopped = res.nan_stopped
    assert 0 < len(stopped) < len(res.targets)
    kept = [i for i in range(len(res.targets)) if i not in stopped]
    assert torch.isfinite(res.features[kept]).all() and torch.isfinite(res.trajectory[kept]).all()
    assert (res.stopped_at[stopped] >= 0).all() and (res.stopped_at[kept] == -1).all()
