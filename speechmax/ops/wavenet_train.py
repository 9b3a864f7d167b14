"""The WaveNet residual stack for training, as one autograd node with a hand-written backward
(:func:`residual_stack`), beside its plain-autograd twin :func:`residual_stack_ref` (same arguments, same
result); tests/test_vocoder_train.py compares the two over shapes and dtypes, and the whole model's
:meth:`~speechmax.models.wavenet.WaveNet.forward` against its conv1d twin ``forward_ref``.
"""
from __future__ import annotations

import torch

from .gated import gate_backward, gate_forward
from .wavenet import RES_SCALE

__all__ = ["residual_stack", "residual_stack_ref"]


def residual_stack(x0: torch.Tensor, cf: torch.Tensor, w_past: torch.Tensor, w_cur: torch.Tensor,
                   w_skip: torch.Tensor, w_res: torch.Tensor, b_res: torch.Tensor, dilations: tuple[int, ...], B: int,
                   hop: int, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """WaveNet's residual stack, time-major: rows t * B + b.

    x0: (samples * B, R) the embedded inputs; cf: (frames, B, L * G) every layer's conditioning at frame rate,
    gate bias included (sample t reads frame (t + hop // 2) // hop); w_past, w_cur: (L, G, R); w_skip:
    (L, S, G / 2); w_res: (L, R, G / 2); b_res: (L, R). Returns the skip sum (samples * B, S) without the skip
    biases. ``gemm_dtype`` torch.bfloat16: matrix products on bf16 operands (see :class:`_ResidualStack`).
    """
    return _ResidualStack.apply(x0, cf, w_past, w_cur, w_skip, w_res, b_res, dilations, B, hop, gemm_dtype)


def residual_stack_ref(x0: torch.Tensor, cf: torch.Tensor, w_past: torch.Tensor, w_cur: torch.Tensor,
                       w_skip: torch.Tensor, w_res: torch.Tensor, b_res: torch.Tensor, dilations: tuple[int, ...],
                       B: int, hop: int, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`residual_stack` in plain torch ops, differentiated by autograd: the same shapes and result.
    ``gemm_dtype`` torch.bfloat16 rounds each product's operands to bf16, as the fused op does."""
    TB, R = x0.shape
    T, G = TB // B, w_cur.shape[1]
    lp = (lambda t: t.to(gemm_dtype).float()) if gemm_dtype is not None else (lambda t: t)   # noqa: E731
    frames = (torch.arange(T, device=x0.device) + hop // 2) // hop
    c = cf[frames]                                                       # (T, B, L * G): sample t's frame
    x, skip = x0.view(T, B, R), 0.0
    for l, d in enumerate(dilations):
        past = torch.nn.functional.pad(x, (0, 0, 0, 0, d, 0))[:T]        # x[t - d], zeros before the start
        h = c[:, :, l * G:(l + 1) * G] + lp(x) @ lp(w_cur[l]).t() + lp(past) @ lp(w_past[l]).t()
        z = torch.tanh(h[..., :G // 2]) * torch.sigmoid(h[..., G // 2:])
        skip = skip + lp(z) @ lp(w_skip[l]).t()
        if l < len(dilations) - 1:
            x = (x + lp(z) @ lp(w_res[l]).t() + b_res[l]) * RES_SCALE
    return skip.reshape(TB, -1)


def _frames_to_samples(c: torch.Tensor, hop: int, out: torch.Tensor) -> None:
    """out[t] = c[(t + hop//2) // hop] for t < len(out): c (frames, ...) -> out (samples, ...), in place."""
    T, first = out.shape[0], hop - hop // 2
    out[:first] = c[0]
    k = max(T - first, 0) // hop
    if k:
        out[first:first + k * hop].view(k, hop, *out.shape[1:]).copy_(c[1:k + 1, None].expand(k, hop, *c.shape[1:]))
    if first + k * hop < T:
        out[first + k * hop:] = c[k + 1]


def _samples_to_frames(g: torch.Tensor, nf: int, hop: int) -> torch.Tensor:
    """The adjoint of :func:`_frames_to_samples`: sums the samples of each frame, (samples, ...) -> (nf, ...)."""
    T, first = g.shape[0], hop - hop // 2
    out = g.new_zeros(nf, *g.shape[1:])
    out[0] = g[:first].sum(0)
    k = max(T - first, 0) // hop
    if k:
        out[1:k + 1] = g[first:first + k * hop].view(k, hop, *g.shape[1:]).sum(1)
    if first + k * hop < T:
        out[k + 1] = g[first + k * hop:].sum(0)
    return out


class _ResidualStack(torch.autograd.Function):
    """WaveNet's residual stack for training, time-major ((samples * batch, channels), row t*B + b, so a
    dilation d is a shift of d*B rows and every product is one GEMM on contiguous memory). Returns the skip sum
    without its biases. The last layer's residual output is never read, so it is not computed (its weights'
    gradients are zero, as in WaveNet.forward_ref). Saves x, tanh, sigmoid and the gate per layer; the
    gate's forward and backward are one pass each (:func:`~speechmax.ops.gated.gate_forward` / ``gate_backward``).

    ``gemm_dtype`` torch.bfloat16: every matrix product reads bf16 copies of its operands (fp32 accumulation
    inside the GEMM, its result added to fp32); the residual stream x, the skip sum, the gate and all returned
    gradients stay fp32. None: fp32 throughout."""

    @staticmethod
    def forward(ctx, x0, cf, w_past, w_cur, w_skip, w_res, b_res, dilations, B, hop, gemm_dtype=None):
        TB, R = x0.shape
        T, L, G = TB // B, w_cur.shape[0], w_cur.shape[1]
        lp = _Lowp(gemm_dtype)
        wp, wc, ws, wr = (lp(w) for w in (w_past, w_cur, w_skip, w_res))
        skip = x0.new_zeros(TB, w_skip.shape[1])
        saved, x = [], x0
        for l, d in enumerate(dilations):
            h = x.new_empty(TB, G)
            _frames_to_samples(cf[:, :, l * G:(l + 1) * G], hop, h.view(T, B, G))
            xl = lp(x)
            lp.addmm_(h, xl, wc[l].t())
            if d < T:
                lp.addmm_(h[d * B:], xl[:(T - d) * B], wp[l].t())
            z, t, s = gate_forward(h)
            zl = lp(z)
            lp.addmm_(skip, zl, ws[l].t())
            saved.append((xl, t, s, zl))
            if l < L - 1:
                x = lp.addmm(b_res[l], zl, wr[l].t()).add_(x).mul_(RES_SCALE)
        ctx.saved, ctx.dilations, ctx.B, ctx.hop, ctx.nf = saved, dilations, B, hop, cf.shape[0]
        ctx.gemm_dtype = gemm_dtype
        ctx.save_for_backward(w_past, w_cur, w_skip, w_res)
        return skip

    @staticmethod
    def backward(ctx, g_skip):
        w_past, w_cur, w_skip, w_res = ctx.saved_tensors
        B, hop, nf = ctx.B, ctx.hop, ctx.nf
        L, G = w_cur.shape[0], w_cur.shape[1]
        lp = _Lowp(ctx.gemm_dtype)
        wp, wc, ws, wr = (lp(w) for w in (w_past, w_cur, w_skip, w_res))
        g_skip = g_skip.contiguous()
        gs = lp(g_skip)
        TB = g_skip.shape[0]
        T = TB // B
        gw_past, gw_cur = torch.zeros_like(w_past), torch.zeros_like(w_cur)
        gw_skip, gw_res = torch.zeros_like(w_skip), torch.zeros_like(w_res)
        gb_res = w_res.new_zeros(L, w_res.shape[1])
        g_cf = g_skip.new_empty(nf, B, L * G)
        g_h = g_skip.new_empty(TB, G)
        g_x = None                                   # gradient w.r.t. the output x of layer l
        for l in range(L - 1, -1, -1):
            d = ctx.dilations[l]
            x, t, s, z = ctx.saved[l]
            g_z = lp.mm(gs, ws[l])
            lp.mm_into(gw_skip[l], gs.t(), z)
            if g_x is not None:                      # x_out = (x + W_res z + b_res) * RES_SCALE
                gx = lp(g_x)
                lp.addmm_(g_z, gx, wr[l], alpha=RES_SCALE)
                lp.mm_into(gw_res[l], gx.t(), z).mul_(RES_SCALE)
                torch.sum(g_x, 0, out=gb_res[l]).mul_(RES_SCALE)
            gate_backward(g_z, t, s, out=g_h)
            g_cf[:, :, l * G:(l + 1) * G] = _samples_to_frames(g_h.view(T, B, G), nf, hop)
            gh = lp(g_h)
            lp.mm_into(gw_cur[l], gh.t(), x)
            g_in = lp.mm(gh, wc[l]) if g_x is None else lp.addmm(g_x, gh, wc[l], beta=RES_SCALE)
            if d < T:
                lp.mm_into(gw_past[l], gh[d * B:].t(), x[:(T - d) * B])
                lp.addmm_(g_in[:(T - d) * B], gh[d * B:], wp[l])
            g_x = g_in
        ctx.saved = None
        return g_x, g_cf, gw_past, gw_cur, gw_skip, gw_res, gb_res, None, None, None, None


class _Lowp:
    """The training stack's matrix products at one precision: ``dtype`` None = fp32 in place (addmm_, out=);
    torch.bfloat16 = bf16 operands (``lp(t)`` casts once, so a tensor read by several products is converted
    once), each product's result widened and added into the fp32 destination."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.dtype is None else t.to(self.dtype)

    def mm(self, a, b) -> torch.Tensor:
        return torch.mm(a, b) if self.dtype is None else torch.mm(a, b).float()

    def addmm(self, c, a, b, beta: float = 1.0) -> torch.Tensor:
        """beta * c + a @ b as a new fp32 tensor (c broadcasts, as a bias row)."""
        return torch.addmm(c, a, b, beta=beta) if self.dtype is None else torch.mm(a, b).float().add_(c, alpha=beta)

    def mm_into(self, out, a, b) -> torch.Tensor:
        return torch.mm(a, b, out=out) if self.dtype is None else out.copy_(torch.mm(a, b))

    def addmm_(self, out, a, b, alpha: float = 1.0) -> torch.Tensor:
        return out.addmm_(a, b, alpha=alpha) if self.dtype is None else out.add_(torch.mm(a, b), alpha=alpha)
