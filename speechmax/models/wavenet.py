"""WaveNet vocoder: mu-law softmax over samples, conditioned on log-mel frames.

Per layer l with dilation d (kernel 2), residual stream x (R channels), gate G channels (G/2 tanh, G/2 sigmoid):

    h    = W_past[l] x[t-d] + W_cur[l] x[t] + b[l] + cond[l, frame(t)]     (G)
    z    = tanh(h[:G/2]) * sigmoid(h[G/2:])                               (G/2)
    skip = skip + W_skip[l] z + b_skip[l]                                 (S)
    x    = (x + W_res[l] z + b_res[l]) * sqrt(1/2)                        (R)

logits = W_out2 relu(W_out1 relu(skip) + b_out1) + b_out2, with x[t] = embed(sample[t-1]).
Conditioning: a small frame-rate conv net over the mel, then one 1x1 projection to every layer's G channels,
all at frame rate; sample t reads frame (t + hop/2) // hop (nearest, matching centred STFT frames). No tensor
of shape (batch, layers*gate, samples) is ever built.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..features import FeatureConfig, mu_law_decode
from ..ops.wavenet import RES_SCALE
from ..ops.wavenet_train import residual_stack
from ..weights import load_model_from_card, save_model


@dataclass(frozen=True)
class WaveNetConfig:
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 128
    out_channels: int = 256       # hidden width of the output head
    n_classes: int = 256          # mu-law levels
    n_layers: int = 24
    dilation_cycle: int = 6       # dilations 1, 2, ..., 2**(cycle-1), repeated
    cond_channels: int = 128
    cond_kernel: int = 3          # frame-rate conv net: two layers of this kernel
    n_mels: int = 80
    hop_length: int = 160
    # The conditioning net reads (log_mel - mel_mean) / mel_std: raw log-mel (about -11.5..3, mean -9 on the
    # corpus) saturated 92% of its first tanh layer and left the conditioning nearly unused after 1,200 steps.
    mel_mean: float = -7.0
    mel_std: float = 3.5
    # Noise shaping (LPCNet): the network models y[t] = x[t] - preemphasis * x[t-1] in mu-law and the sampled
    # y is de-emphasised after decoding, so its per-sample noise follows speech's low-pass tilt instead of
    # being white. 0 = off (cards written before this field existed load with 0: their old behaviour).
    preemphasis: float = 0.0

    def __post_init__(self):
        if self.mel_std <= 0:
            raise ValueError(f"mel_std must be positive, got {self.mel_std}")
        if self.gate_channels % 2:
            raise ValueError(f"gate_channels must be even, got {self.gate_channels}")
        if self.cond_kernel % 2 == 0:
            raise ValueError(f"cond_kernel must be odd, got {self.cond_kernel}")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"preemphasis must lie in [0, 1), got {self.preemphasis}")

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.dilation_cycle) for i in range(self.n_layers)]

    @property
    def receptive_field(self) -> int:
        return sum(self.dilations) + 1

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one sampling step (conditioning, at frame rate, amortised in)."""
        R, G, S, O, C = self.residual_channels, self.gate_channels, self.skip_channels, self.out_channels, self.n_classes
        per_layer = 2 * (2 * R * G + (G // 2) * (R + S))
        cond = 2 * self.n_layers * G * self.cond_channels / self.hop_length
        return int(self.n_layers * per_layer + 2 * (S * O + O * C) + cond)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WaveNetConfig":
        # cards written before the input normalisation existed fed the raw log-mel: identity normalisation;
        # before noise shaping existed, none (preemphasis has a default of 0 already)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"this vocoder card has settings this version of speechmax does not know "
                             f"({', '.join(sorted(unknown))}): it was written by a newer speechmax; upgrade to load it")
        return cls(**{"mel_mean": 0.0, "mel_std": 1.0, **d})


def preemphasize(wave: torch.Tensor, coef: float) -> torch.Tensor:
    """y[t] = x[t] - coef * x[t-1] along the last axis (x[-1] = 0), clipped to [-1, 1] for mu-law."""
    if coef == 0:
        return wave
    y = wave.clone()
    y[..., 1:] -= coef * wave[..., :-1]
    return y.clamp_(-1.0, 1.0)


def deemphasize(wave: np.ndarray, coef: float, zi: np.ndarray | None = None):
    """The inverse filter of :func:`preemphasize`: x[t] = y[t] + coef * x[t-1] along the last axis, float32.
    With ``zi`` (the filter state, (..., 1), zeros at the start) returns (x, final state), to continue a stream."""
    if coef == 0:
        return wave if zi is None else (wave, zi)
    from scipy.signal import lfilter

    if zi is None:
        return lfilter([1.0], [1.0, -coef], wave, axis=-1).astype(np.float32)
    x, zf = lfilter([1.0], [1.0, -coef], wave, axis=-1, zi=zi)
    return x.astype(np.float32), zf


def frame_index(n_samples: int, hop_length: int, device=None) -> torch.Tensor:
    """For each sample t of a window that starts on a frame boundary: the frame it reads, (t + hop//2) // hop."""
    return (torch.arange(n_samples, device=device) + hop_length // 2) // hop_length


def frames_needed(n_samples: int, hop_length: int) -> int:
    return (n_samples - 1 + hop_length // 2) // hop_length + 1


class CondNet(nn.Sequential):
    """The frame-rate conditioning net: normalises the log-mel, then conv -> tanh -> conv -> tanh. (The
    normalisation is config, not weights, so the state-dict layout is that of a plain Sequential.)"""

    def __init__(self, mel_mean: float, mel_std: float, *layers):
        super().__init__(*layers)
        self.mel_mean, self.mel_std = float(mel_mean), float(mel_std)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return super().forward((mel - self.mel_mean) / self.mel_std)


class WaveNet(nn.Module):
    def __init__(self, cfg: WaveNetConfig = WaveNetConfig(), feature_config: FeatureConfig = FeatureConfig()):
        super().__init__()
        if cfg.n_mels != feature_config.n_mels or cfg.hop_length != feature_config.hop_length:
            raise ValueError(f"WaveNetConfig (n_mels={cfg.n_mels}, hop={cfg.hop_length}) does not match the "
                             f"FeatureConfig (n_mels={feature_config.n_mels}, hop={feature_config.hop_length})")
        self.cfg, self.feature_config = cfg, feature_config
        R, G, S, L = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.n_layers
        k = cfg.cond_kernel
        self.cond_net = CondNet(
            cfg.mel_mean, cfg.mel_std,
            nn.Conv1d(cfg.n_mels, cfg.cond_channels, k, padding=k // 2), nn.Tanh(),
            nn.Conv1d(cfg.cond_channels, cfg.cond_channels, k, padding=k // 2), nn.Tanh())
        self.cond_proj = nn.Conv1d(cfg.cond_channels, L * G, 1)   # every layer's conditioning, at frame rate
        self.embed = nn.Embedding(cfg.n_classes, R)
        self.w_past = nn.Parameter(torch.empty(L, G, R))
        self.w_cur = nn.Parameter(torch.empty(L, G, R))
        self.b_gate = nn.Parameter(torch.zeros(L, G))
        self.w_skip = nn.Parameter(torch.empty(L, S, G // 2))
        self.b_skip = nn.Parameter(torch.zeros(L, S))
        self.w_res = nn.Parameter(torch.empty(L, R, G // 2))
        self.b_res = nn.Parameter(torch.zeros(L, R))
        self.out1 = nn.Linear(S, cfg.out_channels)
        self.out2 = nn.Linear(cfg.out_channels, cfg.n_classes)
        for w, fan_in in ((self.w_past, 2 * R), (self.w_cur, 2 * R), (self.w_skip, G // 2), (self.w_res, G // 2)):
            nn.init.normal_(w, std=1.0 / math.sqrt(fan_in))
        nn.init.normal_(self.embed.weight, std=1.0)

    def conditioning(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (batch, n_mels, frames) log-mel -> (batch, layers * gate, frames), all layers' projections."""
        return self.cond_proj(self.cond_net(mel))

    def forward(self, inputs: torch.Tensor, mel: torch.Tensor, frame_offset: int | torch.Tensor = 0) -> torch.Tensor:
        """Teacher-forced logits.

        inputs: (batch, samples) int64 mu-law classes of the *previous* samples (inputs[:, t] = sample t-1).
        mel: (batch, n_mels, frames) for the whole clip; the window's first sample sits on frame
        ``frame_offset`` (an int or a (batch,) tensor). Returns (batch, n_classes, samples).

        The residual stack runs time-major as one autograd node
        (:func:`speechmax.ops.wavenet_train.residual_stack`: matrix products and a hand-written backward, about 2x
        faster to train on CPU than :meth:`forward_ref`, equal to it within float rounding). Under ``torch.autocast(dtype=torch.bfloat16)`` (``bf16`` training) the stack's GEMMs
        take bf16 operands with fp32 accumulation (AMX / AVX512-BF16 through oneDNN where the CPU has them), while
        the residual stream, the skip sum, the gate and the weights' master copies and gradients stay fp32.
        """
        lowp = torch.is_autocast_enabled(inputs.device.type)
        if lowp and torch.get_autocast_dtype(inputs.device.type) != torch.bfloat16:
            return self.forward_ref(inputs, mel, frame_offset)     # other autocast dtypes: autocast per op
        B, T = inputs.shape
        cfg = self.cfg
        G, L, R, hop = cfg.gate_channels, cfg.n_layers, cfg.residual_channels, cfg.hop_length
        nf = frames_needed(T, hop)
        fidx = torch.arange(nf, device=inputs.device)[None] + torch.as_tensor(frame_offset, device=inputs.device).view(-1, 1)
        fidx = fidx.expand(B, nf)
        if int(fidx.max()) >= mel.shape[-1] or int(fidx.min()) < 0:
            raise ValueError(f"a window of {T} samples at frame offset {frame_offset} needs frames "
                             f"{int(fidx.min())}..{int(fidx.max())}, but the mel has {mel.shape[-1]} frames")
        cond = self.conditioning(mel)                                            # (B, L*G, F)
        cf = torch.gather(cond, 2, fidx[:, None, :].expand(B, L * G, nf))        # the window's frames only
        cf = ((cf.float() if lowp else cf).permute(2, 0, 1) + self.b_gate.reshape(1, 1, L * G)).contiguous()  # (nf, B, L*G)
        x0 = self.embed(inputs.t().reshape(-1))                                  # (T*B, R), row t*B + b
        with torch.autocast(inputs.device.type, enabled=False):
            skip = residual_stack(x0.float() if lowp else x0, cf, self.w_past, self.w_cur, self.w_skip, self.w_res, self.b_res,
                                  tuple(cfg.dilations), B, hop, torch.bfloat16 if lowp else None)
        logits = self.head(skip + self.b_skip.sum(0))                            # (T*B, C)
        return logits.view(T, B, -1).permute(1, 2, 0)

    def forward_ref(self, inputs: torch.Tensor, mel: torch.Tensor, frame_offset: int | torch.Tensor = 0) -> torch.Tensor:
        """Teacher-forced logits, the plain autograd twin of :meth:`forward` (same arguments, same result).

        inputs: (batch, samples) int64 mu-law classes of the *previous* samples (inputs[:, t] = sample t-1).
        mel: (batch, n_mels, frames) for the whole clip; the window's first sample sits on frame
        ``frame_offset`` (an int or a (batch,) tensor). Returns (batch, n_classes, samples).
        """
        B, T = inputs.shape
        cfg = self.cfg
        G, L = cfg.gate_channels, cfg.n_layers
        cond = self.conditioning(mel)                                            # (B, L*G, F)
        idx = frame_index(T, cfg.hop_length, inputs.device)[None] + torch.as_tensor(frame_offset, device=inputs.device).view(-1, 1)
        if int(idx.max()) >= mel.shape[-1]:
            raise ValueError(f"a window of {T} samples at frame offset {frame_offset} needs frame {int(idx.max())}, "
                             f"but the mel has {mel.shape[-1]} frames")
        x = self.embed(inputs).transpose(1, 2)                                   # (B, R, T)
        S = cfg.skip_channels
        skip = 0.0
        for l, d in enumerate(cfg.dilations):
            # kernel-2 dilated causal conv: tap 0 reads x[t-d] (w_past), tap 1 reads x[t] (w_cur)
            w = torch.stack([self.w_past[l], self.w_cur[l]], dim=-1)            # (G, R, 2)
            h = F.conv1d(F.pad(x, (d, 0)), w, self.b_gate[l], dilation=d)
            c = cond[:, l * G:(l + 1) * G]                                       # (B, G, F), frame rate
            h = h + torch.gather(c, 2, idx[:, None, :].expand(B, G, T))
            z = torch.tanh(h[:, :G // 2]) * torch.sigmoid(h[:, G // 2:])
            sr = F.conv1d(z, torch.cat([self.w_skip[l], self.w_res[l]])[:, :, None],
                          torch.cat([self.b_skip[l], self.b_res[l]]))
            skip = skip + sr[:, :S]
            x = (x + sr[:, S:]) * RES_SCALE
        return self.head(skip.transpose(1, 2)).transpose(1, 2)

    def decode(self, classes: torch.Tensor, zi: np.ndarray | None = None):
        """Sampled mu-law classes (..., samples) -> the float32 waveform in [-1, 1]: one table lookup (no float
        temporaries of the batch's size), then de-emphasis for a noise-shaped model. With ``zi`` (the
        de-emphasis state, (..., 1)) returns (waveform, next state), so a stream decodes piece by piece."""
        table = mu_law_decode(torch.arange(self.cfg.n_classes), self.cfg.n_classes).to(classes.device)
        wave = table[classes].cpu().numpy()
        out = deemphasize(wave, self.cfg.preemphasis, zi)
        wave, zf = out if zi is not None else (out, None)
        if self.cfg.preemphasis:
            wave = np.clip(wave, -1.0, 1.0)
        return wave if zi is None else (wave, zf)

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        """skip: (..., S) -> logits (..., n_classes)."""
        return self.out2(F.relu(self.out1(F.relu(skip))))


def save_wavenet(model: WaveNet, path, **card) -> None:
    """Write ``path.safetensors`` + card (kind "vocoder", config, feature_config, plus ``card`` fields)."""
    save_model(model, path, "vocoder", **card)


def load_wavenet(path, device="cpu") -> WaveNet:
    """Load a vocoder saved by :func:`save_wavenet`; sha256, kind and weight shapes are checked against the card."""
    return load_model_from_card(path, "vocoder", lambda card: WaveNet(WaveNetConfig.from_dict(card["config"]),
                                                                  FeatureConfig.from_dict(card["feature_config"])), device)
