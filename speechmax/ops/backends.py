"""Which kernel backends run on this machine."""
from __future__ import annotations

import os
from functools import lru_cache

import torch


class BackendUnavailable(RuntimeError):
    """A backend was asked for that this machine cannot run."""


@lru_cache(maxsize=None)
def _ext():
    try:
        from speechmax import _C
    except ImportError:
        return None
    return _C


def extension():
    """The compiled ``speechmax._C`` module; a clear error if the package was installed without it."""
    ext = _ext()
    if ext is None:
        raise BackendUnavailable("speechmax._C is not built: run `make` (or `pip install -e . --no-build-isolation`)")
    return ext


def _triton_runs() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available_backends() -> dict[str, bool]:
    """{"cpu": C++ extension built, "triton": Triton can run (GPU or interpreter), "cuda": CUDA kernels + GPU}."""
    ext = _ext()
    return {
        "cpu": ext is not None,
        "triton": _triton_runs(),
        "cuda": bool(ext is not None and getattr(ext, "with_cuda", False) and torch.cuda.is_available()),
    }


def require_backend(name: str) -> None:
    avail = available_backends()
    if name not in avail:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(avail)}")
    if not avail[name]:
        running = [k for k, v in avail.items() if v] or ["none"]
        raise BackendUnavailable(f"backend {name!r} is not available on this machine; available: {', '.join(running)}")
