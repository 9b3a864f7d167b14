"""speechmax.vocoder: the WaveNet vocoder (:class:`Vocoder`), its reference sampler and the Griffin-Lim control."""
from .griffinlim import griffinlim_synthesize
from .reference import sample_wavenet_ref

__all__ = ["Vocoder", "sample_wavenet_ref", "griffinlim_synthesize"]


def __getattr__(name):
    # Vocoder imports speechmax.ops.wavenet, which imports .reference: loaded on first use, no import cycle.
    if name == "Vocoder":
        from .vocoder import Vocoder

        return Vocoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
