"""Listening sets: loading and validating ``manifest.json`` (format in the package docstring) and
choosing each rater's trials."""
from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

NONE_WORD = "none"  # the "none / can't tell" answer
ROLES = ("test", "reference", "anchor")
CLIP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # safe in a URL path segment, never "." or ".."


@dataclass(frozen=True)
class Clip:
    id: str
    path: Path  # absolute, resolved, inside the set folder
    condition: str
    word: str | None
    role: str


@dataclass(frozen=True)
class ListeningSet:
    name: str
    root: Path
    clips: dict[str, Clip]  # by id, in manifest order
    words: tuple[str, ...]  # the answer choices of the identification question, in the order shown


def load_listening_set(set_dir) -> ListeningSet:
    """Read and check ``set_dir/manifest.json``; every error names the clip and the bad value."""
    root = Path(set_dir).resolve()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no manifest.json in listening set {root}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest_path} is not valid JSON: {e}") from None
    name = manifest.get("name") if isinstance(manifest, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{manifest_path}: 'name' must be a non-empty string, got {name!r}")
    entries = manifest.get("clips")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{manifest_path}: 'clips' must be a non-empty list")
    words = _check_words(manifest_path, manifest.get("words"))
    clips: dict[str, Clip] = {}
    for i, entry in enumerate(entries):
        clip = _check_clip(root, i, entry, words)
        if clip.id in clips:
            raise ValueError(f"{manifest_path}: clip id {clip.id!r} appears twice")
        clips[clip.id] = clip
    if words is None:   # a set from before 'words' was written: the words its clips name
        words = tuple(sorted({c.word for c in clips.values() if c.word is not None}))
    return ListeningSet(name=name, root=root, clips=clips, words=words)


def _check_words(manifest_path: Path, words) -> tuple[str, ...] | None:
    if words is None:
        return None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError(f"{manifest_path}: 'words' must be a non-empty list of non-empty strings, got {words!r}")
    if len(set(words)) < len(words) or NONE_WORD in words:
        raise ValueError(f"{manifest_path}: 'words' must not repeat a word nor hold {NONE_WORD!r} (the answer "
                         f"'none / can't tell'), got {words!r}")
    return tuple(words)


def _check_clip(root: Path, index: int, entry, words: tuple[str, ...] | None) -> Clip:
    where = f"clip #{index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {entry!r}")
    clip_id = entry.get("id")
    if not isinstance(clip_id, str) or not CLIP_ID.fullmatch(clip_id):
        raise ValueError(f"{where}: id must be 1-128 characters of A-Z a-z 0-9 _ . - starting with a letter or "
                         f"digit, got {clip_id!r}")
    where = f"clip {clip_id!r}"
    file = entry.get("file")
    if not isinstance(file, str) or not file.lower().endswith(".wav"):
        raise ValueError(f"{where}: file must be a relative path to a .wav file, got {file!r}")
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise ValueError(f"{where}: file must stay inside the set folder, got {file!r}")
    path = (root / file).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"{where}: file {file!r} resolves outside the set folder (symlink?)")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: audio file {path} does not exist")
    condition = entry.get("condition")
    if not isinstance(condition, str) or not condition:
        raise ValueError(f"{where}: condition must be a non-empty string, got {condition!r}")
    role = entry.get("role", "test")
    if role not in ROLES:
        raise ValueError(f"{where}: role must be one of {ROLES}, got {role!r}")
    word = entry.get("word")
    if word is not None and not (isinstance(word, str) and word and word != NONE_WORD and (words is None or word in words)):
        raise ValueError(f"{where}: word must be one of the set's words or null, got {word!r}")
    if role == "reference" and word is None:
        raise ValueError(f"{where}: a reference clip must name its word")
    return Clip(id=clip_id, path=path, condition=condition, word=word, role=role)


def trial_order(clips, rng: random.Random, per_rater: int | None = None,
                times_assigned: dict[str, int] | None = None) -> list[str]:
    """Clip ids for one rater: each clip at most once, every condition spread evenly over the session.

    per_rater: how many test clips one rater hears (None: all of them). They are shared equally among
    the conditions, least-assigned clips first (``times_assigned``: clip id → raters already given it),
    so that clips collect ratings evenly; references and anchors are then capped at
    ``max(2, ceil(per_rater / 10))`` each.
    """
    times_assigned = times_assigned or {}
    groups: dict[tuple[str, str], list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[(clip.role, clip.condition)].append(clip)
    if per_rater is not None:
        if per_rater < 1:
            raise ValueError(f"clips per rater must be at least 1, got {per_rater}")
        groups = _choose(groups, per_rater, rng, times_assigned)
    # Clip i of a group of n sits at (i + u) / n, u uniform: each group is spread evenly over the session.
    keyed = []
    for members in groups.values():
        members = list(members)
        rng.shuffle(members)
        n = len(members)
        keyed += [((i + rng.random()) / n, clip.id) for i, clip in enumerate(members)]
    return [clip_id for _, clip_id in sorted(keyed)]


def _choose(groups, per_rater, rng, times_assigned):
    def least_heard(members, k):
        return sorted(members, key=lambda c: (times_assigned.get(c.id, 0), rng.random()))[:k]

    def mean_heard(key):
        return sum(times_assigned.get(c.id, 0) for c in groups[key]) / len(groups[key])

    # The least-heard conditions get the remainder when per_rater does not divide evenly.
    test_keys = sorted((key for key in groups if key[0] == "test"), key=lambda key: (mean_heard(key), rng.random()))
    share, extra = divmod(per_rater, max(len(test_keys), 1))
    checks_per_role = max(2, math.ceil(per_rater / 10))
    chosen = {key: least_heard(groups[key], share + (i < extra)) for i, key in enumerate(test_keys)}
    for role in ("reference", "anchor"):
        members = [c for key, group in groups.items() if key[0] == role for c in group]
        for clip in least_heard(members, checks_per_role):
            chosen.setdefault((role, clip.condition), []).append(clip)
    return {key: members for key, members in chosen.items() if members}
