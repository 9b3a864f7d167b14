"""The Python mirror of csrc/kernel_params.h: one frozen dataclass per kernel's params struct, the constants of
the packed layouts, and the conversion to the bound struct at the call.

Each dataclass has the struct's fields, with the same names, types and defaults (tests/test_kernel_params.py
checks the names against ``speechmax._C``). The packing functions fill the shape fields once, beside the
packed weights; a call completes the rest with :func:`dataclasses.replace`, and :func:`to_struct` hands the
result to the extension. Dataclasses rather than the bound structs themselves, because a frozen dataclass is
a value (printable, comparable, safe to keep in a cache and share between calls) and the Triton kernels read
it without the C++ extension.

The constants are read from the extension (:func:`kernel_constants`), never repeated here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

from .backends import extension

__all__ = ["MaximizeParams", "WavenetParams", "Decoder2dParams", "kernel_constants", "align_channels", "to_struct"]


@dataclass(frozen=True)
class MaximizeParams:
    """maximize_step's parameters: the packed decoder + classifier, and one ascent step on them.

    latent: x is a latent decoded by the vae's frame-wise conv decoder (latent_dim, conv1 / conv2 output
    channels, base_frames) rather than log-mel. The tcres classifier: n_mels x n_frames input, n_blocks
    residual blocks, n_classes; block_channels: the stem's output channels then each block's; block_proj:
    1 where a block has a 1x1 projection on its shortcut. The step: objective 0 prob, 1 logit, 2 unit; level 0
    stem, i block i, n_blocks + 1 pool, n_blocks + 2 logits; unit the channel; optimizer 0 rms-normalized,
    1 adam (adam_step counts this update, 1-based); update False computes only objective and gradient.
    """
    latent: bool = False
    latent_dim: int = 0
    channels: int = 0
    channels2: int = 0
    base_frames: int = 0
    n_mels: int = 0
    n_frames: int = 0
    n_blocks: int = 0
    n_classes: int = 0
    block_channels: tuple[int, ...] = ()
    block_proj: tuple[int, ...] = ()
    objective: int = 0
    level: int = 0
    unit: int = 0
    optimizer: int = 0
    lr: float = 0.1
    l2: float = 0.0
    adam_step: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    update: bool = True


@dataclass(frozen=True)
class WavenetParams:
    """wavenet_sample's parameters: the packed WaveNet (names as in WaveNetConfig, dilations per layer) and one
    call: sample i of the call is sample ``step + i`` of the caller's state and reads conditioning frame
    ``(t0 + i + hop_length // 2) // hop_length``; temperature 0 means argmax."""
    residual_channels: int = 0
    gate_channels: int = 0
    skip_channels: int = 0
    out_channels: int = 0
    n_classes: int = 0
    cond_channels: int = 0
    hop_length: int = 0
    n_layers: int = 0
    dilations: tuple[int, ...] = ()
    step: int = 0
    t0: int = 0
    temperature: float = 1.0


@dataclass(frozen=True)
class Decoder2dParams:
    """decoder2d's parameters: an image of height x width pixels and channels[0] channels, n_layers transposed
    convolutions (kernel 4, stride 2, padding 1) with channels[1:] outputs (the last is 1), cropped to
    n_mels x n_frames."""
    height: int = 0
    width: int = 0
    n_layers: int = 0
    n_mels: int = 0
    n_frames: int = 0
    channels: tuple[int, ...] = ()


@lru_cache(maxsize=None)
def kernel_constants() -> SimpleNamespace:
    """The constants of csrc/kernel_params.h and the kernels' math, as ``speechmax._C.constants()`` reports them:
    channel_align, conv_panel, wavenet_panel, bf16_k, bf16_n, desc_cols, max_conv_pad, max_blocks, max_wavenet_layers,
    max_decoder2d_layers, rms_eps, res_scale."""
    return SimpleNamespace(**extension().constants())


def align_channels(n: int) -> int:
    """n rounded up to the channel alignment of every packed matrix and activation row."""
    a = kernel_constants().channel_align
    return (n + a - 1) // a * a


def to_struct(params):
    """The bound C++ struct (``speechmax._C.<ClassName>``) with the fields of the dataclass ``params``."""
    struct = getattr(extension(), type(params).__name__)()
    for f in dataclasses.fields(params):
        setattr(struct, f.name, getattr(params, f.name))
    return struct
