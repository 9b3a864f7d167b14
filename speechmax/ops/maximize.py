"""One activation-maximization ascent step, fused, beside its autograd twin :func:`ascent_step_ref`.

A step takes a batch of latents (through a prior's decoder) or of log-mel features, runs the classifier,
takes the gradient of the objective (minus the regularizers' penalties) with respect to that input, and
moves the input up the gradient in place. Both functions share one signature and one docstring of shapes:

- :func:`ascent_step_ref` -- autograd through the models as they are; any classifier, any prior, every
  objective and regularizer. The reference, and the fallback for whatever the kernels do not cover.
- :func:`ascent_step` -- the hand-written kernels: ``cpu`` (csrc/maximize_cpu.cpp, one C++ call per step:
  per sample, forward and backward through decoder and classifier with all activations in a per-thread
  scratch buffer, OpenMP over samples), ``cuda`` (csrc/cuda/maximize.cu, a thread block per sample) and
  ``triton`` (kernels/maximize.py, a GPU or the interpreter).
  They cover the shipped default architectures: the ``tcres`` classifier and the ``vae`` prior's frame-wise
  conv decoder, with batch norm, the prior's de-normalisation and the classifier's input normalisation
  folded into the weights; another prior's decoder (the paper's conv AE) runs through autograd around the
  kernel's classifier gradient. :func:`fused_unsupported` says why a configuration is not covered.

``precision="bf16"`` (CPU only) runs every product of the step in bf16 -- bf16 weights and activations, fp32
sums, fp32 latents or features, gradients and optimizer state -- on AMX tiles or by AVX512-BF16's vdpbf16ps,
where the CPU has them (:func:`bf16_isa`).

``SPEECHMAX_CPU_ISA=avx2|avx512`` forces the CPU kernel's instruction set (default: the widest here);
``SPEECHMAX_BF16_ISA=amx|avx512bf16|avx512bf16-emulated`` that of bf16 precision (default: amx where the
CPU has it, else avx512bf16; the emulation is for tests);
``SPEECHMAX_BF16_FP32=stem,b0_1,..`` keeps the named matrices (:attr:`PackedMaximizer.names`) in fp32 in bf16
precision -- how the per-layer effect on the gradient was measured (read at import);
``SPEECHMAX_MAXIMIZE_WINOGRAD=0`` makes the fp32 kernel run every convolution directly instead of by
Winograd F(3, 3).
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field, replace

import torch

from .backends import extension, extension_built, require_backend, triton_kernels
from . import decoder2d
from .kernel_params import MaximizeParams, align_channels, kernel_constants, to_struct
from .packing import PackCache, conv_panels

__all__ = ["Unit", "L2", "TotalVariation", "Jitter", "Clamp", "Diversity", "AdamState", "OPTIMIZERS", "PackedMaximizer",
           "pack_maximizer", "ascent_step", "ascent_step_ref", "fused_unsupported", "FusedUnsupported",
           "objective_code", "objective_value", "clamp_features", "classifier_feature_range", "fused_decoder",
           "PRECISIONS", "bf16_isa"]

OPTIMIZERS = ("rms-normalized", "adam")
PRECISIONS = ("fp32", "bf16")
BF16_FP32 = tuple(n for n in os.environ.get("SPEECHMAX_BF16_FP32", "").split(",") if n)
RMS_EPS = 1e-5  # the seed paper's g / (rms(g) + 1e-5); the kernels' mx::kRmsEps (tests/test_kernel_params.py)


# --- what a step climbs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """A hidden unit: channel ``index`` of the classifier layer ``layer`` (a name from
    ``classifier.layer_names()``), averaged over time (and frequency for 2-D layers)."""
    layer: str
    index: int

    def __str__(self) -> str:
        return f"unit:{self.layer}:{self.index}"


@dataclass(frozen=True)
class L2:
    """Penalty ``weight * mean(v**2)`` on the optimised input: the latent in latent mode, the classifier-
    normalised features (so the pull is toward the training set's mean spectrum) in features mode."""
    weight: float = 1e-2


@dataclass(frozen=True)
class TotalVariation:
    """Penalty ``time * mean|x[:, t+1] - x[:, t]| + freq * mean|x[f+1] - x[f]|`` on the log-mel features."""
    time: float = 1e-2
    freq: float = 1e-2


@dataclass(frozen=True)
class Jitter:
    """Each step, shift the features by a random whole number of frames in [-frames, frames] (circularly)
    before the classifier, so the result cannot depend on exact frame positions."""
    frames: int = 4


@dataclass(frozen=True)
class Diversity:
    """Penalty ``weight * mean_j cos(f_i, f_j)`` over the other starts j of the same target in the batch (f: the
    log-mel the classifier sees, each centred on its own mean), so one target's starts climb apart instead of to
    one answer (lucent's diversity objective, on the features)."""
    weight: float = 1e-1


@dataclass(frozen=True)
class Clamp:
    """Keep the features inside the training data's range: ``low``/``high`` are (n_mels,) per-band bounds or
    scalars; None on both takes the classifier's (``classifier_feature_range``). Features mode projects after
    every step; latent mode clamps the decoded features before the classifier."""
    low: object = None
    high: object = None


@dataclass
class AdamState:
    """Adam's per-sample moments, shaped like the input, owned by the caller and updated in place.
    ``step`` counts the updates taken so far (the bias correction of the next one uses step + 1)."""
    m: torch.Tensor
    v: torch.Tensor
    step: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def zeros_like(cls, x: torch.Tensor, **kw) -> "AdamState":
        return cls(torch.zeros_like(x), torch.zeros_like(x), **kw)


def classifier_feature_range(classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band (low, high) bounds of the classifier's training features: the card's ``feature_range`` when
    the trainer stored one, else the log floor below and the band's mean + 4 std above (the stored input
    statistics; log-mel is bounded below by log(log_floor) exactly)."""
    card = getattr(classifier, "card", None) or {}
    rng = card.get("feature_range")
    if rng:
        return torch.as_tensor(rng["low"], dtype=torch.float32), torch.as_tensor(rng["high"], dtype=torch.float32)
    norm = classifier.norm
    low = torch.full_like(norm.mean, classifier.feature_config.log_min)
    return low, norm.mean + 4 * norm.std


def objective_code(classifier, objective) -> tuple[int, int, int]:
    """(kind, level, index) of an objective for the kernels: kind 0 prob, 1 logit, 2 unit; level 0 = stem,
    i = block i, nb + 1 = pool, nb + 2 = logits. Errors name the valid layers and channel counts."""
    acts = _layer_widths(classifier)
    names = list(acts)
    if objective in ("prob", "logit"):
        return (0 if objective == "prob" else 1), len(names) - 1, 0
    if not isinstance(objective, Unit):
        raise ValueError(f"unknown objective {objective!r}; expected 'prob', 'logit' or Unit(layer, index)")
    if objective.layer not in acts:
        raise ValueError(f"unknown layer {objective.layer!r} for a unit objective; layers: {', '.join(names)}")
    width = acts[objective.layer]
    if not 0 <= objective.index < width:
        raise ValueError(f"layer {objective.layer!r} has {width} channels; unit index {objective.index} is out of range")
    return 2, names.index(objective.layer), objective.index


_LAYER_WIDTHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # classifier -> {layer: channels}


def _layer_widths(classifier) -> dict[str, int]:
    if classifier not in _LAYER_WIDTHS:
        with torch.no_grad():
            was = classifier.training
            classifier.eval()
            acts = classifier.activations(torch.zeros(1, classifier.cfg.n_mels, classifier.cfg.n_frames))
            classifier.train(was)
        _LAYER_WIDTHS[classifier] = {k: int(v.shape[1]) for k, v in acts.items()}
    return _LAYER_WIDTHS[classifier]


# --- the reference -----------------------------------------------------------------------------------------

def objective_value(classifier, feats, targets, objective):
    """feats: (batch, n_mels, n_frames), targets: (batch,) -> (batch,) the objective (differentiable)."""
    if objective in ("prob", "logit"):
        logits = classifier(feats)
        if objective == "prob":
            logits = torch.softmax(logits, -1)
        return logits.gather(1, targets[:, None])[:, 0]
    a = classifier.activations(feats)[objective.layer][:, objective.index]
    return a.flatten(1).mean(1) if a.dim() > 1 else a


def _jitter(feats, shifts):
    T = feats.shape[-1]
    idx = (torch.arange(T, device=feats.device)[None] - shifts.to(feats.device)[:, None]) % T
    return feats.gather(2, idx[:, None].expand(-1, feats.shape[1], -1))


def _bounds(classifier, clamp: Clamp):
    if clamp.low is None and clamp.high is None:
        lo, hi = classifier_feature_range(classifier)
    else:
        lo, hi = clamp.low, clamp.high
    dev = classifier.norm.mean.device
    band = lambda b: None if b is None else torch.as_tensor(b, dtype=torch.float32, device=dev).reshape(-1, 1)  # noqa: E731
    return band(lo), band(hi)


def _check_step(classifier, prior, x, targets, optimizer, state, lr):
    for m in (classifier, prior):
        if m is not None and m.training:
            raise ValueError("ascent steps need models in eval mode (batch norm would mix the samples)")
    if prior is not None:
        if x.dim() != 2 or x.shape[1] != prior.cfg.latent:
            raise ValueError(f"latent mode: x must be (batch, {prior.cfg.latent}), got {tuple(x.shape)}")
    elif x.dim() != 3 or x.shape[1:] != (classifier.cfg.n_mels, classifier.cfg.n_frames):
        raise ValueError(f"features mode: x must be (batch, {classifier.cfg.n_mels}, {classifier.cfg.n_frames}) "
                         f"log-mel, got {tuple(x.shape)}")
    if targets.shape != (x.shape[0],):
        raise ValueError(f"targets must be ({x.shape[0]},), got {tuple(targets.shape)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    if optimizer == "adam" and state is None:
        raise ValueError("optimizer 'adam' needs its state: pass state=AdamState.zeros_like(x)")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")


def ascent_step_ref(classifier, prior, x, targets, *, objective="prob", optimizer="rms-normalized", lr=0.1,
                    state: AdamState | None = None, regularizers=(), shifts=None, update=True, return_grad=False):
    """One ascent step on x, in place (autograd reference).

    classifier: a :class:`~speechmax.models.classifier.Classifier` in eval mode.
    prior: a :class:`~speechmax.models.prior.Prior` in eval mode (latent mode) or None (features mode).
    x: (batch, latent) latents, or (batch, n_mels, n_frames) log-mel when prior is None; float32, updated in
        place (unless ``update`` is False).
    targets: (batch,) int64 class indices (read by "prob" and "logit"; Unit objectives ignore them).
    objective: "prob" (softmax probability of the target), "logit", or :class:`Unit`.
    optimizer: "rms-normalized" (x += lr * g / (rms(g) + 1e-5), rms per sample) or "adam" (``state``, an
        :class:`AdamState` shaped like x, updated in place; the caller counts nothing, ``state.step`` += 1).
    regularizers: any of :class:`L2`, :class:`TotalVariation`, :class:`Jitter` (needs ``shifts``: (batch,)
        int64 frames), :class:`Clamp`, :class:`Diversity` (couples the samples of one target in the batch).
    Returns the (batch,) objective at x before the step -- NaN for a sample whose objective or gradient is
    not finite, which is then left unchanged -- and with ``return_grad`` also g: the gradient of objective
    minus penalties, shaped like x.
    """
    _check_step(classifier, prior, x, targets, optimizer, state, lr)
    objective_code(classifier, objective)
    clamp = next((r for r in regularizers if isinstance(r, Clamp)), None)
    with torch.enable_grad():
        v = x.detach().clone().requires_grad_(True)
        feats = prior.decode(v) if prior is not None else v
        penalty = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for r in regularizers:
            if isinstance(r, TotalVariation):
                penalty = penalty + r.time * (feats[:, :, 1:] - feats[:, :, :-1]).abs().flatten(1).mean(1)
                penalty = penalty + r.freq * (feats[:, 1:] - feats[:, :-1]).abs().flatten(1).mean(1)
            elif isinstance(r, L2):
                u = v if prior is not None else classifier.norm(v)
                penalty = penalty + r.weight * u.pow(2).flatten(1).mean(1)
            elif isinstance(r, Diversity):
                penalty = penalty + r.weight * _similarity_to_same_target(feats, targets)
        seen = feats
        if clamp is not None and prior is not None:
            seen = torch.clamp(seen, *_bounds(classifier, clamp))
        if any(isinstance(r, Jitter) for r in regularizers):
            if shifts is None:
                raise ValueError("the Jitter regularizer needs shifts: (batch,) int64 frames")
            seen = _jitter(seen, shifts)
        obj = objective_value(classifier, seen, targets, objective)
        g, = torch.autograd.grad((obj - penalty).sum(), v)
    obj, g = obj.detach(), g.detach()
    ok = torch.isfinite(obj) & torch.isfinite(g.flatten(1)).all(1)
    obj = torch.where(ok, obj, torch.full_like(obj, float("nan")))
    if update:
        with torch.no_grad():
            _apply_update(x, g, ok, optimizer, lr, state)
            if clamp is not None and prior is None:
                clamp_features(x, classifier, clamp)
    return (obj, g) if return_grad else obj


def _similarity_to_same_target(feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(batch,) mean cosine similarity of each sample's centred features to those of the other samples with its
    target (0 when it has none); non-finite samples take no part, so they cannot spoil the others' gradients."""
    f = feats.flatten(1)
    finite = torch.isfinite(f).all(1)
    f = torch.where(finite[:, None], f - f.mean(1, keepdim=True), torch.zeros_like(f))
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)
    same = (targets[:, None] == targets[None]) & finite[:, None] & finite[None]
    same.fill_diagonal_(False)
    sim = (f @ f.t()) * same
    return sim.sum(1) / same.sum(1).clamp_min(1)


def _apply_update(x, g, ok, optimizer, lr, state):
    shape = (-1,) + (1,) * (x.dim() - 1)
    okf = ok.reshape(shape)
    if optimizer == "rms-normalized":
        rms = g.double().pow(2).flatten(1).mean(1).sqrt().float().reshape(shape)
        x.add_(torch.where(okf, lr / (rms + RMS_EPS) * g, torch.zeros_like(g)))
        return
    state.step += 1
    c1, c2 = 1 - state.beta1 ** state.step, 1 - state.beta2 ** state.step
    m = state.beta1 * state.m + (1 - state.beta1) * g
    v = state.beta2 * state.v + (1 - state.beta2) * g * g
    state.m.copy_(torch.where(okf, m, state.m))
    state.v.copy_(torch.where(okf, v, state.v))
    x.add_(torch.where(okf, lr * (state.m / c1) / ((state.v / c2).sqrt() + state.eps), torch.zeros_like(g)))


def clamp_features(x, classifier, clamp: Clamp) -> None:
    """Project log-mel x: (batch, n_mels, n_frames) into the Clamp's range, in place."""
    x.copy_(torch.clamp(x, *_bounds(classifier, clamp)))


# --- packing for the kernels -------------------------------------------------------------------------------

class FusedUnsupported(ValueError):
    """The fused kernels do not cover this model / objective / regularizer; use the autograd reference."""


def bf16_isa() -> str | None:
    """The instruction set bf16 precision runs on here -- "amx" or "avx512bf16" -- or None where the CPU has
    no bf16 dot products (or no extension is built)."""
    if not extension_built():
        return None
    isas = extension().maximize_cpu_isas()
    return next((i for i in ("amx", "avx512bf16") if i in isas), None)


def fused_decoder(prior) -> bool:
    """Whether the step kernels run ``prior``'s decoder too (the vae's frame-wise conv decoder). Any other prior
    is decoded on its own with the classifier in the step kernels: the kernel's features-mode gradient is
    pulled back through the decoder by one vector-Jacobian product -- the paper's 2-D decoder in its own CPU
    kernel (:mod:`speechmax.ops.decoder2d`), others through autograd."""
    return prior is None or (prior.cfg.arch == "vae" and prior.cfg.kernel % 2 == 1 and prior.cfg.kernel <= 9)


def fused_unsupported(classifier, prior=None, objective="prob", regularizers=()) -> str | None:
    """Why the fused kernels cannot run this configuration (a sentence), or None when they can."""
    cfg = classifier.cfg
    if cfg.arch != "tcres":
        return f"classifier arch {cfg.arch!r} (the kernels cover tcres)"
    if not extension_built():
        return "a machine without speechmax._C (the kernels' weights are packed by its layout)"
    k = kernel_constants()
    if cfg.kernel % 2 == 0 or cfg.kernel // 2 > k.max_conv_pad:
        return f"classifier kernel {cfg.kernel} (the kernels cover odd kernels up to {2 * k.max_conv_pad + 1})"
    if len(cfg.channels) - 1 > k.max_blocks:
        return f"a classifier of {len(cfg.channels) - 1} blocks (the kernels cover up to {k.max_blocks})"
    for r in regularizers:
        if isinstance(r, (TotalVariation, Jitter, Diversity)) or (isinstance(r, Clamp) and prior is not None):
            return f"regularizer {type(r).__name__}{' in latent mode' if isinstance(r, Clamp) else ''} " \
                   f"(the kernels cover L2, and Clamp in features mode)"
        if not isinstance(r, (L2, Clamp)):
            return f"unknown regularizer {r!r}"
    objective_code(classifier, objective)  # a bad objective is an error, not a fallback
    return None


@dataclass
class PackedMaximizer:
    """A (classifier, prior) pair laid out for the fused kernels; pre-packed once per pair of weight versions.

    weights: flat float32, every matrix as panels (:func:`~speechmax.ops.packing.conv_panels`), biases after
        each matrix.
    desc: (n_matrices, 6) int64 rows: weight offset, bias offset (-1: none), cin, coutp, taps, pad.
        Order (latent mode first): decoder fc, its transpose; conv1 phase 0/1, their transposes; the same
        for conv2; conv3 (de-normalisation and the classifier's input norm folded in), its transpose; then
        the classifier's stem, per block conv1, conv2 (batch norm folded) [and the 1x1 projection], and
        the head, each followed by its transpose (the convolution that computes the input gradient).
    params: the shapes (:class:`~speechmax.ops.kernel_params.MaximizeParams`; a step sets the rest).
    norm: (2, n_mels) the classifier's input mean and 1/std (features mode).
    """
    weights: torch.Tensor
    desc: torch.Tensor
    params: MaximizeParams
    norm: torch.Tensor
    mats: dict = field(default_factory=dict)   # name -> (weight (cout, cin, taps) float64, bias, pad), for Triton
    wino_weights: torch.Tensor | None = None   # the CPU kernel's Winograd weights (see _winograd_matrices)
    wino_desc: torch.Tensor | None = None      # (n_matrices, 3): offset (-1: direct only), sub-filters S, stride per a
    bf16_weights: torch.Tensor | None = None   # bf16 precision's weights (:func:`bf16_pairs`), every matrix
    bf16_offsets: torch.Tensor | None = None   # (n_matrices,) int64: where each starts in bf16_weights
    names: tuple = ()                          # per matrix in desc order: its name in mats, + "T" for a transpose
    _on: dict = field(default_factory=dict, repr=False)

    def bf16_offsets_keeping(self, fp32: tuple) -> torch.Tensor:
        """bf16_offsets with -1 (the kernel's fp32 path) for the matrices named in ``fp32``."""
        key = ("bf16", fp32)
        if key not in self._on:
            keep = torch.tensor([n in fp32 for n in self.names], dtype=torch.bool)
            self._on[key] = torch.where(keep, torch.full_like(self.bf16_offsets, -1), self.bf16_offsets)
        return self._on[key]

    def to(self, device) -> "PackedMaximizer":
        """The same packing with weights and norm on ``device`` (cached per device)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        if device not in self._on:
            self._on[device] = PackedMaximizer(self.weights.to(device), self.desc, self.params,
                                               self.norm.to(device), self.mats)
        return self._on[device]


def _winograd_matrices(points=(0.0, 1.0, -1.0, 2.0)):
    """Winograd F(3, 3) from Toom-Cook points (and infinity): y = AT [(G g) * (BT d)] is the correlation
    y_v = sum_u g_u d_{v+u} of a 3-tap filter g with 5 inputs d. The CPU kernel runs every convolution of 3 or
    more taps as S = ceil(taps / 3) such filters over tiles of 3 outputs, sharing each tile's transformed
    input: 5 S multiplies per 3 outputs instead of 9 S (1.8x fewer)."""
    def vander(n):
        rows = [[p ** k for k in range(n)] for p in points] + [[0.0] * (n - 1) + [1.0]]
        return torch.tensor(rows, dtype=torch.float64)
    bt = torch.linalg.inv(vander(5)).t()
    bt[bt.abs() < 1e-12] = 0.0
    return bt, vander(3), vander(3).t()


WINO_ALPHA = 5
WINO_BT, WINO_G, WINO_AT = _winograd_matrices()
WINO_TF = torch.cat([WINO_BT.flatten(), WINO_AT.flatten()]).float()   # as csrc/maximize_cpu.cpp's Wino reads it


def _fold_bn(w, bn):
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return w.double() * s[:, None, None], bn.bias.double() - bn.running_mean.double() * s


def _phases(w, b):
    """Nearest x2 upsampling then conv(k, pad k//2) == two D-tap convs on the low-rate rows, one per output
    phase: output 2j + ph reads low-rate rows j + d, d in [dmin, dmax]. Returns [(w_ph, b, pad)] * 2."""
    k = w.shape[2]
    p = k // 2
    dmin, dmax = (-p) // 2, (k - p) // 2
    out = []
    for ph in (0, 1):
        wp = torch.zeros(w.shape[0], w.shape[1], dmax - dmin + 1, dtype=torch.float64)
        for i in range(k):
            wp[:, :, (ph + i - p) // 2 - dmin] += w[:, :, i].double()
        out.append((wp, b.double(), -dmin))
    return out


PACKED = PackCache()   # pack_maximizer's: per classifier, per prior


def pack_maximizer(classifier, prior=None) -> PackedMaximizer:
    """Fold and pack ``classifier`` (tcres) and ``prior`` (vae, or None for features mode) for the kernels;
    cached (:data:`PACKED`) until a parameter or buffer of either model changes."""
    why = fused_unsupported(classifier, prior) or (None if fused_decoder(prior) else
                                                   f"prior arch {prior.cfg.arch!r} in the kernels (pack it with prior=None)")
    if why:
        raise FusedUnsupported(f"the fused kernels do not cover {why}")
    tensors = list(classifier.state_dict().values()) + (list(prior.state_dict().values()) if prior is not None else [])
    # the prior by weak reference: unlike its id, never equal to a later prior's
    variant = None if prior is None else weakref.ref(prior)
    return PACKED.get(classifier, variant, tensors, lambda: _pack(classifier, prior))


@torch.no_grad()
def _pack(classifier, prior) -> PackedMaximizer:
    net, cc = classifier.net, classifier.cfg
    mc, sc = classifier.norm.mean.double(), classifier.norm.std.double()
    mats = {}
    if prior is not None:
        dec, pc = prior.net.decoder, prior.cfg
        C, T0, L = pc.channels, pc.base_frames, pc.latent
        Cp = align_channels(C)
        wfc = torch.zeros(T0, Cp, L, dtype=torch.float64)
        bfc = torch.zeros(T0, Cp, dtype=torch.float64)
        wfc[:, :C] = dec.fc.weight.double().reshape(C, T0, L).transpose(0, 1)   # row (t, c) <- fc row c * T0 + t
        bfc[:, :C] = dec.fc.bias.double().reshape(C, T0).t()
        mats["fc"] = (wfc.reshape(T0 * Cp, L, 1), bfc.reshape(-1), 0)
        for name, conv in (("c1", dec.conv1), ("c2", dec.conv2)):
            for ph, (w, b, pad) in enumerate(_phases(conv.weight, conv.bias)):
                mats[f"{name}_{ph}"] = (w, b, pad)
        a = prior.norm.std.double() / sc                      # xn = out * a + c0 (prior de-norm, classifier norm)
        c0 = (prior.norm.mean.double() - mc) / sc
        mats["c3"] = (dec.conv3.weight.double() * a[:, None, None], dec.conv3.bias.double() * a + c0,
                      dec.conv3.kernel_size[0] // 2)
    w, b = _fold_bn(net.stem[0].weight, net.stem[1])
    mats["stem"] = (w, b, 1)
    for i, blk in enumerate(net.blocks):
        k = blk.conv1.kernel_size[0]
        mats[f"b{i}_1"] = (*_fold_bn(blk.conv1.weight, blk.bn1), k // 2)
        mats[f"b{i}_2"] = (*_fold_bn(blk.conv2.weight, blk.bn2), k // 2)
        if blk.proj is not None:
            mats[f"b{i}_p"] = (blk.proj.weight.double(), None, 0)
    mats["head"] = (net.fc.weight.double()[:, :, None], net.fc.bias.double(), 0)

    order = (["fc", "c1_0", "c1_1", "c2_0", "c2_1", "c3"] if prior is not None else []) + ["stem"] + \
        [n for i in range(len(net.blocks)) for n in (f"b{i}_1", f"b{i}_2", f"b{i}_p") if n in mats] + ["head"]
    flat, desc, off = [], [], 0

    wflat, wdesc, woff = [], [], 0
    bflat, boffs, boff = [], [], 0

    names = []

    def emit(w, b, pad, name):
        nonlocal off, woff, boff
        names.append(name)
        cout, cin, taps = w.shape
        coutp = align_channels(cout)
        panels = conv_panels(w, coutp)
        row = [off, -1, cin, coutp, taps, pad]
        flat.append(panels)
        off += panels.numel()
        bflat.append(bf16_pairs(w, coutp))
        boffs.append(boff)
        boff += bflat[-1].numel()
        if b is not None:
            bp = torch.zeros(coutp, dtype=torch.float64)
            bp[:cout] = b
            row[1] = off
            flat.append(bp)
            off += coutp
        desc.append(row)
        if taps < 3:
            wdesc.append([-1, 0, 0])
            return
        # Winograd: taps padded to 3 S, sub-filter s = taps 3s..3s+2; U[a][s] = sum_u G[a][u] W[3s + u]
        S = (taps + 2) // 3
        w3 = torch.zeros(cout, cin, 3 * S, dtype=torch.float64)
        w3[:, :, :taps] = w
        u = torch.einsum("au,oisu->aois", WINO_G, w3.reshape(cout, cin, S, 3))
        blocks = [conv_panels(u[a], coutp) for a in range(WINO_ALPHA)]
        wdesc.append([woff, S, blocks[0].numel()])
        wflat.extend(blocks)
        woff += sum(bl.numel() for bl in blocks)

    groups = [("c1_0", "c1_1"), ("c2_0", "c2_1")]
    done = set()
    for name in order:
        if name in done:
            continue
        group = next((g for g in groups if name in g), (name,))
        for n in group:                                       # forward convs (both phases), then transposes
            emit(*mats[n], n)
        for n in group:
            w, _, pad = mats[n]
            emit(w.transpose(0, 1).flip(2), None, w.shape[2] - 1 - pad, n + "T")
        done.update(group)

    params = MaximizeParams(
        n_mels=cc.n_mels, n_frames=cc.n_frames, n_blocks=len(net.blocks), n_classes=cc.n_classes,
        block_channels=(net.stem[0].out_channels, *(blk.conv2.out_channels for blk in net.blocks)),
        block_proj=tuple(int(blk.proj is not None) for blk in net.blocks))
    if prior is not None:
        params = replace(params, latent=True, latent_dim=prior.cfg.latent, channels=prior.cfg.channels,
                         channels2=prior.net.decoder.conv2.out_channels, base_frames=prior.cfg.base_frames)
    return PackedMaximizer(torch.cat(flat).float().contiguous(), torch.tensor(desc, dtype=torch.int64), params,
                           torch.stack([mc, 1 / sc]).float().contiguous(), mats,
                           torch.cat(wflat).float().contiguous(), torch.tensor(wdesc, dtype=torch.int64),
                           torch.cat(bflat).float().to(torch.bfloat16).contiguous(),
                           torch.tensor(boffs, dtype=torch.int64), tuple(names))


def bf16_pairs(w: torch.Tensor, coutp: int) -> torch.Tensor:
    """w (cout, cin, taps) -> the flat layout of the bf16 precision's weights (csrc/conv_bf16_isa.h, still in
    w's dtype): per tap, per pair of inputs (cin zero-padded to ``bf16_k``), per output (coutp padded to
    ``bf16_n``), the pair (w[o, 2p, j], w[o, 2p + 1, j]) -- a row of 16 outputs' pairs is one vdpbf16ps operand
    and one row of an AMX weight tile."""
    cout, cin, taps = w.shape
    k = kernel_constants()
    kb = (cin + k.bf16_k - 1) // k.bf16_k * k.bf16_k
    nb = (coutp + k.bf16_n - 1) // k.bf16_n * k.bf16_n
    wb = torch.zeros(taps, kb, nb, dtype=w.dtype)
    wb[:, :cin, :cout] = w.permute(2, 1, 0)
    return wb.reshape(taps, kb // 2, 2, nb).transpose(2, 3).reshape(-1)


# --- the fused step ---------------------------------------------------------------------------------------

def _step_through_decoder(classifier, prior, z, targets, objective, optimizer, lr, state, regularizers, update,
                          return_grad, backend, threads, precision):
    """A prior whose decoder the step kernels do not run (the paper's 2-D conv AE): decode, let the kernel take
    the classifier's gradient at the decoded features, pull it back to z with one vector-Jacobian product,
    then update z as the reference does. On the CPU the paper's decoder runs in its own kernel
    (:mod:`speechmax.ops.decoder2d`); any other, and on other backends, through autograd."""
    if backend == "cpu" and decoder2d.decoder2d_unsupported(prior) is None:
        f, ctx = decoder2d.decode2d(prior, z, save=True, threads=threads)
        vjp = lambda gf: decoder2d.decode2d_vjp(prior, ctx, gf, threads=threads)  # noqa: E731
    else:
        with torch.enable_grad():
            v = z.detach().requires_grad_(True)
            feats = prior.decode(v)
        f = feats.detach().contiguous()
        vjp = lambda gf: torch.autograd.grad(feats, v, grad_outputs=gf)[0]  # noqa: E731
    obj, gf = ascent_step(classifier, None, f, targets, objective=objective, update=False, return_grad=True,
                          backend=backend, threads=threads, precision=precision)
    g = vjp(torch.nan_to_num(gf))
    for r in regularizers:
        if isinstance(r, L2):
            g = g - 2 * r.weight * z / z.shape[1]
    ok = torch.isfinite(obj) & torch.isfinite(gf.flatten(1)).all(1) & torch.isfinite(g).all(1)
    obj = torch.where(ok, obj, torch.full_like(obj, float("nan")))
    if update:
        with torch.no_grad():
            _apply_update(z, g, ok, optimizer, lr, state)
    return (obj, g) if return_grad else obj


def ascent_step(classifier, prior, x, targets, *, objective="prob", optimizer="rms-normalized", lr=0.1,
                state: AdamState | None = None, regularizers=(), shifts=None, update=True, return_grad=False,
                backend="cpu", threads=None, precision="fp32"):
    """One ascent step on x, in place (fused kernels; ``backend`` cpu|cuda|triton, ``threads`` for cpu,
    ``precision`` fp32|bf16 for cpu: see the module's docstring).

    classifier: a :class:`~speechmax.models.classifier.Classifier` in eval mode.
    prior: a :class:`~speechmax.models.prior.Prior` in eval mode (latent mode) or None (features mode).
    x: (batch, latent) latents, or (batch, n_mels, n_frames) log-mel when prior is None; float32, updated in
        place (unless ``update`` is False).
    targets: (batch,) int64 class indices (read by "prob" and "logit"; Unit objectives ignore them).
    objective: "prob" (softmax probability of the target), "logit", or :class:`Unit`.
    optimizer: "rms-normalized" (x += lr * g / (rms(g) + 1e-5), rms per sample) or "adam" (``state``, an
        :class:`AdamState` shaped like x, updated in place; the caller counts nothing, ``state.step`` += 1).
    regularizers: any of :class:`L2`, :class:`TotalVariation`, :class:`Jitter` (needs ``shifts``: (batch,)
        int64 frames), :class:`Clamp`.
    Returns the (batch,) objective at x before the step -- NaN for a sample whose objective or gradient is
    not finite, which is then left unchanged -- and with ``return_grad`` also g: the gradient of objective
    minus penalties, shaped like x.
    Raises :class:`FusedUnsupported` for what the kernels do not cover (see :func:`fused_unsupported`).
    """
    _check_step(classifier, prior, x, targets, optimizer, state, lr)
    why = fused_unsupported(classifier, prior, objective, regularizers)
    if why:
        raise FusedUnsupported(f"the fused kernels do not cover {why}")
    if backend not in ("cpu", "triton", "cuda"):
        raise ValueError(f"unknown fused backend {backend!r}; expected cpu, triton or cuda")
    require_backend(backend)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected {' or '.join(PRECISIONS)}")
    if precision == "bf16" and backend != "cpu":
        raise ValueError(f"bf16 precision runs in the cpu kernel only, not on backend {backend!r}")
    if x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError("x must be a contiguous float32 tensor (it is updated in place)")
    if not fused_decoder(prior):
        return _step_through_decoder(classifier, prior, x, targets, objective, optimizer, lr, state, regularizers,
                                     update, return_grad, backend, threads, precision)
    packed = pack_maximizer(classifier, prior)
    kind, level, unit = objective_code(classifier, objective)
    l2 = sum(r.weight for r in regularizers if isinstance(r, L2))
    targets = targets.to(torch.int64).contiguous()
    obj = torch.empty(x.shape[0], device=x.device)
    grad = torch.empty_like(x) if return_grad else None
    adam = optimizer == "adam"
    if adam and update:
        state.step += 1
    params = replace(packed.params, objective=kind, level=level, unit=unit, optimizer=int(adam), lr=float(lr),
                     l2=float(l2), update=bool(update))
    if adam:
        params = replace(params, adam_step=state.step, beta1=state.beta1, beta2=state.beta2, eps=state.eps)
    tensors = dict(x=x, targets=targets, objective_out=obj, grad_out=grad, adam_m=state.m if adam else None,
                   adam_v=state.v if adam else None)
    if backend == "cuda":
        gp = packed.to(x.device)
        extension().maximize_step_cuda(to_struct(params), weights=gp.weights, desc=gp.desc, norm=gp.norm, **tensors)
    elif backend == "cpu" and precision == "bf16":
        extension().maximize_step(to_struct(params), weights=packed.weights, desc=packed.desc, norm=packed.norm,
                                  threads=int(threads or torch.get_num_threads()),
                                  isa=os.environ.get("SPEECHMAX_BF16_ISA", "auto"),
                                  bf16_weights=packed.bf16_weights,
                                  bf16_offsets=packed.bf16_offsets_keeping(BF16_FP32), **tensors)
    elif backend == "cpu":
        wino = os.environ.get("SPEECHMAX_MAXIMIZE_WINOGRAD", "1") != "0"
        extension().maximize_step(to_struct(params), weights=packed.weights, desc=packed.desc, norm=packed.norm,
                                  threads=int(threads or torch.get_num_threads()),
                                  isa=os.environ.get("SPEECHMAX_CPU_ISA", "auto"),
                                  wino_weights=packed.wino_weights if wino else None,
                                  wino_desc=packed.wino_desc if wino else None,
                                  wino_tf=WINO_TF if wino else None, **tensors)
    else:
        triton_kernels("maximize").maximize_step_triton(packed, params, rms_eps=RMS_EPS, **tensors)
    clamp = next((r for r in regularizers if isinstance(r, Clamp)), None)
    if update and clamp is not None:
        with torch.no_grad():
            clamp_features(x, classifier, clamp)
    return (obj, grad) if return_grad else obj
