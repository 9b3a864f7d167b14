"""Activation maximization: many starts x many targets, climbed through a prior's latent or on the features.

:func:`maximize` is the whole engine: it resolves the targets and the settings (a named recipe, speechmax's
by default, see :mod:`.recipes`), draws each start's noise from its own seed, runs the ascent in chunks of
bounded memory with the fused kernels where they cover the models (:mod:`speechmax.ops.maximize`) and
autograd elsewhere, stops any start whose ascent turns non-finite (keeping the others), and scores the result
with the classifier and the separate classifier before and after.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ..data.words import WORDS
from ..features import check_compatible
from ..ops.backends import available_backends
from ..ops.decoder2d import decoder2d_unsupported
from ..ops.maximize import (PRECISIONS, AdamState, Clamp, FusedUnsupported, Jitter, Unit, ascent_step,
                            ascent_step_ref, bf16_isa, clamp_features, fused_decoder, fused_unsupported,
                            objective_code, objective_value)
from ..progress import progress_bar
from .recipes import DEFAULT_RECIPE, PAPER, get_recipe

log = logging.getLogger(__name__)

MODES = ("features", "latent")
BACKENDS = ("auto", "autograd", "cpu", "cuda", "triton")


@dataclass
class MaximizeResult:
    """Everything one :func:`maximize` call produced; N = starts x targets, target-major.

    features / features_before: (N, n_mels, n_frames) log-mel after / before the ascent (None when
        ``keep_features`` was off). latents / latents_before: (N, latent) in latent mode, else None.
    targets: (N,) class index each start climbed toward (-1 for a unit objective without targets).
    start: (N,) index of the start within its target; start j of every target began from the same noise.
    trajectory: (N, steps + 1) objective before each step and after the last (NaN after a start stopped).
    probs_before / probs_after: (N, classes) the classifier's softmax; separate_before / separate_after the
        separate classifier's (None without one). The "before" scores and features are None when
        ``score_before`` was off.
    stopped_at: (N,) the step at which a start's ascent turned non-finite and was stopped, -1 if never.
    """
    features: torch.Tensor | None
    features_before: torch.Tensor | None
    latents: torch.Tensor | None
    latents_before: torch.Tensor | None
    targets: torch.Tensor
    start: torch.Tensor
    trajectory: torch.Tensor
    probs_before: torch.Tensor | None
    probs_after: torch.Tensor
    separate_before: torch.Tensor | None
    separate_after: torch.Tensor | None
    stopped_at: torch.Tensor
    labels: tuple
    settings: dict = field(default_factory=dict)
    separate_labels: tuple | None = None   # the separate classifier's, when they differ from ``labels``

    def shared_labels(self) -> list[str]:
        """The model's labels the separate classifier also has: the only ones its hit rate counts."""
        theirs = set(self.labels if self.separate_labels is None else self.separate_labels)
        return [label for label in self.labels if label in theirs]

    @property
    def nan_stopped(self) -> list[int]:
        """Indices of the starts stopped because their ascent turned non-finite."""
        return torch.nonzero(self.stopped_at >= 0).flatten().tolist()

    def hit_rate(self, which: str = "classifier") -> float | None:
        """Share of samples whose top class after the ascent is their target (None without targets or
        without that classifier)."""
        probs = self.probs_after if which == "classifier" else self.separate_after
        if probs is None or (self.targets < 0).any() or len(self.targets) == 0:
            return None
        if which == "classifier" or self.separate_labels is None:
            return float((probs.argmax(-1) == self.targets).float().mean())
        # the separate classifier's own index of each of the model's labels (-1: not one of its labels)
        theirs = {label: i for i, label in enumerate(self.separate_labels)}
        index = torch.tensor([theirs.get(label, -1) for label in self.labels])[self.targets]
        shared = index >= 0
        if not shared.any():
            return None
        return float((probs[shared].argmax(-1) == index[shared]).float().mean())


def merge_results(parts) -> MaximizeResult:
    """Pieces of one run -- (result, rows): the places of its rows in the whole run -- as one result with its
    rows in order (what a torchrun run's rank 0 makes of every rank's share). A field some piece lacks is None;
    settings and labels are the first piece's (every rank ran the same settings), but for ``n``, the starts per
    target of the whole (pieces may be blocks of a target's starts: ``first_start`` is dropped)."""
    parts = [(res, torch.as_tensor(list(rows), dtype=torch.int64)) for res, rows in parts]
    total = sum(len(rows) for _, rows in parts)
    first = parts[0][0]
    merged = {}
    for f in fields(MaximizeResult):
        v = getattr(first, f.name)
        if not isinstance(v, torch.Tensor):
            merged[f.name] = v
            continue
        if any(getattr(res, f.name) is None for res, _ in parts):
            merged[f.name] = None
            continue
        whole = v.new_empty((total,) + tuple(v.shape[1:]))
        for res, rows in parts:
            whole[rows] = getattr(res, f.name)
        merged[f.name] = whole
    settings = {k: v for k, v in first.settings.items() if k != "first_start"}
    merged["settings"] = dict(settings, n=int(merged["start"].max()) + 1 if total else settings.get("n"))
    return MaximizeResult(**merged)


def resolve_targets(targets, labels) -> list[int]:
    """"all", a word, an index, or a list of them -> class indices; an unknown word lists the valid ones."""
    if targets is None:
        return []
    if isinstance(targets, str):
        targets = list(labels) if targets == "all" else [targets]
    elif isinstance(targets, (int, np.integer)):
        targets = [int(targets)]
    out = []
    for t in targets:
        if isinstance(t, str):
            if t not in labels:
                raise ValueError(f"unknown target word {t!r}; valid targets: all, {', '.join(labels)}")
            out.append(labels.index(t))
        elif isinstance(t, (int, np.integer)) and 0 <= int(t) < len(labels):
            out.append(int(t))
        else:
            raise ValueError(f"target {t!r} is not a class index in [0, {len(labels)}) or one of: {', '.join(labels)}")
    if not out:
        raise ValueError("no targets given")
    return out


def parse_objective(spec) -> str | Unit:
    """"prob" | "logit" | "LAYER:CHANNEL" (a named module's channel, averaged over the other axes; "unit:LAYER:INDEX"
    is the older form) | a Unit -> the objective."""
    if isinstance(spec, Unit) or spec in ("prob", "logit"):
        return spec
    if isinstance(spec, str):
        parts = spec.split(":")
        if parts[0] == "unit" and len(parts) == 3:
            parts = parts[1:]
        if len(parts) == 2 and parts[0] and parts[1].lstrip("-").isdigit():
            return Unit(parts[0], int(parts[1]))
    raise ValueError(f"unknown objective {spec!r}; expected prob, logit or LAYER:CHANNEL (e.g. block2:5)")


def start_seeds(seed: int, n: int, first: int = 0) -> list[int]:
    """A 64-bit seed per start index ``first .. first + n - 1``, from one SeedSequence: start j's draws never
    depend on the chunking, nor on which block of a run's starts it is computed in."""
    return [int(np.random.SeedSequence(seed, spawn_key=(j,)).generate_state(1, np.uint64)[0])
            for j in range(first, first + n)]


def _draws(seeds, shape, std, steps, jitter_frames, noise=True):
    """Per start: its initial noise N(0, std^2) of ``shape`` (if ``noise``) and, with jitter, a shift per step."""
    xs, shifts = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        if noise:
            xs.append(torch.randn(shape, generator=g) * std)
        if jitter_frames:
            shifts.append(torch.randint(-jitter_frames, jitter_frames + 1, (steps,), generator=g))
    return (torch.stack(xs) if noise else None), (torch.stack(shifts) if jitter_frames else None)


@torch.no_grad()
def _score(classifier, separate, prior, clamp, x, keep_features=True):
    """Features of x (decoded in latent mode; clamped where the classifier saw them clamped; "f"), the
    classifier's logits ("l") and softmax ("p"), the separate classifier's softmax ("s"), on the CPU."""
    f = prior.decode(x) if prior is not None else x
    if clamp is not None and prior is not None:
        clamp_features(f, classifier, clamp)
    logits = classifier(f)
    out = dict(l=logits.cpu(), p=torch.softmax(logits, -1).cpu(), dev_f=f)
    if keep_features:
        out["f"] = f.cpu()
    if separate is not None:
        out["s"] = torch.softmax(separate(f), -1).cpu()
    return out


def _pick_backend(backend, classifier, prior, objective, regularizers):
    """(step function, backend name, why the kernels were not used or None)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "autograd":
        return ascent_step_ref, "autograd", None
    why = fused_unsupported(classifier, prior, objective, regularizers)
    runs = available_backends()
    if backend == "auto":
        kernel = "cuda" if classifier.norm.mean.is_cuda else "cpu"
        if why is None and runs[kernel]:
            return ascent_step, kernel, None
        return ascent_step_ref, "autograd", why or f"the {kernel} kernels do not run here"
    if why is not None:
        raise FusedUnsupported(f"backend {backend!r}: the fused kernels do not cover {why}")
    return ascent_step, backend, None


def _pick_precision(precision, backend, why) -> str:
    """The precision the step runs in: "bf16" only in the CPU kernel on a CPU with bf16 dot products."""
    if precision not in ("auto",) + PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected auto, {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return precision
    can = backend == "cpu" and bf16_isa() is not None
    if precision == "auto":
        return "bf16" if can else "fp32"
    if backend != "cpu":
        raise ValueError(f"precision bf16 runs in the fused cpu kernel; this run's step is {backend}"
                         + (f" ({why})" if why else ""))
    if not can:
        raise ValueError("precision bf16 needs bf16 dot products (AMX-BF16 or AVX512-BF16), which this CPU "
                         "does not have; use fp32")
    return precision


def _decoder_backend(prior, backend) -> str | None:
    """How the prior's decoder runs: in the step kernels, in its own CPU kernel (the paper's 2-D decoder),
    or through autograd."""
    if prior is None:
        return None
    if backend != "autograd" and fused_decoder(prior):
        return "kernels"
    return "decoder2d" if backend == "cpu" and decoder2d_unsupported(prior) is None else "autograd"


def maximize(classifier, targets="all", *, mode="features", prior=None, init="noise", n=None, steps=None, lr=None,
             optimizer=None, objective=None, regularizers=None, init_std=None, seed=None, recipe=DEFAULT_RECIPE,
             preset=None, separate=None, chunk=1024, backend="auto", threads=None, keep_features=True, score_before=True,
             progress=False, first_start=0, precision="fp32") -> MaximizeResult:
    """Climb ``n`` starts per target toward each target (or toward a hidden unit).

    classifier: the model to explain (eval mode is set). targets: "all", a word, a class index, or a list;
        None with a Unit objective. mode: "features" (ascent on log-mel) or "latent" (on ``prior``'s latent).
    init: "noise" (N(0, init_std^2) in the optimised space) or log-mel (k, n_mels, n_frames) real clips --
        encoded by the prior in latent mode -- each started toward every target (class-to-class: clips of
        word A climbed toward B). n: starts per target (default 1; with clips, their count).
    steps, lr, optimizer ("rms-normalized" | "adam"), objective ("prob" | "logit" | Unit | "unit:L:I"),
        regularizers (L2, TotalVariation, Jitter, Clamp, Diversity), init_std: default to ``recipe``'s (:data:`.RECIPES`:
        "speechmax", the best measured settings, or "paper", the seed paper's); explicit arguments win.
        ``preset="paper"`` is the older name of ``recipe="paper"``.
    seed: start j's noise and jitter come from SeedSequence(seed, spawn_key=(j,)) -- the same for every
        target, and independent of ``chunk``; None draws a seed (kept in ``settings``).
    separate: the separate evaluation classifier, scored before and after (optional).
    chunk: starts per batch (bounds memory). backend: "auto" (fused kernels where they cover the models, else
        autograd), "autograd", "cpu", "triton", "cuda". threads: for the CPU kernels.
    precision: "fp32", "bf16" (the CPU kernel's bf16 products, where the CPU has bf16 dot products: an error
        elsewhere, or where the step would not run in the CPU kernel), or "auto" (bf16 where it can run, else
        fp32). Kept in ``settings`` as what ran.
    keep_features: False leaves the (N, n_mels, n_frames) features out of the result (in latent mode the
        latents reproduce them) -- what a 350,000-start run needs to fit in memory.
    score_before: False skips scoring (and keeping) the starts before the ascent -- a run that only reports
        where the ascent ended saves a forward pass of both classifiers (and the decoder) per start.
    progress: True for a tqdm bar on stderr, or a callable given the number of start-steps done.
    first_start: the starts are ``first_start .. first_start + n - 1`` of a larger run (a block of its starts, as
        torchrun's ranks share them out): each start's draws are the ones it has in the whole run.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected features or latent")
    if preset not in (None, "paper"):
        raise ValueError(f"unknown preset {preset!r}; expected paper")
    recipe = get_recipe(preset or recipe)
    preset = "paper" if recipe.name == "paper" else None
    steps = recipe.steps if steps is None else int(steps)
    if steps <= 0:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lr = PAPER["lr"][mode] if lr is None else float(lr)
    optimizer = optimizer or PAPER["optimizer"]
    objective = parse_objective(objective or PAPER["objective"])
    regularizers = tuple(PAPER["regularizers"] if regularizers is None else regularizers)
    init_std = PAPER["init_std"] if init_std is None else float(init_std)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    classifier.eval()
    labels = tuple(classifier.cfg.labels) or tuple(WORDS[:classifier.cfg.n_classes])
    if mode == "latent":
        if prior is None:
            raise ValueError("latent mode needs a prior (a decoder over log-mel)")
        check_compatible(classifier.feature_config, prior.feature_config, "classifier", "prior")
        prior.eval()
    else:
        prior = None
    separate_labels = None
    if separate is not None:
        check_compatible(classifier.feature_config, separate.feature_config, "classifier", "separate classifier")
        separate.eval()
        theirs = tuple(separate.cfg.labels) or tuple(WORDS[:separate.cfg.n_classes])
        separate_labels = None if theirs == labels else theirs
    objective_code(classifier, objective)  # a bad layer / index is an error before any work
    if isinstance(objective, Unit) and targets is None:
        tidx = [-1]
    else:
        tidx = resolve_targets(targets, labels)

    clips = None
    if not (isinstance(init, str) and init == "noise"):
        if isinstance(init, str):
            raise ValueError(f"init must be 'noise' or a log-mel tensor, got {init!r}")
        clips = torch.as_tensor(init, dtype=torch.float32)
        if clips.dim() == 2:
            clips = clips[None]
        want = (classifier.cfg.n_mels, classifier.cfg.n_frames)
        if clips.dim() != 3 or tuple(clips.shape[1:]) != want:
            raise ValueError(f"init clips must be log-mel (k, {want[0]}, {want[1]}), got {tuple(clips.shape)}")
        if not torch.isfinite(clips).all():
            raise ValueError("init clips contain NaN or infinite values")
        if n is not None and n != len(clips):
            raise ValueError(f"n={n} but {len(clips)} init clips were given (each clip is one start per target)")
        n = len(clips)
    n = 1 if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if first_start < 0 or (first_start and clips is not None):
        raise ValueError(f"first_start must be >= 0 and only with noise starts, got {first_start}")

    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 63))
    step_fn, backend, why = _pick_backend(backend, classifier, prior, objective, regularizers)
    precision = _pick_precision(precision, backend, why)
    device = classifier.norm.mean.device
    if why:
        log.info("maximize: autograd backend (%s)", why)
    jitter = next((r.frames for r in regularizers if isinstance(r, Jitter)), 0)
    clamp = next((r for r in regularizers if isinstance(r, Clamp)), None)
    shape = (prior.cfg.latent,) if prior is not None else (classifier.cfg.n_mels, classifier.cfg.n_frames)
    starts, shifts = _draws(start_seeds(seed, n, first_start), shape, init_std, steps, jitter, noise=clips is None)
    if clips is not None:
        with torch.no_grad():
            starts = torch.cat([prior.encode(clips[i:i + chunk].to(device))[0].cpu() for i in range(0, n, chunk)]) \
                if prior is not None else clips
    N = n * len(tidx)
    targets_t = torch.tensor(tidx, dtype=torch.int64).repeat_interleave(n)
    start_t = torch.arange(n).repeat(len(tidx))
    C = classifier.cfg.n_classes
    fshape = (N, classifier.cfg.n_mels, classifier.cfg.n_frames)
    res = MaximizeResult(
        features=torch.empty(fshape) if keep_features else None,
        features_before=torch.empty(fshape) if keep_features and score_before else None,
        latents=torch.empty((N,) + shape) if prior is not None else None,
        latents_before=torch.empty((N,) + shape) if prior is not None else None,
        targets=targets_t, start=start_t + first_start, trajectory=torch.full((N, steps + 1), float("nan")),
        probs_before=torch.empty(N, C) if score_before else None, probs_after=torch.empty(N, C),
        separate_before=torch.empty(N, separate.cfg.n_classes) if separate is not None and score_before else None,
        separate_after=torch.empty(N, separate.cfg.n_classes) if separate is not None else None,
        stopped_at=torch.full((N,), -1, dtype=torch.int64), labels=labels, separate_labels=separate_labels,
        settings=dict(mode=mode, recipe=recipe.name, preset=preset, objective=str(objective), optimizer=optimizer, steps=steps, lr=lr,
                      regularizers=[repr(r) for r in regularizers], init="noise" if clips is None else "clips",
                      init_std=init_std if clips is None else None, n=n, seed=seed, backend=backend, precision=precision,
                      decoder=_decoder_backend(prior, backend),
                      fallback_reason=why, chunk=chunk,
                      separate_shared_labels=None if separate_labels is None else
                      [label for label in labels if label in separate_labels],
                      **({"first_start": first_start} if first_start else {})))
    # Scores before the ascent, once per distinct start (start j is shared by every target).
    device_starts = lambda a, b: starts[a:b].to(device)  # noqa: E731
    before = [_score(classifier, separate, prior, None, device_starts(a, min(n, a + chunk)), keep_features)
              for a in range(0, n, chunk)] if score_before else []
    before = {k: torch.cat([b[k] for b in before]) for k in before[0] if k != "dev_f"} if before else None
    bar, tick = _progress(progress, N * steps)
    try:
        for c0 in range(0, N, chunk):
            c1 = min(N, c0 + chunk)
            x0 = starts[start_t[c0:c1]].to(device).contiguous()
            if clamp is not None and prior is None:
                with torch.no_grad():
                    clamp_features(x0, classifier, clamp)
            x = x0.clone()
            traj = torch.full((c1 - c0, steps + 1), float("nan"), device=device)
            stopped = torch.full((c1 - c0,), -1, dtype=torch.int64, device=device)
            tg = targets_t[c0:c1].to(device)
            _ascend(step_fn, classifier, prior, x, tg, objective, optimizer, lr, regularizers,
                    None if shifts is None else shifts[start_t[c0:c1]].to(device), steps, threads, traj, stopped, tick,
                    backend, precision)
            after = _score(classifier, separate, prior, clamp, x, keep_features)
            if objective in ("prob", "logit"):
                final = after["p" if objective == "prob" else "l"].gather(1, targets_t[c0:c1, None])[:, 0]
            else:
                with torch.no_grad():
                    final = objective_value(classifier, after["dev_f"], tg.clamp_min(0), objective).cpu()
            traj[:, -1] = torch.where(stopped < 0, final.to(device), traj[:, -1])
            res.trajectory[c0:c1], res.stopped_at[c0:c1] = traj.cpu(), stopped.cpu()
            x0, x, js = x0.cpu(), x.cpu(), start_t[c0:c1]
            res.probs_after[c0:c1] = after["p"]
            if separate is not None:
                res.separate_after[c0:c1] = after["s"]
            if keep_features:
                res.features[c0:c1] = after["f"]
            if before is not None:
                res.probs_before[c0:c1] = before["p"][js]
                if separate is not None:
                    res.separate_before[c0:c1] = before["s"][js]
                if keep_features:
                    res.features_before[c0:c1] = before["f"][js]
            if prior is not None:
                res.latents_before[c0:c1], res.latents[c0:c1] = x0, x
    finally:
        if bar is not None:
            bar.close()
    return res


def _progress(progress, total):
    if callable(progress):
        return None, progress
    if progress:
        bar = progress_bar(total=total, unit="step", unit_scale=True, desc="maximize")
        return bar, bar.update
    return None, None


def _ascend(step_fn, classifier, prior, x, targets, objective, optimizer, lr, regularizers, shifts, steps, threads,
            traj, stopped, tick, backend="cpu", precision="fp32"):
    """``steps`` ascent steps on one chunk x in place; a start whose objective, gradient or x turns non-finite
    is put back to its last finite x, marked in ``stopped`` and left out of the remaining steps."""
    state = AdamState.zeros_like(x) if optimizer == "adam" else None
    kw = dict(objective=objective, optimizer=optimizer, lr=lr, regularizers=regularizers)
    if step_fn is ascent_step:
        kw.update(threads=threads, backend=backend, precision=precision)
    active = torch.arange(len(x))
    for k in range(steps):
        if len(active) == 0:
            break
        whole = len(active) == len(x)
        xs = x if whole else x[active].contiguous()
        st = state if whole or state is None else AdamState(state.m[active].contiguous(), state.v[active].contiguous(),
                                                            state.step, state.beta1, state.beta2, state.eps)
        before = xs.clone()
        obj = step_fn(classifier, prior, xs, targets[active], state=st,
                      shifts=None if shifts is None else shifts[active, k], **kw)
        bad = ~torch.isfinite(obj) | ~torch.isfinite(xs.flatten(1)).all(1)
        traj[active, k] = obj
        if bad.any():
            xs[bad] = before[bad]
            stopped[active[bad]] = k
            traj[active[bad], k] = float("nan")
        if not whole:
            x[active] = xs
            if state is not None:
                state.m[active], state.v[active], state.step = st.m, st.v, st.step
        active = active[~bad]
        if tick is not None:
            tick(len(bad))
