"""The WaveNet gate, tanh(a) * sigmoid(b): the smallest op that proves each kernel backend end to end."""
from __future__ import annotations

import torch

from .backends import extension, extension_built, require_backend, triton_kernels


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
    return triton_kernels("gated").gated_activation(a, b)


def gate_forward_ref(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h: (N, G) rows [a | b] -> (z, tanh(a), sigmoid(b)), each (N, G/2): the training gate, in torch ops."""
    half = h.shape[-1] // 2
    t, s = torch.tanh(h[:, :half]), torch.sigmoid(h[:, half:])
    return t * s, t, s


def gate_backward_ref(g_z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of :func:`gate_forward_ref` w.r.t. h: (N, G) = [g_z s (1 - t^2) | g_z t s (1 - s)]."""
    gs = g_z * s
    g_h = torch.cat([gs * (1 - t * t), gs * t * (1 - s)], 1)
    return g_h if out is None else out.copy_(g_h)


def _fused(*xs: torch.Tensor) -> bool:
    # on the training hot path (twice per layer and step): only whether the extension is built, not
    # available_backends(), which probes Triton and CUDA on every call
    return all(x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() for x in xs) \
        and extension_built()


def gate_forward(h: torch.Tensor, isa: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`gate_forward_ref` in one pass (C++, vectorized exp) for contiguous float32 CPU tensors; other
    tensors (float64, GPU) take the reference."""
    if h.dim() != 2 or h.shape[1] % 2:
        raise ValueError(f"gate_forward: h must be (rows, even gate width), got {tuple(h.shape)}")
    if not _fused(h):
        return gate_forward_ref(h)
    z, t, s = extension().gate_train_forward(h, isa)
    return z, t, s


def gate_backward(g_z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, out: torch.Tensor | None = None,
                  isa: str = "auto") -> torch.Tensor:
    """:func:`gate_backward_ref` in one pass (C++), written into ``out`` ((N, G), made if None)."""
    if out is None:
        out = g_z.new_empty(g_z.shape[0], 2 * g_z.shape[1])
    if not _fused(g_z, t, s, out):
        return gate_backward_ref(g_z, t, s, out)
    extension().gate_train_backward(g_z, t, s, out, isa)
    return out
