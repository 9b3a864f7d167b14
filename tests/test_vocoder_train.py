"""Vocoder training on a few espeak clips with a tiny WaveNet: loss falls, resume continues, export loads."""
import dataclasses
import shutil

import numpy as np
import pytest
import torch

from speechmax.data.words import WORDS
from speechmax.features import FeatureConfig, log_mel
from speechmax.models.wavenet import WaveNet, WaveNetConfig, load_wavenet
from speechmax.training import JsonLog
from speechmax.vocoder.griffinlim import griffinlim_synthesize
from speechmax.ops.wavenet import sample_wavenet_ref
from speechmax.vocoder.train import VocoderTrainConfig, export_vocoder, train_vocoder

TINY = WaveNetConfig(residual_channels=8, gate_channels=16, skip_channels=16, out_channels=32, n_layers=4,
                     dilation_cycle=2, cond_channels=8)


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from speechmax.demo import speak_espeak

    root = tmp_path_factory.mktemp("voc")
    # speaker folders whose names hash into training and validation
    for spk in ("a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8", "i9", "j10", "k11", "l12"):
        (root / spk).mkdir()
        speak_espeak("seven yes no", root / spk / "0.wav")
    return root


def test_training_lowers_loss_resumes_and_exports(speech_dir, tmp_path):
    tc = VocoderTrainConfig(batch=2, window=800, steps=30, lr=3e-3, checkpoint_every=10, validate_every=10,
                            silent_keep=1.0)
    r1 = train_vocoder([speech_dir], tmp_path / "run", tc, model_cfg=TINY, progress=False, max_steps_this_run=20)
    assert r1["step"] == 20
    r2 = train_vocoder([speech_dir], tmp_path / "run", tc, model_cfg=TINY, progress=False)
    assert r2["step"] == 30
    val = [e["val_nll"] for e in JsonLog(tmp_path / "run" / "log.jsonl").read() if e["event"] == "validate"]
    assert len(val) == 3 and val[-1] < np.log(256)      # better than uniform over 256 classes
    export_vocoder(tmp_path / "run", tmp_path / "voc")
    model = load_wavenet(tmp_path / "voc")
    assert model.cfg == TINY and model.card["training"]["steps"] == 30
    out = sample_wavenet_ref(model, torch.zeros(80, 3) - 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 320) and out.min() >= 0 and out.max() <= 255


def test_a_run_resumed_with_other_settings_is_refused(speech_dir, tmp_path):
    tc = VocoderTrainConfig(batch=2, window=800, steps=2, checkpoint_every=1, validate_every=1, quality_every=0)
    train_vocoder([speech_dir], tmp_path / "run", tc, model_cfg=TINY, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.001 -> 0.002; seed: 0 -> 1\)"):
        train_vocoder([speech_dir], tmp_path / "run", dataclasses.replace(tc, steps=4, lr=2e-3, seed=1),
                      model_cfg=TINY, progress=False)
    with pytest.raises(ValueError, match="data: "):
        train_vocoder([speech_dir, speech_dir], tmp_path / "run", dataclasses.replace(tc, steps=4), model_cfg=TINY,
                      progress=False)
    # steps to train to, how often to measure, and the precision may change
    r = train_vocoder([str(speech_dir) + "/"], tmp_path / "run", dataclasses.replace(tc, steps=3, bf16=True,
                                                                                      validate_every=5),
                      model_cfg=TINY, progress=False)
    assert r["step"] == 3


def test_window_must_be_a_multiple_of_hop(speech_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of hop"):
        train_vocoder([speech_dir], tmp_path / "r", VocoderTrainConfig(window=1000, steps=1), model_cfg=TINY, progress=False)


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        train_vocoder([tmp_path / "nope"], tmp_path / "r", model_cfg=TINY, progress=False)


def test_same_uniforms_same_samples():
    torch.manual_seed(0)
    m = WaveNet(TINY).eval()
    mel = torch.randn(2, 80, 4)
    u = torch.rand(2, 480)
    a, b = sample_wavenet_ref(m, mel, u), sample_wavenet_ref(m, mel, u)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_wavenet_ref(m, mel, torch.rand(2, 480)))


def test_griffinlim_length_and_bad_input(espeak_wav):
    lm = log_mel(torch.from_numpy(espeak_wav[:8000]))
    wave = griffinlim_synthesize(lm, n_iter=4)
    assert wave.dtype == np.float32 and wave.shape == ((lm.shape[1] - 1) * 160,)
    assert griffinlim_synthesize(torch.stack([lm, lm]), n_iter=2).shape == (2, (lm.shape[1] - 1) * 160)
    with pytest.raises(ValueError, match="80"):
        griffinlim_synthesize(np.zeros((40, 10)))
    with pytest.raises(ValueError, match="NaN"):
        griffinlim_synthesize(np.full((80, 10), np.nan))


def test_griffinlim_batched_equals_librosa_reference(espeak_wav):
    """The batched torch Griffin-Lim against its librosa twin: the same iterations from the same magnitudes and
    phases agree to 1e-4; the NNLS mel inversion fits the mel at least as well as librosa's; end to end the two
    land at the same distance from the original log-mel."""
    import librosa

    from speechmax.features import FeatureConfig, _mel_basis
    from speechmax.vocoder.griffinlim import griffinlim, griffinlim_synthesize_ref, mel_to_magnitude

    cfg = FeatureConfig()
    lm = log_mel(torch.from_numpy(espeak_wav[:8000]), cfg)
    mel = np.exp(lm.double().numpy())
    S_ref = librosa.feature.inverse.mel_to_stft(mel, sr=16000, n_fft=cfg.n_fft, power=1.0, fmin=cfg.fmin,
                                                fmax=cfg.fmax, norm="slaney")
    S = mel_to_magnitude(torch.from_numpy(mel)[None], cfg)[0].numpy()
    A = _mel_basis(cfg)
    resid = lambda s: np.linalg.norm(A @ s - mel) / np.linalg.norm(mel)  # noqa: E731
    assert (S >= 0).all() and resid(S) <= resid(S_ref) + 1e-6
    length = (lm.shape[1] - 1) * cfg.hop_length
    for seed in (0, None):
        ref = librosa.griffinlim(S_ref, n_iter=8, hop_length=160, win_length=640, n_fft=1024, length=length,
                                 pad_mode=cfg.pad_mode,
                                 init="random" if seed is not None else None,
                                 random_state=np.random.default_rng(seed) if seed is not None else None, momentum=0.99)
        fast = griffinlim(torch.from_numpy(np.stack([S_ref, S_ref])), cfg, length, n_iter=8, seed=seed).numpy()
        assert np.abs(fast - np.clip(ref, -1, 1)).max() < 1e-4
    err = lambda w: float((log_mel(torch.from_numpy(w), cfg) - lm).abs().mean())  # noqa: E731
    fast_err, ref_err = err(griffinlim_synthesize(lm, cfg, n_iter=16)), err(griffinlim_synthesize_ref(lm, cfg, n_iter=16))
    assert abs(fast_err - ref_err) < 0.1 * ref_err


def test_conditioning_reads_the_normalised_mel_and_old_cards_keep_raw_input():
    from speechmax.models.wavenet import WaveNetConfig

    cfg = WaveNetConfig(residual_channels=8, gate_channels=16, skip_channels=16, out_channels=16, n_layers=2,
                        cond_channels=8, mel_mean=-5.0, mel_std=2.0)
    torch.manual_seed(0)
    m = WaveNet(cfg).eval()
    mel = torch.randn(2, 80, 5) * 3 - 6
    plain = torch.nn.Sequential(*m.cond_net)   # the same layers without the normalisation
    assert torch.allclose(m.cond_net(mel), plain((mel + 5.0) / 2.0), atol=1e-6)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("mel_mean", "mel_std")}
    assert (WaveNetConfig.from_dict(old).mel_mean, WaveNetConfig.from_dict(old).mel_std) == (0.0, 1.0)
    assert WaveNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="mel_std"):
        WaveNetConfig(mel_std=0.0)


def test_training_logs_the_quality_curve_and_audio_snapshots(tmp_path):
    """On a word corpus with a test split, training measures the separate classifier's accuracy and STOI at
    intervals (the curve the card reports) and writes resynthesized snapshots."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from speechmax.data import build_corpus
    from speechmax.models.registry import load_model

    if load_model("classifier-separate", kind="classifier", missing_ok=True) is None:
        pytest.skip("the shipped separate classifier is missing")
    root = tmp_path / "words"
    build_corpus(root, speakers=2, seed=3, workers=2, engines=["espeak-ng"])
    spk = sorted(p.name.split("_nohash_")[0] for p in (root / "yes").glob("*.wav"))
    # the test split: one speaker's 9 words (every 4th; the probe takes 1 per word), not all 35: each probe
    # vocodes every test clip with WaveNet and Griffin-Lim and scores them, ~0.3 s a clip here. Of these,
    # backward, follow, marvin and sheila are long enough for STOI, which skips shorter clips.
    test_words = WORDS[::4]
    (root / "testing_list.txt").write_text("".join(f"{w}/{spk[0]}_nohash_0.wav\n" for w in test_words))
    (root / "validation_list.txt").write_text("")
    tc = VocoderTrainConfig(batch=2, window=800, steps=10, checkpoint_every=10, validate_every=10, quality_every=5,
                            snapshot_every=10, silent_keep=1.0)
    train_vocoder([root], tmp_path / "run", tc, model_cfg=TINY, progress=False)
    q = [e for e in JsonLog(tmp_path / "run" / "log.jsonl").read() if e["event"] == "quality"]
    assert [e["step"] for e in q] == [5, 10] and all(e["clips"] == len(test_words) for e in q)
    assert all(0 <= e["separate_accuracy"]["wavenet"] <= 1 for e in q)
    assert all(0 <= e["stoi_clips"] <= len(test_words) and (e["stoi"]["griffinlim"] is None) == (e["stoi_clips"] == 0)
               for e in q)
    assert all(e["stoi_clips"] > 0 for e in q)   # so the STOI check below is not vacuous
    assert all(0 < e["stoi"]["griffinlim"] <= 1 for e in q if e["stoi_clips"])
    assert len(list((tmp_path / "run" / "snapshots" / "step0000010").glob("*.wav"))) == 9
    assert not (tmp_path / "run" / "snapshots" / "step0000005").exists()
    export_vocoder(tmp_path / "run", tmp_path / "voc")
    assert [p["step"] for p in load_wavenet(tmp_path / "voc").card["training"]["quality_curve"]] == [5, 10]


@pytest.mark.parametrize("hop, T, offsets", [(160, 4000, [0, 1, 2]), (4, 37, [0, 3, 1]), (5, 3, [2, 0, 1]), (160, 70, 0)])
def test_fused_training_forward_and_backward_equal_the_autograd_twin(hop, T, offsets):
    """forward (time-major stack with a hand-written backward) against forward_ref (conv1d + autograd), float64:
    windows longer and shorter than the dilations, frame offsets per batch row or shared, hop odd and even."""
    torch.manual_seed(0)
    cfg = WaveNetConfig(residual_channels=8, gate_channels=12, skip_channels=10, out_channels=16, n_classes=32,
                        n_layers=7, dilation_cycle=3, cond_channels=6, n_mels=5, hop_length=hop)
    model = WaveNet(cfg, FeatureConfig(n_mels=5, hop_length=hop)).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    from speechmax.models.wavenet import frames_needed

    inputs, targets = torch.randint(0, 32, (3, T)), torch.randint(0, 32, (3, T))
    mel = torch.randn(3, 5, frames_needed(T, hop) + 3, dtype=torch.float64)
    offsets = torch.tensor(offsets) if isinstance(offsets, list) else offsets
    results = []
    for forward in (model.forward, model.forward_ref):
        model.zero_grad()
        logits = forward(inputs, mel, offsets)
        torch.nn.functional.cross_entropy(logits, targets).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fast, fast_grads), (ref, ref_grads) = results
    assert fast.shape == ref.shape == (3, 32, T)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    for name, g in ref_grads.items():
        assert g.abs().max() > 0, name   # every parameter gets a gradient
        torch.testing.assert_close(fast_grads[name], g, rtol=0, atol=1e-12, msg=name)


def test_fused_forward_rejects_a_window_past_the_mel():
    model = WaveNet(TINY)
    with pytest.raises(ValueError, match="frames"):
        model(torch.zeros(1, 800, dtype=torch.long), torch.zeros(1, 80, 3), 0)


def test_training_forward_under_bf16_autocast():
    model = WaveNet(TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(0, 256, (2, 800)), torch.zeros(2, 80, 8) - 5)
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 256, 800)
    logits.float().logsumexp(1).mean().backward()
    assert model.w_cur.grad is not None and model.w_cur.grad.abs().max() > 0


@pytest.mark.parametrize("T, offsets", [(1600, [0, 3]), (37, [1, 0])])
def test_bf16_training_stack_close_to_the_fp32_twin(T, offsets):
    """Under bf16 autocast the fused stack's GEMMs read bf16 operands (fp32 accumulation); logits and every
    parameter's gradient stay within bf16 rounding of the fp32 autograd twin (cosine > 0.99; torch's own
    autocast of forward_ref measures 0.9965-0.9999 on this model)."""
    from speechmax.models.wavenet import frames_needed

    torch.manual_seed(2)
    model = WaveNet(TINY)
    inputs, targets = torch.randint(0, 256, (2, T)), torch.randint(0, 256, (2, T))
    mel = torch.randn(2, 80, frames_needed(T, 160) + 3) - 5
    results = []
    for forward, lowp in ((model.forward, True), (model.forward_ref, False)):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lowp):
            logits = forward(inputs, mel, torch.tensor(offsets))
        torch.nn.functional.cross_entropy(logits.float(), targets).backward()
        results.append((logits.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fast, fast_grads), (ref, ref_grads) = results
    assert (fast - ref).abs().max() < 0.05 * ref.abs().max()
    for name, g in ref_grads.items():
        if g.abs().max() == 0:
            continue
        cos = torch.nn.functional.cosine_similarity(fast_grads[name].flatten(), g.flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))


def test_fused_training_forward_float32_with_the_cpu_gate():
    """float32 runs the C++ gate kernel (float64 above takes its torch twin): still equal to forward_ref."""
    torch.manual_seed(1)
    model = WaveNet(TINY)
    inputs, targets, mel = torch.randint(0, 256, (2, 1600)), torch.randint(0, 256, (2, 1600)), torch.randn(2, 80, 14) - 5
    grads = []
    for forward in (model.forward, model.forward_ref):
        model.zero_grad()
        logits = forward(inputs, mel, torch.tensor([0, 3]))
        torch.nn.functional.cross_entropy(logits, targets).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-4, rtol=1e-4)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


def test_stoi_scores_only_clips_with_enough_speech():
    """pystoi gives 1e-5 to a clip with under 30 frames (384 ms) of non-silent audio, whatever it is compared
    with; such clips are left out of the STOI means instead of counting as zeros."""
    import warnings

    from pystoi import stoi

    from speechmax.vocoder.quality import stoi_scored_clips

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 0.3   # modulated, like a vowel
    short, long = np.zeros(16000), np.zeros(16000)
    short[6000:8500] = tone[:2500]          # 156 ms of sound
    long[2000:14000] = tone[:12000]         # 750 ms
    clips = np.stack([short, long, long + 0.01 * rng.standard_normal(16000)])
    assert stoi_scored_clips(clips, 16000) == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert stoi(short, short, 16000) < 1e-3 and stoi(long, long, 16000) > 0.99


def test_preemphasis_round_trip_and_old_cards():
    """De-emphasis inverts pre-emphasis; a card without the field loads as before (no noise shaping); a card
    from a newer version names the settings it does not know."""
    from speechmax.models.wavenet import deemphasize, preemphasize

    x = 0.5 * torch.sin(torch.arange(4000) * 0.05) * torch.linspace(0, 1, 4000)
    y = preemphasize(x[None], 0.85)
    assert float((y[0, 1:] - (x[1:] - 0.85 * x[:-1])).abs().max()) < 1e-6
    np.testing.assert_allclose(deemphasize(y.numpy(), 0.85)[0], x.numpy(), atol=1e-5)
    old = {k: v for k, v in WaveNetConfig().to_dict().items() if k != "preemphasis"}
    assert WaveNetConfig.from_dict(old).preemphasis == 0.0
    with pytest.raises(ValueError, match="does not know \\(excitation\\).*newer speechmax"):
        WaveNetConfig.from_dict({**old, "excitation": "lpc"})
    with pytest.raises(ValueError, match="preemphasis"):
        WaveNetConfig(preemphasis=1.0)


def test_noise_shaped_model_decodes_with_deemphasis():
    """A model with preemphasis: decode() de-emphasises the mu-law samples (what Vocoder.synthesize returns)."""
    from speechmax.features import mu_law_decode
    from speechmax.models.wavenet import deemphasize

    model = WaveNet(WaveNetConfig(**{**TINY.to_dict(), "preemphasis": 0.85}))
    q = torch.randint(100, 156, (2, 500))
    np.testing.assert_allclose(model.decode(q), np.clip(deemphasize(mu_law_decode(q).numpy(), 0.85), -1, 1), atol=1e-6)
    np.testing.assert_allclose(WaveNet(TINY).decode(q), mu_law_decode(q).numpy(), atol=1e-7)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("B,T,hop,dilations", [(1, 37, 8, (1, 2, 4)), (3, 64, 16, (1, 2, 4, 8, 16, 32)),
                                               (2, 20, 160, (1, 32, 64))])
def test_residual_stack_equals_its_twin(B, T, hop, dilations, dtype):
    """The fused training stack (ops/wavenet_train.py) against residual_stack_ref: output and every gradient."""
    from speechmax.ops.wavenet_train import residual_stack, residual_stack_ref

    g = torch.Generator().manual_seed(B * T + hop)
    R, G, S, L = 8, 12, 10, len(dilations)
    nf = (T - 1 + hop // 2) // hop + 1
    make = lambda *shape: (torch.randn(*shape, generator=g) * 0.3).requires_grad_(True)   # noqa: E731
    args = [make(T * B, R), make(nf, B, L * G), make(L, G, R), make(L, G, R), make(L, S, G // 2),
            make(L, R, G // 2), make(L, R)]
    w = torch.randn(T * B, S, generator=g)
    outs, grads = [], []
    for fn in (residual_stack, residual_stack_ref):
        y = fn(*args, dilations, B, hop, dtype)
        outs.append(y.detach())
        grads.append(torch.autograd.grad((y * w).sum(), args))
    # bf16: both round the products' operands, but in backward the fused op also rounds the gradients it
    # multiplies, so the two agree as a whole (relative error of each tensor), not element by element
    close = (lambda a, b: float((a - b).norm() / b.norm().clamp_min(1e-12)) < 3e-2) if dtype is not None else \
        (lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-5))
    assert close(outs[0], outs[1])
    for name, a, b in zip(("x0", "cf", "w_past", "w_cur", "w_skip", "w_res", "b_res"), *grads):
        if name in ("w_res", "b_res"):   # the last layer's residual is never read: zero in both
            assert torch.count_nonzero(a[-1]) == 0 and torch.count_nonzero(b[-1]) == 0
        assert close(a, b), f"{name}: {float((a - b).abs().max())}"


def test_a_step_the_process_was_paused_in_counts_as_long_as_the_step_before():
    """Pausing a training run (SIGSTOP ... SIGCONT, as one does to benchmark beside it) must not count the pause as
    training time (the card's train_hours): the clock runs on through a pause, so the step the process was
    continued in is counted as long as the step before it. The timer listens for SIGCONT only while open."""
    import os
    import signal
    import time

    from speechmax.training import StepTimer

    before = signal.getsignal(signal.SIGCONT)
    with StepTimer(10.0) as clock:
        clock.start()
        time.sleep(0.05)
        first = clock.stop()
        clock.start()
        time.sleep(0.5)                         # stands for the pause ...
        os.kill(os.getpid(), signal.SIGCONT)    # ... and the continue that ends it
        second = clock.stop()
        clock.start()
        third = clock.stop()
    assert 0.05 <= first < 0.4 and second == first and clock.paused_steps == 1 and third < 0.05
    assert clock.seconds == pytest.approx(10.0 + 2 * first + third)
    assert signal.getsignal(signal.SIGCONT) == before
