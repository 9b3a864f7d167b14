"""Option values checked where they are parsed: argparse types for the numbers several commands take (threads,
seeds, batch sizes, step and epoch counts, learning rates, a temperature), so a bad value is refused by name
before anything runs or is written, with one message whichever command it was given to -- on the command line or
in a ``--config`` file."""
from __future__ import annotations

import argparse
import math


class Number:
    """An argparse ``type``: a ``base`` number (int or float) that ``ok`` accepts, else a usage error saying what
    is expected. ``base`` is what a ``--config`` file's value must be."""

    def __init__(self, base: type, ok, expected: str):
        self.base, self.ok, self.expected = base, ok, expected
        self.__name__ = base.__name__   # what argparse names in its own messages

    def __call__(self, value):
        try:
            number = self.base(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not self.ok(number):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {value!r}")
        return number


class Numbers:
    """An argparse ``type``: a comma-separated list of ``item`` values (or, from a ``--config`` file, a list of
    them), as a tuple."""

    def __init__(self, item: Number, expected: str):
        self.item, self.expected, self.base = item, expected, str
        self.__name__ = "list"

    def __call__(self, value):
        try:
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(self.item(x.strip() if isinstance(x, str) else x) for x in items)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {value!r}") from None


THREADS = Number(int, lambda v: v >= 1, "a thread count >= 1")
POSITIVE = Number(int, lambda v: v >= 1, "an integer >= 1")
SEED = Number(int, lambda v: 0 <= v < 2 ** 32, "a seed in 0 .. 2**32 - 1")   # room for the seeds derived from it
LEARNING_RATE = Number(float, lambda v: math.isfinite(v) and v > 0, "a finite learning rate > 0")
TEMPERATURE = Number(float, lambda v: math.isfinite(v) and v >= 0, "a finite temperature >= 0")
THREAD_LIST = Numbers(THREADS, "comma-separated thread counts >= 1")
POSITIVE_LIST = Numbers(POSITIVE, "comma-separated integers >= 1")
