"""A step of the evaluation, timed: the seconds land in metrics.json's ``timing`` under the step's name."""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__package__)   # stage lines read as the evaluation's: "speechmax.evaluate: figures ..."


class Stage:
    """Times a stage, logs it and records the seconds in ``timing``; ``advance(1)`` once it finished, if given."""

    def __init__(self, timing: dict, name: str, quiet: bool, advance=None):
        self.timing, self.name, self.quiet, self.advance = timing, name, quiet, advance

    def __enter__(self):
        self.t0 = time.perf_counter()
        if not self.quiet:
            log.info("%s ...", self.name)
        return self

    def __exit__(self, *exc):
        self.timing[self.name] = round(time.perf_counter() - self.t0, 2)
        if not self.quiet and exc[0] is None:
            log.info("%s: %.1f s", self.name, self.timing[self.name])
        if self.advance is not None and exc[0] is None:
            self.advance(1)
