"""The machine a measurement ran on. Torch-free and at the bottom of the layers: anything may import it."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), else the platform's processor or machine name, else "unknown".

    Pieces of one long run may be measured on different machines, so timings carry it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
