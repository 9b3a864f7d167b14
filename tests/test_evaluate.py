"""speechmax evaluate: the --quick report on tiny models and a tiny corpus the run builds; the statistics."""
import json
import re

import numpy as np
import pytest
import torch

from speechmax.cli import main
from speechmax.data.words import WORDS
from speechmax.evaluate.stats import bootstrap_rate, mean_softmax, pair_matrix, success_rates, top_confusions
from speechmax.models.classifier import save_classifier
from speechmax.models.prior import save_prior
from speechmax.models.wavenet import WaveNet, WaveNetConfig, save_wavenet

from test_maximize import tiny_classifier, tiny_prior

C = len(WORDS)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval-models")
    save_classifier(tiny_classifier(), d / "clf")
    save_classifier(tiny_classifier(arch="cnn2d", channels=(4, 8), seed=3), d / "sep")
    save_prior(tiny_prior(), d / "prior")
    save_prior(tiny_prior(arch="paper", seed=1), d / "pp")
    torch.manual_seed(0)
    save_wavenet(WaveNet(WaveNetConfig(residual_channels=8, gate_channels=16, skip_channels=16, out_channels=16,
                                       n_layers=4, dilation_cycle=2, cond_channels=8)).eval(), d / "voc")
    return {k: str(d / k) for k in ("clf", "sep", "prior", "pp", "voc")}


def silent_audio(monkeypatch):
    """The vocoder control's and the listening set's audio as silence, for tests that check something else:
    Griffin-Lim takes ~0.2 s a clip here and an evaluation vocodes ~250 clips. The real audio is checked by
    test_quick_report_on_tiny_models (WaveNet and Griffin-Lim in the control, WaveNet in the listening set)."""
    import speechmax.evaluate.control as control
    import speechmax.evaluate.listening as listening

    for module in (control, listening):
        monkeypatch.setattr(module, "synthesize", lambda models, mels, *a: np.zeros((len(mels), 16000), np.float32))


class FirstTwoCoordinates:
    """sklearn's TSNE as the evaluation calls it, embedding each point as its first two coordinates: the t-SNE of
    ~1,300 latents takes ~10 s here. The real t-SNE is checked by test_quick_report_on_tiny_models."""

    def __init__(self, n_components=2, **kw):
        self.n_components = n_components

    def fit_transform(self, x):
        return np.asarray(x)[:, :self.n_components]


def fast_later_stages(monkeypatch):
    """Silent audio and a stand-in t-SNE (see both), for tests about something other than the report's content."""
    silent_audio(monkeypatch)
    monkeypatch.setattr("sklearn.manifold.TSNE", FirstTwoCoordinates)


@pytest.fixture(scope="module")
def quick_report(models, tmp_path_factory):
    """`speechmax evaluate --quick` on the tiny models (3 fresh speakers -- the fewest real clips of a word the
    anomaly report compares with --, 3 starts per class, 3 steps)."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("quick") / "report"
    argv = ["evaluate", "--quick", "--out", str(out), "--model", models["clf"], "--separate", models["sep"],
            "--prior", models["prior"], "--prior-paper", models["pp"], "--vocoder", models["voc"],
            "--speakers", "3", "--per-class", "3", "--steps", "3", "--control-per-class", "1", "--threads", "1",
            "--json"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, json.loads(buf.getvalue())


def test_quick_report_on_tiny_models(quick_report):
    out, head = quick_report
    assert set(head["success"]) == {"paper/features", "paper/latent", "speechmax/features", "speechmax/latent"}

    m = json.loads((out / "metrics.json").read_text())
    for name, run in m["noise_to_class"].items():
        heat = np.array(run["heatmap_separate"], dtype=float)
        assert heat.shape == (C, C) and np.allclose(heat.sum(1), 1, atol=1e-3), name   # mean softmax rows
        assert np.array(run["heatmap_classifier"], dtype=float).shape == (C, C)
        o = run["overall"]
        assert o["n"] == 3 * C and o["lo"] <= o["rate"] <= o["hi"]
        assert set(run["per_class"]) == set(WORDS)
        assert all(v["lo"] <= v["rate"] <= v["hi"] and v["n"] == 3 for v in run["per_class"].values())
    assert m["noise_to_class"]["paper/latent"]["settings"]["steps"] == 20
    assert m["noise_to_class"]["speechmax/latent"]["settings"]["steps"] == 3
    vc = m["vocoder_control"]
    assert vc["wavenet_available"] and set(vc["groups"]) == {"real clips", "features mode", "latent mode"}
    for g in vc["groups"].values():
        assert g["n"] == C and {"features", "wavenet", "griffinlim"} <= set(g)
        assert 0 <= g["wavenet"]["agrees_with_features"] <= 1 and len(g["per_class"]) == C
    for mode in ("features", "latent"):
        assert np.array(m["class_to_class"][mode]["matrix"], dtype=float).shape == (C, C)
        assert m["class_to_class"][mode]["starts"] == C * C
    assert m["data"]["clips"] == 3 * C and m["data"]["speakers"] == 3
    assert m["timing"]["total"] > 0 and len(m["summary"]) >= 5

    # 6. anomalies: every word compared (1 maximized sample, 3 real clips each) or skipped with the reason
    an = m["anomalies"]
    assert set(an["per_class"]) | set(an["skipped"]) == set(WORDS) and an["settings"]["mode"] == "latent"
    assert np.array(an["band_z"], dtype=float).shape == (C, 80) and len(an["band_hz"]) == 80
    for word, found in an["per_class"].items():
        assert [a["rank"] for a in found] == list(range(1, len(found) + 1)), word
        for a in found:
            assert abs(a["effect"]) >= an["threshold"] and a["ci"][0] <= a["effect"] <= a["ci"][1], (word, a)
            assert a["kind"] in ("band_energy", "placement", "noise_floor", "confusion")
    wrong = m["misclassified"]
    assert wrong["method"] == "log-mel euclidean distance" and len(wrong["cases"]) <= 6
    assert sum(e["misclassified"] for e in wrong["per_class"].values()) == wrong["misclassified"]
    assert m["timing"]["anomalies"] < 10

    html = (out / "report.html").read_text()
    figures = sorted(p.name for p in (out / "figures").rglob("*.png"))
    assert len(figures) == 13 + len(wrong["cases"])   # the anomaly heatmap and one PNG per gallery case
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', html)) == len(figures)
    assert "Debugging summary" in html and "Vocoder control" in html and "Class to class" in html
    assert "6. Anomalies" in html and "Misclassified clips against the prototypes" in html

    from speechmax.listen.sets import load_listening_set

    ls = load_listening_set(out / "listening")
    assert ls.words == WORDS   # the answer choices: the classifier's labels
    roles = {c.role for c in ls.clips.values()}
    conditions = {c.condition for c in ls.clips.values()}
    assert roles == {"test", "reference", "anchor"}
    assert conditions == {"features/noise", "latent/noise", "features/real-before", "features/real-after",
                          "latent/real-before", "latent/real-after", "reference", "anchor"}
    assert sum(c.condition == "latent/real-after" for c in ls.clips.values()) == C   # 1 per class in quick
    import soundfile as sf

    wave, sr = sf.read(next(iter(ls.clips.values())).path)
    assert sr == 16000 and len(wave) == 16000


@pytest.mark.parametrize("extra, message", [
    (["--per-class", "0"], "--per-class must be >= 1"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--data", "/nonexistent/corpus"], "not a folder"),
    (["--model", "/nonexistent/model"], "nonexistent"),
])
def test_bad_input_is_a_clear_error(models, tmp_path, capsys, extra, message):
    argv = ["evaluate", "--quick", "--out", str(tmp_path / "o"), "--model", models["clf"], "--separate",
            models["sep"], "--prior", models["prior"], "--prior-paper", models["pp"], "--vocoder", "griffinlim"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    assert bootstrap_rate([True] * 10, rng) == {"rate": 1.0, "lo": 1.0, "hi": 1.0, "n": 10}
    assert bootstrap_rate([], rng)["rate"] is None
    r = bootstrap_rate([True] * 50 + [False] * 50, rng)
    # normal approximation of a binomial proportion: 0.5 +- 1.96 * 0.05
    assert r["rate"] == 0.5 and abs(r["lo"] - 0.402) < 0.03 and abs(r["hi"] - 0.598) < 0.03


def test_success_rates_heatmap_and_pairs():
    labels = ("a", "b", "c")
    t = np.array([0, 0, 1, 1, 2, 2])
    pc = np.array([0, 0, 1, 2, 2, 2])
    ps = np.array([0, 1, 1, 2, 2, 2])
    s = success_rates(t, pc, ps, labels)
    assert [s["per_class"][w]["rate"] for w in labels] == [0.5, 0.5, 1.0]
    assert s["overall"]["rate"] == round(2 / 3, 4) and s["hit_rate"] == {"classifier": 0.8333, "separate": 0.6667}
    probs = np.eye(3)[ps]
    h = mean_softmax(t, probs, 3)
    assert np.allclose(h, [[0.5, 0.5, 0], [0, 0.5, 0.5], [0, 0, 1]])
    assert top_confusions(h, labels, k=2) == [{"target": "a", "heard_as": "b", "mean_prob": 0.5},
                                               {"target": "b", "heard_as": "c", "mean_prob": 0.5}]
    pm = pair_matrix([0, 0, 1], [1, 1, 0], [1, 0, 1], 3)
    assert pm[0, 1] == 0.5 and pm[1, 0] == 1 and np.isnan(pm[2, 2])


def test_demo_writes_report_and_samples(models, tmp_path, monkeypatch):
    """run_demo (what `make demo` runs on the shipped defaults), here on the tiny models: report + samples.
    The report's content is test_quick_report_on_tiny_models's: its audio and t-SNE are stand-ins here
    (fast_later_stages); the samples are vocoded for real."""
    pytest.importorskip("sklearn")
    fast_later_stages(monkeypatch)
    from speechmax.demo import run_demo
    from speechmax.evaluate import load_models

    m = load_models(models["clf"], models["sep"], models["prior"], models["pp"], models["voc"])
    s = run_demo(tmp_path, samples_per_class=1, models=m, threads=1, quiet=True, speakers=1, per_class=1, steps=1,
                 control_per_class=1)
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "summary.json").is_file()
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    assert len(manifest["samples"]) == C and manifest["vocoder"]["backend"] == "auto"
    assert all((tmp_path / "samples" / e["wav"]).is_file() for e in manifest["samples"])
    assert s["n_samples"] == C and s["vocoder"] == models["voc"]


def test_report_opens_in_a_browser_with_every_figure(quick_report):
    import os

    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip(f"{chromium} is absent (Debian package chromium; `make setup` installs it)")
    from playwright.sync_api import sync_playwright

    out, _ = quick_report
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "report.html").resolve().as_uri())
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            assert len(sizes) == len(list((out / "figures").rglob("*.png")))
            assert all(c and w > 300 and h > 200 for c, w, h in sizes), sizes
            assert page.title() == "speechmax evaluation" and not errors
            assert page.locator("h2").count() >= 6
        finally:
            browser.close()


def test_finished_noise_runs_are_kept_and_resumed(models, tmp_path, quick_report):
    """A long evaluation keeps each finished noise run in out/partial/ and a rerun with the same models and
    settings takes it from there; other settings or other weights do not."""
    from speechmax.evaluate import load_models
    from speechmax.evaluate.resume import PartialRun, run_key

    out, _ = quick_report
    m = load_models(models["clf"], models["sep"], models["prior"], models["pp"], "griffinlim")
    key = run_key(m, "speechmax", "latent", 3, 0, 3, 1)
    summary, kept = PartialRun(out, "speechmax/latent", key).load(True)     # written by the quick run
    first = json.loads((out / "metrics.json").read_text())["noise_to_class"]["speechmax/latent"]
    assert summary == first and kept["after"].shape == (C, 80, 101) and list(kept["targets"]) == list(range(C))
    assert PartialRun(out, "speechmax/latent", run_key(m, "speechmax", "latent", 4, 0, 3, 1)).load(True) is None
    other = load_models(models["sep"], models["clf"], models["prior"], models["pp"], "griffinlim")
    assert run_key(other, "speechmax", "latent", 3, 0, 3, 1) != key
    PartialRun(tmp_path, "paper/features", "k1").save({"overall": {"rate": 0.5}}, None)
    assert PartialRun(tmp_path, "paper/features", "k1").load(False) == ({"overall": {"rate": 0.5}}, None)
    assert PartialRun(tmp_path, "paper/features", "k2").load(False) is None


def test_a_long_noise_run_is_done_and_kept_one_target_at_a_time(models, tmp_path):
    """Runs too big to keep features for (the full N = 10,000) go one target at a time, each target's outcome
    saved as it finishes: the pieces give the run done at once, and a rerun after an interruption redoes only
    the missing targets."""
    from speechmax.evaluate import load_models
    from speechmax.evaluate.noise import maximize_by_target, maximize_recipe, run_summary
    from speechmax.evaluate.resume import PartialRun
    from speechmax.evaluate.stats import mean_softmax
    from speechmax.machine import cpu_model

    m = load_models(models["clf"], models["sep"], models["prior"], models["pp"], "griffinlim")
    labels = tuple(m.classifier.cfg.labels)
    res = maximize_recipe(m, "latent", "speechmax", 1, False, 2, n=3, seed=5)
    whole = run_summary(res, labels, 5)
    heat = mean_softmax(res.targets.numpy(), res.separate_after.numpy(), C)
    assert np.allclose(np.array(whole["heatmap_separate"], dtype=float), heat, atol=5e-5)

    def same(a, b):   # the objective's means add up in another order: equal to rounding
        a, b = dict(a), dict(b)
        oa, ob = a.pop("objective"), b.pop("objective")
        return a == b and all(abs(oa[k] - ob[k]) <= 1e-4 for k in oa)

    partial = PartialRun(tmp_path, "speechmax/latent", "k")
    merged, seconds = maximize_by_target(partial, "speechmax/latent", m, "latent", "speechmax", 1, False, 2, 3, 5,
                                         labels, True)
    by_cpu = merged.pop("seconds_by_cpu")
    assert same(merged, whole) and seconds > 0
    assert list(by_cpu) == [cpu_model()] and by_cpu[cpu_model()] == pytest.approx(seconds, abs=1e-3)
    folder = tmp_path / "partial" / "noise-speechmax-latent-k"
    pieces = sorted(folder.glob("target*.safetensors"))
    assert len(pieces) == C and not list(folder.glob("*.tmp"))
    pieces[3].unlink()
    pieces[-1].unlink()
    stamp = {p: p.stat().st_mtime_ns for p in pieces if p.exists()}
    again, seconds2 = maximize_by_target(partial, "speechmax/latent", m, "latent", "speechmax", 1, False, 2, 3, 5,
                                         labels, True)
    again.pop("seconds_by_cpu")
    assert same(again, whole) and seconds2 > 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items()) and pieces[3].exists() and pieces[-1].exists()


def test_a_noise_run_in_blocks_of_starts_equals_the_run_done_at_once(models, tmp_path, monkeypatch):
    """Targets with more starts than a block go in pieces of a block of starts each (torchrun's ranks share them
    out): the pieces give the run done at once, settings included; a lost block is the only one redone; a target
    kept whole (before blocks existed) counts as all of its blocks."""
    import speechmax.evaluate.noise as noise
    from speechmax.evaluate import load_models
    from speechmax.evaluate.resume import PartialRun

    monkeypatch.setattr(noise, "BLOCK", 2)
    m = load_models(models["clf"], models["sep"], models["prior"], models["pp"], "griffinlim")
    labels = tuple(m.classifier.cfg.labels)
    whole = noise.run_summary(noise.maximize_recipe(m, "latent", "speechmax", 1, False, 2, n=3, seed=5), labels, 5)
    partial = PartialRun(tmp_path, "speechmax/latent", "k")
    merged, _ = noise.maximize_by_target(partial, "speechmax/latent", m, "latent", "speechmax", 1, False, 2, 3, 5,
                                         labels, True)
    merged.pop("seconds_by_cpu")
    o1, o2 = merged.pop("objective"), dict(whole).pop("objective")
    assert merged == {k: v for k, v in whole.items() if k != "objective"}
    assert all(abs(o1[k] - o2[k]) <= 1e-4 for k in o1)
    folder = tmp_path / "partial" / "noise-speechmax-latent-k"
    assert sorted(p.name for p in folder.glob("target000*")) == ["target000-starts000000-000002.safetensors",
                                                                 "target000-starts000002-000003.safetensors"]
    assert partial.targets_done(C, noise.blocks(3)) == C
    (folder / "target004-starts000002-000003.safetensors").unlink()
    assert partial.targets_done(C, noise.blocks(3)) == C - 0.5
    computed = []
    monkeypatch.setattr(noise, "noise_piece", lambda p, c, *a, block=None: computed.append((c, block)) or
                        noise.PartialRun.load_target(p, 0, (2, 3)))
    noise.maximize_by_target(partial, "speechmax/latent", m, "latent", "speechmax", 1, False, 2, 3, 5, labels, True)
    assert computed == [(4, (2, 3))]
    stats, meta = partial.load_target(1, (0, 2))
    partial.save_target(1, stats, meta)   # target 1 kept whole: its blocks are not looked at
    (folder / "target001-starts000000-000002.safetensors").unlink()
    computed.clear()
    noise.maximize_by_target(partial, "speechmax/latent", m, "latent", "speechmax", 1, False, 2, 3, 5, labels, True)
    assert computed == [(4, (2, 3))]   # the stand-in saved nothing: target 4's block is still missing; not target 1


def test_evaluate_on_the_by_target_path(models, tmp_path, monkeypatch):
    """The whole evaluation on the by-target path (made to apply at 3 starts per class): it finishes, every
    target of every noise run is on disk, and each run's seconds are the sum its pieces measured."""
    pytest.importorskip("sklearn")
    from safetensors.numpy import load_file

    import speechmax.evaluate.noise as noise
    import speechmax.evaluate.run as run
    from speechmax.evaluate import load_models

    monkeypatch.setattr(noise, "KEEP_LIMIT", 50)
    fast_later_stages(monkeypatch)   # the noise runs are what this test is about; the figures stay real
    m = load_models(models["clf"], models["sep"], models["prior"], models["pp"], "griffinlim")
    metrics = run.evaluate(tmp_path, per_class=3, models=m, speakers=2, steps=2, listen_per_class=1,
                           control_per_class=1, c2c_per_class=1, threads=1, quiet=True)
    for name, r in metrics["noise_to_class"].items():
        pieces = sorted((tmp_path / "partial").glob(f"noise-{name.replace('/', '-')}-*/target*.safetensors"))
        assert len(pieces) == C, name
        seconds = 0.0
        for piece in pieces:
            seconds += json.loads(load_file(str(piece))["meta"].tobytes().decode())["seconds"]
        assert r["seconds"] == pytest.approx(seconds, abs=0.05) and r["seconds"] > 0, name
        assert sum(r["seconds_by_cpu"].values()) == pytest.approx(seconds, abs=0.05), name
        assert np.allclose(np.array(r["heatmap_separate"], dtype=float).sum(1), 1, atol=1e-3), name
    # a later sitting resumes every noise run: its total counts their compute, measured in the first sitting
    again = run.evaluate(tmp_path, per_class=3, models=m, speakers=2, steps=2, listen_per_class=1,
                         control_per_class=1, c2c_per_class=1, threads=1, quiet=True)
    noise_seconds = sum(r["seconds"] for r in again["noise_to_class"].values())
    t = again["timing"]
    assert t["total"] == pytest.approx(t["this sitting"] + noise_seconds, abs=0.05)
    assert "this sitting" in (tmp_path / "report.html").read_text()


def test_evaluate_drives_one_overall_bar_across_targets(models, tmp_path, monkeypatch):
    """The long evaluation's overall bar (issue 20 item 4): its total is every target of the four noise runs
    plus one unit per later stage; what out/partial/ holds (a finished run, most targets of another) is its
    ``initial``, so the ETA counts only the work left; targets and stages advance it to the total."""
    pytest.importorskip("sklearn")
    import speechmax.evaluate.noise as noise
    import speechmax.evaluate.run as run
    from speechmax.evaluate import load_models
    from speechmax.evaluate.resume import PartialRun, run_key

    monkeypatch.setattr(noise, "KEEP_LIMIT", 10)   # 1 start per class goes one target at a time, as a full run does
    # the audio, the t-SNE and the figures are not what this test is about (their stages still run and count)
    fast_later_stages(monkeypatch)
    monkeypatch.setattr(run, "draw_figures", lambda *a: {})
    m = load_models(models["clf"], models["sep"], models["prior"], models["pp"], "griffinlim")
    labels = tuple(m.classifier.cfg.labels)
    partial = {n: PartialRun(tmp_path, n, run_key(m, *n.split("/"), 1, 0, 1, 1)) for n in ("paper/latent",
                                                                                           "paper/features")}
    # an earlier sitting: paper/latent finished, paper/features interrupted with 5 targets to go
    done = noise.run_summary(noise.maximize_recipe(m, "latent", "paper", 1, False, n=1, seed=0), labels, 0)
    partial["paper/latent"].save({**done, "seconds": 1.0}, None)
    noise.maximize_by_target(partial["paper/features"], "paper/features", m, "features", "paper", 1, False, 1, 1, 0,
                             labels, True)
    for piece in sorted(partial["paper/features"].folder.glob("target*"))[:5]:
        piece.unlink()

    bars = []

    class Recorder:   # what evaluate() needs of a bar: tqdm's keywords in, update(n), close()
        def __init__(self, **kw):
            self.kw, self.n, self.updates, self.closed = kw, kw.get("initial", 0), [], False
            bars.append(self)

        def update(self, n=1):
            self.updates.append(n)
            self.n += n

        def close(self):
            self.closed = True

    run.evaluate(tmp_path, per_class=1, steps=1, models=m, speakers=1, listen_per_class=1, control_per_class=1,
                 c2c_per_class=1, threads=1, quiet=True, progress=Recorder)
    (bar,) = bars
    total = 4 * C + len(run.LATER_STAGES)
    assert bar.kw["total"] == total and bar.kw["initial"] == C + (C - 5)   # resumed units are done at the start
    # the 5 missing targets, then speechmax's two runs a target at a time, then a unit per later stage
    assert bar.updates == [1] * (5 + 2 * C + len(run.LATER_STAGES))
    assert bar.n == total and bar.closed
