"""The offline corpus builder: layout, exact clip length, determinism, speaker-disjoint splits, bad input."""
import json
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf

from speechmax.cli import main
from speechmax.data import WORDS, build_corpus, build_vocoder_corpus, which_set
from speechmax.data import tts
from speechmax.data.speakers import Speaker, speak

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    sf.write(d / "hum.wav", 0.05 * rng.standard_normal((44100, 2)), 44100)  # stereo 44.1 kHz
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav")
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, noise_dir):
    """The 'done when' build, through the CLI: 3 speakers, seed 1."""
    out = tmp_path_factory.mktemp("corpus") / "c"
    assert main(["corpus", "build", "--out", str(out), "--speakers", "3", "--seed", "1", "--workers", "2",
                 "--noise-dir", str(noise_dir), "--no-progress"]) == 0
    return out


def _clips(root):
    return sorted(p.relative_to(root) for p in root.glob("*/*_nohash_*.wav"))


def test_three_speakers_give_105_one_second_clips(corpus):
    clips = _clips(corpus)
    assert len(clips) == 105
    assert {c.parent.name for c in clips} == set(WORDS)
    for c in clips:
        info = sf.info(corpus / c)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        x, _ = sf.read(corpus / c, dtype="int16")
        assert np.abs(x).max() > 1000, f"{c} is (nearly) silent"
    for name in ("validation_list.txt", "testing_list.txt", "speakers.tsv", "corpus.json"):
        assert (corpus / name).is_file()
    rows = (corpus / "speakers.tsv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].split("\t")[:3] == ["speaker", "split", "engine"]
    noise = sorted(p.name for p in (corpus / "_background_noise_").iterdir())
    assert noise == ["blue_noise.wav", "brown_noise.wav", "hum.wav", "pink_noise.wav", "white_noise.wav"]
    hum = sf.info(corpus / "_background_noise_" / "hum.wav")
    assert (hum.samplerate, hum.channels) == (16000, 1)
    assert json.loads((corpus / "corpus.json").read_text())["complete"] is True


def test_same_seed_gives_identical_bytes(corpus, tmp_path, noise_dir):
    again = tmp_path / "again"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = build_corpus(again, 3, seed=1, workers=1, noise_dir=noise_dir)  # other worker count too
    assert s.clips == 105
    assert sum("broken.wav" in str(w.message) for w in caught) == 1
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "corpus.json")
    for f in files:
        assert (corpus / f).read_bytes() == (again / f).read_bytes(), f


def test_no_speaker_in_two_splits(corpus):
    split_of = {}
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        for line in (corpus / name).read_text().split():
            split_of.setdefault(line.split("/")[1].split("_nohash_")[0], set()).add(split)
    for c in _clips(corpus):
        speaker = c.name.split("_nohash_")[0]
        split_of.setdefault(speaker, set())
    for speaker, splits in split_of.items():
        expected = which_set(f"{speaker}_nohash_0.wav")
        assert splits == (set() if expected == "training" else {expected}), speaker


def test_resume_same_settings_and_refuse_other_settings(corpus, noise_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = build_corpus(corpus, 3, seed=1, workers=1, noise_dir=noise_dir)
        assert (s.clips, s.made) == (105, 0)  # everything already there
        with pytest.raises(ValueError, match="other settings.*seed"):
            build_corpus(corpus, 3, seed=2, workers=1, noise_dir=noise_dir)


@pytest.mark.parametrize("n", ["0", "-1"])
def test_speaker_count_must_be_positive(tmp_path, capsys, n):
    assert main(["corpus", "build", "--out", str(tmp_path / "x"), "--speakers", n]) == 2
    assert "--speakers must be a positive integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="speakers must be a positive integer"):
        build_corpus(tmp_path / "y", int(n))
    assert not (tmp_path / "x").exists()


def test_output_folder_holding_something_else(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["corpus", "build", "--out", str(tmp_path), "--speakers", "1", "--no-progress"]) == 2
    assert "not a speechmax corpus" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        build_corpus(tmp_path / "file", 1)


def test_missing_engine_is_reported_once_with_its_package(monkeypatch):
    real = tts.engine_voices
    monkeypatch.setattr(tts, "engine_voices", lambda e: () if e in ("flite", "pico2wave") else real(e))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tts.available_engines(["espeak-ng", "flite", "pico2wave"]) == ["espeak-ng"]
        tts.available_engines()  # default set: optional engines are not reported when absent
    messages = [str(w.message) for w in caught]
    assert sum("flite" in m for m in messages) == 2 and sum("pico2wave" in m for m in messages) == 1
    assert any("Debian package flite" in m for m in messages)
    assert any("libttspico-utils" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(tts.EngineError, match="no TTS engine is available"):
            tts.available_engines(["flite"])
    with pytest.raises(ValueError, match="unknown TTS engine"):
        tts.available_engines(["sam"])


def test_long_word_is_time_compressed_not_cut(tmp_path):
    s = Speaker("espeak-ng", "en-us", "", 1.4, 50, 1.0, 1.0, -3.0)
    raw = speak(s, ["backward forward visual"], str(tmp_path), [1])[0]
    short = speak(s, ["backward forward visual"], str(tmp_path), [1], max_seconds=0.92)[0]
    assert len(raw) > 16000 and 0.8 * 0.92 * 16000 < len(short) <= 0.92 * 16000

    def envelope(x, bins=24):
        return np.array([np.sqrt(np.mean(b ** 2)) for b in np.array_split(x, bins)])

    # a cut would drop the last word; compression keeps the whole loudness contour
    assert np.corrcoef(envelope(raw), envelope(short))[0, 1] > 0.8


def test_vocoder_corpus(tmp_path):
    out = tmp_path / "voc"
    s = build_vocoder_corpus(out, 0.25, seed=3, workers=1, engines=["espeak-ng"])
    rows = [r.split("\t") for r in (out / "manifest.tsv").read_text().splitlines()]
    assert rows[0] == ["path", "speaker", "split", "seconds", "text"] and len(rows) - 1 == s.clips
    again = build_vocoder_corpus(out, 0.25, seed=3, workers=1, engines=["espeak-ng"])
    assert (again.clips, again.made) == (s.clips, 0)  # complete: left as it is
    total = sum(float(r[3]) for r in rows[1:])
    assert total >= 15.0
    for r in rows[1:]:
        info = sf.info(out / r[0])
        assert info.samplerate == 16000 and info.channels == 1 and r[2] == which_set(r[1] + "_nohash_0.wav")
        x, _ = sf.read(out / r[0])
        assert 0.05 < np.abs(x).max() <= 10 ** (-1 / 20) + 1e-3
