"""speechmax maximize and speechmax bench maximize: contracts, files written, clear errors (tiny models)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechmax.cli import main
from speechmax.models.classifier import save_classifier
from speechmax.models.prior import save_prior
from speechmax.ops import available_backends
from speechmax.ops.maximize import bf16_isa

from test_maximize import tiny_classifier, tiny_prior


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    save_classifier(tiny_classifier(), d / "clf")
    save_classifier(tiny_classifier(arch="cnn2d", channels=(4, 8), seed=3), d / "sep")
    save_prior(tiny_prior(), d / "prior")
    return {k: str(d / k) for k in ("clf", "sep", "prior")}


def args(models, out, *extra):
    return ["maximize", "--model", models["clf"], "--separate", models["sep"], "--prior", models["prior"],
            "--vocoder", "griffinlim", "--out", str(out), *extra]


def test_maximize_latent_writes_samples_and_manifest(models, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "yes"
    assert main(args(models, out, "--target", "yes", "--starts", "3", "--mode", "latent", "--steps", "4", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"n", "targets", "hit_rate", "manifest"} <= set(summary)
    assert summary["n"] == 3 and summary["targets"] == ["yes"] and summary["backend"] == "cpu"
    assert set(summary["hit_rate"]) == {"classifier", "separate"}
    assert all(0.0 <= v <= 1.0 for v in summary["hit_rate"].values())
    manifest = json.loads(open(summary["manifest"]).read())
    assert len(manifest["samples"]) == 3 and manifest["vocoder"]["backend"] == "griffinlim"
    for s in manifest["samples"]:
        feats = np.load(out / s["npy"])
        assert feats.shape == (80, 101) and np.isfinite(feats).all()
        wave, sr = sf.read(out / s["wav"])
        assert sr == 16000 and len(wave) == 16000 and np.abs(wave).max() > 1e-4   # audible, not silence
        assert (out / s["png"]).stat().st_size > 10_000
        assert len(s["trajectory"]) == 5 and s["target"] == "yes"
        for who in ("classifier", "separate"):
            for when in ("before", "after"):
                sc = s[who][when]
                assert len(sc["probs"]) == 35 and 0 <= sc["target_prob"] <= 1 and sc["top"]["label"]
    assert manifest["settings"]["mode"] == "latent" and manifest["settings"]["steps"] == 4


def test_maximize_class_to_class_from_clips(models, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    np.save(clips / "a.npy", (-4 + 2 * torch.randn(2, 80, 101)).numpy())
    assert main(args(models, tmp_path / "o", "--target", "up,down", "--init", str(clips), "--steps", "2",
                     "--separate", "none", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 2 and summary["targets"] == ["up", "down"] and summary["samples"] == 4
    assert summary["hit_rate"]["separate"] is None
    manifest = json.loads(open(summary["manifest"]).read())
    assert manifest["settings"]["init"] == "clips" and "separate" not in manifest["samples"][0]


def test_maximize_unit_objective_and_paper_preset(models, tmp_path, capsys):
    assert main(args(models, tmp_path / "u", "--objective", "unit:block1:3", "--n", "2", "--steps", "3",
                     "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["targets"] == [] and summary["hit_rate"] == {"classifier": None, "separate": None}
    assert main(args(models, tmp_path / "p", "--target", "no", "--n", "2", "--preset", "paper", "--json")) == 0
    manifest = json.loads(open(json.loads(capsys.readouterr().out)["manifest"]).read())
    assert manifest["settings"]["preset"] == "paper" and manifest["settings"]["steps"] == 20
    assert manifest["settings"]["lr"] == 0.01


@pytest.mark.parametrize("extra, message", [
    (["--target", "yess"], "unknown target word 'yess'; valid targets: all, backward"),
    (["--target", "yes", "--steps", "0"], "--steps must be >= 1"),
    (["--objective", "prob"], "--target is required"),
    (["--target", "yes", "--objective", "unit:block7:0"], "unknown layer 'block7'"),
])
def test_maximize_bad_input(models, tmp_path, capsys, extra, message):
    assert main(args(models, tmp_path / "bad", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_maximize_missing_asset_is_named(tmp_path, capsys):
    assert main(["maximize", "--target", "yes", "--model", "no-such-classifier", "--out", str(tmp_path)]) == 2
    assert "no-such-classifier" in capsys.readouterr().err


def test_maximize_prior_with_another_feature_config(models, tmp_path, capsys):
    from speechmax.features import FeatureConfig
    from speechmax.models.prior import Prior

    p = tiny_prior()
    other = Prior(p.cfg, FeatureConfig(n_fft=512, win_length=400)).eval()
    save_prior(other, tmp_path / "other")
    assert main(args(models, tmp_path / "o", "--target", "yes", "--mode", "latent", "--prior",
                     str(tmp_path / "other"))) == 2
    assert "n_fft: 1024 vs 512" in capsys.readouterr().err


def test_a_run_from_before_the_precision_flag_resumes_and_bf16_is_a_setting_of_its_own(models, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--target", "yes", "--starts", "2", "--mode", "latent", "--steps", "2", "--json"]
    assert main(args(models, out, *common)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["precision"] == "fp32" and first["resumed"] is False
    # fp32 runs record what runs from before the flag recorded, so such a folder resumes
    assert "precision" not in json.loads((out / "run.json").read_text())["settings"]
    assert main(args(models, out, *common)) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] is True
    if bf16_isa():                                      # bf16 is another setting: refused in that folder
        assert main(args(models, out, *common, "--precision", "bf16")) == 2
        assert "precision" in capsys.readouterr().err


def test_bench_maximize_contract(capsys):
    assert main(["bench", "maximize", "--batches", "1", "--threads", "1", "--paper-starts", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    paths = ("autograd", "fused") if available_backends()["cpu"] else ("autograd",)
    paths += ("fused-bf16",) if bf16_isa() else ()   # measured only where the CPU has bf16 dot products
    assert {(r["path"], r["mode"], r["batch"], r["threads"]) for r in report["results"]} == {
        (p, m, 1, 1) for p in paths for m in ("latent", "features")}
    # the project's own FMA peak (issue 24; measured by the C++ extension) and each step's fraction of it
    fp32_rows = [r for r in report["results"] if r["path"] != "fused-bf16"]
    extra = {"gflops", "fraction_of_peak_fp32"} if available_backends()["cpu"] else {"gflops"}
    assert all(set(r) == {"path", "mode", "batch", "threads", "steps_per_s"} | extra and r["steps_per_s"] > 0
               for r in fp32_rows)
    peak = report["machine"]["peak_gflops"]["fp32"]
    if available_backends()["cpu"]:
        assert peak > 0 and all(r["fraction_of_peak_fp32"] == pytest.approx(r["gflops"] / peak, rel=1e-3, abs=1e-4)
                                for r in fp32_rows)
    # a bf16 row is stated against the peak of what it runs on: the bf16 dot products, or AMX tiles
    bf16_extra = {"fraction_of_peak_amx_bf16" if bf16_isa() == "amx" else "fraction_of_peak_bf16"}
    assert all(set(r) == {"path", "mode", "batch", "threads", "steps_per_s", "gflops"} | bf16_extra
               for r in report["results"] if r["path"] == "fused-bf16")
    ps = report["paper_scale"]
    assert ps["starts"] == 1 and ps["classes"] == 35 and ps["steps"] == 20
    assert ps["extrapolated_seconds_10000_starts"] > ps["seconds"] > 0
    assert report["goals"]["paper_scale_seconds_2_threads"]["goal"] == 600.0
    assert ps["precision"] == ("bf16" if bf16_isa() else "fp32") and report["machine"]["bf16_isa"] == bf16_isa()
    if bf16_isa():
        assert "bf16_over_fp32_fused_latent_batch64_threads2" not in report["goals"]   # batch 1, 1 thread only


def test_bench_maximize_through_the_paper_prior(capsys):
    assert main(["bench", "maximize", "--batches", "2", "--threads", "1", "--modes", "latent-paper", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["mode"] for r in report["results"]} == {"latent-paper"}
    assert report["config"]["prior_paper"]["arch"] == "paper"
    # the decoder adds the 2-D autoencoder's MACs (fc + 3 transposed convs) to the classifier's
    assert report["flops_per_step"]["latent-paper"] > 0
    assert main(["bench", "maximize", "--modes", "latent-3d"]) == 2
    assert "unknown mode or path latent-3d" in capsys.readouterr().err


def test_default_recipe_is_the_evaluations_speechmax_recipe(models, tmp_path, capsys):
    from speechmax.cli import build_parser
    from speechmax.evaluate import run as evaluate_run
    from speechmax.maximize import DEFAULT_RECIPE, RECIPES

    assert DEFAULT_RECIPE == "speechmax" and evaluate_run.RECIPES is RECIPES   # one definition
    parser = build_parser()
    for command in ("maximize", "evaluate"):
        assert parser.parse_args([command, "--out", "o"]).recipe == "speechmax"
        assert parser.parse_args([command, "--out", "o", "--preset", "paper"]).recipe == "paper"   # the old name
        assert parser.parse_args([command, "--out", "o", "--recipe", "paper"]).recipe == "paper"
    assert main(args(models, tmp_path / "d", "--target", "yes", "--starts", "1", "--json")) == 0
    settings = json.loads(open(json.loads(capsys.readouterr().out)["manifest"]).read())["settings"]
    assert settings["recipe"] == "speechmax" and settings["steps"] == RECIPES["speechmax"].steps == 60
    assert main(args(models, tmp_path / "p", "--target", "yes", "--starts", "1", "--recipe", "paper", "--json")) == 0
    settings = json.loads(open(json.loads(capsys.readouterr().out)["manifest"]).read())["settings"]
    assert settings["recipe"] == "paper" and settings["preset"] == "paper" and settings["steps"] == 20


def test_evaluation_run_keys_survive_the_move_of_the_recipes():
    # the committed partial runs of the full evaluation resume only while their keys stay the same
    import hashlib
    from types import SimpleNamespace

    from speechmax.evaluate.resume import run_key as _run_key

    m = SimpleNamespace(**{k: SimpleNamespace(card={"sha256": k}) for k in ("classifier", "separate", "prior",
                                                                             "prior_paper")})
    for recipe, spelled, prior in (("speechmax", {"steps": 60}, "prior"), ("paper", {"preset": "paper"}, "prior_paper")):
        spec = json.dumps([["classifier", "separate", prior], recipe, "latent", 10, 0, None, 10, spelled],
                          sort_keys=True)
        assert _run_key(m, recipe, "latent", 10, 0, None, 10) == hashlib.sha256(spec.encode()).hexdigest()[:16]
