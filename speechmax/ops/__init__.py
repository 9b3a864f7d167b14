"""Python face of the compiled kernels (``speechmax._C``) and the Triton kernels (``speechmax.kernels``).

Each fast op sits beside its pure-PyTorch ``*_ref`` twin with the same docstring of shapes.
"""
from .backends import available_backends, require_backend, BackendUnavailable
from .gated import gated_activation, gated_activation_ref
from .maximize import ascent_step, ascent_step_ref

__all__ = ["available_backends", "require_backend", "BackendUnavailable", "gated_activation", "gated_activation_ref"]
__all__ += ["ascent_step", "ascent_step_ref"]
