"""The v0.02 loader on a fabricated 'real corpus' tree with odd files, and on a built corpus."""
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from speechmax.data import (SILENCE_LABEL, UNKNOWN_LABEL, WORDS, FeatureAugment, SpeechCommands,
                            build_corpus, build_vocoder_corpus, labels, load_split, speaker_of, vocoder_files,
                            which_set)
from speechmax.data import dataset as dataset_mod
from speechmax.data.augment import mix_noise
from speechmax.features import FeatureConfig, load_audio, log_mel

SR = 16000


def _speaker_in(split, start=0):
    i = start
    while which_set(f"s{i:04d}_nohash_0.wav") != split:
        i += 1
    return f"s{i:04d}", i + 1


def _tone(seconds, rate=SR, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    return np.stack([x] * channels, 1) if channels > 1 else x


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small real-corpus-like tree: odd formats and lengths, an unknown folder, bad files, no testing list."""
    root = tmp_path_factory.mktemp("real")
    train, n = _speaker_in("training")
    train2, n = _speaker_in("training", n)
    val, n = _speaker_in("training", n)   # put in the validation list by hand: the list wins over the rule
    test, _ = _speaker_in("testing")
    for word in ("yes", "no", "up", "cat"):
        for spk in (train, train2, val, test):
            (root / word).mkdir(exist_ok=True)
            sf.write(root / word / f"{spk}_nohash_0.wav", _tone(1.0), SR, subtype="PCM_16")
    sf.write(root / "yes" / f"{train}_nohash_1.wav", _tone(1.0, 44100, channels=2), 44100)  # stereo 44.1 kHz
    sf.write(root / "no" / f"{train}_nohash_1.wav", _tone(0.3), SR, subtype="PCM_16")
    three = np.concatenate([np.full(SR, 0.1), np.full(SR, 0.5), np.full(SR, -0.1)])
    sf.write(root / "up" / f"{train}_nohash_1.wav", three, SR, subtype="PCM_16")  # 3 s
    (root / "cat" / f"{train}_nohash_1.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")  # corrupt
    (root / "cat" / f"{train2}_nohash_1.wav").write_bytes(b"")  # empty
    (root / "banana").mkdir()
    for spk in (train, train2):
        sf.write(root / "banana" / f"{spk}_nohash_0.wav", _tone(1.0, freq=300), SR, subtype="PCM_16")
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav", 0.1 * np.random.default_rng(0).standard_normal(3 * SR), SR)
    (root / "_background_noise_" / "README.md").write_text("noise")
    (root / "validation_list.txt").write_text("".join(f"{w}/{val}_nohash_0.wav\n" for w in ("yes", "no", "up", "cat")))
    return {"root": root, "train": train, "train2": train2, "val": val, "test": test}


def _load(*args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = SpeechCommands(*args, **kw)
    return ds, [str(w.message) for w in caught]


def test_fabricated_tree_35_words(tree, tmp_path):
    ds, msgs = _load(tree["root"], "training", cache_dir=tmp_path)
    # one warning each: unknown folder, missing list, unreadable files (both named)
    assert sum("banana" in m for m in msgs) == 1
    assert sum("testing_list.txt" in m and "hash rule" in m for m in msgs) == 1
    bad = [m for m in msgs if "unreadable" in m]
    assert len(bad) == 1 and f"{tree['train']}_nohash_1.wav" in bad[0] and f"{tree['train2']}_nohash_1.wav" in bad[0]
    assert len(ds.skipped) == 2
    # training: 2 speakers x 4 words + stereo, 0.3 s and 3 s clips of the first (banana skipped)
    assert len(ds) == 11 and set(ds.labels) == set(WORDS)
    x, label, speaker = ds[0]
    assert x.shape == (80, 101) and x.dtype == torch.float32 and isinstance(label, int)
    assert {s for _, _, s in ds.items} == {tree["train"], tree["train2"]}
    X, y, speakers = ds.tensors()
    assert X.shape == (11, 80, 101) and y.dtype == torch.int64 and len(speakers) == 11
    assert {labels()[i] for i in y.tolist()} == {"yes", "no", "up", "cat"}


def test_odd_lengths_and_formats(tree, tmp_path):
    ds, _ = _load(tree["root"], "training", cache_dir=tmp_path)
    t = tree["train"]

    def index_of(path):
        row = [f.path for f in ds.files].index(path)
        return next(i for i, (r, _, _) in enumerate(ds.items) if r == row)

    stereo = ds.waveform(index_of(f"yes/{t}_nohash_1.wav"))
    assert stereo.shape == (SR,) and abs(float(stereo.abs().max()) - 0.3) < 0.02  # mono 16 kHz, level kept
    short = ds.waveform(index_of(f"no/{t}_nohash_1.wav")).numpy()
    n = int(0.3 * SR)
    assert np.all(short[:(SR - n) // 2 - 1] == 0) and np.all(short[-((SR - n) // 2 - 1):] == 0)  # centred in zeros
    long = ds.waveform(index_of(f"up/{t}_nohash_1.wav")).numpy()
    assert long.shape == (SR,) and np.allclose(long, 0.5, atol=1e-3)  # the middle second
    assert f"cat/{t}_nohash_1.wav" not in [f.path for f in ds.files]
    # cached features are the features of the file (int16 round trip: well under 1e-3 here)
    wave = load_audio(tree["root"] / f"yes/{t}_nohash_0.wav")
    assert torch.allclose(ds[index_of(f"yes/{t}_nohash_0.wav")][0], log_mel(torch.from_numpy(wave)), atol=1e-3)


def test_splits_lists_and_hash_rule(tree, tmp_path):
    val, _ = _load(tree["root"], "validation", cache_dir=tmp_path)
    test, _ = _load(tree["root"], "testing", cache_dir=tmp_path)
    assert {s for _, _, s in val.items} == {tree["val"]}      # from the list
    assert {s for _, _, s in test.items} == {tree["test"]}    # missing list: hash rule
    assert len(val) == len(test) == 4


def test_twelve_class_task(tree, tmp_path):
    ds, msgs = _load(tree["root"], "training", task="12", cache_dir=tmp_path, unknown_percentage=100.0)
    assert not any("banana" in m for m in msgs)
    names = labels("12")
    assert names[:2] == (SILENCE_LABEL, UNKNOWN_LABEL)
    X, y, speakers = ds.tensors()
    got = [names[i] for i in y.tolist()]
    known = sum(g in ("yes", "no", "up") for g in got)
    assert known == 9  # yes, no, up of two speakers + stereo, short, long
    assert got.count(UNKNOWN_LABEL) == 4  # cat and banana of both speakers (the bad cat files are skipped)
    assert got.count(SILENCE_LABEL) == 1 and speakers[got.index(SILENCE_LABEL)] == SILENCE_LABEL
    assert X.shape[1:] == (80, 101) and torch.isfinite(X).all()
    # silence items come from the background noise, not digital zero
    assert X[got.index(SILENCE_LABEL)].max() > np.log(1e-5) + 1


def test_features_are_cached(tree, tmp_path, monkeypatch):
    first, _ = _load(tree["root"], "validation", cache_dir=tmp_path)
    X1, _, _ = first.tensors()
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("validation-*.npy")) == ["mel", "waves"]

    def boom(*a, **k):
        raise AssertionError("a cached split read an audio file")

    monkeypatch.setattr(dataset_mod, "load_audio", boom)
    monkeypatch.setattr(dataset_mod, "log_mel", boom)
    again, _ = _load(tree["root"], "validation", cache_dir=tmp_path)
    X2, _, _ = again.tensors()
    assert torch.equal(X1, X2)


def test_augmentation(tree, tmp_path):
    ds, _ = _load(tree["root"], "training", cache_dir=tmp_path, augment=True)
    torch.manual_seed(0)
    a, la, sa = ds[0]
    b, lb, sb = ds[0]
    assert a.shape == (80, 101) and (la, sa) == (lb, sb) and not torch.equal(a, b)

    cfg = ds.cfg
    x = log_mel(torch.from_numpy(_tone(1.0)).float()[None].repeat(4, 1), cfg)
    off = dict(max_shift=0, gain_db=0.0, freq_masks=0, time_masks=0)
    assert torch.equal(FeatureAugment(None, cfg, **off)(x, torch.Generator().manual_seed(0)), x)
    noise = log_mel(torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (8, 16000))).float(), cfg)
    noisy = FeatureAugment(noise, cfg, p_noise=1.0, snr_db=(10.0, 10.0), **off)(x, torch.Generator().manual_seed(0))
    added = (noisy.exp() - x.exp())
    snr = 10 * torch.log10(x.exp().pow(2).sum((1, 2)) / added.pow(2).sum((1, 2)))
    assert torch.allclose(snr, torch.full((4,), 10.0), atol=0.5)
    # the same mixing on its own, at a fixed SNR (the debugging benchmark's noisy starts); use=0 leaves a clip clean
    fixed = mix_noise(x, noise[:4], 20.0, cfg)
    added = fixed.exp() - x.exp()
    snr = 10 * torch.log10(x.exp().pow(2).sum((1, 2)) / added.pow(2).sum((1, 2)))
    assert torch.allclose(snr, torch.full((4,), 20.0), atol=0.01)
    assert torch.allclose(mix_noise(x, noise[:4], 20.0, cfg, use=torch.tensor([0.0, 1, 1, 1]))[0], x[0], atol=1e-5)


def test_a_noise_type_can_be_held_out_of_the_augmentation(tmp_path):
    """``noise_log_mels(skip=...)`` crops only the noise files not named: white crops are flat, brown ones fall
    steeply from the lowest to the highest bands; nothing left is None (no noise to mix)."""
    from speechmax.data.augment import noise_log_mels
    from speechmax.data.noise import COLOURS, load_noise_files, write_background_noise
    from speechmax.data.words import BACKGROUND_NOISE_DIR

    write_background_noise(tmp_path / BACKGROUND_NOISE_DIR, seed=0, seconds=2.0)
    names = [f"{c}_noise.wav" for c in COLOURS]
    assert len(load_noise_files(tmp_path / BACKGROUND_NOISE_DIR, skip=names[:1])[0]) == len(names) - 1
    cfg = FeatureConfig()

    def tilt(keep):   # mean log-mel of the top 10 bands minus the bottom 10's
        m = noise_log_mels(tmp_path, cfg, n=16, skip=[n for n in names if n != keep])
        return float(m[:, -10:].mean() - m[:, :10].mean())

    assert abs(tilt("white_noise.wav")) < 1.0 and tilt("brown_noise.wav") < -2.0
    assert noise_log_mels(tmp_path, cfg, n=4, skip=names) is None


def test_real_corpus_without_lists_or_noise(tmp_path):
    root = tmp_path / "bare"
    for spk in ("aaaa1111", "bbbb2222", "cccc3333", "dddd4444", "eeee5555"):
        (root / "go").mkdir(parents=True, exist_ok=True)
        sf.write(root / "go" / f"{spk}_nohash_0.wav", _tone(1.0), SR, subtype="PCM_16")
    total = 0
    for split in ("training", "validation", "testing"):
        ds, msgs = _load(root, split)
        assert any("hash rule" in m for m in msgs)
        assert all(which_set(f"{s}_nohash_0.wav") == split for _, _, s in ds.items)
        total += len(ds)
    assert total == 5 and (root / ".cache").is_dir()
    with pytest.raises(FileNotFoundError):
        SpeechCommands(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        SpeechCommands(root, "train")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_loader_on_a_built_corpus(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_corpus(tmp_path / "c", 3, seed=1, workers=1, engines=["espeak-ng"])
        X, y, speakers = load_split(tmp_path / "c", "training")
    assert X.shape[1:] == (80, 101) and len(X) == len(y) == len(speakers) and len(X) % 35 == 0
    assert sorted(torch.bincount(y, minlength=35).tolist()) == [len(X) // 35] * 35

    build_vocoder_corpus(tmp_path / "v", 0.1, seed=1, workers=1, engines=["espeak-ng"])
    files = vocoder_files([tmp_path / "v", tmp_path / "c"])
    assert set(files) == {"training", "validation", "testing"} and files["training"]
    speakers = {split: {speaker_of(p) for p in paths} for split, paths in files.items()}
    assert not (speakers["training"] & (speakers["validation"] | speakers["testing"]))   # split by speaker
    continuous = [p for p in files["training"] if (tmp_path / "v") in p.parents]
    assert continuous and all(speaker_of(p) == p.parent.name for p in continuous)
    assert all("_background_noise_" not in p.parts for paths in files.values() for p in paths)


def test_speaker_of_names_and_folders():
    # one speaker rule for word clips (the name before _nohash_) and continuous speech (the folder)
    assert speaker_of("yes/ab12cd_nohash_3.wav") == speaker_of("ab12cd_nohash_0.wav") == "ab12cd"
    assert speaker_of("voc/8e671b76/0.wav") == "8e671b76"
    assert speaker_of("loose.wav") == "loose.wav"

