"""Build the offline Speech Commands corpus (v0.02 layout) and the continuous-speech vocoder corpus.

Determinism: speaker ``i`` is drawn from ``SeedSequence([seed, domain, i])`` and each clip's offset and
level from ``SeedSequence([seed, 1, speaker hash, word index, k])``, never from worker order, so the same
seed and the same engine versions give the same bytes with any number of workers.

Re-running into a folder that holds a corpus built with the same settings resumes it: clips already on
disk are kept (they are written atomically, so a clip file is either whole or absent), the rest are made,
and the lists are rewritten (a complete vocoder corpus is left as it is; an interrupted one is rebuilt).
A folder holding anything else, or a corpus with other settings, is an error.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechmax.features import load_audio, save_audio
from speechmax.outputs import prepare_output, write_json
from speechmax.progress import progress_bar

from .dataset import scan_corpus
from .noise import write_background_noise
from .sentences import random_text
from .speakers import Speaker, sample_speakers, speak
from .tts import EngineError, available_engines, engine_versions
from .words import BACKGROUND_NOISE_DIR, SPLITS, TESTING_LIST, VALIDATION_LIST, WORDS, clip_name, which_set

__all__ = ["CorpusSummary", "build_corpus", "build_vocoder_corpus", "corpus_stats", "CLIP_SAMPLES",
           "MAX_WORD_SECONDS"]

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
MAX_WORD_SECONDS = 0.92          # longer words are time-compressed to this, leaving room for the offset
OFFSET_RANGE = (0.2, 0.8)        # word start, as a fraction of the silence left in the 1 s clip
CLIP_LEVEL_JITTER_DB = 1.5       # per-clip level variation around the speaker's level
VOCODER_RMS_DB_RANGE = (-26.0, -16.0)
VOCODER_PEAK_DB = -1.0
VOCODER_UTTERANCES_PER_SPEAKER = 6
WORD_MARKER, VOCODER_MARKER = "corpus.json", "vocoder.json"
WORD_FORMAT, VOCODER_FORMAT = "speechmax-speech-commands-v0.02", "speechmax-vocoder-speech"


@dataclass
class CorpusSummary:
    """What a build wrote. ``failed`` lists (speaker, word or utterance, error) for clips left out."""
    out: Path
    speakers: int
    clips: int
    made: int
    seconds: float
    splits: dict
    failed: list = field(default_factory=list)

    @property
    def clips_per_s(self) -> float:
        return self.made / self.seconds if self.seconds > 0 else float("nan")


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _place_word(wave: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """Scale a peak-normalised word to its level and put it at a random offset in a 1 s clip."""
    if len(wave) > CLIP_SAMPLES:
        raise AssertionError(f"word of {len(wave)} samples escaped time compression")
    peak_db = min(level_db + rng.uniform(-CLIP_LEVEL_JITTER_DB, CLIP_LEVEL_JITTER_DB), -0.5)
    slack = CLIP_SAMPLES - len(wave)
    start = int(round(rng.uniform(*OFFSET_RANGE) * slack))
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    clip[start:start + len(wave)] = wave * np.float32(10 ** (peak_db / 20))
    return clip


def _speak_each(speaker: Speaker, texts, rngs, tmp: str, max_seconds=None):
    """Speak all texts in one batch; if the engine fails, retry one by one so one bad text costs one clip.
    Each text's praat seed is the first draw of its own generator."""
    seeds = [int(r.integers(1, 2 ** 31)) for r in rngs]
    try:
        return [(w, None) for w in speak(speaker, texts, tmp, seeds, max_seconds)]
    except EngineError:
        results = []
        for text, seed in zip(texts, seeds):
            try:
                results.append((speak(speaker, [text], tmp, [seed], max_seconds)[0], None))
            except EngineError as e:
                results.append((None, str(e)))
        return results


def _word_task(task):
    """Worker: every missing word of one speaker. Returns (speaker id, clips made, failures)."""
    out, seed, speaker, k = task
    paths = {w: out / w / clip_name(speaker.id, k) for w in WORDS}
    todo = [w for w in WORDS if not paths[w].exists()]
    if not todo:
        return speaker.id, 0, []
    made, failed = 0, []
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, 1, int(speaker.id, 16), WORDS.index(w), k]))
            for w in todo]
    with tempfile.TemporaryDirectory(prefix="speechmax-tts-") as tmp:
        results = _speak_each(speaker, todo, rngs, tmp, MAX_WORD_SECONDS)
    for word, rng, (wave, err) in zip(todo, rngs, results):
        if wave is None:
            failed.append((speaker.id, word, err))
            continue
        save_audio(paths[word], _place_word(wave, speaker.level_db, rng), SAMPLE_RATE)
        made += 1
    return speaker.id, made, failed


def _map(fn, tasks, workers: int):
    """Yield fn(task) for each task, in order, over ``workers`` processes (in-process for 1)."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    # fork: workers inherit the engine detection; they never touch torch
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(fn, tasks, chunksize=1)


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _progress(total: int, unit: str, enabled: bool, desc: str):
    return progress_bar(enabled, total=total, unit=unit, desc=desc)


def _settings(kind: str, seed: int, engines, **extra) -> dict:
    return {"format": kind, "seed": int(seed), "engines": list(engines),
            "engine_versions": engine_versions(engines), **extra}


def build_corpus(out, speakers: int, seed: int = 0, workers: int | None = None, engines=None,
                 noise_dir=None, repeats: int = 1, progress: bool = False) -> CorpusSummary:
    """Synthesise the 35 words spoken by ``speakers`` pseudo-speakers into ``out`` (v0.02 layout).

    Writes ``<word>/<speaker>_nohash_<k>.wav`` (16 kHz mono PCM16, exactly 16,000 samples) for
    k < ``repeats``, ``validation_list.txt`` and ``testing_list.txt`` (TensorFlow's hash rule, so splits
    are by speaker), ``speakers.tsv``, ``_background_noise_/`` (white, pink, brown, blue noise plus the
    recordings in ``noise_dir``) and ``corpus.json``. ``engines`` restricts the TTS engines (default: all
    installed). A repeat (k > 0) is the same speaker with its own offset and level.
    """
    speakers = _check_count("speakers", speakers)
    repeats = _check_count("repeats", repeats)
    workers = _default_workers() if workers is None else _check_count("workers", workers)
    out = Path(out)
    engines = available_engines(engines)
    settings = _settings(WORD_FORMAT, seed, engines, speakers=speakers, repeats=repeats,
                         noise_dir=str(Path(noise_dir).resolve()) if noise_dir else None)
    prepare_output(out, WORD_MARKER, settings, what="speechmax corpus", remedy="delete it to rebuild")
    write_json(out / WORD_MARKER, {"settings": settings, "complete": False})
    write_background_noise(out / BACKGROUND_NOISE_DIR, seed, noise_dir=noise_dir)
    for w in WORDS:
        (out / w).mkdir(exist_ok=True)

    roster = sample_speakers(speakers, seed, engines)
    tasks = [(out, seed, s, k) for s in roster for k in range(repeats)]
    made, failed = 0, []
    t0 = time.perf_counter()
    with _progress(len(tasks) * len(WORDS), "clip", progress, "corpus") as bar:
        for _, n, fails in _map(_word_task, tasks, workers):
            made += n
            failed += fails
            bar.update(len(WORDS))
    seconds = time.perf_counter() - t0
    if failed:
        warnings.warn(f"{len(failed)} clip(s) could not be synthesised and are left out: "
                      + "; ".join(f"{s}/{w}: {e}" for s, w, e in failed[:10])
                      + (" ..." if len(failed) > 10 else ""), stacklevel=2)

    lists = {"validation": [], "testing": []}
    counts = dict.fromkeys(SPLITS, 0)
    clips = 0
    for s in roster:
        split = which_set(s.id)
        for w in WORDS:
            for k in range(repeats):
                if (out / w / clip_name(s.id, k)).exists():
                    clips += 1
                    counts[split] += 1
                    if split in lists:
                        lists[split].append(f"{w}/{clip_name(s.id, k)}")
    (out / VALIDATION_LIST).write_text("".join(p + "\n" for p in sorted(lists["validation"])))
    (out / TESTING_LIST).write_text("".join(p + "\n" for p in sorted(lists["testing"])))
    cols = ["speaker", "split"] + Speaker.columns()[1:]
    rows = ["\t".join(cols)]
    for s in roster:
        r = {**s.row(), "split": which_set(s.id)}
        rows.append("\t".join(str(r[c]) for c in cols))
    (out / "speakers.tsv").write_text("\n".join(rows) + "\n")
    write_json(out / WORD_MARKER, {"settings": settings, "complete": True, "clips": clips,
                                    "splits": counts, "failed": len(failed)})
    return CorpusSummary(out, speakers, clips, made, seconds, counts, failed)


def _set_speech_level(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Active-speech RMS at a random natural level, peaks kept under -1 dBFS."""
    frame = 320
    n = len(wave) // frame
    if n == 0:
        return wave
    rms = np.sqrt(np.mean(wave[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    active = rms[rms > rms.max() * 10 ** (-30 / 20)]
    level = np.sqrt(np.mean(active ** 2)) + 1e-12
    gain = 10 ** (rng.uniform(*VOCODER_RMS_DB_RANGE) / 20) / level
    gain = min(gain, 10 ** (VOCODER_PEAK_DB / 20) / (np.max(np.abs(wave)) + 1e-12))
    return (wave * gain).astype(np.float32)


def _vocoder_task(task):
    """Worker: the utterances of one speaker. Returns (speaker id, [(n, seconds, text)], failures)."""
    out, seed, speaker, count = task
    folder = out / speaker.id
    folder.mkdir(exist_ok=True)
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, 2, int(speaker.id, 16), n])) for n in range(count)]
    texts = [random_text(r) for r in rngs]
    with tempfile.TemporaryDirectory(prefix="speechmax-tts-") as tmp:
        results = _speak_each(speaker, texts, rngs, tmp)
    rows, failed = [], []
    for n, (text, rng, (wave, err)) in enumerate(zip(texts, rngs, results)):
        if wave is None:
            failed.append((speaker.id, n, err))
            continue
        wave = _set_speech_level(np.pad(wave, int(0.1 * SAMPLE_RATE)), rng)  # 100 ms of silence each side
        save_audio(folder / f"{n}.wav", wave, SAMPLE_RATE)
        rows.append((n, len(wave) / SAMPLE_RATE, text))
    return speaker.id, rows, failed


def build_vocoder_corpus(out, minutes: float, seed: int = 0, workers: int | None = None, engines=None,
                         utterances_per_speaker: int = VOCODER_UTTERANCES_PER_SPEAKER,
                         progress: bool = False) -> CorpusSummary:
    """Continuous speech (random sentences) by pseudo-speakers from the same engines and voices.

    Writes ``<speaker>/<n>.wav`` (16 kHz mono PCM16, 100 ms of silence around each utterance, active
    speech at -26..-16 dBFS RMS), ``manifest.tsv`` (path, speaker, split, seconds, text; split by
    TensorFlow's hash rule on the speaker) and ``vocoder.json``. Speakers are added in order until the
    total reaches ``minutes``, so the result does not depend on the number of workers.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0 or math.isinf(minutes):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    per_speaker = _check_count("utterances_per_speaker", utterances_per_speaker)
    workers = _default_workers() if workers is None else _check_count("workers", workers)
    out = Path(out)
    engines = available_engines(engines)
    settings = _settings(VOCODER_FORMAT, seed, engines, minutes=float(minutes), utterances_per_speaker=per_speaker)
    if prepare_output(out, VOCODER_MARKER, settings, what="speechmax corpus", remedy="delete it to rebuild"):
        meta = json.loads((out / VOCODER_MARKER).read_text())
        if meta.get("complete"):
            return CorpusSummary(out, meta["speakers"], meta["utterances"], 0, 0.0, meta["splits"])
        # an interrupted build is cheap next to the word corpus: it is simply rebuilt
        for child in out.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
    write_json(out / VOCODER_MARKER, {"settings": settings, "complete": False})

    target = minutes * 60.0
    est_per_speaker = 3.5 * per_speaker  # seconds; only sizes the rounds
    total, i, rows, failed, made = 0.0, 0, [], [], 0
    t0 = time.perf_counter()
    with _progress(int(round(target)), "s", progress, "vocoder corpus") as bar:
        while total < target:
            n = max(workers, math.ceil((target - total) / est_per_speaker * 1.1))
            roster = sample_speakers(i + n, seed, engines, domain=1)[i:]
            i += n
            results = _map(_vocoder_task, [(out, seed, s, per_speaker) for s in roster], workers)
            done = False
            for sid, spk_rows, fails in results:
                if done:  # beyond the target: rounds are sized ahead, so drop the extra speakers
                    shutil.rmtree(out / sid, ignore_errors=True)
                    continue
                failed += fails
                made += len(spk_rows)
                secs = sum(r[1] for r in spk_rows)
                rows += [(f"{sid}/{m}.wav", sid, which_set(sid), sec, text) for m, sec, text in spk_rows]
                total += secs
                bar.update(min(secs, max(0.0, target - bar.n)))
                done = total >= target
    seconds = time.perf_counter() - t0
    if failed:
        warnings.warn(f"{len(failed)} utterance(s) could not be synthesised and are left out", stacklevel=2)
    lines = ["path\tspeaker\tsplit\tseconds\ttext"] + [f"{p}\t{s}\t{sp}\t{sec:.3f}\t{t}" for p, s, sp, sec, t in rows]
    (out / "manifest.tsv").write_text("\n".join(lines) + "\n")
    counts = dict.fromkeys(SPLITS, 0)
    for r in rows:
        counts[r[2]] += 1
    speakers = len({r[1] for r in rows})
    write_json(out / VOCODER_MARKER, {"settings": settings, "complete": True, "utterances": len(rows),
                                       "speakers": speakers, "seconds": round(total, 3), "splits": counts})
    return CorpusSummary(out, speakers, len(rows), made, seconds, counts, failed)


def corpus_stats(root) -> dict:
    """Counts for a v0.02-layout folder (real or built): clips per word and split, speakers, durations of a
    sample of clips, and the build settings when it is a speechmax corpus."""
    root = Path(root)
    items, extra = scan_corpus(root)
    per_word, per_split, speakers = {}, dict.fromkeys(SPLITS, 0), set()
    for it in items:
        per_word[it.word] = per_word.get(it.word, 0) + 1
        per_split[it.split] += 1
        speakers.add(it.speaker)
    rng = np.random.default_rng(0)
    sample = [items[j] for j in rng.choice(len(items), size=min(200, len(items)), replace=False)] if items else []
    lengths = []
    for it in sample:
        try:
            lengths.append(len(load_audio(root / it.path)) / SAMPLE_RATE)
        except ValueError:
            pass
    meta = root / WORD_MARKER
    return {"root": str(root), "clips": len(items), "speakers": len(speakers), "words": dict(sorted(per_word.items())),
            "splits": per_split, "unknown_folders": extra["unknown_folders"],
            "background_noise": extra["background_noise"],
            "sample_seconds": {"min": min(lengths), "mean": float(np.mean(lengths)), "max": max(lengths)} if lengths else None,
            "build": json.loads(meta.read_text()) if meta.is_file() else None}
