"""speechmax.Vocoder, `speechmax synthesize` and `speechmax bench vocoder`: the drop-in API and its errors."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import speechmax
from speechmax.cli import main
from speechmax.features import load_audio, save_audio
from speechmax.models.wavenet import WaveNet, WaveNetConfig, save_wavenet
from speechmax.ops import BackendUnavailable
from speechmax.ops.wavenet import wavenet_backends
from speechmax.weights import WeightsError

TINY = WaveNetConfig(residual_channels=8, gate_channels=16, skip_channels=16, out_channels=32, n_layers=3,
                     dilation_cycle=2, cond_channels=8)
needs_cpu = pytest.mark.skipif(not wavenet_backends()["cpu"], reason="speechmax._C is not built")


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # the reference's small ops stall with two threads on a busy machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def voc_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("voc") / "tiny"
    save_wavenet(WaveNet(TINY), path, metrics={})
    return path


@pytest.fixture
def voc(voc_path):
    return speechmax.Vocoder.from_pretrained(voc_path)


def mel(*shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) - 5).astype(np.float32)


def test_import_is_lazy():
    code = "import sys, speechmax; assert 'speechmax.vocoder.vocoder' not in sys.modules; speechmax.Vocoder"
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_cpu
def test_synthesize_shapes_types_and_seeds(voc):
    wave = voc(mel(80, 6), seed=3)
    assert wave.shape == (5 * 160,) and wave.dtype == np.float32 and np.abs(wave).max() <= 1.0
    batch = voc.synthesize(torch.from_numpy(mel(3, 80, 6)), backend="cpu", seed=3)
    assert batch.shape == (3, 800) and batch.dtype == np.float32
    assert np.array_equal(voc.synthesize(mel(80, 6), backend="cpu", seed=3), voc.synthesize(mel(80, 6), backend="cpu", seed=3))
    # the same seed gives the same uniforms on every backend, so the fp32 samplers give the same audio
    assert np.array_equal(voc.synthesize(mel(2, 80, 4), backend="cpu", seed=5),
                          voc.synthesize(mel(2, 80, 4), backend="reference", seed=5))
    assert voc.synthesize(mel(80, 6), backend="cpu-bf16", seed=3).shape == (800,)
    cold = voc.synthesize(mel(80, 6), backend="cpu", temperature=0.0)
    assert np.array_equal(cold, voc.synthesize(mel(80, 6), backend="cpu", temperature=0.0, seed=9))   # argmax


def test_griffinlim_control_needs_no_wavenet():
    voc = speechmax.Vocoder(None)
    wave = voc.synthesize(mel(80, 11), backend="griffinlim", seed=0)
    assert wave.shape == (1600,) and wave.dtype == np.float32
    with pytest.raises(ValueError, match="no WaveNet"):
        voc.synthesize(mel(80, 11), backend="cpu")


@needs_cpu

@pytest.mark.parametrize("wavenet_acc, expected", [(0.30, "griffinlim"), (0.99, "auto")])
def test_auto_prefers_griffinlim_when_the_card_measures_the_wavenet_below_it(tmp_path, monkeypatch, wavenet_acc,
                                                                           expected):
    """Tools that write audio for people (maximize, demo, listening set) read the card's measured quality:
    `auto` keeps the WaveNet loaded (for the vocoder control) but vocodes through Griffin-Lim when the WaveNet
    measured less intelligible; a vocoder named explicitly is used as it is."""
    torch.manual_seed(0)
    path = tmp_path / "measured"
    save_wavenet(WaveNet(TINY), path, metrics={"clips": 350, "separate_accuracy": {
        "original": 0.98, "wavenet": wavenet_acc, "griffinlim": 0.97}})
    real = speechmax.Vocoder.from_pretrained.__func__
    monkeypatch.setattr(speechmax.Vocoder, "from_pretrained",
                        classmethod(lambda cls, name="default", device="cpu": real(cls, path if name == "default"
                                                                                   else name, device)))
    voc = speechmax.Vocoder.for_listeners("auto")
    why = voc.preference_note
    assert voc.model is not None and voc.preferred_backend == expected
    if expected == "griffinlim":
        assert "below Griffin-Lim" in why and "30.0% vs 97.0%" in why
    else:
        assert why is None
    voc = speechmax.Vocoder.for_listeners(str(path))     # named: used as it is
    assert voc.preferred_backend == "auto" and voc.preference_note is None
    assert speechmax.Vocoder.for_listeners("griffinlim").preferred_backend == "griffinlim"

def test_resynthesize(voc, tmp_path):
    path = tmp_path / "tone.wav"
    save_audio(path, 0.3 * np.sin(np.arange(4000) * 0.05))
    wave = voc.resynthesize(path, seed=0)
    assert wave.shape == ((4000 // 160) * 160,) and np.isfinite(wave).all()


def test_from_pretrained_errors(voc_path, tmp_path):
    from speechmax.assets import list_assets

    if "vocoder" not in list_assets():
        with pytest.raises(FileNotFoundError, match=r"default vocoder is not shipped.*vocoder\.safetensors"):
            speechmax.Vocoder.from_pretrained("default")
    with pytest.raises(FileNotFoundError, match="no vocoder at"):
        speechmax.Vocoder.from_pretrained(tmp_path / "nothing")
    # a card that does not match its weights
    bad = tmp_path / "bad"
    for suffix in (".safetensors", ".json"):
        (bad.parent / f"bad{suffix}").write_bytes(voc_path.with_suffix(suffix).read_bytes())
    card = json.loads(bad.with_suffix(".json").read_text())
    card["config"]["n_layers"] = 5
    bad.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="does not match its weights"):
        speechmax.Vocoder.from_pretrained(bad)


@needs_cpu
def test_bad_mels_and_backends(voc):
    with pytest.raises(ValueError, match=r"expected a log-mel of shape \(80, frames\).*got shape \(64, 10\)"):
        voc(mel(64, 10))
    with pytest.raises(ValueError, match="got shape"):
        voc(mel(10))
    with pytest.raises(ValueError, match="NaN or infinite"):
        voc(np.full((80, 10), np.inf, dtype=np.float32))
    for empty in (np.zeros((80, 0)), np.zeros((80, 1)), np.zeros((0, 80, 5))):
        with pytest.raises(ValueError, match="empty"):
            voc(empty)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        voc([[0.0] * 5] * 80)
    with pytest.raises(BackendUnavailable, match="unknown vocoder backend 'fast'"):
        voc(mel(80, 4), backend="fast")
    if not wavenet_backends()["cuda"]:
        with pytest.raises(BackendUnavailable, match="'cuda' is not available on this machine; available: reference, cpu"):
            voc(mel(80, 4), backend="cuda")


@needs_cpu
def test_long_audio_memory(voc):
    """60 s of conditioning at batch 8: memory grows by the outputs and uniforms (~150 MB), no per-sample
    conditioning tensor. (The tiny model keeps the test short; the kernel's memory does not grow with T.)"""
    status = Path("/proc/self/status")
    if not status.exists() or not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc for peak RSS")

    def rss_kb(key):
        return int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith(key)))

    m = mel(8, 80, 6001)
    before = rss_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")   # reset the peak (VmHWM) to the current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    wave = voc.synthesize(m, backend="cpu", seed=0, threads=2)
    peak_mb = (rss_kb("VmHWM") - before) / 1024
    assert wave.shape == (8, 960000)
    assert peak_mb < 1024, f"peak memory grew by {peak_mb:.0f} MB"


@needs_cpu
def test_cli_synthesize(voc_path, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    np.save(src / "one.npy", mel(80, 5))
    np.save(src / "sub" / "two.npy", mel(2, 80, 5))
    np.save(src / "bad.npy", mel(40, 5))
    save_audio(src / "three.wav", 0.1 * np.sin(np.arange(1600) * 0.1))
    out = tmp_path / "out"
    assert main(["synthesize", str(src), "--out", str(out), "--model", str(voc_path), "--seed", "1",
                 "--backend", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "wrote 4 wav(s)" in captured.out and "bad.npy" in captured.err
    for name, n in [("one", 640), ("sub/two_0", 640), ("sub/two_1", 640), ("three", 1600)]:
        assert load_audio(out / f"{name}.wav").shape == (n,)
    assert main(["synthesize", str(src / "one.npy"), "--out", str(out / "gl"), "--backend", "griffinlim"]) == 0
    assert main(["synthesize", str(src / "bad.npy"), "--out", str(out), "--model", str(voc_path)]) == 2
    if not wavenet_backends()["cuda"]:
        assert main(["synthesize", str(src / "one.npy"), "--out", str(out), "--model", str(voc_path),
                     "--backend", "cuda"]) == 2
        assert "available: reference, cpu, cpu-bf16" in capsys.readouterr().err


@needs_cpu
def test_bench_contract(voc_path, capsys):
    assert main(["bench", "vocoder", "--quick", "--json", "--model", str(voc_path), "--batches", "1,3",
                 "--threads", "1", "--backends", "reference,cpu,cpu-bf16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == TINY.to_dict() and report["flops_per_sample"] == TINY.flops_per_sample()
    assert set(report["sgemm_gflops"]) == {"1"} and report["sgemm_gflops"]["1"] > 0
    assert {(r["backend"], r["batch"], r["threads"]) for r in report["results"]} == {
        (b, n, 1) for b in ("reference", "cpu", "cpu-bf16") for n in (1, 3)}
    assert all(r["samples_per_s"] > 0 for r in report["results"])
    assert "cpu_over_reference_batch1_thread1" in report["goals"]
    machine = report["machine"]          # issue 24: the project's own FMA peak, at the run's largest thread count
    assert machine["peak_gflops"]["fp32"] == machine["peak_gflops_by_threads"]["fp32"]["1"] > 0
    assert (machine["peak_gflops"]["bf16"] is None) == (not machine["cpu_features"]["avx512bf16"])
    assert machine["torch_gflops"]["sgemm"] == report["sgemm_gflops"] and machine["cpu"]


def test_synthesize_converts_float_mels_and_refuses_other_dtypes():
    """float64 / float16 log-mels are converted; integer and boolean arrays are refused with a clear error."""
    from speechmax.vocoder import Vocoder

    voc = Vocoder(None)
    mel = np.full((80, 6), -6.0)
    for dtype in (np.float64, np.float16, np.float32):
        assert voc.synthesize(mel.astype(dtype), backend="griffinlim", seed=0).shape == (800,)
    for bad in (mel.astype(np.int64), mel > 0, torch.zeros(80, 6, dtype=torch.int32)):
        with pytest.raises(TypeError, match="floating-point"):
            voc.synthesize(bad, backend="griffinlim")


@pytest.mark.parametrize("seed, err", [(2 ** 64, ValueError), (-2 ** 63 - 1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_synthesize_refuses_seeds_outside_64_bits(seed, err):
    from speechmax.vocoder import Vocoder

    with pytest.raises(err, match="seed"):
        Vocoder(None).synthesize(np.full((80, 6), -6.0), backend="griffinlim", seed=seed)


@needs_cpu
def test_save_pretrained_round_trip_keeps_card_and_synthesis(tmp_path):
    """save_pretrained writes model.safetensors + model.json that from_pretrained reads back: the card's metrics
    and training record carried over, the same audio for a seed; an occupied target needs overwrite=True."""
    torch.manual_seed(1)
    cfg = dataclasses.replace(TINY, preemphasis=0.85)
    metrics = {"clips": 3, "separate_accuracy": {"wavenet": 0.5, "griffinlim": 0.4, "original": 0.9}}
    save_wavenet(WaveNet(cfg), tmp_path / "src", metrics=metrics, training={"steps": 7})
    voc = speechmax.Vocoder.from_pretrained(tmp_path / "src")
    out = tmp_path / "saved"
    assert voc.save_pretrained(out) == out / "model.json"
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    back = speechmax.Vocoder.from_pretrained(out)
    assert back.model.cfg == cfg and back.model.card["metrics"] == metrics and back.model.card["training"] == {"steps": 7}
    m = mel(80, 7)
    assert np.array_equal(back.synthesize(m, backend="cpu", seed=4), voc.synthesize(m, backend="cpu", seed=4))

    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        back.save_pretrained(out)
    (out / "notes.txt").write_text("mine")
    torch.manual_seed(2)
    speechmax.Vocoder(WaveNet(TINY)).save_pretrained(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"                 # only the model's two files are replaced
    assert speechmax.Vocoder.from_pretrained(out).model.cfg == TINY
    (tmp_path / "empty").mkdir()
    speechmax.Vocoder(WaveNet(TINY)).save_pretrained(tmp_path / "empty")
    assert speechmax.Vocoder.from_pretrained(tmp_path / "empty" / "model.json").model.cfg == TINY
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        voc.save_pretrained(tmp_path / "a_file", overwrite=True)
    with pytest.raises(ValueError, match="no WaveNet"):
        speechmax.Vocoder(None).save_pretrained(tmp_path / "gl")
    with pytest.raises(FileNotFoundError, match="without model.json"):
        speechmax.Vocoder.from_pretrained(tmp_path / "empty" / "..")


def test_to_moves_the_model_and_returns_self():
    voc = speechmax.Vocoder(WaveNet(TINY))
    assert voc.to("cpu") is voc and next(voc.model.parameters()).device.type == "cpu"
    assert speechmax.Vocoder(None).to(torch.device("cpu")).model is None


@needs_cpu
@pytest.mark.parametrize("preemphasis", [0.0, 0.85])
@pytest.mark.parametrize("sizes", [[13], [1] * 13, [2, 0, 5, 6], [3, 3, 3, 4], [12, 1], [1, 12]])
def test_stream_equals_one_shot_synthesis(preemphasis, sizes):
    """The pieces a stream yields, concatenated, are one-shot synthesis of the whole mel with the same seed, for
    any chunking down to one frame a piece (ring state, uniforms and de-emphasis state carried across)."""
    torch.manual_seed(0)
    voc = speechmax.Vocoder(WaveNet(dataclasses.replace(TINY, preemphasis=preemphasis)))
    m = mel(80, sum(sizes), seed=2)
    pieces = list(voc.stream(np.split(m, np.cumsum(sizes)[:-1], axis=1), backend="cpu", seed=7))
    assert len(pieces) == len(sizes) + 1 and all(p.dtype == np.float32 for p in pieces)
    assert np.array_equal(np.concatenate(pieces), voc.synthesize(m, backend="cpu", seed=7))
    # a piece's audio waits only for the conditioning's look-ahead: 2 frames and half a hop
    hop = TINY.hop_length
    assert sum(len(p) for p in pieces[:-1]) == max(0, (sum(sizes) - 2) * hop - hop // 2)


@needs_cpu
def test_stream_refuses_what_it_cannot_stream():
    voc = speechmax.Vocoder(WaveNet(TINY))
    for backend, match in (("griffinlim", "incremental samplers"), ("reference", "incremental samplers")):
        with pytest.raises(ValueError, match=match):
            voc.stream([mel(80, 4)], backend=backend)              # refused at the call, before any piece
    with pytest.raises(BackendUnavailable, match="unknown"):
        voc.stream([mel(80, 4)], backend="fast")
    with pytest.raises(ValueError, match="no WaveNet"):
        speechmax.Vocoder(None).stream([mel(80, 4)])
    with pytest.raises(ValueError, match="one utterance"):
        list(voc.stream([mel(2, 80, 4)], backend="cpu"))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        list(voc.stream([mel(80, 1), mel(80, 0)], backend="cpu"))
    with pytest.raises(ValueError, match="NaN"):
        list(voc.stream([mel(80, 3), np.full((80, 2), np.nan, np.float32)], backend="cpu"))
