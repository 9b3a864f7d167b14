"""Triton ascent step: the fused CPU kernel's algorithm (csrc/maximize_cpu.cpp) as a chain of Triton launches.

Three kernels: ``conv_kernel`` -- one convolution (or linear map) over time-major activations (batch, rows,
channels) with the whole epilogue fused: bias, residual/accumulation input, ReLU, or the backward ReLU mask,
and strided rows on either side (the decoder's polyphase upsampling convs write every other row; their
transposes read every other row); ``objective_kernel`` -- the objective at the logits and its gradient, one
program per sample; ``update_kernel`` -- the rms-normalised or Adam update in place, one program per sample.
Pooling and the hidden-unit seeds are a few torch ops between launches.

Weights come from the same :class:`~speechmax.ops.maximize.PackedMaximizer` as the other backends (batch
norm and both normalisations folded), laid out (taps, cin, cout) here. In the interpreter (TRITON_INTERPRET=1)
this runs on tiny shapes only; loads are fp32 (the interpreter's bf16 is wrong) and tl.dot is used.
"""
import torch
import triton
import triton.language as tl

BLOCK_T = 128   # rows per program: a whole layer of the default models (at most 4 * base_frames = 104 rows)


@triton.jit
def conv_kernel(x_ptr, w_ptr, b_ptr, init_ptr, mask_ptr, y_ptr, T, T_IN, CIN, COUT, PAD,
                sxb, sxt, X_STEP, X_OFF, syb, syt, Y_STEP, Y_OFF, sib, sit, smb, smt,
                TAPS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, RELU: tl.constexpr,
                HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    # Y[b, t*Y_STEP + Y_OFF, o] = epilogue(sum_{j, c} W[j, c, o] X[b, (t + j - PAD)*X_STEP + X_OFF, c]), input
    # rows outside [0, T_IN) read as zero (the convolution's padding).
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    o = tl.program_id(2) * BLOCK_O + tl.arange(0, BLOCK_O)
    acc = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
    for j in range(TAPS):
        r = t + j - PAD
        rows_ok = (r >= 0) & (r < T_IN) & (t < T)
        for c0 in range(0, CIN, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            xt = tl.load(x_ptr + b * sxb + (r * X_STEP + X_OFF)[:, None] * sxt + c[None, :],
                         mask=rows_ok[:, None] & (c < CIN)[None, :], other=0.0).to(tl.float32)
            wt = tl.load(w_ptr + (j * CIN + c)[:, None] * COUT + o[None, :],
                         mask=(c < CIN)[:, None] & (o < COUT)[None, :], other=0.0).to(tl.float32)
            acc += tl.dot(xt, wt)
    row = t * Y_STEP + Y_OFF
    ok = (t < T)[:, None] & (o < COUT)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + o, mask=o < COUT, other=0.0)[None, :]
    if HAS_INIT:
        acc += tl.load(init_ptr + b * sib + row[:, None] * sit + o[None, :], mask=ok, other=0.0)
    if RELU:   # NaN passes through (as mx::relu, csrc/maximize_math.h): tl.maximum would turn it into 0
        acc = tl.where(acc < 0.0, 0.0, acc)
    if HAS_MASK:
        m = tl.load(mask_ptr + b * smb + row[:, None] * smt + o[None, :], mask=ok, other=0.0)
        acc = tl.where(m > 0.0, acc, 0.0)
    tl.store(y_ptr + b * syb + row[:, None] * syt + o[None, :], acc, mask=ok)


@triton.jit
def objective_kernel(logits_ptr, targets_ptr, obj_ptr, dlogits_ptr, NC, PROB: tl.constexpr, BLOCK: tl.constexpr):
    # Per sample: the softmax probability of the target (PROB) or the target's logit, and its gradient at the
    # logits -- mx::class_objective in csrc/maximize_math.h.
    b = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    valid = i < NC
    logit = tl.load(logits_ptr + b * NC + i, mask=valid, other=-float("inf"))
    tgt = tl.load(targets_ptr + b)
    onehot = tl.where(i == tgt, 1.0, 0.0)
    if PROB:
        e = tl.exp(logit - tl.max(logit, axis=0))
        e = tl.where(valid, e, 0.0)
        p = e / tl.sum(e, axis=0)
        pt = tl.sum(p * onehot, axis=0)
        tl.store(obj_ptr + b, pt)
        tl.store(dlogits_ptr + b * NC + i, pt * (onehot - p), mask=valid)
    else:
        tl.store(obj_ptr + b, tl.sum(tl.where(valid, logit, 0.0) * onehot, axis=0))
        tl.store(dlogits_ptr + b * NC + i, onehot, mask=valid)


@triton.jit
def update_kernel(x_ptr, g_ptr, obj_ptr, m_ptr, v_ptr, grad_out_ptr, NVAR, lr, beta1, beta2, eps, c1, c2,
                  ADAM: tl.constexpr, UPDATE: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
                  RMS_EPS: tl.constexpr):
    # Per sample: x += lr * g / (rms(g) + RMS_EPS), or Adam; refused (objective -> NaN) when the objective or the
    # gradient is not finite -- finish_sample() in csrc/maximize_cpu.cpp.
    b = tl.program_id(0)
    base = b * NVAR
    sumsq = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(0, NVAR, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        g = tl.load(g_ptr + base + k, mask=k < NVAR, other=0.0)
        sumsq += g * g
        if WRITE_GRAD:
            tl.store(grad_out_ptr + base + k, g, mask=k < NVAR)
    ss = tl.sum(sumsq, axis=0)
    obj = tl.load(obj_ptr + b)
    ok = (obj == obj) & (tl.abs(obj) < float("inf")) & (ss == ss) & (ss < float("inf"))
    tl.store(obj_ptr + b, tl.where(ok, obj, float("nan")))
    if UPDATE:
        scale = tl.where(ok, lr / (tl.sqrt(ss / NVAR) + RMS_EPS), 0.0)
        for k0 in range(0, NVAR, BLOCK):
            k = k0 + tl.arange(0, BLOCK)
            kk = k < NVAR
            g = tl.load(g_ptr + base + k, mask=kk, other=0.0)
            x = tl.load(x_ptr + base + k, mask=kk, other=0.0)
            if ADAM:
                m = tl.load(m_ptr + base + k, mask=kk, other=0.0)
                v = tl.load(v_ptr + base + k, mask=kk, other=0.0)
                m2 = beta1 * m + (1.0 - beta1) * g
                v2 = beta2 * v + (1.0 - beta2) * g * g
                step = lr * (m2 / c1) / (tl.sqrt(v2 / c2) + eps)
                tl.store(m_ptr + base + k, tl.where(ok, m2, m), mask=kk)
                tl.store(v_ptr + base + k, tl.where(ok, v2, v), mask=kk)
                tl.store(x_ptr + base + k, tl.where(ok, x + step, x), mask=kk)
            else:
                tl.store(x_ptr + base + k, x + scale * g, mask=kk)


def _layers(packed, device):
    """name -> (weight (taps, cin, cout) fp32, bias or None, pad) for every matrix and its transpose ("name.T")."""
    cache = packed.__dict__.setdefault("_triton", {})
    if device not in cache:
        out = {}
        for name, (w, b, pad) in packed.mats.items():
            taps = w.shape[2]
            out[name] = (w.permute(2, 1, 0).contiguous().float().to(device),
                         None if b is None else b.float().to(device), pad)
            wt = w.transpose(0, 1).flip(2)
            out[name + ".T"] = (wt.permute(2, 1, 0).contiguous().float().to(device), None, taps - 1 - pad)
        cache[device] = out
    return cache[device]


def _conv(layer, x, t_in, y, T, *, x_step=1, x_off=0, y_step=1, y_off=0, relu=False, init=None, mask=None,
          bias=True):
    """Run conv_kernel: x (B, rows, channels) -> y (B, rows', cout); init / mask shaped like y."""
    w, b, pad = layer
    taps, cin, cout = w.shape
    B = x.shape[0]
    block_o = 64 if cout > 32 else 32 if cout > 16 else 16
    block_c = 32 if cin > 16 else 16
    grid = (B, triton.cdiv(T, BLOCK_T), triton.cdiv(cout, block_o))
    use_bias = bias and b is not None
    conv_kernel[grid](
        x, w, b if use_bias else w, init if init is not None else y, mask if mask is not None else y, y,
        T, t_in, cin, cout, pad, x.stride(0), x.stride(1), x_step, x_off, y.stride(0), y.stride(1), y_step, y_off,
        (init if init is not None else y).stride(0), (init if init is not None else y).stride(1),
        (mask if mask is not None else y).stride(0), (mask if mask is not None else y).stride(1),
        TAPS=taps, HAS_BIAS=use_bias, HAS_INIT=init is not None, RELU=relu, HAS_MASK=mask is not None,
        BLOCK_T=BLOCK_T, BLOCK_O=block_o, BLOCK_C=block_c)
    return y


def maximize_step_triton(packed, params, *, x, targets, objective_out, grad_out, adam_m, adam_v, rms_eps):
    """One ascent step of the packed models on x in place; ``params`` (a MaximizeParams) and the tensors as
    speechmax._C.maximize_step's; rms_eps: the rms-normalised step's epsilon."""
    p = params
    latent, L, C, C2, T0 = p.latent, p.latent_dim, p.channels, p.channels2, p.base_frames
    M, T, nb, NC = p.n_mels, p.n_frames, p.n_blocks, p.n_classes
    ch, proj = p.block_channels, p.block_proj
    objective, level, unit, lr, l2, update = p.objective, p.level, p.unit, p.lr, p.l2, p.update
    obj, grad = objective_out, grad_out
    dev, B = x.device, x.shape[0]
    if B == 0:
        return
    W = _layers(packed, dev)
    new = lambda rows, c: torch.zeros(B, rows, c, device=dev)  # noqa: E731
    if latent:
        Cp = W["fc"][0].shape[2] // T0
        h0 = _conv(W["fc"], x.view(B, 1, L), 1, new(1, T0 * Cp), 1, relu=True).view(B, T0, Cp)
        h1, h2 = new(2 * T0, C), new(4 * T0, C2)
        for ph in (0, 1):
            _conv(W[f"c1_{ph}"], h0, T0, h1, T0, y_step=2, y_off=ph, relu=True)
        for ph in (0, 1):
            _conv(W[f"c2_{ph}"], h1, 2 * T0, h2, 2 * T0, y_step=2, y_off=ph, relu=True)
        xn = _conv(W["c3"], h2, 4 * T0, new(T, M), T)
    else:
        mean, istd = packed.norm[0].to(dev), packed.norm[1].to(dev)
        xn = ((x - mean[:, None]) * istd[:, None]).transpose(1, 2).contiguous()

    acts = [_conv(W["stem"], xn, T, new(T, ch[0]), T, relu=True)]
    top = min(level, nb)
    for i in range(top):
        xin = acts[-1]
        a = _conv(W[f"b{i}_1"], xin, T, new(T, ch[i + 1]), T, relu=True)
        if proj[i]:
            y = _conv(W[f"b{i}_p"], xin, T, new(T, ch[i + 1]), T)
            _conv(W[f"b{i}_2"], a, T, y, T, relu=True, init=y)
        else:
            y = _conv(W[f"b{i}_2"], a, T, new(T, ch[i + 1]), T, relu=True, init=xin)
        acts += [a, y]
    y = acts[-1]
    if level > nb:
        pool = y.mean(1, keepdim=True)
        if level == nb + 2:
            logits = _conv(W["head"], pool, 1, new(1, NC), 1)
            dlogits = torch.empty(B, NC, device=dev)
            tg = torch.full_like(targets, unit) if objective == 2 else targets   # a unit of the logits layer
            objective_kernel[(B,)](logits, tg, obj, dlogits, NC, PROB=objective == 0, BLOCK=triton.next_power_of_2(NC))
            dpool = _conv(W["head.T"], dlogits.view(B, 1, NC), 1, new(1, ch[nb]), 1)
        else:
            obj.copy_(pool[:, 0, unit])
            dpool = torch.zeros(B, 1, ch[nb], device=dev)
            dpool[:, :, unit] = 1.0
        dc = (dpool / T).expand(B, T, ch[nb]) * (y > 0)
    else:
        obj.copy_(y[:, :, unit].mean(1))
        dc = torch.zeros_like(y)
        dc[:, :, unit] = (y[:, :, unit] > 0) / T
    dc = dc.contiguous()
    for i in reversed(range(top)):
        xprev, a = acts[2 * i], acts[2 * i + 1]
        da = _conv(W[f"b{i}_2.T"], dc, T, torch.empty_like(a), T, mask=a)
        dx = torch.empty_like(xprev)
        if proj[i]:
            _conv(W[f"b{i}_p.T"], dc, T, dx, T)
            _conv(W[f"b{i}_1.T"], da, T, dx, T, init=dx, mask=xprev)
        else:
            _conv(W[f"b{i}_1.T"], da, T, dx, T, init=dc, mask=xprev)
        dc = dx
    dxn = _conv(W["stem.T"], dc, T, new(T, M), T)

    if latent:
        dh2 = _conv(W["c3.T"], dxn, T, new(4 * T0, C2), 4 * T0, mask=h2)
        dh1 = new(2 * T0, C)
        for ph in (0, 1):
            _conv(W[f"c2_{ph}.T"], dh2, 2 * T0, dh1, 2 * T0, x_step=2, x_off=ph, init=dh1 if ph else None,
                  mask=h1 if ph else None)
        dh0 = new(T0, Cp)
        for ph in (0, 1):
            _conv(W[f"c1_{ph}.T"], dh1, T0, dh0, T0, x_step=2, x_off=ph, init=dh0 if ph else None,
                  mask=h0 if ph else None)
        g = _conv(W["fc.T"], dh0.view(B, 1, T0 * Cp), 1, new(1, L), 1).view(B, L)
        g = g - 2 * l2 * x / L
    else:
        xn_cm = xn.transpose(1, 2)
        g = ((dxn.transpose(1, 2) - 2 * l2 * xn_cm / (M * T)) * istd[:, None]).contiguous()
    adam = p.optimizer == 1
    beta1, beta2, eps = p.beta1, p.beta2, p.eps
    c1 = 1 - beta1 ** p.adam_step if adam else 1.0
    c2 = 1 - beta2 ** p.adam_step if adam else 1.0
    nvar = x[0].numel()
    update_kernel[(B,)](x, g.contiguous(), obj, adam_m if adam else x, adam_v if adam else x,
                        grad if grad is not None else x, nvar, lr, beta1, beta2, eps, c1, c2, ADAM=adam,
                        UPDATE=update, WRITE_GRAD=grad is not None, BLOCK=1024, RMS_EPS=rms_eps)
