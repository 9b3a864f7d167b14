"""A user's speech classifier behind the interface of speechmax's own.

Any ``torch.nn.Module``, TorchScript file (``torch.jit.save``) or ``torch.export`` program (``.pt2``) that maps

- ``input="log-mel"``: speechmax log-mel (B, n_mels, n_frames) under a :class:`FeatureConfig` the user states, or
- ``input="waveform"``: 16 kHz audio (B, samples), with its own front end inside,

to logits (B, n_labels), with its labels in output order. :class:`ExternalClassifier` wraps it so that
``maximize``, ``classify`` and ``evaluate`` take it where they take a shipped classifier: it always reads
log-mel, reaching a waveform model through :class:`MelToWave`; it has no fused kernels (the engine says so in
one line and climbs through autograd). Pickles are never loaded: a ``.pt`` that is not TorchScript is refused.
"""
from __future__ import annotations

import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from ..features import FeatureConfig, mel_filterbank, n_frames
from ..ops.stft import initial_phase, mel_to_wave, mel_to_wave_ref
from .classifier import ClassifierConfig, InputNorm

INPUTS = ("log-mel", "waveform")
_COMPILED = (torch.jit.ScriptModule, torch.fx.GraphModule)   # modules that run a graph: no forward hooks
ARCH = "external"
# MelToWave's defaults, chosen by benchmarks/external_wave_path.py (RESULTS.md, "Your own classifier"): no
# Griffin-Lim iterations from the window-centred phase (each frame its magnitude's zero-phase pulse) and no relu,
# which makes the path one matrix product; the README model's hit rate on the written audio is 100 % as with
# 2 iterations from zero phase (the default before), and zero phase with no iterations gets 0 %.
GRIFFINLIM_ITERS = 0    # phase iterations per MelToWave call
PHASE_INIT = "centered"  # the phase they start from (speechmax.ops.stft.initial_phase)
CLIP = False            # relu on the pseudo-inverse's magnitude


class ModelError(ValueError):
    """A user's model or labels that speechmax cannot use, with the reason."""


def read_labels(path) -> tuple[str, ...]:
    """One label per line, in the model's output order; a trailing newline is fine, blank lines inside and
    duplicates are errors (the order would be ambiguous)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"labels file {p}: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = [line.strip() for line in lines]
    blank = [i + 1 for i, label in enumerate(labels) if not label]
    if blank:
        raise ModelError(f"labels file {p}: blank line(s) {blank[:10]}; one label per line, in output order")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ModelError(f"labels file {p}: duplicate label(s) {', '.join(dupes)}")
    if not labels:
        raise ModelError(f"labels file {p} is empty")
    return tuple(labels)


def load_program(path) -> nn.Module:
    """A TorchScript file or a ``torch.export`` program (``.pt2``) as a module on the CPU. A pickled module or
    state dict (``torch.save``) is refused with the reason: unpickling runs arbitrary code."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such model file")
    if not zipfile.is_zipfile(p):
        raise ModelError(f"{p}: not a TorchScript or torch.export archive (a zip); speechmax loads no pickles")
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
    if p.suffix == ".pt2" or any(n.endswith("/archive_format") for n in names):
        try:
            return torch.export.load(p).module()
        except Exception as e:   # torch raises many kinds here; the user needs its message, not its class
            raise ModelError(f"{p}: not a loadable torch.export program ({type(e).__name__}: {e})") from None
    if not any("/code/" in n for n in names):
        raise ModelError(f"{p}: a pickled model (torch.save of a module or state dict), which speechmax refuses to "
                         "load (unpickling runs arbitrary code); save it with torch.jit.save(torch.jit.script(model), "
                         "PATH) or torch.export.save(torch.export.export(model, (example,)), PATH.pt2)")
    try:
        return torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise ModelError(f"{p}: not a loadable TorchScript file ({type(e).__name__}: {e})") from None


class MelToWave(nn.Module):
    """Differentiable log-mel (B, n_mels, T) -> waveform (B, (T - 1) * hop): the linear magnitude through the
    filterbank's pseudo-inverse (clipped at 0 if ``clip``), with the phase of ``iters`` Griffin-Lim iterations
    from the ``init`` phase (:func:`speechmax.ops.stft.initial_phase`) held fixed, then the inverse STFT. The
    gradient flows through the magnitude; the phase is recomputed per call. :meth:`forward` runs
    :func:`~speechmax.ops.stft.mel_to_wave` (one autograd node: chunked FFTs, or with no iterations and no clip
    one matrix product); :meth:`forward_ref` its ``torch.stft`` / ``torch.istft`` twin, which a config without
    a centred, reflect-padded STFT uses."""

    def __init__(self, cfg: FeatureConfig, iters: int = GRIFFINLIM_ITERS, init: str = PHASE_INIT, clip: bool = CLIP):
        super().__init__()
        initial_phase(init, cfg.n_fft, cfg.win_length)                   # refuses an unknown init
        self.cfg, self.iters, self.init, self.clip = cfg, iters, init, clip
        self.register_buffer("pinv", torch.linalg.pinv(mel_filterbank(cfg, dtype=torch.float64)).float())
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True))

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if not (c.center and c.pad_mode == "reflect"):
            return self.forward_ref(log_mel)
        return mel_to_wave(log_mel.float(), self.pinv, self.window, c.n_fft, c.hop_length, self.iters, c.power,
                           self.init, self.clip)

    def forward_ref(self, log_mel: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return mel_to_wave_ref(log_mel.float(), self.pinv, self.window, c.n_fft, c.hop_length, self.iters, c.power,
                               self.init, self.clip, center=c.center, pad_mode=c.pad_mode)


class ExternalClassifier(nn.Module):
    """A user's classifier with the interface speechmax's own have: ``forward`` takes log-mel (B, n_mels,
    n_frames) and gives logits (B, n_labels); ``cfg`` (arch "external", labels, shapes), ``feature_config``,
    ``norm`` (identity: the user's model normalises its own input) and ``activations`` (named modules' outputs
    through forward hooks, for unit objectives). ``input="waveform"`` puts :class:`MelToWave` in front;
    :meth:`classify_waveform` gives such a model real audio directly."""

    def __init__(self, module: nn.Module, labels, input: str = "log-mel", feature_config: FeatureConfig | None = None,
                 seconds: float = 1.0, name: str = "external"):
        super().__init__()
        if input not in INPUTS:
            raise ModelError(f"unknown input kind {input!r}; expected one of {', '.join(INPUTS)}")
        labels = tuple(labels)
        if not labels:
            raise ModelError("a classifier needs its labels (one per output, in order)")
        fc = feature_config or FeatureConfig()
        self.module, self.input, self.name, self.card = module, input, name, {}
        self.samples = int(round(seconds * fc.sample_rate))
        self.feature_config = fc
        self.cfg = ClassifierConfig(arch=ARCH, n_classes=len(labels), n_mels=fc.n_mels,
                                    n_frames=n_frames(self.samples, fc), channels=(), labels=labels)
        self.norm = InputNorm(fc.n_mels)
        self.to_wave = MelToWave(fc) if input == "waveform" else None
        self.samples = (self.cfg.n_frames - 1) * fc.hop_length if self.to_wave is not None else self.samples
        self.train(False)
        self._probe()

    def train(self, mode: bool = True) -> "ExternalClassifier":
        """The wrapper's flag only: speechmax never trains the user's model, which stays in eval mode (an
        exported program cannot switch at all)."""
        self.training = mode
        try:
            self.module.eval()
        except NotImplementedError:   # torch.export's module: its mode was fixed when it was exported
            pass
        return self

    def _model_input(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.to_wave(log_mel) if self.to_wave is not None else log_mel

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        try:
            # TorchScript's optimizing executor differentiates its graphs with its own formulas, some wrong (in
            # torch 2.13 |complex| backpropagates through torch.sign and fails); unoptimized, it records eager autograd
            with torch.jit.optimized_execution(not isinstance(self.module, torch.jit.ScriptModule)):
                out = self.module(x)
        except Exception as e:
            raise ModelError(f"the model {self.name!r} failed on {self.input} input of shape {tuple(x.shape)} "
                             f"({type(e).__name__}: {e})") from e
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape != (x.shape[0], self.cfg.n_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"the model {self.name!r} gave {got} for {self.input} input of shape {tuple(x.shape)}; "
                             f"expected logits ({x.shape[0]}, {self.cfg.n_classes}): one per label "
                             f"({self.cfg.n_classes} labels)")
        return out

    def _probe(self) -> None:
        """A batch of 2 before any work: shape errors, a label count that differs from the outputs, and a model
        the gradient cannot pass through are reported here, with the input shape the model got."""
        shape = (2, self.samples) if self.input == "waveform" else (2, self.cfg.n_mels, self.cfg.n_frames)
        x = torch.zeros(shape, requires_grad=True)
        with torch.enable_grad():
            out = self._run(x)
        if not out.requires_grad:
            raise ModelError(f"the model {self.name!r} is not differentiable with respect to its {self.input} input "
                             "(its output has no gradient: an argmax, .detach(), integer cast or torch.no_grad "
                             "inside forward breaks it); maximization needs the gradient")

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log_mel: (batch, n_mels, n_frames) -> (batch, n_labels) logits."""
        return self._run(self._model_input(log_mel))

    def classify_waveform(self, wave: torch.Tensor) -> torch.Tensor:
        """A waveform model's logits on real audio (batch, samples), without the log-mel round trip."""
        if self.input != "waveform":
            raise ModelError(f"the model {self.name!r} reads log-mel, not waveforms")
        return self._run(wave)

    @property
    def hookable(self) -> bool:
        """Whether the model runs its named modules as modules (forward hooks see them): a Python module, not a
        TorchScript module (which refuses hooks) or a torch.export program (which runs its flattened graph)."""
        return not isinstance(self.module, _COMPILED)

    def _layers(self) -> dict[str, nn.Module]:
        """The named modules a layer objective can take: the Python ones (none in a TorchScript or torch.export
        program)."""
        return {name: m for name, m in self.module.named_modules() if name and not isinstance(m, _COMPILED)} \
            if self.hookable else {}

    def layer_names(self) -> list[str]:
        return list(self._layers())

    def activations(self, log_mel: torch.Tensor, names=None) -> "OrderedDict[str, torch.Tensor]":
        """Outputs of the named modules (all, or ``names``) for log-mel input, then "logits"."""
        modules = self._layers()
        wanted = list(modules) if names is None else list(names)
        if wanted and not self.hookable:
            raise ModelError(f"layer objectives need the model's Python module: a {type(self.module).__name__} "
                             "does not run its submodules as modules (no forward hooks)")
        unknown = [n for n in wanted if n not in modules]
        if unknown:
            raise ModelError(f"unknown layer(s) {', '.join(unknown)}; layers: {', '.join(modules)}")
        got, handles = OrderedDict(), []
        for n in wanted:
            handles.append(modules[n].register_forward_hook(
                lambda _m, _i, out, n=n: got.__setitem__(n, out[0] if isinstance(out, tuple) else out)))
        try:
            logits = self(log_mel)
        finally:
            for h in handles:
                h.remove()
        got["logits"] = logits
        return got


def load_external(path, labels, input: str = "log-mel", features=None) -> ExternalClassifier:
    """A user's TorchScript / ``.pt2`` classifier with its labels (a file, one per line, or a sequence) and, for
    a log-mel model, its FeatureConfig (a :class:`FeatureConfig`, a JSON file of its fields, or None for the
    default)."""
    if isinstance(labels, (str, Path)):
        labels = read_labels(labels)
    if isinstance(features, (str, Path)):
        features = FeatureConfig.from_json(features)
    return ExternalClassifier(load_program(path), labels, input=input, feature_config=features, name=str(path))
