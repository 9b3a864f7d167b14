"""Nothing a user made is lost or overwritten, and bad input never kills a batch (issue 22): output folders,
atomic writes, skipped-and-counted inputs, non-finite samples."""
import json
import os

import numpy as np
import pytest
import torch

from speechmax.cli import main
from speechmax.features import AudioError, load_audio, load_log_mel, save_audio
from speechmax.models.classifier import save_classifier
from speechmax.outputs import OutputFolderError, atomic_path, prepare_output

from test_maximize import tiny_classifier


@pytest.fixture(scope="module")
def clf_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    save_classifier(tiny_classifier(), d / "clf")
    return str(d / "clf")


def mel(*shape, seed=0):
    return (-4 + np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def bad_npys(folder):
    """The three .npy files of issue 22 that used to kill a folder batch."""
    np.save(folder / "strings.npy", np.array(["a", "b"]))
    np.save(folder / "no_items.npy", np.zeros((0, 80, 101), np.float32))
    np.save(folder / "no_frames.npy", np.zeros((80, 0), np.float32))


# --- loaders -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arr, match", [
    (np.array(["a", "b"]), "real numbers"),
    (np.zeros((0, 80, 101), np.float32), "empty"),
    (np.zeros((80, 0), np.float32), "empty"),
    (np.zeros((40, 10), np.float32), "shape"),
    (np.full((80, 5), 1e300), "NaN or infinite"),
])
def test_load_log_mel_rejects_with_a_clear_error(tmp_path, arr, match):
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(AudioError, match=match):
        load_log_mel(tmp_path / "x.npy")


def test_fifos_and_broken_links_are_errors_not_hangs(tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    os.symlink(tmp_path / "gone.npy", tmp_path / "link.npy")
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path / "pipe.wav")
    with pytest.raises(AudioError, match="broken symbolic link"):
        load_log_mel(tmp_path / "link.npy")


def test_atomic_path_leaves_nothing_under_the_final_name_on_failure(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.wav") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "a.wav").read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["a.wav"]
    save_audio(tmp_path / "b.wav", np.zeros(160))
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "b.wav"]


def test_prepare_output_policy(tmp_path):
    with pytest.raises(OutputFolderError, match="not a folder"):
        (tmp_path / "file").write_text("x")
        prepare_output(tmp_path / "file", "run.json", {}, what="run")
    d = tmp_path / "d"
    assert prepare_output(d, "run.json", {"a": 1}, what="run") is False
    (d / "run.json").write_text(json.dumps({"settings": {"a": 1}}))
    (d / "x.wav").write_text("made")
    assert prepare_output(d, "run.json", {"a": 1}, what="run") is True          # resumes
    with pytest.raises(OutputFolderError, match=r"other settings \(a: 1 -> 2\).*--overwrite"):
        prepare_output(d, "run.json", {"a": 2}, what="run")
    assert prepare_output(d, "run.json", {"a": 2}, what="run", overwrite=True) is False
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not a run"):
        prepare_output(tmp_path / "mine", "run.json", {}, what="run")


# --- classify / synthesize: one bad file never kills a folder ------------------------------------------------

def test_classify_skips_and_counts_bad_npys_and_short_clips(clf_path, tmp_path, capsys):
    np.save(tmp_path / "good.npy", mel(80, 101))
    bad_npys(tmp_path)
    save_audio(tmp_path / "short.wav", 0.1 * np.ones(1600))       # 0.1 s: no word fits
    os.mkfifo(tmp_path / "pipe.npy")
    os.symlink(tmp_path / "gone.wav", tmp_path / "broken.wav")
    assert main(["classify", str(tmp_path), "--model", clf_path, "--json"]) == 0
    captured = capsys.readouterr()
    preds = json.loads(captured.out)["predictions"]
    assert [p["path"] for p in preds] == [str(tmp_path / "good.npy")]
    assert "skipped 6 unusable file(s)" in captured.err
    for name in ("strings.npy", "no_items.npy", "no_frames.npy", "short.wav", "pipe.npy", "broken.wav"):
        assert name in captured.err


def test_classify_and_synthesize_exit_non_zero_when_nothing_is_usable(clf_path, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    bad_npys(src)
    assert main(["classify", str(src), "--model", clf_path]) == 2
    assert main(["synthesize", str(src), "--out", str(tmp_path / "o"), "--backend", "griffinlim"]) == 2
    err = capsys.readouterr().err
    assert "nothing to classify" in err and "nothing to synthesize" in err


def test_synthesize_skips_bad_npys_and_keeps_outputs_of_the_same_stem_apart(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    save_audio(src / "x.wav", 0.1 * np.sin(np.arange(1600) * 0.1))
    np.save(src / "x.npy", mel(80, 5))
    np.save(src / "y.npy", mel(2, 80, 5))
    save_audio(src / "y_0.wav", 0.1 * np.sin(np.arange(800) * 0.1))
    bad_npys(src)
    assert main(["synthesize", str(src), "--out", str(out), "--backend", "griffinlim", "--seed", "0"]) == 0
    captured = capsys.readouterr()
    assert "wrote 5 wav(s)" in captured.out and "skipped 3 unusable file(s)" in captured.err
    assert load_audio(out / "x.wav.wav").shape == (1600,) and load_audio(out / "x.npy.wav").shape == (640,)
    assert load_audio(out / "y.npy_0.wav").shape == (640,) and load_audio(out / "y_0.wav.wav").shape == (800,)
    assert (out / "y.npy_1.wav").is_file()


def test_synthesize_out_policy(tmp_path, capsys):
    np.save(tmp_path / "m.npy", mel(80, 5))
    (tmp_path / "file").write_text("mine")
    assert main(["synthesize", str(tmp_path / "m.npy"), "--out", str(tmp_path / "file"), "--backend",
                 "griffinlim"]) == 2
    assert "not a folder" in capsys.readouterr().err and (tmp_path / "file").read_text() == "mine"
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.wav").write_text("a user's file")
    cmd = ["synthesize", str(tmp_path / "m.npy"), "--out", str(out), "--backend", "griffinlim", "--seed", "0"]
    assert main(cmd) == 2 and (out / "m.wav").read_text() == "a user's file"
    assert main(cmd + ["--overwrite"]) == 0 and load_audio(out / "m.wav").shape == (640,)
    before = (out / "m.wav").stat().st_mtime_ns
    assert main(cmd) == 0                     # the same command again resumes: nothing left to do
    assert (out / "m.wav").stat().st_mtime_ns == before


# --- maximize: --out checked before compute, resumed, non-finite samples kept out ---------------------------

def margs(clf_path, out, *extra):
    starts = [] if "--init" in extra else ["--starts", "2"]
    return ["maximize", "--model", clf_path, "--separate", "none", "--vocoder", "griffinlim", "--target", "yes",
            *starts, "--steps", "2", "--out", str(out), "--json", *extra]


@pytest.fixture
def no_ascent(monkeypatch):
    import speechmax.maximize

    def fail(*a, **k):
        raise AssertionError("the ascent ran")
    monkeypatch.setattr(speechmax.maximize, "maximize", fail)


def test_maximize_checks_out_before_any_compute(clf_path, tmp_path, capsys, no_ascent):
    (tmp_path / "file").write_text("mine")
    assert main(margs(clf_path, tmp_path / "file")) == 2
    assert "not a folder" in capsys.readouterr().err and (tmp_path / "file").read_text() == "mine"
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("a user's manifest")
    assert main(margs(clf_path, out)) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "manifest.json").read_text() == "a user's manifest"


def test_maximize_resumes_its_own_run_and_overwrite_replaces_only_its_files(clf_path, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert main(margs(clf_path, out)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["resumed"] is False
    wav = out / json.loads(open(first["manifest"]).read())["samples"][0]["wav"]
    wav.unlink()                                                  # as if interrupted before this file
    npy = next(out.glob("*.npy"))
    mtime = npy.stat().st_mtime_ns
    assert main(margs(clf_path, out, "--threads", "1")) == 0     # threads change nothing: the same run
    assert json.loads(capsys.readouterr().out)["resumed"] is True
    assert wav.is_file() and npy.stat().st_mtime_ns == mtime
    (out / "notes.txt").write_text("mine")
    assert main(margs(clf_path, out, "--target", "no")) == 2      # another run: refused
    assert "other settings (target: 'yes' -> 'no')" in capsys.readouterr().err
    assert main(margs(clf_path, out, "--target", "no", "--overwrite")) == 0
    manifest = json.loads(open(json.loads(capsys.readouterr().out)["manifest"]).read())
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(out.glob("*_yes_*"))                        # the old run's samples are gone, not mixed in
    assert all(s["target"] == "no" for s in manifest["samples"])


def test_maximize_huge_lr_completes_with_non_finite_samples_marked(clf_path, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert main(margs(clf_path, out, "--lr", "1e30")) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads(open(summary["manifest"]).read())
    assert summary["samples"] == 2 and len(manifest["samples"]) == 2
    assert summary["wav_skipped"] == manifest["wav_skipped"] and manifest["wav_skipped"]
    for s in manifest["samples"]:
        assert (out / s["npy"]).is_file() and (out / s["png"]).is_file()
        if s["index"] in manifest["wav_skipped"]:
            assert s["wav"] is None and s["wav_skipped"] == "non-finite audio"
        else:
            assert (out / s["wav"]).is_file()


def test_maximize_init_folder_skips_bad_clips(clf_path, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    np.save(clips / "good.npy", mel(80, 101))
    bad_npys(clips)
    assert main(margs(clf_path, tmp_path / "o", "--init", str(clips))) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["samples"] == 1 and "skipped 3 unusable file(s)" in captured.err
    (clips / "good.npy").unlink()
    assert main(margs(clf_path, tmp_path / "o2", "--init", str(clips))) == 2
    assert "no usable clip" in capsys.readouterr().err


# --- the fused CPU ascent flags non-finite starts as autograd does --------------------------------------------

@pytest.mark.skipif(not __import__("speechmax.ops", fromlist=["x"]).available_backends()["cpu"],
                    reason="speechmax._C is not built")
def test_fused_cpu_stops_a_start_that_overflows_like_autograd():
    from speechmax.maximize import maximize
    from speechmax.models.registry import load_model

    torch.set_num_threads(1)
    clf = load_model("classifier", kind="classifier")    # the shipped net: its fused ReLU used to eat the NaN
    init = -4 + 0.1 * torch.randn(3, clf.cfg.n_mels, clf.cfg.n_frames, generator=torch.Generator().manual_seed(0))
    init[1] = 3e38
    for path in ("autograd", "cpu"):
        res = maximize(clf, "yes", init=init, steps=2, backend=path, threads=1, seed=0)
        assert res.nan_stopped == [1], path
        assert torch.isnan(res.trajectory[1]).all() and torch.isfinite(res.trajectory[[0, 2]]).all(), path


# --- cards and weights ----------------------------------------------------------------------------------------

def test_broken_cards_and_weights_are_weights_errors(clf_path, tmp_path):
    import shutil

    from speechmax.weights import WeightsError, load_weights, sha256_file

    for name, card in [("list", "[1, 2]"), ("binary", b"\xff\xfe\x00")]:
        shutil.copy(clf_path + ".safetensors", tmp_path / f"{name}.safetensors")
        p = tmp_path / f"{name}.json"
        p.write_bytes(card) if isinstance(card, bytes) else p.write_text(card)
        with pytest.raises(WeightsError, match=f"{name}.json"):
            load_weights(tmp_path / name)
    # a card written for a truncated file: its sha256 matches, the file still cannot be read
    data = open(clf_path + ".safetensors", "rb").read()
    (tmp_path / "cut.safetensors").write_bytes(data[:len(data) // 2])
    card = json.loads(open(clf_path + ".json").read())
    card["sha256"] = sha256_file(tmp_path / "cut.safetensors")
    (tmp_path / "cut.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(tmp_path / "cut")


# --- the listening app ----------------------------------------------------------------------------------------

@pytest.fixture
def listen_set(tmp_path):
    from listen_support import make_listening_set

    return make_listening_set(tmp_path / "set", per_condition=1, references=1, anchors=1)


def test_listen_db_that_is_not_ours_is_a_clear_error_and_left_alone(listen_set, tmp_path, capsys):
    import sqlite3

    (tmp_path / "notes.txt").write_text("not a database")
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    before = foreign.read_bytes()
    for db, message in [(tmp_path, "is a folder"), (tmp_path / "notes.txt", "not a usable SQLite database"),
                        (foreign, "another program")]:
        assert main(["listen", "--set", str(listen_set), "--db", str(db), "--admin-token", "x" * 12]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "not a database" and foreign.read_bytes() == before


def test_listen_binds_before_printing_its_urls(listen_set, tmp_path, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["listen", "--set", str(listen_set), "--db", str(tmp_path / "r.db"), "--port", str(port),
                     "--admin-token", "x" * 12]) == 2
    captured = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err
    assert "admin" not in captured.out and "x" * 12 not in captured.out


def test_listen_app_limits_bodies_rejects_nan_and_never_echoes(listen_set, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from speechmax.listen.app import MAX_BODY, SECURITY_HEADERS, create_app
    from speechmax.listen.db import ListenDB

    app = create_app(listen_set, tmp_path / "r.db", "admin-token-123")
    with TestClient(app, raise_server_exceptions=False) as client:
        def check(r, status):
            assert r.status_code == status, r.text
            assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items()), r.headers
            return r

        big = "A" * (MAX_BODY + 1)
        r = check(client.post("/api/raters", content=json.dumps({"label": big}),
                              headers={"content-type": "application/json"}), 413)
        assert "AAAA" not in r.text

        def chunks():                          # no Content-Length: counted as it arrives
            yield b'{"label": "'
            for _ in range(MAX_BODY // 1024 + 1):
                yield b"A" * 1024
            yield b'"}'
        assert "AAAA" not in check(client.post("/api/raters", content=chunks(),
                                               headers={"content-type": "application/json"}), 413).text
        secret = "s3cr3t! " + "B" * 100      # too long and a forbidden character
        r = check(client.post("/api/raters", json={"label": secret}), 422)
        assert secret not in r.text
        for literal in ("NaN", "Infinity", "-Infinity"):
            check(client.post("/api/raters", content=f'{{"label": {literal}}}',
                              headers={"content-type": "application/json"}), 400)
        check(client.post("/api/raters", json={}), 200)

        def boom(self):
            raise RuntimeError("disk on fire")
        monkeypatch.setattr(ListenDB, "answers", boom)
        r = check(client.get("/api/summary.json", headers={"Authorization": "Bearer admin-token-123"}), 500)
        assert "disk on fire" not in r.text


# --- silent or misleading -------------------------------------------------------------------------------------

def test_a_truncated_wav_is_read_with_a_warning(tmp_path):
    save_audio(tmp_path / "a.wav", 0.1 * np.ones(16000))
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    with pytest.warns(UserWarning, match="truncated WAV"):
        assert len(load_audio(tmp_path / "cut.wav")) < 16000
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(tmp_path / "a.wav")) == 16000


def test_log_mel_of_a_non_finite_waveform_is_an_error():
    from speechmax.features import log_mel

    with pytest.raises(ValueError, match="NaN or infinite"):
        log_mel(torch.tensor([0.0, float("nan")] * 800))


def test_griffinlim_runs_long_inputs_in_bounded_blocks(monkeypatch):
    from speechmax.features import FeatureConfig, log_mel
    from speechmax.vocoder import griffinlim as gl

    cfg = FeatureConfig()
    t = np.arange(150 * cfg.hop_length) / cfg.sample_rate
    lm = log_mel(torch.from_numpy(0.3 * np.sin(2 * np.pi * 440 * t)), cfg).numpy()[:, :150]
    whole = gl.griffinlim_synthesize(lm, cfg, n_iter=8)
    seen = []
    block = gl._griffinlim_block
    monkeypatch.setattr(gl, "_griffinlim_block", lambda m, *a: seen.append(m.shape[-1]) or block(m, *a))
    monkeypatch.setattr(gl, "BLOCK_FRAMES", 40)
    monkeypatch.setattr(gl, "OVERLAP_FRAMES", 8)
    blocked = gl.griffinlim_synthesize(lm, cfg, n_iter=8)
    assert max(seen) == 40 and len(seen) == 5
    assert blocked.shape == whole.shape and np.isfinite(blocked).all()
    got = log_mel(torch.from_numpy(blocked), cfg).numpy()
    ref = log_mel(torch.from_numpy(whole), cfg).numpy()
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9


# --- corpus loading (speechmax.data): bad clips skipped and counted, an error only when none is usable ----------

def training_corpus(root, good=2, bad=True):
    """A v0.02 tree with ``good`` readable clips of the training split and, with ``bad``, a corrupt clip, a
    broken link and a FIFO (all of the training split too)."""
    from speechmax.data import which_set

    names = [f"s{i:04d}_nohash_0.wav" for i in range(200) if which_set(f"s{i:04d}_nohash_0.wav") == "training"]
    (root / "yes").mkdir(parents=True)
    for name in names[:good]:
        save_audio(root / "yes" / name, 0.1 * np.sin(np.arange(16000, dtype=np.float32) / 9), 16000)
    if bad:
        (root / "yes" / names[good]).write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
        os.symlink(root / "gone.wav", root / "yes" / names[good + 1])
        os.mkfifo(root / "yes" / names[good + 2])
    return names


def test_corpus_skips_broken_links_and_fifos_with_one_warning(tmp_path):
    from speechmax.data import SpeechCommands

    names = training_corpus(tmp_path / "c")
    with pytest.warns(UserWarning) as caught:
        ds = SpeechCommands(tmp_path / "c", "training")
    skipped = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(ds) == 2 and len(ds.skipped) == 3
    assert len(skipped) == 1 and all(n in skipped[0] for n in names[2:5])


def test_corpus_with_no_usable_clip_is_a_clear_error(tmp_path, capsys):
    from speechmax.data import CorpusError, SpeechCommands

    training_corpus(tmp_path / "c", good=0)
    with pytest.warns(UserWarning), pytest.raises(CorpusError, match="none of the 3 clip"):
        SpeechCommands(tmp_path / "c", "training")
    capsys.readouterr()
    with pytest.warns(UserWarning):
        assert main(["train", "classifier", "--data", str(tmp_path / "c"), "--out", str(tmp_path / "run"),
                     "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "none of the 3 clip(s) of the training split can be read" in err and "Traceback" not in err


# --- evaluate, demo and train keep what is in --out, checked before any model or data is loaded ---------------

@pytest.fixture
def no_models(monkeypatch):
    """evaluate/demo stop where they would load models: reaching that means --out was accepted."""
    import speechmax.evaluate
    import speechmax.evaluate.run

    def stop(*a, **k):
        raise RuntimeError("models would load now")
    monkeypatch.setattr(speechmax.evaluate.run, "load_models", stop)
    monkeypatch.setattr(speechmax.evaluate, "load_models", stop)


def test_evaluate_and_demo_out_policy(tmp_path, capsys, no_models):
    for command in ("evaluate", "demo"):
        foreign = tmp_path / f"foreign-{command}"
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
        argv = [command, "--out", str(foreign)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a speechmax" in err and "--overwrite" in err and "models would load" not in err, argv
        assert main(argv + ["--overwrite"]) == 2 and "models would load" in capsys.readouterr().err, argv
        assert (foreign / "notes.txt").read_text() == "mine"
        # the other command's run is not this one's
        other = "demo" if command == "evaluate" else "evaluate"
        assert main([other, "--out", str(foreign)]) == 2
        assert f"command: {command!r} -> {other!r}" in capsys.readouterr().err
    # an evaluation from before run.json (checkpoints/evaluate) resumes; then its settings are the marker's
    old = tmp_path / "old"
    (old / "partial").mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    assert main(["evaluate", "--out", str(old), "--per-class", "3"]) == 2
    assert "models would load" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(old), "--per-class", "3", "--threads", "1"]) == 2
    assert "models would load" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(old), "--per-class", "4"]) == 2
    err = capsys.readouterr().err
    assert "other settings (per_class: 3 -> 4)" in err and "models would load" not in err
    # a demo resumes its own folder
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.json").write_text("{}")
    assert main(["demo", "--out", str(demo)]) == 2 and "models would load" in capsys.readouterr().err


def split_corpus(root):
    """A tiny v0.02 tree with clips of 'yes' and 'no' in every split."""
    from speechmax.data import which_set

    want = {"training": 3, "validation": 1, "testing": 1}
    for i in range(400):
        name = f"s{i:04d}_nohash_0.wav"
        split = which_set(name)
        if want[split]:
            want[split] -= 1
            for k, word in enumerate(("yes", "no")):
                t = np.arange(16000, dtype=np.float32) / 16000
                save_audio(root / word / name, 0.2 * np.sin(2 * np.pi * (300 + 200 * k + 10 * i) * t), 16000)
    return root


def test_train_out_policy_resumes_its_own_run(tmp_path, capsys):
    import warnings

    data = split_corpus(tmp_path / "c")
    out = tmp_path / "run"
    train = ["train", "classifier", "--data", str(data), "--out", str(out), "--batch", "4", "--threads", "1"]
    epochs = lambda: [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(train + ["--epochs", "1"]) == 0
        assert main(train + ["--epochs", "2"]) == 0          # the same run, extended: resumes from OUT/last
        assert epochs() == [1, 2]
        capsys.readouterr()
        assert main(train + ["--epochs", "3", "--seed", "5"]) == 2
        assert "other settings (seed: 0 -> 5)" in capsys.readouterr().err and epochs() == [1, 2]
        (out / "run.json").unlink()                           # a run from before run.json: resumed too
        assert main(train + ["--epochs", "3"]) == 0 and epochs() == [1, 2, 3]
        # another command's folder, or someone's files: refused before the data is read
        assert main(["train", "prior", "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
        assert "command: 'train classifier' -> 'train prior'" in capsys.readouterr().err
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("mine")
        mine = ["train", "classifier", "--data", str(data), "--out", str(tmp_path / "mine"), "--epochs", "1",
                "--batch", "4", "--threads", "1"]
        assert main(mine) == 2 and "not a speechmax train classifier run" in capsys.readouterr().err
        assert main(mine + ["--overwrite"]) == 0 and (tmp_path / "mine" / "notes.txt").read_text() == "mine"
