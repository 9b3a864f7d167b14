"""The Speech Commands v0.02 vocabulary, its two standard tasks, and the file layout rules.

Layout: one folder per word, ``<speaker>_nohash_<k>.wav``, ``validation_list.txt`` and
``testing_list.txt`` (paths relative to the root, ``word/file.wav``), ``_background_noise_/``.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = [
    "WORDS", "TASK12_WORDS", "SILENCE_LABEL", "UNKNOWN_LABEL", "BACKGROUND_NOISE_DIR", "SPLITS",
    "VALIDATION_LIST", "TESTING_LIST", "labels", "speaker_of", "which_set", "clip_name",
]

# The 35 words of v0.02, alphabetical (the order labels are numbered in for the 35-word task).
WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
    "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)
# TensorFlow's default wanted_words for the 12-class task, in its order.
TASK12_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE_LABEL, UNKNOWN_LABEL = "_silence_", "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
VALIDATION_LIST, TESTING_LIST = "validation_list.txt", "testing_list.txt"
SPLITS = ("training", "validation", "testing")

_MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1  # TensorFlow's constant (~134M)


def labels(task="35") -> tuple[str, ...]:
    """Class names in label order: the 35 words ("35"), TensorFlow's 12 ("12": ``_silence_``, ``_unknown_``, 10
    words), or a vocabulary of one's own (a sequence of words, in order; ``_unknown_`` and ``_silence_`` among
    them collect the other words and background-noise clips as in the 12-word task)."""
    if isinstance(task, str):
        if task == "35":
            return WORDS
        if task == "12":
            return (SILENCE_LABEL, UNKNOWN_LABEL) + TASK12_WORDS
        raise ValueError(f"unknown task {task!r} (expected '35', '12' or a list of words)")
    words = tuple(str(w).strip() for w in task)
    if not words or any(not w for w in words):
        raise ValueError(f"a vocabulary needs words, got {list(task)!r}")
    dupes = sorted({w for w in words if words.count(w) > 1})
    if dupes:
        raise ValueError(f"the vocabulary repeats {', '.join(dupes)}")
    if len([w for w in words if w not in (SILENCE_LABEL, UNKNOWN_LABEL)]) < 2 and UNKNOWN_LABEL not in words:
        raise ValueError(f"a vocabulary needs at least two classes, got {list(words)}")
    return words


def speaker_of(path: str | os.PathLike) -> str:
    """The speaker of a clip: the part of its name before ``_nohash_`` (Speech Commands); for a name without it,
    the folder it is in (a continuous-speech corpus keeps a folder per speaker), or its stem if no folder is given."""
    p = Path(os.fspath(path))
    if "_nohash_" in p.name or p.parent == Path("."):
        return re.sub(r"_nohash_.*$", "", p.name)
    return p.parent.name


def which_set(filename: str | os.PathLike, validation_percentage: float = 10.0,
              testing_percentage: float = 10.0) -> str:
    """TensorFlow's ``which_set``: a stable split from the sha1 of the speaker part of the name.

    All clips of one speaker land in the same split, and adding clips never moves existing ones.
    """
    hashed = hashlib.sha1(speaker_of(filename).encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (_MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def clip_name(speaker: str, k: int = 0) -> str:
    """``<speaker>_nohash_<k>.wav``."""
    return f"{speaker}_nohash_{k}.wav"
