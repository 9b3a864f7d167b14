"""The WaveNet gate, tanh(a) * sigmoid(b): the smallest op that proves each kernel backend end to end."""
from __future__ import annotations

import torch

from .backends import extension, require_backend


def gated_activation_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: (...), b: (...) same shape and dtype -> (...) tanh(a) * sigmoid(b)."""
    return torch.tanh(a) * torch.sigmoid(b)


def gated_activation(a: torch.Tensor, b: torch.Tensor, backend: str = "cpu") -> torch.Tensor:
    """a: (...), b: (...) same shape and dtype -> (...) tanh(a) * sigmoid(b), on ``backend`` (cpu|triton|cuda)."""
    if a.shape != b.shape:
        raise ValueError(f"gated_activation: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    require_backend(backend)
    if backend == "cpu":
        return extension().gated_activation(a, b)
    if backend == "cuda":
        return extension().gated_activation_cuda(a, b)
    from speechmax.kernels.gated import gated_activation as triton_gated

    return triton_gated(a, b)
