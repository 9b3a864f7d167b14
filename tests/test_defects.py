"""The debugging benchmark's planted defects (issue 23): each transform does what it says, measured on the audio,
and a planted corpus changes only the chosen word's training clips."""
import json
import os
import wave as wavlib

import numpy as np
import pytest

from speechmax.data.dataset import scan_corpus
from speechmax.data.defects import (DefectError, active, add_noise, add_tone, lowpass, move_early, plant,
                                    speech_rms)
from speechmax.features import load_audio

SR = 16000


def _word(start_s=0.5, length_s=0.3, hz=440.0, amp=0.3):
    """A 1 s clip: a harmonic burst (a 'word') of ``length_s`` at ``start_s``, silence elsewhere."""
    t = np.arange(int(length_s * SR)) / SR
    burst = amp * np.hanning(len(t)) ** 0.2 * sum(np.sin(2 * np.pi * hz * k * t) / k for k in (1, 2, 3))
    x = np.zeros(SR, np.float32)
    a = int(start_s * SR)
    x[a:a + len(t)] = burst
    return x


def _band_db(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-20)


def test_the_tone_sits_25_db_under_the_speech_at_its_frequency():
    x = _word()
    y = add_tone(x, hz=2500.0, below_db=25.0)
    tone = y - x
    assert 20 * np.log10(speech_rms(x) / np.sqrt(np.mean(tone ** 2))) == pytest.approx(25.0, abs=0.05)
    f = np.fft.rfftfreq(SR, 1 / SR)
    assert f[np.argmax(np.abs(np.fft.rfft(tone)))] == pytest.approx(2500.0, abs=1)


def test_noise_is_mixed_at_its_snr_and_a_silent_noise_is_refused():
    x = _word()
    noise = np.random.default_rng(0).normal(0, 0.05, 3 * SR)
    y = add_noise(x, noise, 10.0, np.random.default_rng(1))
    assert 20 * np.log10(speech_rms(x) / np.sqrt(np.mean((y - x) ** 2))) == pytest.approx(10.0, abs=0.05)
    with pytest.raises(DefectError, match="silent"):
        add_noise(x, np.zeros(SR), 10.0, np.random.default_rng(1))


def test_the_word_moves_to_the_clips_start():
    x = _word(start_s=0.55, length_s=0.3)
    y = move_early(x)
    on = np.flatnonzero(active(y))
    assert on[0] == 0 and on[-1] < 0.4 * SR
    assert speech_rms(y) == pytest.approx(speech_rms(x), rel=1e-3)
    assert np.array_equal(move_early(np.zeros(SR, np.float32)), np.zeros(SR, np.float32))


def test_lowpass_removes_what_lies_above_its_cutoff():
    x = _word(hz=700.0) + 0.05 * np.random.default_rng(0).normal(size=SR).astype(np.float32)
    y = lowpass(x, 2000.0)
    assert _band_db(x, 3000, 8000) - _band_db(y, 3000, 8000) > 40
    assert abs(_band_db(x, 100, 1500) - _band_db(y, 100, 1500)) < 0.5


def _write(path, x):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wavlib.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture
def corpus(tmp_path):
    """Three words x four speakers; speaker s3's clips are the test split, s2's validation."""
    root = tmp_path / "corpus"
    for i, word in enumerate(("yes", "no", "up")):
        for s in range(4):
            _write(root / word / f"s{s}_nohash_0.wav", _word(start_s=0.3 + 0.1 * s, hz=300.0 + 200 * i))
    (root / "validation_list.txt").write_text("".join(f"{w}/s2_nohash_0.wav\n" for w in ("yes", "no", "up")))
    (root / "testing_list.txt").write_text("".join(f"{w}/s3_nohash_0.wav\n" for w in ("yes", "no", "up")))
    return root


def _splits(root):
    return {(it.path, it.split) for it in scan_corpus(root)[0]}


def test_a_planted_corpus_changes_only_the_words_training_clips(corpus, tmp_path):
    rec = plant(corpus, tmp_path / "tone", "tone", "no", seed=3)
    out = tmp_path / "tone"
    assert rec["class"] == "no" and rec["changed_training_clips"] == 2 and rec["settings"]["hz"] == 2500.0
    assert json.loads((out / "defect.json").read_text()) == rec
    assert _splits(out) == _splits(corpus)
    for it in scan_corpus(out)[0]:
        changed = it.word == "no" and it.split == "training"
        assert os.path.islink(out / it.path) != changed, it.path
        if changed:
            x, y = load_audio(corpus / it.path), load_audio(out / it.path)
            assert _band_db(y - x, 2400, 2600) - _band_db(y - x, 0, 2300) > 30
    with pytest.raises(FileExistsError):
        plant(corpus, out, "tone", "no")


def test_swapped_labels_exchange_the_training_clips_only(corpus, tmp_path):
    plant(corpus, tmp_path / "swap", "swap", "yes", other="up")
    items = {(it.word, it.split, os.path.realpath(tmp_path / "swap" / it.path))
             for it in scan_corpus(tmp_path / "swap")[0]}
    src = lambda w, s: os.path.realpath(corpus / w / f"s{s}_nohash_0.wav")  # noqa: E731
    assert ("up", "training", src("yes", 0)) in items and ("yes", "training", src("up", 1)) in items
    assert ("yes", "testing", src("yes", 3)) in items and ("up", "validation", src("up", 2)) in items
    assert ("no", "training", src("no", 0)) in items


def test_what_cannot_be_planted_is_refused_with_the_reason(corpus, tmp_path):
    with pytest.raises(DefectError, match="_background_noise_"):
        plant(corpus, tmp_path / "n", "noise", "yes")
    with pytest.raises(DefectError, match="second word"):
        plant(corpus, tmp_path / "s", "swap", "yes")
    with pytest.raises(DefectError, match="'cat' has no clips"):
        plant(corpus, tmp_path / "c", "tone", "cat")
    with pytest.raises(DefectError, match="unknown defect"):
        plant(corpus, tmp_path / "x", "hum", "yes")
    assert not any((tmp_path / n).exists() for n in ("n", "s", "c", "x"))
    _write(corpus / "_background_noise_" / "hum.wav", np.random.default_rng(0).normal(0, 0.1, 2 * SR))
    rec = plant(corpus, tmp_path / "n", "noise", "yes", seed=1)
    assert rec["noise_file"] == "hum.wav" and os.path.islink(tmp_path / "n" / "_background_noise_" / "hum.wav")
