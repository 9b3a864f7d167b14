"""Natural-speech priors over whole-clip log-mel (batch, 80, 101): decoders that map a latent code to features.

- ``vae`` (the default): a VAE whose random latents z ~ N(0, I) decode to speech-like features. The decoder is
  frame-wise 1-D convolution: z -> linear -> (C, 26 frames) -> [nearest x2 -> conv1d k5 -> ReLU] x 2 -> conv1d
  k5 -> 80 bands, cropped to 101 frames. Only linear maps, nearest upsampling, 1-D convs and ReLUs: a
  hand-written fused backward (latent maximization) keeps each sample's activations in cache through it,
  which a deep 2-D transposed-conv stack would not allow.
- ``paper``: the seed paper's deterministic conv autoencoder with a 256-d bottleneck (2-D convs).

Both work in per-band normalised units internally and return log-mel in natural units.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..features import FeatureConfig
from ..weights import load_model_from_card, save_model
from .classifier import InputNorm


@dataclass(frozen=True)
class PriorConfig:
    arch: str = "vae"           # vae | paper
    latent: int = 128
    channels: int = 192
    n_mels: int = 80
    n_frames: int = 101
    base_frames: int = 26       # decoder starts at this many frames, then x2 x2 -> 104, cropped to n_frames
    kernel: int = 5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        return cls(**d)


class ConvDecoder1d(nn.Module):
    """z: (batch, latent) -> normalised log-mel (batch, n_mels, n_frames)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        C, k = cfg.channels, cfg.kernel
        self.cfg = cfg
        self.fc = nn.Linear(cfg.latent, C * cfg.base_frames)
        self.conv1 = nn.Conv1d(C, C, k, padding=k // 2)
        self.conv2 = nn.Conv1d(C, C * 2 // 3, k, padding=k // 2)
        self.conv3 = nn.Conv1d(C * 2 // 3, cfg.n_mels, k, padding=k // 2)

    def layers(self, z):
        h = F.relu(self.fc(z)).view(z.shape[0], self.cfg.channels, self.cfg.base_frames)
        yield "fc", h
        h = F.relu(self.conv1(F.interpolate(h, scale_factor=2, mode="nearest")))
        yield "conv1", h
        h = F.relu(self.conv2(F.interpolate(h, scale_factor=2, mode="nearest")))
        yield "conv2", h
        yield "out", self.conv3(h)[..., :self.cfg.n_frames]

    def forward(self, z):
        for _, h in self.layers(z):
            pass
        return h


class ConvEncoder1d(nn.Module):
    """normalised log-mel (batch, n_mels, n_frames) -> (batch, out) features."""

    def __init__(self, cfg: PriorConfig, out: int):
        super().__init__()
        C, k = cfg.channels, cfg.kernel
        self.net = nn.Sequential(
            nn.Conv1d(cfg.n_mels, C, k, stride=2, padding=k // 2), nn.ReLU(),
            nn.Conv1d(C, C, k, stride=2, padding=k // 2), nn.ReLU(),
            nn.Conv1d(C, C, k, stride=2, padding=k // 2), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n = self.net(torch.zeros(1, cfg.n_mels, cfg.n_frames)).shape[1]
        self.fc = nn.Linear(n, out)

    def forward(self, x):
        return self.fc(self.net(x))


class VAE(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.encoder = ConvEncoder1d(cfg, 2 * cfg.latent)
        self.decoder = ConvDecoder1d(cfg)

    def encode(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 6)


class PaperAE(nn.Module):
    """The seed's deterministic autoencoder: Conv2D 16/32/16 stride 2 -> Dense 256 -> mirrored decoder."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(32, 16, 3, 2, 1), nn.ReLU())
        with torch.no_grad():
            self.map_shape = tuple(self.enc(torch.zeros(1, 1, cfg.n_mels, cfg.n_frames)).shape[1:])
        n = int(torch.tensor(self.map_shape).prod())
        self.enc_fc = nn.Linear(n, cfg.latent)
        self.dec_fc = nn.Linear(cfg.latent, n)
        self.dec = nn.Sequential(nn.ConvTranspose2d(16, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 16, 4, 2, 1),
                                 nn.ReLU(), nn.ConvTranspose2d(16, 1, 4, 2, 1))

    def encode(self, x):
        z = self.enc_fc(self.enc(x[:, None]).flatten(1))
        return z, None

    def decoder(self, z):
        h = F.relu(self.dec_fc(z)).view(z.shape[0], *self.map_shape)
        return self.dec(h)[:, 0, :self.cfg.n_mels, :self.cfg.n_frames]


class Prior(nn.Module):
    """A decoder prior over log-mel: ``decode(z)``, ``encode(x)`` -> (mu, logvar or None), ``sample(n)``."""

    def __init__(self, cfg: PriorConfig = PriorConfig(), feature_config: FeatureConfig = FeatureConfig()):
        super().__init__()
        if cfg.arch not in ("vae", "paper"):
            raise ValueError(f"unknown prior arch {cfg.arch!r}; known: vae, paper")
        if cfg.n_mels != feature_config.n_mels:
            raise ValueError(f"prior n_mels={cfg.n_mels} but the FeatureConfig has n_mels={feature_config.n_mels}")
        self.cfg, self.feature_config = cfg, feature_config
        self.norm = InputNorm(cfg.n_mels)
        self.net = VAE(cfg) if cfg.arch == "vae" else PaperAE(cfg)
        n_frames = cfg.base_frames * 4
        if cfg.arch == "vae" and n_frames < cfg.n_frames:
            raise ValueError(f"base_frames={cfg.base_frames} gives {n_frames} frames < n_frames={cfg.n_frames}")

    @property
    def is_variational(self) -> bool:
        return self.cfg.arch == "vae"

    def denormalize(self, y):
        return y * self.norm.std[:, None] + self.norm.mean[:, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (batch, latent) -> log-mel (batch, n_mels, n_frames)."""
        if z.dim() != 2 or z.shape[1] != self.cfg.latent:
            raise ValueError(f"latent must be (batch, {self.cfg.latent}), got {tuple(z.shape)}")
        return self.denormalize(self.net.decoder(z))

    def encode(self, x: torch.Tensor):
        """x: (batch, n_mels, n_frames) log-mel -> (mu (batch, latent), logvar or None)."""
        if x.dim() != 3 or x.shape[1:] != (self.cfg.n_mels, self.cfg.n_frames):
            raise ValueError(f"prior expects log-mel (batch, {self.cfg.n_mels}, {self.cfg.n_frames}), got {tuple(x.shape)}")
        return self.net.encode(self.norm(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """Decode n latents from N(0, I) (VAE) -> log-mel (n, n_mels, n_frames)."""
        z = torch.randn(n, self.cfg.latent, generator=generator)
        return self.decode(z)

    def loss(self, x: torch.Tensor, beta: float = 1.0, sigma: float = 0.35) -> tuple[torch.Tensor, dict]:
        """Per-sample loss on a batch of log-mel: Gaussian reconstruction (std ``sigma`` in normalised units)
        plus ``beta`` x KL for the VAE; mean squared error for the deterministic AE."""
        xn = self.norm(x)
        mu, logvar = self.net.encode(xn)
        if self.is_variational:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            rec = self.net.decoder(z)
            sq = ((rec - xn) ** 2).flatten(1).sum(1)
            kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
            loss = (sq / (2 * sigma ** 2) + beta * kl).mean() / xn[0].numel()
            return loss, {"mse": sq.detach().mean().item() / xn[0].numel(), "kl": kl.detach().mean().item()}
        rec = self.net.decoder(mu)
        mse = ((rec - xn) ** 2).mean()
        return mse, {"mse": mse.detach().item()}


PRESETS = {
    "prior": PriorConfig(arch="vae", latent=128, channels=192),
    "prior-paper": PriorConfig(arch="paper", latent=256),
}


def save_prior(model: Prior, path, **card) -> None:
    """Write ``path.safetensors`` + card (kind "prior", config, feature_config, plus ``card`` fields)."""
    save_model(model, path, "prior", **card)


def load_prior(path, device="cpu") -> Prior:
    """Load a prior saved by :func:`save_prior` (sha256, kind and shapes checked)."""
    return load_model_from_card(path, "prior", lambda card: Prior(PriorConfig.from_dict(card["config"]),
                                                                  FeatureConfig.from_dict(card["feature_config"])), device)
