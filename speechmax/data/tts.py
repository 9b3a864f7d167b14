"""Offline text-to-speech engines: what is installed, which voices they have, and batch synthesis.

Every engine runs as a subprocess writing WAV files into a scratch folder; results come back as
``(float32 mono wave, sample_rate)`` at the engine's own rate. Engines from Debian main (espeak-ng,
flite, festival with three voices) are what `make` installs; mbrola voices (through espeak-ng) and
pico2wave are used when present and never required.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Voice", "Engine", "ENGINES", "EngineError", "available_engines", "engine_versions", "synthesize"]

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc")
# espeak-ng variants (file names in voices/!v) that are barely intelligible: effects, robots, whispers,
# echo, extreme formants. Listened to on espeak-ng 1.51; names are compared case-insensitively.
ESPEAK_BAD_VARIANTS = frozenset(v.lower() for v in (
    "Alicia", "travis", "shelby", "kaukovalta", "Demonic", "UniRobot", "anikaRobot", "announcer", "caleb",
    "fast", "whisper", "whisperf", "Tweaky", "Mr serious", "zac", "RicishayMax", "RicishayMax2",
    "RicishayMax3", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7",
    "robosoft8",
))
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")  # awb_time only speaks clock times
FESTIVAL_VOICES = {  # festival voice -> (Debian package, path under /usr/share/festival/voices)
    "kal_diphone": ("festvox-kallpc16k", "english/kal_diphone"),
    "ked_diphone": ("festvox-kdlpc16k", "english/ked_diphone"),
    "cmu_us_slt_arctic_hts": ("festvox-us-slt-hts", "us/cmu_us_slt_arctic_hts"),
}
FESTIVAL_VOICE_DIR = "/usr/share/festival/voices"
MBROLA_DIRS = ("/usr/share/mbrola", "/usr/lib/mbrola")
PICO_LANGUAGES = ("en-US", "en-GB")
_ESPEAK_DEFAULT_WPM = 175


class EngineError(RuntimeError):
    """A TTS engine is missing, or failed on an input."""


@dataclass(frozen=True)
class Voice:
    """One base voice of an engine. ``variant`` is an espeak-ng voice variant ('' = none)."""
    engine: str
    name: str
    variant: str = ""


@dataclass(frozen=True)
class Engine:
    name: str
    package: str        # the Debian package that provides it
    executable: str
    sets_rate: bool     # whether the engine itself applies the duration stretch
    sets_pitch: bool    # whether the engine takes a pitch setting (espeak's -p 0..99)
    optional: bool      # contrib/non-free: used when present, never required


ENGINES = {
    "espeak-ng": Engine("espeak-ng", "espeak-ng", "espeak-ng", True, True, False),
    "flite": Engine("flite", "flite", "flite", True, False, False),
    "festival": Engine("festival", "festival", "festival", True, False, False),
    "mbrola": Engine("mbrola", "mbrola and mbrola-* voices (contrib/non-free)", "mbrola", True, True, True),
    "pico2wave": Engine("pico2wave", "libttspico-utils (non-free)", "pico2wave", False, False, True),
}


def _espeak_data_dir() -> str | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    return m.group(1) if m else None


def _espeak_variants() -> list[str]:
    data = _espeak_data_dir()
    if data is None:
        return []
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(data, "voices", "!v", "*")))
    # variants are addressed as "accent+name": a name with a space cannot be
    return [n for n in names if n.lower() not in ESPEAK_BAD_VARIANTS and " " not in n]


def _mbrola_voices() -> list[str]:
    """espeak-ng mbrola voices (``mb-us1``, ``mb-de1-en``...) whose mbrola database is installed."""
    data = _espeak_data_dir()
    if data is None or shutil.which("mbrola") is None:
        return []
    voices = []
    for path in sorted(glob.glob(os.path.join(data, "voices", "mb", "mb-*"))):
        name = os.path.basename(path)
        db = name.split("-")[1]
        english = name in ("mb-en1", "mb-us1", "mb-us2", "mb-us3") or name.endswith("-en")
        if english and any(os.path.exists(os.path.join(d, db, db)) or os.path.isfile(os.path.join(d, db))
                           for d in MBROLA_DIRS):
            voices.append(name)
    return voices


@lru_cache(maxsize=None)
def engine_voices(engine: str) -> tuple[Voice, ...]:
    """The usable voices of an installed engine (empty if it or all its voices are missing)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown TTS engine {engine!r} (known: {', '.join(ENGINES)})")
    if shutil.which(ENGINES[engine].executable) is None:
        return ()
    if engine == "espeak-ng":
        variants = [""] + _espeak_variants()
        return tuple(Voice(engine, a, v) for a in ESPEAK_ACCENTS for v in variants)
    if engine == "flite":
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        listed = set(out.split(":", 1)[-1].split())
        return tuple(Voice(engine, v) for v in FLITE_VOICES if v in listed)
    if engine == "festival":
        return tuple(Voice(engine, v) for v, (_, sub) in FESTIVAL_VOICES.items()
                     if os.path.isdir(os.path.join(FESTIVAL_VOICE_DIR, sub)))
    if engine == "mbrola":
        return tuple(Voice(engine, v) for v in _mbrola_voices())
    return tuple(Voice(engine, lang) for lang in PICO_LANGUAGES)


def available_engines(requested=None) -> list[str]:
    """Installed engines among ``requested`` (default: all known), each with at least one voice.

    A missing engine is reported once (a warning naming the Debian package); optional engines are only
    reported when asked for by name. Raises :class:`EngineError` when none is left.
    """
    names = list(ENGINES) if requested is None else list(dict.fromkeys(requested))
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ValueError(f"unknown TTS engine(s) {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    found = []
    for name in names:
        eng = ENGINES[name]
        if engine_voices(name):
            found.append(name)
        elif requested is not None or not eng.optional:
            warnings.warn(f"TTS engine {name} is not installed or has no voices; install the Debian package "
                          f"{eng.package} to use it", stacklevel=2)
        if name == "festival" and shutil.which("festival"):
            for voice, (package, sub) in FESTIVAL_VOICES.items():
                if not os.path.isdir(os.path.join(FESTIVAL_VOICE_DIR, sub)):
                    warnings.warn(f"festival voice {voice} is missing; install the Debian package {package}",
                                  stacklevel=2)
    if not found:
        raise EngineError("no TTS engine is available; install espeak-ng, flite or festival "
                          "(`make setup` installs all three)")
    return found


@lru_cache(maxsize=None)
def _version(engine: str) -> str:
    cmd = {"espeak-ng": ["espeak-ng", "--version"], "mbrola": ["espeak-ng", "--version"],
           "flite": ["flite", "--version"], "festival": ["festival", "--version"]}.get(engine)
    if cmd is None or shutil.which(cmd[0]) is None:
        return "unknown"
    r = subprocess.run(cmd, capture_output=True, text=True)
    text = (r.stdout + r.stderr).strip()
    m = re.search(r"(\d+\.\d+(\.\d+)?\S*)", text)
    return m.group(1) if m else text.splitlines()[0] if text else "unknown"


def engine_versions(engines) -> dict[str, str]:
    """Engine name -> version string (recorded with a corpus: same versions give the same bytes)."""
    return {e: _version(e) for e in engines}


def _read(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise EngineError(f"engine wrote an empty file {path}")
    return np.ascontiguousarray(data.mean(axis=1)), rate


def _run(cmd, what: str, **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip() if isinstance(r.stderr, bytes) else str(r.stderr).strip()
        raise EngineError(f"{what} failed (exit {r.returncode}): {err[:300]}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(voice: Voice, texts, workdir: str, stretch: float = 1.0, pitch: int | None = None):
    """Speak each text with ``voice``; returns a list of ``(wave float32, sample_rate)`` in input order.

    stretch: duration factor (>1 slower), applied by the engine when it can (``ENGINES[e].sets_rate``).
    pitch: espeak-ng / mbrola pitch 0..99 (others ignore it). Festival speaks the whole batch in one
    process because it takes ~0.2 s to start.
    """
    texts = list(texts)
    paths = [os.path.join(workdir, f"tts_{i}.wav") for i in range(len(texts))]
    if voice.engine in ("espeak-ng", "mbrola"):
        name = voice.name + (f"+{voice.variant}" if voice.variant else "")
        args = ["espeak-ng", "-v", name, "-s", str(int(round(_ESPEAK_DEFAULT_WPM / stretch)))]
        if pitch is not None:
            args += ["-p", str(int(pitch))]
        for text, path in zip(texts, paths):
            _run(args + ["-w", path, "--", text], f"espeak-ng -v {name}")
    elif voice.engine == "flite":
        for text, path in zip(texts, paths):
            _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.4f}", "-t", text,
                  "-o", path], f"flite -voice {voice.name}")
    elif voice.engine == "festival":
        if voice.name.endswith("_hts"):  # HTS ignores Duration_Stretch; hts_engine's -r is a speed factor
            rate = f"(set! hts_engine_params (append hts_engine_params (list (list \"-r\" {1 / stretch:.4f}))))"
        else:
            rate = f"(Parameter.set 'Duration_Stretch {stretch:.4f})"
        lines = [f"(voice_{voice.name})", rate]
        for text, path in zip(texts, paths):
            lines.append(f"(utt.save.wave (SynthText {_scheme_string(text)}) {_scheme_string(path)} 'riff)")
        script = os.path.join(workdir, "batch.scm")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        _run(["festival", "-b", script], f"festival voice {voice.name}")
    elif voice.engine == "pico2wave":
        for text, path in zip(texts, paths):
            _run(["pico2wave", "-l", voice.name, "-w", path, text], f"pico2wave -l {voice.name}")
    else:
        raise ValueError(f"unknown TTS engine {voice.engine!r}")
    out = []
    for text, path in zip(texts, paths):
        if not os.path.exists(path):
            raise EngineError(f"{voice.engine} voice {voice.name} wrote no audio for {text!r}")
        out.append(_read(path))
        os.remove(path)
    return out
