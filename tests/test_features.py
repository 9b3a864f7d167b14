import math

import numpy as np
import pytest
import soundfile as sf
import torch

from speechmax.features import (AudioError, FeatureConfig, FeatureMismatchError, check_compatible, load_audio,
                                log_mel, mu_law_decode, mu_law_encode, n_frames, save_audio)

CFG = FeatureConfig()


def librosa_log_mel(wave: np.ndarray, cfg: FeatureConfig = CFG) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=wave, sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
                                         hop_length=cfg.hop_length, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
                                         power=1.0, center=True, pad_mode="reflect", htk=False, norm="slaney")
    return np.log(np.maximum(mel, cfg.log_floor))


def test_defaults_give_80_by_101_for_one_second():
    assert log_mel(torch.zeros(16000) + 0.01).shape == (80, 101)
    assert n_frames(16000) == 101


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_mel_matches_librosa_on_noise(rng, dtype):
    x = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    ours = log_mel(torch.from_numpy(x).to(dtype)).double().numpy()
    assert np.abs(ours - librosa_log_mel(x.astype(np.float64))).max() < 1e-4


def test_log_mel_matches_librosa_on_speech(espeak_wav):
    ours = log_mel(torch.from_numpy(espeak_wav)).double().numpy()
    theirs = librosa_log_mel(espeak_wav.astype(np.float64))
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4


def test_log_mel_batched_equals_single(rng):
    x = torch.from_numpy((0.1 * rng.standard_normal((3, 8000))).astype(np.float32))
    batched = log_mel(x)
    for i in range(3):
        torch.testing.assert_close(batched[i], log_mel(x[i]), atol=1e-5, rtol=0)


def test_log_mel_is_differentiable(rng):
    x = torch.from_numpy((0.1 * rng.standard_normal(4000))).requires_grad_()
    log_mel(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_log_mel_silence_is_floor_and_short_input_works():
    out = log_mel(torch.zeros(100))
    assert out.shape == (80, 1)
    assert torch.allclose(out, torch.full_like(out, math.log(CFG.log_floor)))
    with pytest.raises(ValueError, match="empty"):
        log_mel(torch.zeros(0))
    with pytest.raises(TypeError):
        log_mel(torch.zeros(10, dtype=torch.long))


def test_mu_law_round_trip():
    q = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(q)), q)
    x = torch.linspace(-1, 1, 1001)
    err = (mu_law_decode(mu_law_encode(x)) - x).abs()
    assert err.max() < 0.035  # the widest mu-law step, at full scale
    assert mu_law_encode(torch.tensor([0.0])).item() in (127, 128)


def test_feature_config_round_trip_and_mismatch():
    assert FeatureConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(FeatureMismatchError, match="n_mels: 80 vs 40"):
        check_compatible(CFG, FeatureConfig(n_mels=40))
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("cfg", [CFG, FeatureConfig(n_fft=512, win_length=400, hop_length=100, n_mels=40, fmin=0.0,
                                                    fmax=7600.0, center=False, pad_mode="constant", power=2.0, log_floor=1e-6)])
def test_torchaudio_kwargs_round_trip(cfg):
    kwargs = cfg.to_torchaudio()
    assert kwargs["norm"] == kwargs["mel_scale"] == "slaney" and kwargs["f_min"] == cfg.fmin
    assert FeatureConfig.from_torchaudio(kwargs, log_floor=cfg.log_floor) == cfg
    assert FeatureConfig.from_torchaudio(dict(kwargs, window_fn=torch.hann_window, wkwargs={"periodic": True}),
                                         log_floor=cfg.log_floor) == cfg


def test_torchaudio_defaults_and_inexpressible_settings():
    # torchaudio's own defaults fill what the kwargs omit: win_length = n_fft, hop = win // 2, f_max = sr // 2
    cfg = FeatureConfig.from_torchaudio(dict(n_fft=400, norm="slaney", mel_scale="slaney", power=1.0))
    assert (cfg.win_length, cfg.hop_length, cfg.fmax, cfg.n_mels) == (400, 200, 8000.0, 128)
    with pytest.raises(ValueError, match="norm=None.*mel_scale='htk'"):   # torchaudio's default filterbank
        FeatureConfig.from_torchaudio({})
    base = CFG.to_torchaudio()
    for bad, match in ((dict(window_fn=torch.hamming_window), "window"), (dict(wkwargs={"periodic": False}), "window"),
                       (dict(mel_scale="htk"), "mel_scale='htk'"), (dict(normalized=True), "normalized=True"),
                       (dict(pad=8), "pad=8"), (dict(power=None), "power=None"), (dict(onesided=False), "onesided"),
                       (dict(norm=None), "norm=None")):
        with pytest.raises(ValueError, match=match):
            FeatureConfig.from_torchaudio(dict(base, **bad))
    with pytest.raises(ValueError, match="unknown.*'n_bins'"):
        FeatureConfig.from_torchaudio(dict(base, n_bins=3))
    with pytest.raises(TypeError, match="MelSpectrogram"):
        FeatureConfig.from_torchaudio("slaney")


def test_from_torchaudio_reads_a_module_by_its_attributes():
    """Without torchaudio installed: an object laid out as torchaudio 2.x's MelSpectrogram (spectrogram.window,
    mel_scale.norm, ...); the window is recognised from its values."""
    from types import SimpleNamespace

    def module(window):
        spec = SimpleNamespace(pad=0, power=1.0, normalized=False, center=True, pad_mode="reflect", onesided=None,
                               window=window)
        mel = SimpleNamespace(f_min=20.0, f_max=8000.0, norm="slaney", mel_scale="slaney")
        return SimpleNamespace(sample_rate=16000, n_fft=1024, win_length=640, hop_length=160, n_mels=80,
                               spectrogram=spec, mel_scale=mel)

    assert FeatureConfig.from_torchaudio(module(torch.hann_window(640))) == CFG
    with pytest.raises(ValueError, match="window"):
        FeatureConfig.from_torchaudio(module(torch.hann_window(640, periodic=False)))


def test_log_mel_equals_torchaudio(rng):
    """Runs only where torchaudio imports (it is not a dependency: it pins its own torch)."""
    torchaudio = pytest.importorskip("torchaudio")
    transform = torchaudio.transforms.MelSpectrogram(**CFG.to_torchaudio()).double()
    assert FeatureConfig.from_torchaudio(transform) == CFG
    wave = torch.from_numpy(rng.uniform(-0.5, 0.5, 16000))
    theirs = torch.log(torch.clamp(transform(wave), min=CFG.log_floor))
    assert (theirs - log_mel(wave, CFG)).abs().max().item() < 1e-4


def test_load_audio_resamples_and_downmixes(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44100)
    y = load_audio(tmp_path / "s.wav", 16000)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    assert 0.45 < np.abs(y).max() < 0.55


def test_save_then_load_is_pcm16(tmp_path, rng):
    x = (0.3 * rng.standard_normal(1600)).astype(np.float32)
    save_audio(tmp_path / "a.wav", x)
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert np.abs(load_audio(tmp_path / "a.wav") - np.clip(x, -1, 1)).max() < 1e-4


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("text", "not a readable audio file"),
    ("zero", "0 samples"),
    ("nan", "NaN"),
    ("rate", "unsupported sample rate"),
    ("channels", "unsupported channel count"),
])
def test_bad_audio_gives_one_clear_error(tmp_path, case, message):
    p = tmp_path / f"{case}.wav"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("this is not audio\n" * 10)
    elif case == "zero":
        sf.write(p, np.zeros((0, 1), np.float32), 16000)
    elif case == "nan":
        sf.write(p, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    elif case == "rate":
        sf.write(p, np.zeros(100, np.float32), 2000)
    elif case == "channels":
        sf.write(p, np.zeros((100, 10), np.float32), 16000)
    with pytest.raises(AudioError) as err:
        load_audio(p)
    assert message in str(err.value) and str(p) in str(err.value)


def test_save_audio_rejects_nan(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "x.wav", np.array([0.0, np.nan], np.float32))
