"""What the packing functions of the ops share: the panel layout of the convolution kernels (maximize_step and
decoder2d read the same one), and the cache that keeps packed weights until the model's tensors change."""
from __future__ import annotations

import weakref
from typing import Callable, Hashable, Iterable

import torch

from .kernel_params import kernel_constants

__all__ = ["conv_panels", "PackCache"]


def conv_panels(w: torch.Tensor, coutp: int) -> torch.Tensor:
    """w (cout, cin, taps) -> flat float64 panels of ``conv_panel`` outputs (the last may be narrower), outputs
    zero-padded to coutp, input-major inside a panel: row j * cin + c holds the panel's outputs for tap j,
    input c -- the layout csrc/conv_cpu_isa.h and csrc/cuda/maximize.cu read."""
    cout, cin, taps = w.shape
    panel = kernel_constants().conv_panel
    wp = torch.zeros(coutp, cin, taps, dtype=torch.float64)
    wp[:cout] = w
    kmaj = wp.permute(2, 1, 0).reshape(taps * cin, coutp)
    return torch.cat([kmaj[:, p0:p0 + panel].reshape(-1) for p0 in range(0, coutp, panel)])


class PackCache:
    """Packed weights per model and variant (e.g. the weight dtype), valid while the model's tensors are the
    ones they were packed from.

    An entry is stamped with each tensor's data pointer and version counter: a tensor replaced (load_state_dict
    into new storage, ``.to()``) changes the pointer, one modified in place (an optimizer step, ``copy_``)
    bumps the version -- the counter autograd itself uses to detect in-place changes. Models are held weakly,
    so an entry goes with its model.
    """

    def __init__(self):
        self._entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @staticmethod
    def _stamp(tensors: Iterable[torch.Tensor]) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def get(self, model, variant: Hashable, tensors: Iterable[torch.Tensor], pack: Callable[[], object]):
        """The packing of ``model`` for ``variant``: the cached one while ``tensors`` are unchanged, else
        ``pack()`` (then cached)."""
        stamp = self._stamp(tensors)
        per_model = self._entries.setdefault(model, {})
        hit = per_model.get(variant)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        packed = pack()
        per_model[variant] = (stamp, packed)
        return packed

    def clear(self) -> None:
        self._entries.clear()
