"""The drop-in vocoder: log-mel in, 16 kHz waveform out, on the fastest sampler that runs here.

    voc = Vocoder.from_pretrained("default")          # or a path to a vocoder .safetensors + card
    wave = voc(log_mel)                               # (80, T) -> ((T - 1) * 160,) float32 in [-1, 1]
    waves = voc.synthesize(batch_of_mels, backend="cpu", temperature=1.0, seed=0)   # (B, 80, T) -> (B, samples)
    wave = voc.resynthesize("speech.wav")             # through the mel and back
    for audio in voc.stream(mel_chunks, seed=0): ...  # (80, frames_i) pieces in, audio pieces out
    voc.save_pretrained("my-vocoder")                 # my-vocoder/model.safetensors + model.json
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..assets import ASSET_DIR
from ..features import FeatureConfig, load_audio, log_mel
from ..models.registry import resolve
from ..models.wavenet import WaveNet, load_wavenet, save_wavenet
from ..ops import BackendUnavailable
from ..ops.wavenet import RingState, resolve_backend, sample_wavenet, wavenet_update
from .griffinlim import griffinlim_synthesize

DEFAULT_ASSET = "vocoder"
BACKENDS = ("auto", "reference", "cpu", "cpu-bf16", "triton", "cuda", "griffinlim")
STREAM_BACKENDS = ("cpu", "cpu-bf16", "triton", "cuda")   # the samplers with an incremental op (wavenet_update)
CARD_OWN = ("kind", "config", "feature_config", "sha256", "weights")   # card fields save_wavenet writes itself


def _uniform_generator(seed: int | None) -> torch.Generator:
    """The generator of a synthesis' uniforms, drawn in sample order (so a stream draws the same ones)."""
    gen = torch.Generator()
    gen.manual_seed(seed) if seed is not None else gen.seed()
    return gen


def check_seed(seed) -> int:
    """A seed for torch.Generator: an integer in [-2**63, 2**64) (torch folds negatives); anything else is refused."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    if not -2 ** 63 <= int(seed) < 2 ** 64:
        raise ValueError(f"seed must fit in 64 bits ([-2**63, 2**64)), got {seed}")
    return int(seed)


class Vocoder:
    """A WaveNet vocoder with every sampling backend behind one call (and Griffin-Lim as the control)."""

    def __init__(self, model: WaveNet | None, name: str = "custom", feature_config: FeatureConfig | None = None):
        """model: a WaveNet, or None for a Griffin-Lim-only vocoder (``backend="griffinlim"``) on ``feature_config``."""
        self.model = model.eval() if model is not None else None
        self.name = name
        self._feature_config = model.feature_config if model is not None else (feature_config or FeatureConfig())
        self._preferred, self._note = ("auto" if model is not None else "griffinlim"), None

    @classmethod
    def for_listeners(cls, name: str = "auto") -> "Vocoder":
        """The vocoder of the tools that write audio for people (maximize, the demo, the listening set).

        ``auto`` takes the shipped WaveNet when there is one and its card does not measure it below Griffin-Lim,
        else prefers Griffin-Lim (the WaveNet stays loaded, for controls); ``griffinlim`` forces Griffin-Lim;
        anything else is a vocoder name or path, used as it is. :attr:`preferred_backend` is what to synthesize
        with, :attr:`preference_note` why it is not the WaveNet (None when it is)."""
        if name == "griffinlim":
            voc, why = cls(None, name="griffinlim"), "asked for"
        else:
            try:
                voc = cls.from_pretrained("default" if name == "auto" else name)
                why = voc.below_griffinlim() if name == "auto" else None
            except FileNotFoundError as e:
                if name != "auto":
                    raise
                voc, why = cls(None, name="griffinlim"), str(e)
        if why is not None:
            voc._preferred, voc._note = "griffinlim", why
        return voc

    @property
    def preferred_backend(self) -> str:
        """The backend audio for people should be made with: ``auto`` (the WaveNet) or ``griffinlim``."""
        return self._preferred

    @property
    def preference_note(self) -> str | None:
        """Why :attr:`preferred_backend` is Griffin-Lim although a WaveNet was asked for (None otherwise)."""
        return self._note

    def below_griffinlim(self) -> str | None:
        """Why this WaveNet's card says it is less intelligible than Griffin-Lim, or None (it is not, or its card
        has no quality measurement). Measured by ``speechmax train vocoder --export ... --measure``: the separate
        classifier's accuracy on the same test clips after each vocoder."""
        card = getattr(self.model, "card", None) or {}
        metrics = card.get("metrics") or {}
        acc = metrics.get("separate_accuracy") or {}
        wn, gl = acc.get("wavenet"), acc.get("griffinlim")
        if self.model is None or wn is None or gl is None or wn >= gl:
            return None
        return (f"the WaveNet {self.name!r} measured below Griffin-Lim on {metrics.get('clips', '?')} test clips "
                f"(separate classifier {wn:.1%} vs {gl:.1%}, original {acc.get('original', float('nan')):.1%}): "
                "Griffin-Lim is used; name the vocoder (e.g. 'default') to use the WaveNet anyway")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", device="cpu") -> "Vocoder":
        """``"default"`` (speechmax/assets/vocoder.safetensors), another shipped vocoder's name, a folder written
        by :meth:`save_pretrained`, or a path to a ``.safetensors`` + card written by ``save_wavenet`` /
        ``speechmax train vocoder --export``."""
        folder = Path(name_or_path)
        if str(name_or_path) != "default" and folder.is_dir() and not (folder / "model.json").exists():
            raise FileNotFoundError(f"{name_or_path}: a folder without model.json (not written by save_pretrained)")
        name = DEFAULT_ASSET if str(name_or_path) == "default" else name_or_path
        try:
            stem = resolve(name)
        except FileNotFoundError:
            if str(name_or_path) != "default":
                raise FileNotFoundError(f"no vocoder at {name_or_path!r}: not a file, and not a shipped model name") from None
            raise FileNotFoundError(
                f"the default vocoder is not shipped in this version ({ASSET_DIR / 'vocoder.safetensors'} is missing); "
                "train one with `speechmax train vocoder` and pass its path, or use backend='griffinlim'") from None
        return cls(load_wavenet(stem, device=device), name=str(name_or_path))

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the WaveNet as ``directory/model.safetensors`` + ``directory/model.json`` (its card, with the
        metrics and training record it was loaded with), for :meth:`from_pretrained`. Returns the card's path.

        A folder that holds anything is refused unless ``overwrite`` (then only the two model files are
        replaced). The pair is written into a temporary folder beside ``directory`` and renamed into place,
        so an interrupted save leaves no half-written model (on overwrite the weights are renamed before the
        card: a crash between the two leaves a pair whose sha256 check fails on load, never a mixed model).
        """
        if self.model is None:
            raise ValueError("this vocoder has no WaveNet (Griffin-Lim only): there are no weights to save")
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out} is not empty: choose a new or empty folder, or pass overwrite=True")
        card = {k: v for k, v in (getattr(self.model, "card", None) or {}).items() if k not in CARD_OWN}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            save_wavenet(self.model, tmp / "model", **card)
            if out.is_dir() and any(out.iterdir()):
                for name in ("model.safetensors", "model.json"):
                    os.replace(tmp / name, out / name)
            else:
                if out.is_dir():
                    out.rmdir()
                os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out / "model.json"

    def to(self, device) -> "Vocoder":
        """Move the WaveNet to ``device`` (a torch device or its name); returns self."""
        if self.model is not None:
            self.model.to(device)
        return self

    @property
    def feature_config(self) -> FeatureConfig:
        return self._feature_config

    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    def __call__(self, mel, **kwargs) -> np.ndarray:
        return self.synthesize(mel, **kwargs)

    def _check_mel(self, mel, min_frames: int = 2) -> torch.Tensor:
        n_mels = self.feature_config.n_mels
        if not isinstance(mel, (np.ndarray, torch.Tensor)):
            raise TypeError(f"mel must be a numpy array or a torch tensor, got {type(mel).__name__}")
        m = torch.as_tensor(mel).detach()
        if not m.is_floating_point():
            raise TypeError(f"mel must hold floating-point log-mel values, got dtype {m.dtype}: pass the natural-log "
                            "mel as float (speechmax.log_mel), not integer or boolean data")
        m = m.float().cpu()
        if m.dim() not in (2, 3) or m.shape[-2] != n_mels:
            raise ValueError(f"expected a log-mel of shape ({n_mels}, frames) or (batch, {n_mels}, frames), "
                             f"got shape {tuple(m.shape)}")
        if m.shape[-1] < min_frames or (m.dim() == 3 and m.shape[0] == 0):
            raise ValueError(f"the log-mel is empty: shape {tuple(m.shape)}; at least {min_frames} frames are needed "
                             f"({self.feature_config.hop_length} samples per frame after the first)")
        if not torch.isfinite(m).all():
            raise ValueError("the log-mel contains NaN or infinite values")
        return m

    @torch.no_grad()
    def synthesize(self, mel, backend: str = "auto", temperature: float = 1.0, seed: int | None = None,
                   threads: int | None = None, progress=None) -> np.ndarray:
        """Log-mel -> float32 waveform(s) in [-1, 1] at ``sample_rate``.

        mel: (n_mels, frames) or (batch, n_mels, frames), numpy or torch, natural-log mel as
        :func:`speechmax.log_mel` computes it. Returns ((frames - 1) * hop,) or (batch, (frames - 1) * hop).
        backend: auto (the fastest that runs here) | reference | cpu | cpu-bf16 | triton | cuda | griffinlim.
        temperature: softmax temperature of the draws (0 = argmax). seed: the uniforms' seed (None = random);
        the same seed gives the same uniforms on every backend, hence the same samples on the fp32 ones.
        progress: optional callable(n), called as samples are produced (per item).
        """
        if backend not in BACKENDS:
            raise BackendUnavailable(f"unknown vocoder backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        m = self._check_mel(mel)
        seed = None if seed is None else check_seed(seed)
        squeeze = m.dim() == 2
        if squeeze:
            m = m[None]
        if backend == "griffinlim":
            wave = griffinlim_synthesize(m, self.feature_config, seed=seed)
            if progress is not None:
                progress(wave.shape[-1])
            return wave[0] if squeeze else wave
        if self.model is None:
            raise ValueError("this vocoder has no WaveNet (Griffin-Lim only): use backend='griffinlim', "
                             "or load one with Vocoder.from_pretrained")
        backend = resolve_backend(backend, batch=m.shape[0], threads=threads)
        cfg = self.model.cfg
        B, T = m.shape[0], (m.shape[-1] - 1) * cfg.hop_length
        uniforms = torch.rand(B, T, generator=_uniform_generator(seed))
        q = sample_wavenet(self.model, m, uniforms, temperature, backend=backend, progress=progress, threads=threads)
        wave = self.model.decode(q)
        return wave[0] if squeeze else wave

    def stream(self, mel_chunks, backend: str = "auto", temperature: float = 1.0, seed: int | None = None,
               threads: int | None = None):
        """Log-mel pieces of one utterance in, its audio out piece by piece: a generator.

        mel_chunks: an iterable of (n_mels, frames_i) log-mel pieces, in order (frames_i >= 0; at least 2 frames
        in all). Yields a float32 (samples_i,) array after each piece and one more at the end; concatenated they
        equal ``synthesize(concatenated mel, backend, temperature, seed)`` sample for sample: the uniforms are
        drawn in order from one generator, and the sampler's ring state and the de-emphasis filter's state
        carry across pieces. The conditioning net looks 2 * (cond_kernel // 2) frames ahead, so the audio of a
        piece's last frames (that many, plus half a hop) waits for the next piece or the end; early yields may
        be empty. backend: auto | cpu | cpu-bf16 | triton | cuda (the samplers with an incremental op).
        The arguments are checked when ``stream`` is called; the pieces as they arrive.
        """
        if self.model is None:
            raise ValueError("this vocoder has no WaveNet (Griffin-Lim only): streaming needs one")
        if backend not in BACKENDS:
            raise BackendUnavailable(f"unknown vocoder backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        resolved = "griffinlim" if backend == "griffinlim" else resolve_backend(backend, batch=1, threads=threads)
        if resolved not in STREAM_BACKENDS:
            raise ValueError(f"stream runs on the incremental samplers ({', '.join(STREAM_BACKENDS)}), not on "
                             f"{resolved!r}" + (" (what 'auto' gives here)" if backend == "auto" else ""))
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        seed = None if seed is None else check_seed(seed)
        return self._stream(iter(mel_chunks), resolved, temperature, _uniform_generator(seed), threads)

    @torch.no_grad()
    def _stream(self, chunks, backend: str, temperature: float, gen: torch.Generator, threads: int | None):
        model, cfg = self.model, self.model.cfg
        hop, ahead = cfg.hop_length, 2 * (cfg.cond_kernel // 2)
        device = next(model.parameters()).device
        state = RingState.zeros(cfg, 1, device)
        zi = np.zeros((1, 1))                       # the de-emphasis filter's state
        mel = torch.empty(1, cfg.n_mels, 0)         # received frames from mel0 on that features still need
        feats = torch.empty(1, cfg.cond_channels, 0, device=device)   # final features from feat0 on
        n = mel0 = feat0 = 0                        # frames received; absolute frames of mel[0], feats[0]

        def advance(final: bool) -> np.ndarray:
            nonlocal mel, feats, mel0, feat0, zi
            done = feat0 + feats.shape[-1]          # frames whose features are final
            upto = n if final else max(done, n - ahead)
            if upto > done:                         # the window starts `ahead` frames early: its edge is exact from there
                start = max(0, done - ahead)
                window = model.cond_net(mel[..., start - mel0:].to(device))
                feats = torch.cat([feats, window[..., done - start:upto - start]], dim=-1)
                mel, mel0 = mel[..., max(0, upto - ahead) - mel0:], max(0, upto - ahead)
            ready = max(0, min((n - 1) * hop, upto * hop - hop // 2))
            count = ready - state.step
            if count <= 0:
                return np.zeros(0, np.float32)
            first = state.step // hop
            classes = wavenet_update(model, feats[..., first - feat0:], torch.rand(1, count, generator=gen), state,
                                     temperature, backend, threads=threads, frame0=first)
            feats, feat0 = feats[..., state.step // hop - feat0:], state.step // hop
            wave, zi = model.decode(classes, zi)
            return wave[0]

        for chunk in chunks:
            m = self._check_mel(chunk, min_frames=0)
            if m.dim() != 2:
                raise ValueError(f"stream takes (n_mels, frames) pieces of one utterance, got shape {tuple(m.shape)}")
            mel = torch.cat([mel, m[None]], dim=-1)
            n += m.shape[-1]
            yield advance(final=False)
        if n < 2:
            raise ValueError(f"the streamed log-mel has {n} frame(s); at least 2 are needed")
        yield advance(final=True)

    def resynthesize(self, wav_path: str | os.PathLike, **kwargs) -> np.ndarray:
        """Read a wav (any rate; resampled), take its log-mel and synthesize it back: (samples,) float32."""
        wave = load_audio(Path(wav_path), self.sample_rate)
        return self.synthesize(log_mel(torch.from_numpy(wave), self.feature_config), **kwargs)
