"""speechmax.vocoder: the WaveNet vocoder (:class:`Vocoder`), its reference sampler and the Griffin-Lim control."""
from ..ops.wavenet import sample_wavenet_ref
from .griffinlim import griffinlim_synthesize
from .vocoder import Vocoder

__all__ = ["Vocoder", "sample_wavenet_ref", "griffinlim_synthesize"]
