"""Progress bars on stderr: shown where stderr is a terminal, or everywhere once the caller asks for them
(the CLI's ``--progress``), never in a log file by accident. Library code makes its bars here."""
from __future__ import annotations

import sys

_forced: bool | None = None


def set_progress(on: bool | None) -> None:
    """True: bars even when stderr is not a terminal; False: never; None: only on a terminal (the default)."""
    global _forced
    _forced = on


def progress_enabled() -> bool:
    return _forced if _forced is not None else sys.stderr.isatty()


def progress_bar(enabled: bool = True, **kw):
    """A tqdm bar on stderr (kw as tqdm's), disabled unless ``enabled`` and :func:`progress_enabled`."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=not (enabled and progress_enabled()), dynamic_ncols=True, **kw)
