"""Reference WaveNet sampler in PyTorch: the ring-buffer ("fast-wavenet") method, O(layers) per sample.

Every fast backend is compared with this one, draw for draw: sampling is by inverse CDF of explicit
uniforms, so the same uniforms give the same samples wherever the logits agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.wavenet import RES_SCALE, WaveNet


@dataclass
class WaveNetState:
    """Incremental-decoding state, owned by the caller and updated in place.

    buffers[l]: (batch, residual, dilation[l]) past inputs of layer l, a ring indexed by ``step % dilation``.
    prev: (batch,) int64 mu-law class of the last sample (the next step's input).
    step: samples generated so far.
    """
    buffers: list[torch.Tensor]
    prev: torch.Tensor
    step: int = 0

    @classmethod
    def zeros(cls, model: WaveNet, batch: int, device=None) -> "WaveNetState":
        cfg = model.cfg
        bufs = [torch.zeros(batch, cfg.residual_channels, d, device=device) for d in cfg.dilations]
        return cls(bufs, torch.full((batch,), cfg.n_classes // 2, dtype=torch.long, device=device))


def draw_from_logits(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Inverse-CDF draw. logits: (batch, classes), uniforms: (batch,) in [0, 1) -> (batch,) int64 classes.

    Class k is drawn when cdf[k-1] <= u < cdf[k] (cdf from softmax(logits / temperature) in fp32);
    temperature 0 means argmax.
    """
    if temperature == 0:
        return logits.argmax(-1)
    cdf = torch.cumsum(torch.softmax(logits.float() / temperature, dim=-1), dim=-1)
    return (cdf <= uniforms[:, None]).sum(-1).clamp_(max=logits.shape[-1] - 1)


def _check_mel(model: WaveNet, mel: torch.Tensor) -> torch.Tensor:
    mel = torch.as_tensor(mel, dtype=torch.float32)
    if mel.dim() == 2:
        mel = mel[None]
    if mel.dim() != 3 or mel.shape[1] != model.cfg.n_mels:
        raise ValueError(f"mel must be (n_mels={model.cfg.n_mels}, frames) or (batch, {model.cfg.n_mels}, frames), "
                         f"got shape {tuple(mel.shape)}")
    if mel.shape[-1] < 2:
        raise ValueError(f"mel must have at least 2 frames, got {mel.shape[-1]}")
    if not torch.isfinite(mel).all():
        raise ValueError("mel contains NaN or infinite values")
    return mel


def n_output_samples(n_frames: int, hop_length: int) -> int:
    """Samples generated for a mel of ``n_frames`` frames: (frames - 1) * hop (16,000 for a 1 s, 101-frame clip)."""
    return (n_frames - 1) * hop_length


@torch.no_grad()
def sample_wavenet_ref(model: WaveNet, mel: torch.Tensor, uniforms: torch.Tensor | None = None,
                       temperature: float = 1.0, *, teacher: torch.Tensor | None = None,
                       state: WaveNetState | None = None, return_logits: bool = False, generator=None,
                       progress=None):
    """Sample mu-law classes from ``model`` conditioned on ``mel``.

    mel: (n_mels, frames) or (batch, n_mels, frames) log-mel; T = (frames - 1) * hop samples are drawn.
    uniforms: (batch, T) in [0, 1); drawn from ``generator`` if None.
    teacher: (batch, T) int64 classes to feed back instead of the draws (teacher forcing); the logits then
        equal :meth:`WaveNet.forward` with ``inputs[:, t] = teacher[:, t-1]``.
    state: a :class:`WaveNetState` to continue from (updated in place); zeros if None.
    progress: optional callable(n) called after every 1,000 samples.
    Returns classes (batch, T) int64, and logits (batch, T, n_classes) if ``return_logits``.
    """
    mel = _check_mel(model, mel)
    cfg = model.cfg
    B, T = mel.shape[0], n_output_samples(mel.shape[-1], cfg.hop_length)
    G, R, S = cfg.gate_channels, cfg.residual_channels, cfg.skip_channels
    if uniforms is None:
        uniforms = torch.rand(B, T, generator=generator)
    if uniforms.shape != (B, T):
        raise ValueError(f"uniforms must be (batch, samples) = {(B, T)}, got {tuple(uniforms.shape)}")
    state = state or WaveNetState.zeros(model, B)
    cond = model.conditioning(mel).view(B, cfg.n_layers, G, -1).permute(3, 0, 1, 2)   # (F, B, L, G)
    w_gate = torch.cat([model.w_past, model.w_cur], dim=2)                              # (L, G, 2R)
    w_out = torch.cat([model.w_skip, model.w_res], dim=1)                              # (L, S+R, G/2)
    b_out = torch.cat([model.b_skip, model.b_res], dim=1)                              # (L, S+R)
    out = torch.empty(B, T, dtype=torch.long)
    logits_all = torch.empty(B, T, cfg.n_classes) if return_logits else None
    for t in range(T):
        x = model.embed(state.prev)                                                     # (B, R)
        c = cond[(t + cfg.hop_length // 2) // cfg.hop_length]
        skip = torch.zeros(B, S)
        for l, d in enumerate(cfg.dilations):
            slot = state.step % d
            past = state.buffers[l][:, :, slot].clone()
            state.buffers[l][:, :, slot] = x
            h = torch.addmm(model.b_gate[l] + c[:, l], torch.cat([past, x], 1), w_gate[l].t())
            z = torch.tanh(h[:, :G // 2]) * torch.sigmoid(h[:, G // 2:])
            sr = torch.addmm(b_out[l], z, w_out[l].t())
            skip += sr[:, :S]
            x = (x + sr[:, S:]) * RES_SCALE
        logits = model.head(skip)
        if return_logits:
            logits_all[:, t] = logits
        draw = teacher[:, t] if teacher is not None else draw_from_logits(logits, uniforms[:, t], temperature)
        out[:, t] = draw
        state.prev = draw.clone()
        state.step += 1
        if progress is not None and (t + 1) % 1000 == 0:
            progress(1000)
    return (out, logits_all) if return_logits else out
