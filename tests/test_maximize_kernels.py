"""The CUDA and Triton ascent steps: csrc/cuda/maximize.cu compiles for sm_80 and sm_90, and its device code --
built for the host, one thread per block -- agrees with autograd; the Triton kernels (interpreter, tiny
shapes) agree with autograd."""
import ctypes
import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from speechmax.ops import available_backends
from speechmax.ops.kernel_params import to_struct
from speechmax.ops.maximize import AdamState, L2, Unit, ascent_step, objective_code, pack_maximizer

from test_maximize import inputs, ref64, rel_err, tiny_classifier, tiny_prior

CU = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "maximize.cu"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_kernel_compiles(arch, nvcc_compile):
    r = nvcc_compile(CU, arch)   # the compile test_gated's test_cuda_sources_compile makes too: done once
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    lib = tmp_path_factory.mktemp("emu") / "libmaximize_emu.so"
    r = subprocess.run([cxx, "-x", "c++", "-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Werror", str(CU),
                        "-o", str(lib)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return ctypes.CDLL(str(lib))


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


def _struct(params):
    """The params as the C struct the extension builds from them (same header, same compiler: same bytes)."""
    return ctypes.create_string_buffer(bytes(to_struct(params)))


def emulated_step(lib, clf, prior, x, t, objective="prob", optimizer="rms-normalized", lr=0.1, l2=0.0, state=None,
                  update=True):
    """The CUDA kernel's device code, run on the host: same arguments as the launcher, host pointers."""
    p = pack_maximizer(clf, prior)
    kind, level, unit = objective_code(clf, objective)
    obj, grad = torch.empty(len(x)), torch.empty_like(x)
    adam = optimizer == "adam"
    if adam:
        state.step += 1
    params = dataclasses.replace(p.params, objective=kind, level=level, unit=unit, optimizer=int(adam), lr=lr, l2=l2,
                                 adam_step=state.step if adam else 0, update=update)
    rc = lib.speechmax_maximize_step_emulated(
        _struct(params), _ptr(p.weights), _ptr(p.desc), ctypes.c_int(len(p.desc)), _ptr(p.norm), _ptr(x),
        ctypes.c_long(len(x)), ctypes.c_long(x[0].numel()), _ptr(t), _ptr(state.m if adam else None),
        _ptr(state.v if adam else None), _ptr(obj), _ptr(grad))
    assert rc == 0
    return obj, grad


@pytest.mark.parametrize("mode", ["features", "latent"])
def test_cuda_device_code_equals_autograd(emulated, mode):
    clf = tiny_classifier(channels=(16, 16, 24), kernel=5)
    prior = tiny_prior(latent=9, channels=20, kernel=5) if mode == "latent" else None
    x, t = inputs(prior, 3)
    for objective in ["prob", "logit", Unit("stem", 2), Unit("block2", 1), Unit("pool", 0)]:
        o_ref, g_ref = ref64(clf, prior, x, t, objective=objective, regularizers=[L2(0.05)])
        o, g = emulated_step(emulated, clf, prior, x.clone(), t, objective=objective, l2=0.05, update=False)
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-6)
        assert rel_err(g, g_ref) < 1e-4, objective


@pytest.mark.parametrize("optimizer", ["rms-normalized", "adam"])
def test_cuda_device_code_update_equals_cpu_kernel(emulated, optimizer):
    if not available_backends()["cpu"]:
        pytest.skip("speechmax._C is not built")
    clf, prior = tiny_classifier(), tiny_prior()
    x, t = inputs(prior, 4)
    xe, xc = x.clone(), x.clone()
    se = AdamState.zeros_like(x) if optimizer == "adam" else None
    sc = AdamState.zeros_like(x) if optimizer == "adam" else None
    for _ in range(3):
        oe, _ = emulated_step(emulated, clf, prior, xe, t, optimizer=optimizer, lr=0.05, state=se)
        oc = ascent_step(clf, prior, xc, t, optimizer=optimizer, lr=0.05, state=sc)
        torch.testing.assert_close(oe, oc, rtol=1e-4, atol=1e-6)
    assert rel_err(xe - x, xc - x) < 1e-4


def test_cuda_scratch_size(emulated):
    p = pack_maximizer(tiny_classifier(), tiny_prior())
    emulated.speechmax_maximize_scratch_floats.restype = ctypes.c_long
    n = emulated.speechmax_maximize_scratch_floats(_struct(p.params))
    assert 10_000 < n < 1_000_000
    too_many_classes = dataclasses.replace(p.params, n_classes=65)   # the kernel's logits gradient lives in registers
    assert emulated.speechmax_maximize_scratch_floats(_struct(too_many_classes)) == 0


needs_triton = pytest.mark.skipif(not available_backends()["triton"], reason="Triton cannot run here (no GPU, no interpreter)")


@needs_triton
@pytest.mark.parametrize("mode", ["features", "latent"])
def test_triton_gradient_equals_autograd(mode):
    clf = tiny_classifier(channels=(8, 8, 12), kernel=3)
    prior = tiny_prior(latent=6, channels=8, kernel=3) if mode == "latent" else None
    x, t = inputs(prior, 2)
    for objective in ["prob", Unit("block1", 1), Unit("logits", 3)]:
        o_ref, g_ref = ref64(clf, prior, x, t, objective=objective, regularizers=[L2(0.05)])
        o, g = ascent_step(clf, prior, x.clone(), t, objective=objective, update=False, return_grad=True,
                           regularizers=[L2(0.05)], backend="triton")
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-6)
        assert rel_err(g, g_ref) < 1e-4, objective


@needs_triton
@pytest.mark.parametrize("optimizer", ["rms-normalized", "adam"])
def test_triton_update_equals_cpu_kernel(optimizer):
    if not available_backends()["cpu"]:
        pytest.skip("speechmax._C is not built")
    clf = tiny_classifier(channels=(8, 12), kernel=3)
    prior = tiny_prior(latent=6, channels=8, kernel=3)
    x, t = inputs(prior, 3)
    xt, xc = x.clone(), x.clone()
    st = AdamState.zeros_like(x) if optimizer == "adam" else None
    sc = AdamState.zeros_like(x) if optimizer == "adam" else None
    for _ in range(2):
        ot = ascent_step(clf, prior, xt, t, optimizer=optimizer, lr=0.05, state=st, backend="triton")
        oc = ascent_step(clf, prior, xc, t, optimizer=optimizer, lr=0.05, state=sc)
        torch.testing.assert_close(ot, oc, rtol=1e-4, atol=1e-6)
    assert rel_err(xt - x, xc - x) < 1e-4


@needs_triton
def test_triton_conv_relu_passes_nan():
    # as mx::relu: a start whose activations overflowed must reach the objective as NaN (and be stopped), where
    # tl.maximum(NaN, 0) is 0 and so hid it
    from speechmax.kernels.maximize import _conv

    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(1, 16, 16, generator=g), torch.randn(2, 4, 16, generator=g)
    x[1, 2, 5] = float("nan")
    y = _conv((w, None, 0), x, 4, torch.empty(2, 4, 16), 4, relu=True)
    ref = torch.relu(x @ w[0])
    assert torch.isnan(y[1, 2]).all()
    ok = ~torch.isnan(ref)
    ok[1, 2] = False
    torch.testing.assert_close(y[ok], ref[ok], rtol=1e-5, atol=1e-6)
