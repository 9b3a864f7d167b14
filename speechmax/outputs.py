"""Output folders that never lose what a user made.

A command writes into ``--out`` only when the folder is new or empty, or holds a previous run of the same
command with the same settings (recorded in a marker file at the start, so an interrupted run is recognised
too) -- then it resumes; anything else is refused before any compute unless the caller passes
``overwrite``. Every file goes to a temporary name first and is renamed into place, so an interrupted run
never leaves a half-written file under a final name (and a resumed run can trust every file it finds).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


class OutputFolderError(ValueError):
    """``--out`` cannot be used: a file, or a folder holding something else than a previous run."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by it still work); on success
    it is renamed to ``path``, on an exception removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    """``json.dumps(obj)`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + "\n")


def read_marker(out: str | os.PathLike, marker: str) -> dict | None:
    """The marker ``out / marker`` as a dict, or None when it is missing or unreadable."""
    try:
        meta = json.loads((Path(out) / marker).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def prepare_output(out: str | os.PathLike, marker: str, settings: dict, *, what: str, overwrite: bool = False,
                   remedy: str = "pass --overwrite to replace it", legacy=None) -> bool:
    """Make ``out`` ready for a run of ``what`` (e.g. "speechmax maximize run") with ``settings``; True when it
    resumes a previous run with the same settings.

    Creates ``out`` when it does not exist. A non-empty folder is accepted when ``out / marker`` records the
    same settings; otherwise :class:`OutputFolderError` names the difference and ``remedy``, unless ``overwrite`` (then the
    run starts afresh and replaces the marker). ``out`` being a file is always an error. The caller writes
    the marker (:func:`write_json`) before its compute so that an interrupted run is recognised.
    ``legacy(out) -> bool`` recognises a run of the same command from before it wrote a marker (which then
    resumes, as the command did then).
    """
    out = Path(out)
    settings = json.loads(json.dumps(settings))   # compare as they read back from the marker
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(p.name != marker for p in out.iterdir()):   # a marker alone: a run that did nothing
        meta = read_marker(out, marker)
        old = meta.get("settings") if meta is not None else None
        if old == settings or (meta is None and legacy is not None and legacy(out)):
            return True
        if not overwrite:
            if meta is None or not isinstance(old, dict):
                why = f"holds files that are not a {what} ({marker} missing or unreadable)"
            else:
                diff = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                                 for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
                why = f"holds a {what} with other settings ({diff})"
            raise OutputFolderError(f"output folder {out} {why}; choose an empty or new folder, or {remedy}")
    out.mkdir(parents=True, exist_ok=True)
    return False
