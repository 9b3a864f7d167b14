"""Which kernel backends run on this machine."""
from __future__ import annotations

import importlib
import os

import torch

try:
    from speechmax import _C
except ImportError:  # installed without the C++ build: the reference paths still run
    _C = None


class BackendUnavailable(RuntimeError):
    """A backend was asked for that this machine cannot run."""


def extension_built() -> bool:
    """Whether ``speechmax._C`` is there (a cheap test, for hot paths)."""
    return _C is not None


def extension():
    """The compiled ``speechmax._C`` module; a clear error if the package was installed without it."""
    if _C is None:
        raise BackendUnavailable("speechmax._C is not built: run `make` (or `pip install -e . --no-build-isolation`)")
    return _C


def triton_kernels(name: str):
    """The Triton kernels module ``speechmax.kernels.<name>``, imported on first use."""
    # deferred: Triton is optional and heavy, and its interpreter (TRITON_INTERPRET=1) must be set before import
    return importlib.import_module(f"speechmax.kernels.{name}")


def _triton_runs() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available_backends() -> dict[str, bool]:
    """{"cpu": C++ extension built, "triton": Triton can run (GPU or interpreter), "cuda": CUDA kernels + GPU}."""
    return {
        "cpu": _C is not None,
        "triton": _triton_runs(),
        "cuda": bool(_C is not None and _C.with_cuda and torch.cuda.is_available()),
    }


def require_backend(name: str) -> None:
    avail = available_backends()
    if name not in avail:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(avail)}")
    if not avail[name]:
        running = [k for k, v in avail.items() if v] or ["none"]
        raise BackendUnavailable(f"backend {name!r} is not available on this machine; available: {', '.join(running)}")
