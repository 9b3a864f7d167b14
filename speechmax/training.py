"""Pieces every trainer shares: resumable checkpoints (weights + EMA + optimizer state, all safetensors),
an exponential moving average of weights, and a JSON-lines log.

A checkpoint is one fixed path, overwritten: ``DIR/last.safetensors`` + ``DIR/last.json``. Optimizer state is
flattened to tensors named ``opt.<param>.<key>`` so nothing is ever pickled.

Under ``torchrun`` (data-parallel training, :mod:`speechmax.distributed`) every rank takes a contiguous slice of
the global batch; :func:`rank_independent` swaps a model's BatchNorm and Dropout for versions that make the
ranks together compute what one process computes on the whole batch: batch statistics over every rank's slice
(torch's own SyncBatchNorm refuses CPU modules), and dropout masks drawn for the whole batch, of which each rank
keeps its rows (every rank's generator is in the same state, as one process's would be).
"""
from __future__ import annotations

import contextlib
import copy
import json
import signal
import threading
import time
from pathlib import Path

import torch
import torch.nn as nn

from . import distributed
from .distributed import World
from .weights import WeightsError, load_weights, save_weights


class EMA:
    """Exponential moving average of a model's parameters (buffers copied as they are)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        # warm-up: early on, average over fewer steps so the EMA is not dominated by the random init
        d = self.decay if step is None else min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def _optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, st in opt.state.items():
        for k, v in st.items():
            out[f"opt.{names[id(p)]}.{k}"] = torch.as_tensor(v).clone()
    return out


def _load_optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict) -> None:
    params = dict(model.named_parameters())
    for key, v in tensors.items():
        if not key.startswith("opt."):
            continue
        name, k = key[4:].rsplit(".", 1)
        if name not in params:
            raise WeightsError(f"checkpoint has optimizer state for unknown parameter {name!r}")
        opt.state[params[name]][k] = v


RNG_KEY = "rng.torch"


def save_checkpoint(run_dir: str | Path, model, opt, ema: EMA | None, state: dict, rng: bool = False) -> Path:
    """Overwrite ``run_dir/last`` with weights, EMA weights, optimizer state and ``state`` (step, config...).
    ``rng``: also torch's global generator state (what dropout and a VAE's noise draw from), so a resumed run
    draws what the uninterrupted one would have."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    tensors.update(_optimizer_tensors(model, opt))
    if rng:
        tensors[RNG_KEY] = torch.get_rng_state()
    return save_weights(Path(run_dir) / "last", tensors, dict(state, kind="checkpoint", saved_at=time.time()))


def load_checkpoint(run_dir: str | Path, model, opt=None, ema: EMA | None = None) -> dict | None:
    """Restore ``run_dir/last`` into model / opt / ema if it exists, and torch's global generator if it was
    saved with it; returns its state dict, else None."""
    path = Path(run_dir) / "last"
    if not path.with_suffix(".json").exists():
        return None
    tensors, card = load_weights(path, kind="checkpoint")
    sub = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    model.load_state_dict(sub("model."))
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.model.load_state_dict(sub("ema."))
    if opt is not None:
        _load_optimizer_tensors(model, opt, tensors)
    if RNG_KEY in tensors:
        torch.set_rng_state(tensors[RNG_KEY])
    return card


class StepTimer:
    """The time a run spends in its steps, kept honest when the process is paused (SIGSTOP ... SIGCONT, as one
    pauses a training run to benchmark): the clock runs on through a pause, so a step the process was continued
    in is counted as long as the step before it. Use as a context manager (it listens for SIGCONT while open,
    where it can: in the main thread of a POSIX process) around a loop of ``start()`` / ``stop()`` pairs."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.last, self.paused_steps = float(seconds), None, 0
        self._continued, self._installed, self._previous, self._t0 = False, False, None, None

    def _on_continue(self, signum, frame):
        self._continued = True
        if callable(self._previous):
            self._previous(signum, frame)

    def __enter__(self):
        if hasattr(signal, "SIGCONT") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGCONT, self._on_continue)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:   # the handler before ours (None: one not set from Python; the default stands for it)
            signal.signal(signal.SIGCONT, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False

    def start(self) -> None:
        self._continued, self._t0 = False, time.perf_counter()

    def stop(self) -> float:
        """End the step; returns the seconds it is counted as."""
        dt = time.perf_counter() - self._t0
        if self._continued:   # paused in this step: its clock time holds the pause
            self.paused_steps += 1
            dt = self.last if self.last is not None else 0.0
        self.last = dt
        self.seconds += dt
        return dt


class JsonLog:
    """Append-only JSON-lines log of training events."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **event) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(event, time=round(time.time(), 1))) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def epoch_seconds(self) -> float:
        """The training's time: its logged epochs' seconds summed over every call that trained -- a resumed run
        included -- with an epoch logged twice (redone after a stop) counted once, at its last logging."""
        per_epoch = {rec["epoch"]: rec["seconds"] for rec in self.read()
                     if rec.get("event") == "epoch" and "seconds" in rec}
        return round(sum(per_epoch.values()), 1)


# --- data-parallel training: the ranks' slices of a batch computed as one process computes the whole batch ---

_slice = threading.local()


@contextlib.contextmanager
def batch_slice(start: int, stop: int, total: int):
    """Within this, the model's forward runs on items ``start:stop`` of a global batch of ``total`` items (what
    :class:`GlobalDropout` needs to draw the whole batch's mask and keep its rows)."""
    was = getattr(_slice, "value", None)
    _slice.value = (start, stop, total)
    try:
        yield
    finally:
        _slice.value = was


class GlobalDropout(nn.Dropout):
    """Dropout whose mask is drawn for the whole global batch (see :func:`batch_slice`) and sliced: with every
    rank's generator in the same state, each item gets the mask it gets in one process. Outside a batch slice,
    or in eval mode, plain dropout."""

    def forward(self, x):
        where = getattr(_slice, "value", None)
        if not self.training or self.p == 0 or where is None or self.inplace:
            return super().forward(x)
        start, stop, total = where
        # what torch's CPU dropout does (noise = bernoulli(1 - p) / (1 - p); x * noise), on the whole batch
        noise = torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * noise.div_(1 - self.p)[start:stop]


class _GlobalBatchNormFn(torch.autograd.Function):
    """Batch normalisation with statistics over every rank's slice; the backward sums its two per-channel terms
    over the ranks too, so each rank's input gradient is the one-process gradient of the ranks' summed losses."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, world, stats_out):
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        dtype, x = x.dtype, x.float()
        n = x.numel() // x.shape[1] if x.shape[1] else 0
        s = x.sum(dims, dtype=torch.float64)
        m = s / max(n, 1)
        d = x - m.float().view(shape)
        q = (d * d).sum(dims, dtype=torch.float64) + n * m * m     # sum of squares, from the local deviations
        tot = distributed.all_reduce_sum(world, torch.stack([torch.full_like(s, n), s, q]))
        count = tot[0, 0]
        mean = tot[1] / count
        var = (tot[2] / count - mean * mean).clamp_min(0)
        invstd = (var + eps).rsqrt()
        xhat = (x - mean.float().view(shape)) * invstd.float().view(shape)
        y = xhat if weight is None else xhat * weight.view(shape) + bias.view(shape)
        ctx.save_for_backward(xhat, weight, invstd.float())
        ctx.world, ctx.count, ctx.dims, ctx.shape, ctx.dtype = world, count, dims, shape, dtype
        stats_out.extend([mean, var, count])
        return y.to(dtype)

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, invstd = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        dy = dy.float()
        sum_dy = dy.sum(dims, dtype=torch.float64)
        sum_dy_xhat = (dy * xhat).sum(dims, dtype=torch.float64)
        tot = distributed.all_reduce_sum(ctx.world, torch.stack([sum_dy, sum_dy_xhat])) / ctx.count
        scale = invstd if weight is None else invstd * weight
        dx = (dy - tot[0].float().view(shape) - xhat * tot[1].float().view(shape)) * scale.view(shape)
        dw = None if weight is None else sum_dy_xhat.float()
        db = None if weight is None else sum_dy.float()
        return dx.to(ctx.dtype), dw, db, None, None, None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d/3d whose training-mode statistics are over every rank's slice of the batch (gloo on CPU,
    where torch's SyncBatchNorm refuses to run); the same parameters and buffers, so the same state dict."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, world: World):
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.world = world
        self.load_state_dict(bn.state_dict())

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (batch, channels, ...), got {x.dim()}-D")

    def forward(self, x):
        if not self.training or not self.world.distributed:
            return super().forward(x)
        stats = []
        y = _GlobalBatchNormFn.apply(x, self.weight, self.bias, self.eps, self.world, stats)
        if self.track_running_stats:
            mean, var, count = stats
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / max(float(count) - 1, 1.0))
                self.running_mean.mul_(1 - f).add_(mean.to(self.running_mean.dtype), alpha=f)
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        return y


def rank_independent(model: nn.Module, world: World) -> nn.Module:
    """Swap ``model``'s BatchNorm layers for :class:`GlobalBatchNorm` and its Dropout for :class:`GlobalDropout`,
    in place (parameters, buffers and state-dict keys unchanged), so data-parallel ranks train as one process on
    the whole batch. Returns ``model``; a world of one leaves it as it is."""
    if not world.distributed:
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                setattr(parent, name, GlobalBatchNorm(child, world))
            elif type(child) is nn.Dropout:
                setattr(parent, name, GlobalDropout(child.p, child.inplace))
    return model
