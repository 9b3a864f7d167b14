"""Triton WaveNet sampler: one program per batch item runs all its steps, all layers per step, with the
per-layer ring buffers in global memory (the caller's RingState) and the conditioning read at frame rate.

The per-step math is that of csrc/wavenet_step.h: gate tanh(a) * sigmoid(b), residual (x + r) * sqrt(1/2),
frame (t + hop//2) // hop, ring slot step % d, inverse-CDF draw (softmax of logits / temperature, cumulative
sum, count of cdf <= u, clamped; temperature 0 = argmax). Weights are read in the model's own layout.
"""
import torch
import triton
import triton.language as tl

from speechmax.features import mu_law_decode


@triton.jit
def wavenet_sample_kernel(
        embed_ptr, w_past_ptr, w_cur_ptr, b_gate_ptr, w_skip_ptr, b_skip_ptr, w_res_ptr, b_res_ptr,
        w1_ptr, b1_ptr, w2_ptr, b2_ptr, cond_ptr, dil_ptr, ring_off_ptr, decode_ptr,
        rings_ptr, prev_ptr, uniforms_ptr, teacher_ptr, classes_ptr, wave_ptr, logits_ptr,
        n_steps, step0, t0, n_frames, n_layers, ring_len, temperature,
        ld_u, ld_teacher, ld_classes, ld_wave, ld_logits,
        R: tl.constexpr, GH: tl.constexpr, S: tl.constexpr, O: tl.constexpr, NC: tl.constexpr, HOP: tl.constexpr,
        BR: tl.constexpr, BGH: tl.constexpr, BS: tl.constexpr, BO: tl.constexpr, BNC: tl.constexpr,
        HAS_TEACHER: tl.constexpr, HAS_WAVE: tl.constexpr, HAS_LOGITS: tl.constexpr, ARGMAX: tl.constexpr,
        RES_SCALE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BR)
    gh = tl.arange(0, BGH)
    s = tl.arange(0, BS)
    o = tl.arange(0, BO)
    k = tl.arange(0, BNC)
    G: tl.constexpr = 2 * GH
    prev = tl.load(prev_ptr + b).to(tl.int32)
    for i in range(n_steps):
        step = step0 + i
        frame = (t0 + i + HOP // 2) // HOP
        x = tl.load(embed_ptr + prev * R + r, mask=r < R, other=0.0)
        skip = tl.zeros([BS], dtype=tl.float32)
        for l in range(n_layers):
            d = tl.load(dil_ptr + l)
            ring = rings_ptr + (b * ring_len + tl.load(ring_off_ptr + l) + step % d) * R + r
            past = tl.load(ring, mask=r < R, other=0.0)
            tl.debug_barrier()  # every thread has read x[t-d] before any overwrites the slot with x[t]
            tl.store(ring, x, mask=r < R)
            # Matrix-vector products are written out inline: the interpreter re-patches the language on every
            # call of a nested @triton.jit function, which would cost more than the arithmetic.
            cond = cond_ptr + (b * n_layers * G + l * G) * n_frames + frame
            m_gr = (gh[:, None] < GH) & (r[None, :] < R)
            w_a = l * G * R + gh[:, None] * R + r[None, :]      # tanh rows; the sigmoid rows follow GH * R later
            ha = tl.sum(tl.load(w_past_ptr + w_a, mask=m_gr, other=0.0) * past[None, :]
                        + tl.load(w_cur_ptr + w_a, mask=m_gr, other=0.0) * x[None, :], axis=1)
            hb = tl.sum(tl.load(w_past_ptr + GH * R + w_a, mask=m_gr, other=0.0) * past[None, :]
                        + tl.load(w_cur_ptr + GH * R + w_a, mask=m_gr, other=0.0) * x[None, :], axis=1)
            ha += (tl.load(b_gate_ptr + l * G + gh, mask=gh < GH, other=0.0)
                   + tl.load(cond + gh * n_frames, mask=gh < GH, other=0.0))
            hb += (tl.load(b_gate_ptr + l * G + GH + gh, mask=gh < GH, other=0.0)
                   + tl.load(cond + (GH + gh) * n_frames, mask=gh < GH, other=0.0))
            z = (2.0 * tl.sigmoid(2.0 * ha) - 1.0) * tl.sigmoid(hb)   # tanh as 2 sigmoid(2a) - 1 (see gated.py)
            w_s = tl.load(w_skip_ptr + l * S * GH + s[:, None] * GH + gh[None, :],
                          mask=(s[:, None] < S) & (gh[None, :] < GH), other=0.0)
            skip += tl.sum(w_s * z[None, :], axis=1) + tl.load(b_skip_ptr + l * S + s, mask=s < S, other=0.0)
            w_r = tl.load(w_res_ptr + l * R * GH + r[:, None] * GH + gh[None, :],
                          mask=(r[:, None] < R) & (gh[None, :] < GH), other=0.0)
            x = (x + tl.sum(w_r * z[None, :], axis=1) + tl.load(b_res_ptr + l * R + r, mask=r < R, other=0.0)) * RES_SCALE
        w_1 = tl.load(w1_ptr + o[:, None] * S + s[None, :], mask=(o[:, None] < O) & (s[None, :] < S), other=0.0)
        h1 = tl.maximum(tl.sum(w_1 * tl.maximum(skip, 0.0)[None, :], axis=1)
                        + tl.load(b1_ptr + o, mask=o < O, other=0.0), 0.0)
        w_2 = tl.load(w2_ptr + k[:, None] * O + o[None, :], mask=(k[:, None] < NC) & (o[None, :] < O), other=0.0)
        logits = tl.sum(w_2 * h1[None, :], axis=1) + tl.load(b2_ptr + k, mask=k < NC, other=0.0)
        if HAS_LOGITS:
            tl.store(logits_ptr + b * ld_logits + i * NC + k, logits, mask=k < NC)
        if HAS_TEACHER:
            q = tl.load(teacher_ptr + b * ld_teacher + i).to(tl.int32)
        elif ARGMAX:
            q = tl.argmax(tl.where(k < NC, logits, float("-inf")), axis=0).to(tl.int32)
        else:
            xs = tl.where(k < NC, logits / temperature, float("-inf"))
            p = tl.exp(xs - tl.max(xs, axis=0))
            cdf = tl.cumsum((p * (1.0 / tl.sum(p, axis=0))).to(tl.float64), axis=0).to(tl.float32)
            u = tl.load(uniforms_ptr + b * ld_u + i)
            q = tl.minimum(tl.sum(((cdf <= u) & (k < NC)).to(tl.int32), axis=0), NC - 1)
        tl.store(classes_ptr + b * ld_classes + i, q.to(tl.int64))
        if HAS_WAVE:
            tl.store(wave_ptr + b * ld_wave + i, tl.load(decode_ptr + q))
        prev = q
    tl.store(prev_ptr + b, prev.to(tl.int64))


def wavenet_sample_triton(model, cond, uniforms, state, t0, temperature, teacher, classes, wave, logits, *, res_scale):
    """Advance ``state`` (a RingState, updated in place -- the caller bumps ``state.step``) by n samples.

    cond: (B, layers * gate, frames) = ``model.cond_proj(model.cond_net(mel))``, frame rate; column i reads
    frame (t0 + i + hop//2) // hop. uniforms, teacher (or None), classes, wave (or None): (B, n), rows may be
    strided; logits (B, n, n_classes) or None. res_scale: the residual update's scale (RES_SCALE of
    speechmax.ops.wavenet).
    """
    cfg = model.cfg
    B, n = uniforms.shape
    dev = uniforms.device
    f32 = lambda t: t.detach().to(device=dev, dtype=torch.float32).contiguous()  # noqa: E731
    dil = torch.tensor(cfg.dilations, dtype=torch.int64, device=dev)
    ring_off = torch.cumsum(dil, 0) - dil
    decode = mu_law_decode(torch.arange(cfg.n_classes), cfg.n_classes).to(dev)
    p2 = triton.next_power_of_2
    wavenet_sample_kernel[(B,)](
        f32(model.embed.weight), f32(model.w_past), f32(model.w_cur), f32(model.b_gate), f32(model.w_skip),
        f32(model.b_skip), f32(model.w_res), f32(model.b_res), f32(model.out1.weight), f32(model.out1.bias),
        f32(model.out2.weight), f32(model.out2.bias), f32(cond), dil, ring_off, decode,
        state.rings, state.prev, uniforms, classes if teacher is None else teacher, classes,
        classes if wave is None else wave, classes if logits is None else logits,
        n, state.step, t0, cond.shape[-1], cfg.n_layers, sum(cfg.dilations), float(temperature) or 1.0,
        uniforms.stride(0), 0 if teacher is None else teacher.stride(0), classes.stride(0),
        0 if wave is None else wave.stride(0), 0 if logits is None else logits.stride(0),
        R=cfg.residual_channels, GH=cfg.gate_channels // 2, S=cfg.skip_channels, O=cfg.out_channels,
        NC=cfg.n_classes, HOP=cfg.hop_length, BR=p2(cfg.residual_channels), BGH=p2(cfg.gate_channels // 2),
        BS=p2(cfg.skip_channels), BO=p2(cfg.out_channels), BNC=p2(cfg.n_classes),
        HAS_TEACHER=teacher is not None, HAS_WAVE=wave is not None, HAS_LOGITS=logits is not None,
        ARGMAX=temperature == 0, RES_SCALE=res_scale)
