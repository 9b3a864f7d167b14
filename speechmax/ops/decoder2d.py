"""The seed paper's 2-D decoder prior (``PriorConfig.arch == "paper"``) in the C++ kernels: decode and its
vector-Jacobian product, for latent-mode maximization through that prior.

The paper's autoencoder decodes z -> ReLU(Linear) -> an image of C0 channels -> ConvTranspose2d(4, 2, 1)
layers with ReLU between -> one channel, cropped to (n_mels, n_frames) and de-normalised. The linear layer
runs as one GEMM for the whole batch (torch), the transposed convolutions in ``speechmax._C.decoder2d_forward``
/ ``decoder2d_backward`` (csrc/decoder2d.cpp), one sample at a time with its activations in cache, instead
of batch-wide tensors between autograd ops. The twins :func:`decode2d_ref` / :func:`decode2d_vjp_ref` are
the torch module and autograd.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .backends import extension
from .kernel_params import Decoder2dParams, align_channels, to_struct
from .packing import PackCache, conv_panels


@dataclass
class PackedDecoder2d:
    """The prior's decoder laid out for the kernel.

    fc_w / fc_b: the linear layer with rows reordered channels-last (row (y W0 + x) C0 + c <- c H0 W0 + y W0 + x).
    weights: flat float32; per layer its forward matrix (C_in -> 16 kernel positions x C_out, position-major,
        then the layer's bias) and its transpose, as panels (:func:`speechmax.ops.packing.conv_panels`).
    desc: (2 layers, 6) int64 rows: weight offset, bias offset (-1: none), cin, coutp, taps, pad.
    params: the shapes (:class:`~speechmax.ops.kernel_params.Decoder2dParams`).
    affine: (2, n_mels) the prior's de-normalisation (feats = out * std + mean).
    acts: floats of intermediate activations one sample keeps for the backward.
    """
    fc_w: torch.Tensor
    fc_b: torch.Tensor
    weights: torch.Tensor
    desc: torch.Tensor
    params: Decoder2dParams
    affine: torch.Tensor
    acts: int


def decoder2d_unsupported(prior) -> str | None:
    """Why the kernel cannot run ``prior``'s decoder (a sentence), or None when it can."""
    if prior is None or prior.cfg.arch != "paper":
        return "a prior that is not the paper's 2-D autoencoder"
    dec = prior.net.dec
    convs = [m for m in dec if isinstance(m, nn.Module) and not isinstance(m, nn.ReLU)]
    acts = [m for m in dec if isinstance(m, nn.ReLU)]
    if len(acts) != len(convs) - 1 or not all(isinstance(m, nn.ConvTranspose2d) for m in convs):
        return "a decoder other than ConvTranspose2d layers with ReLU between"
    for m in convs:
        if (m.kernel_size, m.stride, m.padding, m.output_padding, m.dilation, m.groups) != \
                ((4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1) or m.bias is None:
            return "transposed convolutions other than kernel 4, stride 2, padding 1 with bias"
    chans = [convs[0].in_channels] + [m.out_channels for m in convs]
    if chans[-1] != 1 or any(c % 16 for c in chans[:-1]):
        return f"channels {chans} (the kernel covers multiples of 16 and a 1-channel output)"
    return None


PACKED = PackCache()   # pack_decoder2d's: per prior


def pack_decoder2d(prior) -> PackedDecoder2d:
    """Pack ``prior``'s decoder for the kernel; cached (:data:`PACKED`) until a parameter or buffer changes."""
    why = decoder2d_unsupported(prior)
    if why:
        raise ValueError(f"decoder2d: the kernel does not cover {why}")
    return PACKED.get(prior, None, prior.state_dict().values(), lambda: _pack(prior))


@torch.no_grad()
def _pack(prior) -> PackedDecoder2d:
    net, cfg = prior.net, prior.cfg
    C0, H0, W0 = net.map_shape
    convs = [m for m in net.dec if isinstance(m, nn.ConvTranspose2d)]
    chans = [C0] + [m.out_channels for m in convs]
    fc_w = net.dec_fc.weight.reshape(C0, H0 * W0, -1).transpose(0, 1).reshape(C0 * H0 * W0, -1).contiguous()
    fc_b = net.dec_fc.bias.reshape(C0, H0 * W0).t().reshape(-1).contiguous()
    flat, desc, off = [], [], 0
    for m in convs:
        cin, cout = m.in_channels, m.out_channels
        # (cin, cout, ky, kx) -> row k * cout + co (k = 4 ky + kx) of the forward matrix, input ci
        w = m.weight.double().permute(2, 3, 1, 0).reshape(16 * cout, cin)
        coutp = align_channels(16 * cout)
        panels = conv_panels(w[:, :, None], coutp)
        bias = torch.zeros(coutp, dtype=torch.float64)
        bias[:cout] = m.bias.double()
        desc.append([off, off + panels.numel(), cin, coutp, 1, 0])
        flat += [panels, bias]
        off += panels.numel() + coutp
        panels = conv_panels(w.t()[:, :, None], cin)
        desc.append([off, -1, 16 * cout, cin, 1, 0])
        flat.append(panels)
        off += panels.numel()
    params = Decoder2dParams(height=H0, width=W0, n_layers=len(convs), n_mels=cfg.n_mels, n_frames=cfg.n_frames,
                             channels=tuple(chans))
    acts = sum(H0 * W0 * 4 ** (i + 1) * c for i, c in enumerate(chans[1:-1]))
    return PackedDecoder2d(fc_w.float(), fc_b.float(), torch.cat(flat).float().contiguous(),
                           torch.tensor(desc, dtype=torch.int64), params,
                           torch.stack([prior.norm.std, prior.norm.mean]).float().contiguous(), acts)


def _isa(isa):
    return isa or os.environ.get("SPEECHMAX_CPU_ISA", "auto")


@torch.no_grad()
def decode2d(prior, z: torch.Tensor, *, save: bool = False, threads: int | None = None, isa: str | None = None):
    """z (batch, latent) -> log-mel (batch, n_mels, n_frames), as ``prior.decode``; with ``save`` also the
    context :func:`decode2d_vjp` needs. CPU, float32."""
    p = pack_decoder2d(prior)
    if z.dim() != 2 or z.shape[1] != prior.cfg.latent:
        raise ValueError(f"latent must be (batch, {prior.cfg.latent}), got {tuple(z.shape)}")
    if z.device.type != "cpu":
        raise ValueError("decode2d runs on the CPU; use prior.decode on other devices")
    z = z.float().contiguous()
    h0 = torch.relu(torch.addmm(p.fc_b, z, p.fc_w.t()))
    feats = torch.empty(z.shape[0], prior.cfg.n_mels, prior.cfg.n_frames)
    acts = torch.empty(z.shape[0], p.acts) if save else None
    extension().decoder2d_forward(to_struct(p.params), weights=p.weights, desc=p.desc, affine=p.affine, h0=h0,
                                  feats=feats, acts=acts, threads=int(threads or torch.get_num_threads()),
                                  isa=_isa(isa))
    return (feats, (h0, acts)) if save else feats


@torch.no_grad()
def decode2d_vjp(prior, ctx, gf: torch.Tensor, *, threads: int | None = None, isa: str | None = None):
    """The gradient at z of sum(gf * decode(z)), from the context ``decode2d(prior, z, save=True)`` returned."""
    p = pack_decoder2d(prior)
    h0, acts = ctx
    want = (h0.shape[0], prior.cfg.n_mels, prior.cfg.n_frames)
    if tuple(gf.shape) != want:
        raise ValueError(f"gf must be {want}, got {tuple(gf.shape)}")
    g_h0 = torch.empty_like(h0)
    extension().decoder2d_backward(to_struct(p.params), weights=p.weights, desc=p.desc, affine=p.affine, h0=h0,
                                   acts=acts, gf=gf.float().contiguous(), g_h0=g_h0,
                                   threads=int(threads or torch.get_num_threads()), isa=_isa(isa))
    return g_h0 @ p.fc_w


def decode2d_ref(prior, z: torch.Tensor) -> torch.Tensor:
    """The twin of :func:`decode2d`: the torch module."""
    with torch.no_grad():
        return prior.decode(z)


def decode2d_vjp_ref(prior, z: torch.Tensor, gf: torch.Tensor) -> torch.Tensor:
    """The twin of :func:`decode2d_vjp`: autograd through the torch module."""
    with torch.enable_grad():
        v = z.detach().requires_grad_(True)
        g, = torch.autograd.grad(prior.decode(v), v, grad_outputs=gf)
    return g
