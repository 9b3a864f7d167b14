"""Speech-command classifiers over log-mel (batch, 80, 101) -> logits (batch, n_classes).

- ``tcres`` (the default): frame-wise 1-D convolutions over time with the mel bands as channels, residual
  blocks, global average pooling. Few, wide matrix products: the shape a hand-written fused backward
  handles well (activation maximization runs through it thousands of times).
- ``cnn2d`` (the *separate* evaluation classifier): a 2-D conv net over the (mel, time) image — a different
  architecture, trained from a different seed, so agreement between the two means more than one model's quirk.
- ``paper``: the seed paper's CNN, 3 x [Conv2D 8/16/32 2x2, ReLU, MaxPool 2, Dropout 0.2] -> Dense 512/256/128.

Every model normalises its input with per-band statistics of its training set (stored buffers), and
``activations(x)`` returns the named intermediate layers for hidden-unit objectives.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..features import FeatureConfig
from ..weights import load_model_from_card, save_model


@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "tcres"            # tcres | cnn2d | paper
    n_classes: int = 35
    n_mels: int = 80
    n_frames: int = 101
    channels: tuple = (64, 64, 96, 96)   # tcres: stem + blocks; cnn2d: per stage
    kernel: int = 9
    dropout: float = 0.1
    labels: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"], d["labels"] = list(self.channels), list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        d = dict(d)
        d["channels"], d["labels"] = tuple(d.get("channels", ())), tuple(d.get("labels", ()))
        return cls(**d)


class InputNorm(nn.Module):
    """(x - mean[band]) / std[band], with the training set's statistics."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def set_stats(self, x: torch.Tensor) -> None:
        """x: (N, n_mels, frames) training features."""
        self.mean.copy_(x.mean(dim=(0, 2)))
        self.std.copy_(x.std(dim=(0, 2)).clamp_min(1e-3))

    def forward(self, x):
        return (x - self.mean[:, None]) / self.std[:, None]


class ResBlock1d(nn.Module):
    """conv(k) -> BN -> ReLU -> conv(k) -> BN, plus the input, -> ReLU. Channels in == out, stride 1."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.proj = nn.Conv1d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.proj is None else self.proj(x)))


class TCResNet(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(nn.Conv1d(cfg.n_mels, c[0], 3, padding=1, bias=False), nn.BatchNorm1d(c[0]), nn.ReLU())
        self.blocks = nn.ModuleList(ResBlock1d(a, b, cfg.kernel) for a, b in zip(c[:-1], c[1:]))
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c[-1], cfg.n_classes)

    def layers(self, x):
        h = self.stem(x)
        yield "stem", h
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            yield f"block{i + 1}", h
        pooled = h.mean(-1)
        yield "pool", pooled
        yield "logits", self.fc(self.drop(pooled))


class CNN2d(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        stages, c_in = [], 1
        for i, c in enumerate(cfg.channels):
            # the first conv halves the (mel, time) grid at once: 4x less work at the same receptive field growth
            stages.append(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                                        nn.BatchNorm2d(c), nn.ReLU()))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c_in, cfg.n_classes)

    def layers(self, x):
        h = x[:, None]
        for i, st in enumerate(self.stages):
            h = st(h)
            yield f"stage{i + 1}", h
            if i < len(self.stages) - 1:
                h = F.max_pool2d(h, 2)
        pooled = h.mean(dim=(2, 3))
        yield "pool", pooled
        yield "logits", self.fc(self.drop(pooled))


class PaperCNN(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 8, 2), nn.Conv2d(8, 16, 2), nn.Conv2d(16, 32, 2)])
        h, w = cfg.n_mels, cfg.n_frames
        for _ in range(3):
            h, w = (h - 1) // 2, (w - 1) // 2
        self.dense = nn.ModuleList([nn.Linear(32 * h * w, 512), nn.Linear(512, 256), nn.Linear(256, 128)])
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(128, cfg.n_classes)

    def layers(self, x):
        h = x[:, None]
        for i, conv in enumerate(self.convs):
            h = self.drop(F.max_pool2d(F.relu(conv(h)), 2))
            yield f"conv{i + 1}", h
        h = h.flatten(1)
        for i, d in enumerate(self.dense):
            h = F.relu(d(h))
            yield f"dense{i + 1}", h
        yield "logits", self.fc(h)


ARCHS = {"tcres": TCResNet, "cnn2d": CNN2d, "paper": PaperCNN}


class Classifier(nn.Module):
    """Any of the architectures above behind one interface; ``forward`` gives logits."""

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig(), feature_config: FeatureConfig = FeatureConfig()):
        super().__init__()
        if cfg.arch not in ARCHS:
            raise ValueError(f"unknown classifier arch {cfg.arch!r}; known: {', '.join(ARCHS)}")
        if cfg.n_mels != feature_config.n_mels:
            raise ValueError(f"classifier n_mels={cfg.n_mels} but the FeatureConfig has n_mels={feature_config.n_mels}")
        self.cfg, self.feature_config = cfg, feature_config
        self.norm = InputNorm(cfg.n_mels)
        self.net = ARCHS[cfg.arch](cfg)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3 or x.shape[1] != self.cfg.n_mels or x.shape[2] != self.cfg.n_frames:
            raise ValueError(f"classifier expects log-mel (batch, {self.cfg.n_mels}, {self.cfg.n_frames}), "
                             f"got {tuple(x.shape)}")
        return x

    def activations(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Every named layer's output for log-mel x: (batch, n_mels, n_frames); the last is "logits"."""
        return OrderedDict(self.net.layers(self.norm(self._check(x))))

    def layer_names(self) -> list[str]:
        with torch.no_grad():
            was = self.training
            self.eval()
            names = list(self.activations(torch.zeros(1, self.cfg.n_mels, self.cfg.n_frames)))
            self.train(was)
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, n_mels, n_frames) log-mel -> (batch, n_classes) logits."""
        out = None
        for _, out in self.net.layers(self.norm(self._check(x))):
            pass
        return out


PRESETS = {
    "classifier": ClassifierConfig(arch="tcres", channels=(64, 64, 96, 96), kernel=9, dropout=0.1),
    "classifier-separate": ClassifierConfig(arch="cnn2d", channels=(16, 32, 64, 128, 128), dropout=0.2),
    "classifier-paper": ClassifierConfig(arch="paper", channels=(8, 16, 32), dropout=0.2),
    # a few thousand weights: `debugbench --quick` trains six of them in seconds
    "classifier-tiny": ClassifierConfig(arch="tcres", channels=(16, 16, 16), kernel=3, dropout=0.1),
}


def save_classifier(model: Classifier, path, **card) -> None:
    """Write ``path.safetensors`` + card (kind "classifier", config, feature_config, plus ``card`` fields)."""
    save_model(model, path, "classifier", **card)


def load_classifier(path, device="cpu") -> Classifier:
    """Load a classifier saved by :func:`save_classifier` (sha256, kind and shapes checked)."""
    return load_model_from_card(path, "classifier", lambda card: Classifier(ClassifierConfig.from_dict(card["config"]),
                                                                  FeatureConfig.from_dict(card["feature_config"])), device)
