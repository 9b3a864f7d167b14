"""WaveNet sampling on every backend: the fused samplers beside their reference twin :func:`sample_wavenet_ref`.

Backends: ``reference`` (PyTorch, :func:`sample_wavenet_ref`: the ring-buffer ("fast-wavenet") method,
O(layers) per sample), ``cpu`` (the fused C++ sampler, fp32),
``cpu-bf16`` (the same with bf16 weights, fp32 accumulation: widened to fp32 in registers, or on CPUs with
AVX512-BF16 multiplied by the inputs rounded to bf16 with vdpbf16ps), ``triton``
(kernels/wavenet.py; a GPU, or the interpreter under TRITON_INTERPRET=1) and ``cuda`` (csrc/cuda/wavenet.cu).
All of them take the same explicit uniforms and draw by inverse CDF, so they agree draw for draw wherever
their logits do; every fast backend is compared with the reference that way.

The model is taken as it is (a :class:`~speechmax.models.wavenet.WaveNet`, read through its attributes:
``cfg``, the weights, ``cond_net``, ``conditioning``, ``head``), so this module sits below the models.

Two entry points:
- :func:`sample_wavenet`: the drop-in twin of ``sample_wavenet_ref`` (same arguments, shapes, results).
- :func:`wavenet_update`: the incremental op, causal-conv1d style: conditioning features for the whole
  utterance, and a caller-owned :class:`RingState` advanced in place by as many samples as there are
  uniforms. Sample ``t = state.step + i`` reads frame ``(t + hop // 2) // hop``.

``SPEECHMAX_CPU_ISA=avx2|avx512|avx512bf16|avx512bf16-emulated`` forces the CPU sampler's instruction set
(default: the widest this CPU has; ``speechmax._C.wavenet_cpu_isas()`` lists those that run here).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch

from ..features import mu_law_decode
from .backends import BackendUnavailable, available_backends, extension, triton_kernels
from .kernel_params import WavenetParams, align_channels, kernel_constants, to_struct
from .packing import PackCache

__all__ = ["BACKENDS", "RES_SCALE", "WaveNetState", "RingState", "PackedWaveNet", "pack_wavenet", "sample_wavenet",
           "sample_wavenet_ref", "draw_from_logits", "n_output_samples", "wavenet_update", "wavenet_backends",
           "resolve_backend"]

BACKENDS = ("reference", "cpu", "cpu-bf16", "triton", "cuda")
AUTO_BF16_ITEMS_PER_THREAD = 32  # see resolve_backend; bf16 measured >= fp32 up to 32 items a thread, equal at 64
RES_SCALE = math.sqrt(0.5)  # the residual update's scale; the kernels' wn::kResScale (tests/test_kernel_params.py)


# --- the reference ---------------------------------------------------------------------------------------

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
    def zeros(cls, model, batch: int, device=None) -> "WaveNetState":
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


def _check_mel(model, mel: torch.Tensor) -> torch.Tensor:
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
def sample_wavenet_ref(model, mel: torch.Tensor, uniforms: torch.Tensor | None = None,
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


# --- the fused samplers ----------------------------------------------------------------------------------

@dataclass
class RingState:
    """Incremental-decoding state of the fused samplers, owned by the caller and updated in place.

    rings: (batch, sum(dilations), residual) float32; layer l's ring is ``rings[:, off[l]:off[l] + d[l]]``
        (off = running sum of the dilations), slot ``step % d[l]`` -- :class:`WaveNetState`'s buffers, packed.
    prev: (batch,) int64 mu-law class of the last sample.  step: samples generated so far.
    """
    rings: torch.Tensor
    prev: torch.Tensor
    step: int = 0

    @classmethod
    def zeros(cls, cfg, batch: int, device=None) -> "RingState":
        """Zero rings and the middle class for a WaveNet of config ``cfg`` (a WaveNetConfig)."""
        return cls(torch.zeros(batch, sum(cfg.dilations), cfg.residual_channels, device=device),
                   torch.full((batch,), cfg.n_classes // 2, dtype=torch.long, device=device))

    @classmethod
    def from_reference(cls, state: WaveNetState) -> "RingState":
        rings = torch.cat([b.transpose(1, 2) for b in state.buffers], dim=1).float().contiguous()
        return cls(rings, state.prev.clone().long().contiguous(), state.step)

    def copy_to_reference(self, state: WaveNetState) -> None:
        off = 0
        for buf in state.buffers:
            d = buf.shape[-1]
            buf.copy_(self.rings[:, off:off + d].transpose(1, 2))
            off += d
        state.prev = self.prev.clone()
        state.step = self.step


@dataclass
class PackedWaveNet:
    """A WaveNet's weights laid out for the fused samplers (pre-packed once per model and weight dtype).

    Every matrix W (M outputs, K inputs) is padded to multiples of ``channel_align`` outputs and cut into
    panels of up to ``wavenet_panel`` outputs (:func:`~speechmax.ops.kernel_params.kernel_constants`); inside
    a panel the weights are input-major (row k = the panel's outputs for input k), or for bf16 input pairs
    interleaved (row k/2 = (W[o, k], W[o, k+1]) for each output o), so a vector load gives
    consecutive outputs for a broadcast input. ``desc`` rows: element offset, M, Mp, K, Kp, bias offset.
    Matrices: conditioning projection (cond bias + gate bias folded), then per layer gate (tanh rows, then
    sigmoid rows, inputs [x[t-d] | x[t]]), skip, residual; then the two head layers.
    """
    params: WavenetParams     # the shapes; a call sets step, t0, temperature
    weights: torch.Tensor     # flat, float32 or bfloat16
    biases: torch.Tensor      # flat float32
    desc: torch.Tensor        # (n_matrices, 6) int64
    embed: torch.Tensor       # (n_classes, residual) float32
    decode: torch.Tensor      # (n_classes,) float32 mu-law decode table

    def to(self, device) -> "PackedWaveNet":
        return PackedWaveNet(self.params, self.weights.to(device), self.biases.to(device), self.desc.to(device),
                             self.embed.to(device), self.decode.to(device))

    @property
    def device(self) -> torch.device:
        return self.weights.device


def _pack_matrix(w: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, int, int, int]:
    """(M, K) float -> (flat panels, Mp, K, Kp) in the layout PackedWaveNet describes."""
    M, K = w.shape
    Mp, Kp = align_channels(M), K + (K % 2 if bf16 else 0)
    wp = torch.zeros(Mp, Kp, dtype=torch.float32)
    wp[:M, :K] = w
    panels, width = [], kernel_constants().wavenet_panel
    for p0 in range(0, Mp, width):
        panel = wp[p0:p0 + width].t()                                       # (Kp, P)
        if bf16:
            panel = panel.reshape(Kp // 2, 2, -1).transpose(1, 2)           # (Kp/2, P, 2)
        panels.append(panel.reshape(-1))
    flat = torch.cat(panels)
    return (flat.to(torch.bfloat16) if bf16 else flat), Mp, K, Kp


PACKED = PackCache()   # pack_wavenet's: per model, per weight dtype


def pack_wavenet(model, weight_dtype: torch.dtype = torch.float32) -> PackedWaveNet:
    """Pack ``model`` for the fused samplers; cached (:data:`PACKED`) until one of its parameters changes."""
    if weight_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"weight_dtype must be torch.float32 or torch.bfloat16, got {weight_dtype}")
    return PACKED.get(model, weight_dtype, model.parameters(), lambda: _pack(model, weight_dtype))


@torch.no_grad()
def _pack(model, weight_dtype: torch.dtype) -> PackedWaveNet:
    cfg = model.cfg
    R, G, S, O, NC, C, L = (cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.out_channels,
                            cfg.n_classes, cfg.cond_channels, cfg.n_layers)
    Gh = G // 2
    Rp, Ghp, Sp, Op = align_channels(R), align_channels(Gh), align_channels(S), align_channels(O)
    p = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}

    def halves(t):  # (..., G) -> (..., 2 * Ghp): tanh rows, then sigmoid rows, each padded to Ghp
        out = torch.zeros(*t.shape[:-1], 2, Ghp)
        out[..., :Gh] = t.reshape(*t.shape[:-1], 2, Gh)
        return out.reshape(*t.shape[:-1], 2 * Ghp)

    wc = halves(p["cond_proj.weight"][:, :, 0].reshape(L, G, C).permute(0, 2, 1)).permute(0, 2, 1)  # (L, 2Ghp, C)
    bc = halves(p["cond_proj.bias"].reshape(L, G) + p["b_gate"])
    mats = [(wc.reshape(L * 2 * Ghp, C), bc.reshape(-1))]
    for l in range(L):
        wg = torch.zeros(2 * Ghp, 2 * Rp)
        wg[:, :R] = halves(p["w_past"][l].t()).t()
        wg[:, Rp:Rp + R] = halves(p["w_cur"][l].t()).t()
        ws = torch.zeros(S, Ghp)
        ws[:, :Gh] = p["w_skip"][l]
        wr = torch.zeros(R, Ghp)
        wr[:, :Gh] = p["w_res"][l]
        mats += [(wg, torch.zeros(2 * Ghp)), (ws, p["b_skip"][l]), (wr, p["b_res"][l])]
    w1 = torch.zeros(O, Sp)
    w1[:, :S] = p["out1.weight"]
    w2 = torch.zeros(NC, Op)
    w2[:, :O] = p["out2.weight"]
    mats += [(w1, p["out1.bias"]), (w2, p["out2.bias"])]

    bf16 = weight_dtype == torch.bfloat16
    flats, biases, desc, off, boff = [], [], [], 0, 0
    for w, b in mats:
        flat, Mp, K, Kp = _pack_matrix(w, bf16)
        bias = torch.zeros(Mp)
        bias[:b.numel()] = b
        desc.append([off, w.shape[0], Mp, K, Kp, boff])
        flats.append(flat)
        biases.append(bias)
        off += flat.numel()
        boff += Mp
    params = WavenetParams(residual_channels=R, gate_channels=G, skip_channels=S, out_channels=O, n_classes=NC,
                           cond_channels=C, hop_length=cfg.hop_length, n_layers=L, dilations=tuple(cfg.dilations))
    return PackedWaveNet(params, torch.cat(flats), torch.cat(biases), torch.tensor(desc, dtype=torch.int64),
                         p["embed.weight"].contiguous(), mu_law_decode(torch.arange(NC), NC).float())


def wavenet_backends() -> dict[str, bool]:
    """Which sampling backends run here: reference always; cpu and cpu-bf16 with the C++ extension
    (any AVX2 CPU; AVX-512 used where present); triton on a GPU or in the interpreter; cuda with a GPU."""
    avail = available_backends()
    return {"reference": True, "cpu": avail["cpu"], "cpu-bf16": avail["cpu"], "triton": avail["triton"],
            "cuda": avail["cuda"]}


def resolve_backend(backend: str, batch: int | None = None, threads: int | None = None) -> str:
    """``auto`` -> the fastest backend that runs here for ``batch`` items on ``threads`` CPU threads: cuda;
    else cpu-bf16 while each thread has at most AUTO_BF16_ITEMS_PER_THREAD items (streaming the weights is
    the bound there, and bf16 halves it), cpu beyond (compute-bound: widening bf16 costs instructions);
    else reference. Any other name is checked, with an error that names the backends that do run."""
    runs = wavenet_backends()
    if backend == "auto":
        if runs["cuda"]:
            return "cuda"
        if runs["cpu"]:
            per_thread = -(-(batch or 1) // max(1, min(threads or torch.get_num_threads(), batch or 1)))
            return "cpu-bf16" if per_thread <= AUTO_BF16_ITEMS_PER_THREAD else "cpu"
        return "reference"
    if backend not in runs:
        raise BackendUnavailable(f"unknown vocoder backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}")
    if not runs[backend]:
        raise BackendUnavailable(f"vocoder backend {backend!r} is not available on this machine; available: "
                                 f"{', '.join(b for b, ok in runs.items() if ok)}")
    return backend


def _conditioning(model, backend: str, features: torch.Tensor) -> torch.Tensor:
    """The conditioning a backend reads, at frame rate: the cond-net output features (B, C, F) as (B, F, C)
    for cpu/cuda (they project per layer in the kernel), the per-layer projection (B, L*G, F) for triton."""
    if backend == "triton":
        return model.cond_proj(features.float())
    return features.float().transpose(1, 2).contiguous()


def _run(model, backend: str, cond: torch.Tensor, uniforms: torch.Tensor, state: RingState, t0: int,
         temperature: float, teacher, classes, wave, logits, threads: int | None) -> None:
    """Advance ``state`` by uniforms.shape[1] samples; column i reads frame (t0 + i + hop//2) // hop of
    ``cond`` (from :func:`_conditioning`). Outputs go into classes / wave / logits (column slices are fine)."""
    if backend == "triton":
        triton_kernels("wavenet").wavenet_sample_triton(model, cond, uniforms, state, t0, temperature, teacher,
                                                        classes, wave, logits, res_scale=RES_SCALE)
        state.step += uniforms.shape[1]
        return
    packed = pack_wavenet(model, torch.bfloat16 if backend == "cpu-bf16" else torch.float32)
    if backend == "cuda":
        packed = packed.to(cond.device)
    params = to_struct(replace(packed.params, step=state.step, t0=t0, temperature=float(temperature)))
    args = dict(weights=packed.weights, biases=packed.biases, desc=packed.desc, embed=packed.embed,
                decode=packed.decode, feats=cond, uniforms=uniforms, teacher=teacher, rings=state.rings,
                prev=state.prev, classes=classes, wave=wave, logits=logits)
    if backend == "cuda":
        extension().wavenet_sample_cuda(params, **args)
    else:
        extension().wavenet_sample(params, threads=threads or torch.get_num_threads(),
                                   isa=os.environ.get("SPEECHMAX_CPU_ISA", "auto"), **args)
    state.step += uniforms.shape[1]


def _check_uniforms(uniforms, B: int, T: int, device) -> torch.Tensor:
    if uniforms.shape != (B, T):
        raise ValueError(f"uniforms must be (batch, samples) = {(B, T)}, got {tuple(uniforms.shape)}")
    return uniforms.to(device=device, dtype=torch.float32).contiguous()


def _check_teacher(teacher, B: int, T: int, n_classes: int, device):
    if teacher is None:
        return None
    teacher = torch.as_tensor(teacher)
    if teacher.shape != (B, T):
        raise ValueError(f"teacher must be (batch, samples) = {(B, T)}, got {tuple(teacher.shape)}")
    if teacher.numel() and (int(teacher.min()) < 0 or int(teacher.max()) >= n_classes):
        raise ValueError(f"teacher classes must lie in [0, {n_classes})")
    return teacher.to(device=device, dtype=torch.long).contiguous()


@torch.no_grad()
def sample_wavenet(model, mel, uniforms: torch.Tensor | None = None, temperature: float = 1.0,
                   backend: str = "cpu", *, teacher: torch.Tensor | None = None,
                   state: WaveNetState | RingState | None = None, return_logits: bool = False, generator=None,
                   progress=None, threads: int | None = None):
    """Sample mu-law classes from ``model`` conditioned on ``mel``, on ``backend``.

    Same arguments and results as :func:`sample_wavenet_ref`: mel (n_mels, frames) or (batch, n_mels,
    frames); T = (frames - 1) * hop samples; uniforms (batch, T) in [0, 1) (drawn from ``generator`` if
    None); teacher (batch, T) int64; ``state`` a :class:`WaveNetState` (converted, and written back) or a
    :class:`RingState` (updated in place) to continue from; frames count from this call's first sample.
    Returns classes (batch, T) int64, and logits (batch, T, n_classes) if ``return_logits``.
    backend: auto | reference | cpu | cpu-bf16 | triton | cuda.  threads: CPU threads (default: torch's).
    progress: optional callable(n), called as samples are done (every ~16,000 samples per item).
    """
    mel = _check_mel(model, mel)
    backend = resolve_backend(backend, batch=mel.shape[0], threads=threads)
    if backend == "reference":
        return sample_wavenet_ref(model, mel, uniforms, temperature, teacher=teacher, state=state,
                                  return_logits=return_logits, generator=generator, progress=progress)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = torch.device("cuda") if backend == "cuda" else next(model.parameters()).device
    mel = mel.to(device)
    cfg = model.cfg
    B, T = mel.shape[0], n_output_samples(mel.shape[-1], cfg.hop_length)
    if uniforms is None:
        uniforms = torch.rand(B, T, generator=generator)
    uniforms = _check_uniforms(uniforms, B, T, device)
    teacher = _check_teacher(teacher, B, T, cfg.n_classes, device)
    ref_state = state if isinstance(state, WaveNetState) else None
    ring = RingState.from_reference(state) if ref_state is not None else state
    if ring is None:
        ring = RingState.zeros(cfg, B, device)
    if ring.rings.shape != (B, sum(cfg.dilations), cfg.residual_channels) or ring.prev.shape != (B,):
        raise ValueError(f"state does not fit a batch of {B} for this model: rings {tuple(ring.rings.shape)}, "
                         f"prev {tuple(ring.prev.shape)}")
    cond = _conditioning(model, backend, model.cond_net(mel))
    classes = torch.empty(B, T, dtype=torch.long, device=device)
    logits = torch.empty(B, T, cfg.n_classes, device=device) if return_logits else None
    chunk = 16000 if progress is not None else max(T, 1)
    for c0 in range(0, T, chunk):
        c1 = min(T, c0 + chunk)
        _run(model, backend, cond, uniforms[:, c0:c1], ring, c0, temperature,
             None if teacher is None else teacher[:, c0:c1], classes[:, c0:c1], None,
             None if logits is None else logits[:, c0:c1], threads)
        if progress is not None:
            progress(c1 - c0)
    if ref_state is not None:
        ring.copy_to_reference(ref_state)
    return (classes, logits) if return_logits else classes


@torch.no_grad()
def wavenet_update(model, features: torch.Tensor, uniforms: torch.Tensor, state: RingState,
                   temperature: float = 1.0, backend: str = "cpu", *, teacher: torch.Tensor | None = None,
                   return_logits: bool = False, return_wave: bool = False, threads: int | None = None,
                   frame0: int = 0):
    """Advance ``state`` (updated in place) by n = uniforms.shape[1] samples.

    features: (batch, cond_channels, frames) = ``model.cond_net(mel)`` for the whole utterance, or for its
    frames from ``frame0`` on (a streaming caller keeps only a window; frame0 <= state.step // hop); sample
    ``t = state.step + i`` reads frame ``(t + hop // 2) // hop``, so consecutive calls continue exactly where
    one long call would be. uniforms: (batch, n) in [0, 1); teacher: (batch, n) int64 to feed back instead.
    Returns classes (batch, n) int64, then the mu-law-decoded waveform (batch, n) float32 if ``return_wave``,
    then logits (batch, n, n_classes) if ``return_logits``. backend: cpu | cpu-bf16 | triton | cuda.
    """
    backend = resolve_backend(backend, batch=features.shape[0], threads=threads)
    if backend == "reference":
        raise ValueError("wavenet_update runs the fused backends (cpu, cpu-bf16, triton, cuda); "
                         "for the reference use sample_wavenet_ref with a WaveNetState")
    cfg = model.cfg
    if features.dim() != 3 or features.shape[1] != cfg.cond_channels:
        raise ValueError(f"features must be (batch, {cfg.cond_channels}, frames), got {tuple(features.shape)}")
    B, n = features.shape[0], uniforms.shape[-1]
    t0 = state.step - frame0 * cfg.hop_length
    if frame0 < 0 or t0 < 0:
        raise ValueError(f"frame0 must lie in [0, state.step // hop] = [0, {state.step // cfg.hop_length}], got {frame0}")
    device = features.device
    uniforms = _check_uniforms(uniforms, B, n, device)
    teacher = _check_teacher(teacher, B, n, cfg.n_classes, device)
    classes = torch.empty(B, n, dtype=torch.long, device=device)
    wave = torch.empty(B, n, device=device) if return_wave else None
    logits = torch.empty(B, n, cfg.n_classes, device=device) if return_logits else None
    _run(model, backend, _conditioning(model, backend, features), uniforms, state, t0, temperature, teacher, classes, wave, logits,
         threads)
    return tuple(x for x in (classes, wave, logits) if x is not None) if (return_wave or return_logits) else classes
