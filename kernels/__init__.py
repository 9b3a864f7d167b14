"""Triton kernels, installed as ``speechmax.kernels``.

Import this package only through :mod:`speechmax.ops`, which checks that Triton can run here (a GPU, or
``TRITON_INTERPRET=1`` set before the first import, as the tests do).
"""
