"""The kernels' interface is written once on each side and the two agree: every params struct of
csrc/kernel_params.h (bound as speechmax._C.<Name>) has exactly the fields of its dataclass mirror in
speechmax/ops/kernel_params.py, a mirror converts field by field, and the constants Python uses are the ones the
extension reports."""
import dataclasses
import math

import pytest

from speechmax.ops import available_backends
from speechmax.ops import kernel_params as kp
from speechmax.ops.backends import extension
from speechmax.ops.maximize import RMS_EPS
from speechmax.ops.wavenet import RES_SCALE

pytestmark = pytest.mark.skipif(not available_backends()["cpu"], reason="speechmax._C is not built")

MIRRORS = [kp.MaximizeParams, kp.WavenetParams, kp.Decoder2dParams]


def _bound_fields(struct_type) -> set[str]:
    return {name for name, v in vars(struct_type).items() if isinstance(v, property)}


@pytest.mark.parametrize("mirror", MIRRORS, ids=lambda m: m.__name__)
def test_mirror_has_the_structs_fields(mirror):
    assert _bound_fields(getattr(extension(), mirror.__name__)) == {f.name for f in dataclasses.fields(mirror)}


@pytest.mark.parametrize("mirror", MIRRORS, ids=lambda m: m.__name__)
def test_mirror_defaults_are_the_structs(mirror):
    struct = getattr(extension(), mirror.__name__)()
    for f in dataclasses.fields(mirror):
        got = getattr(struct, f.name)
        if isinstance(got, list):   # fixed-capacity arrays: unused entries are 0
            assert f.default == () and not any(got), f.name
        else:
            assert got == pytest.approx(f.default), f.name


def test_to_struct_copies_every_field():
    p = kp.MaximizeParams(latent=True, latent_dim=9, channels=20, channels2=12, base_frames=26, n_mels=80,
                          n_frames=101, n_blocks=2, n_classes=35, block_channels=(16, 16, 24), block_proj=(0, 1),
                          objective=2, level=1, unit=3, optimizer=1, lr=0.05, l2=0.01, adam_step=4, beta1=0.8,
                          beta2=0.99, eps=1e-7, update=False)
    s = kp.to_struct(p)
    for f in dataclasses.fields(p):
        want = getattr(p, f.name)
        got = getattr(s, f.name)
        if isinstance(want, tuple):
            assert got[:len(want)] == list(want) and not any(got[len(want):]), f.name
        else:
            assert got == pytest.approx(want), f.name


def test_an_unknown_field_is_an_error():
    with pytest.raises(AttributeError):
        extension().WavenetParams().dilation_cycle = 6
    with pytest.raises(RuntimeError, match="at most"):
        extension().WavenetParams().dilations = [1] * (kp.kernel_constants().max_wavenet_layers + 1)


def test_constants_python_uses_are_the_extensions():
    c = extension().constants()
    assert vars(kp.kernel_constants()) == c
    assert kp.align_channels(1) == kp.align_channels(c["channel_align"]) == c["channel_align"]
    # the reference paths keep their own copy (they run without the extension); the kernels' is float32
    assert RES_SCALE == math.sqrt(0.5) and c["res_scale"] == pytest.approx(RES_SCALE, rel=1e-7)
    assert c["rms_eps"] == pytest.approx(RMS_EPS, rel=1e-7)
