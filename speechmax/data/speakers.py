"""Pseudo-speakers: a sampled (engine, voice, variant, rate, pitch, formant shift, level) tuple named by a
hash of it, and the signal chain that turns an engine's output into that speaker's voice.

Chain for every utterance: resample to 16 kHz (soxr) -> trim silence -> praat "Change gender" (formant
shift, pitch ratio, and duration when the engine has no rate knob or a word must be compressed) ->
5 ms fades -> level. Nothing else is added: noise belongs to augmentation.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields

import numpy as np

from .tts import ENGINES, Voice, engine_voices, synthesize

__all__ = ["Speaker", "sample_speaker", "sample_speakers", "speak", "trim_silence", "change_voice",
           "ENGINE_WEIGHTS"]

SAMPLE_RATE = 16000
# Share of speakers per engine (renormalised over what is installed). espeak-ng's 8 accents x ~80 variants
# carry most of the diversity; the other engines add different synthesis methods.
ENGINE_WEIGHTS = {"espeak-ng": 0.62, "mbrola": 0.08, "flite": 0.14, "festival": 0.12, "pico2wave": 0.04}
STRETCH_RANGE = (1.0, 1.45)          # default TTS rates are ~25% faster than human single words
ESPEAK_PITCH_RANGE = (25, 75)        # espeak-ng -p, default 50
PITCH_RATIO_RANGE = (0.85, 1.2)      # praat Change gender: new median = median x ratio
FORMANT_RATIO_RANGE = (0.88, 1.14)
LEVEL_DB_RANGE = (-20.0, -1.0)       # peak level, dBFS
ESPEAK_NO_VARIANT_SHARE = 0.1        # share of espeak speakers using an accent's own voice


@dataclass(frozen=True)
class Speaker:
    """One pseudo-speaker. ``stretch`` is a duration factor (>1 slower than the engine's default)."""
    engine: str
    voice: str
    variant: str
    stretch: float
    engine_pitch: int | None
    pitch_ratio: float
    formant_ratio: float
    level_db: float

    @property
    def id(self) -> str:
        """First 8 hex digits of the sha1 of the canonical settings (like real ids, e.g. ``0a7c2a8d``)."""
        return hashlib.sha1(self.canonical().encode()).hexdigest()[:8]

    def canonical(self) -> str:
        return "|".join("" if v is None else str(v) for v in asdict(self).values())

    @property
    def base_voice(self) -> Voice:
        return Voice(self.engine, self.voice, self.variant)

    def row(self) -> dict:
        return {"speaker": self.id, **{k: ("" if v is None else v) for k, v in asdict(self).items()}}

    @classmethod
    def columns(cls) -> list[str]:
        return ["speaker"] + [f.name for f in fields(cls)]


def _log_uniform(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_speaker(rng: np.random.Generator, engines) -> Speaker:
    """Draw one speaker from the installed ``engines`` (weighted by :data:`ENGINE_WEIGHTS`)."""
    engines = [e for e in engines if engine_voices(e)]
    w = np.array([ENGINE_WEIGHTS[e] for e in engines])
    engine = engines[rng.choice(len(engines), p=w / w.sum())]
    voices = engine_voices(engine)
    if engine == "espeak-ng":
        accents = sorted({v.name for v in voices})
        variants = sorted({v.variant for v in voices} - {""})
        accent = accents[rng.integers(len(accents))]
        variant = "" if rng.random() < ESPEAK_NO_VARIANT_SHARE else variants[rng.integers(len(variants))]
        voice = Voice(engine, accent, variant)
    else:
        voice = voices[rng.integers(len(voices))]
    pitch = int(rng.integers(ESPEAK_PITCH_RANGE[0], ESPEAK_PITCH_RANGE[1] + 1)) if ENGINES[engine].sets_pitch else None
    return Speaker(engine=engine, voice=voice.name, variant=voice.variant,
                   stretch=round(float(rng.uniform(*STRETCH_RANGE)), 3), engine_pitch=pitch,
                   pitch_ratio=round(_log_uniform(rng, *PITCH_RATIO_RANGE), 3),
                   formant_ratio=round(_log_uniform(rng, *FORMANT_RATIO_RANGE), 3),
                   level_db=round(float(rng.uniform(*LEVEL_DB_RANGE)), 2))


def sample_speakers(n: int, seed: int, engines, domain: int = 0) -> list[Speaker]:
    """``n`` distinct speakers; speaker ``i`` depends only on (seed, domain, i), so a bigger ``n`` keeps
    the first ones. A (rare) repeated id is redrawn."""
    out, seen = [], set()
    for i in range(n):
        attempt = 0
        while True:
            rng = np.random.default_rng(np.random.SeedSequence([seed, domain, i, attempt]))
            s = sample_speaker(rng, engines)
            if s.id not in seen:
                break
            attempt += 1
        seen.add(s.id)
        out.append(s)
    return out


def trim_silence(wave: np.ndarray, top_db: float = 40.0, margin_s: float = 0.015,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``top_db`` below the loudest 16 ms frame, keeping a margin."""
    frame, hop = 256, 64
    if len(wave) <= frame:
        return wave
    n = 1 + (len(wave) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(wave[idx].astype(np.float64) ** 2, axis=1) + 1e-20)
    db = 20 * np.log10(rms / rms.max())
    loud = np.flatnonzero(db > -top_db)
    margin = int(margin_s * sample_rate)
    start = max(0, loud[0] * hop - margin)
    end = min(len(wave), loud[-1] * hop + frame + margin)
    return wave[start:end]


def change_voice(wave: np.ndarray, formant_ratio: float, pitch_ratio: float, duration: float, seed: int,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """praat "Change gender": formants x ``formant_ratio``, pitch median x ``pitch_ratio``, length x ``duration``.

    Praat's overlap-add draws random numbers (for unvoiced stretches), so its generator is seeded with
    ``seed`` for the call and put back to an unpredictable state afterwards.
    """
    import parselmouth
    from parselmouth.praat import call, run

    snd = parselmouth.Sound(wave.astype(np.float64), sample_rate)
    median = call(snd.to_pitch(pitch_floor=60.0, pitch_ceiling=600.0), "Get quantile", 0, 0, 0.5, "Hertz")
    new_median = float(median) * pitch_ratio if np.isfinite(median) else 0.0  # 0 = keep (unvoiced input)
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
    try:
        out = call(snd, "Change gender", 60, 600, formant_ratio, new_median, 1.0, duration)
    finally:
        run("random_initializeSafelyAndUnpredictably ()")
    y = np.asarray(out.values[0], dtype=np.float32)
    if int(out.sampling_frequency) != sample_rate:
        import soxr

        y = soxr.resample(y, out.sampling_frequency, sample_rate, "HQ").astype(np.float32)
    return y


def _fade(wave: np.ndarray, seconds: float = 0.005) -> np.ndarray:
    n = min(int(seconds * SAMPLE_RATE), len(wave) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        wave = wave.copy()
        wave[:n] *= ramp
        wave[-n:] *= ramp[::-1]
    return wave


def speak(speaker: Speaker, texts, workdir: str, seeds, max_seconds: float | None = None) -> list[np.ndarray]:
    """Each text in ``speaker``'s voice: float32 16 kHz, trimmed, at peak 0 dBFS (the caller sets the
    level). ``seeds``: one int per text for praat's generator (same seed, same samples). A result longer
    than ``max_seconds`` is time-compressed (PSOLA), never cut."""
    import soxr

    engine = ENGINES[speaker.engine]
    raw = synthesize(speaker.base_voice, texts, workdir, stretch=speaker.stretch,
                     pitch=speaker.engine_pitch)
    out = []
    for (wave, rate), seed in zip(raw, seeds):
        if rate != SAMPLE_RATE:
            wave = soxr.resample(wave, rate, SAMPLE_RATE, "HQ").astype(np.float32)
        wave = trim_silence(wave)
        duration = 1.0 if engine.sets_rate else speaker.stretch
        if max_seconds is not None:
            # Change gender's output length tracks length x duration to within a few ms; aim 2% short
            duration = min(duration, 0.98 * max_seconds * SAMPLE_RATE / len(wave))
        wave = change_voice(wave, speaker.formant_ratio, speaker.pitch_ratio, duration, seed)
        if max_seconds is not None and len(wave) > max_seconds * SAMPLE_RATE:
            wave = change_voice(wave, 1.0, 1.0, 0.98 * max_seconds * SAMPLE_RATE / len(wave), seed)
        wave = _fade(trim_silence(wave))
        peak = float(np.max(np.abs(wave)))
        out.append(wave / peak if peak > 0 else wave)
    return out
