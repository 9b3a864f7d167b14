"""The gated op on every backend that runs here, against its reference."""
from pathlib import Path

import pytest
import torch

from speechmax.ops import BackendUnavailable, available_backends, gated_activation, gated_activation_ref

CSRC = Path(__file__).resolve().parents[1] / "csrc"
RUNNING = [b for b, ok in available_backends().items() if ok]


@pytest.mark.parametrize("backend", ["cpu", "triton", "cuda"])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (2, 128, 33), (70000,)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_gated_matches_ref(backend, shape, dtype, tol):
    if backend not in RUNNING:
        pytest.skip(f"backend {backend} does not run here")
    if backend == "triton" and shape == (70000,):
        pytest.skip("the Triton interpreter is slow; large shapes are covered on cpu")
    g = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(shape, generator=g)).to(dtype)
    b = (3 * torch.randn(shape, generator=g)).to(dtype)
    out = gated_activation(a, b, backend=backend)
    ref = gated_activation_ref(a.float(), b.float()).to(dtype)
    assert out.dtype == dtype and out.shape == a.shape
    assert (out.float() - ref.float()).abs().max().item() <= tol


def test_cpu_fp64_is_fp64_exact():
    a, b = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    torch.testing.assert_close(gated_activation(a, b), gated_activation_ref(a, b), atol=1e-12, rtol=0)


def test_bad_inputs_and_unknown_backend():
    with pytest.raises(ValueError, match="same shape"):
        gated_activation(torch.zeros(3), torch.zeros(4))
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        gated_activation(torch.zeros(3), torch.zeros(3), backend="tpu")
    if not available_backends()["cuda"]:
        with pytest.raises(BackendUnavailable, match="available: cpu"):
            gated_activation(torch.zeros(3), torch.zeros(3), backend="cuda")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_sources_compile(arch, nvcc_compile):
    sources = sorted((CSRC / "cuda").glob("*.cu"))
    assert sources
    for cu in sources:
        r = nvcc_compile(cu, arch)
        assert r.returncode == 0, f"{cu.name} failed for {arch}:\n{r.stderr}"


def _cpu_isas():
    return ["avx2"] + (["avx512"] if "avx512f" in __import__("speechmax")._C.cpu_features() else [])


@pytest.mark.skipif("cpu" not in RUNNING, reason="the C++ extension is not built")
@pytest.mark.parametrize("rows, width", [(1, 2), (5, 30), (333, 128), (4000, 128)])
def test_training_gate_forward_and_backward_match_ref(rows, width):
    """The fused training gate (one pass each way, its own vectorized exp) against torch's tanh / sigmoid."""
    from speechmax.ops.gated import gate_backward, gate_backward_ref, gate_forward, gate_forward_ref

    g = torch.Generator().manual_seed(rows)
    h = 4 * torch.randn(rows, width, generator=g)
    h[0, 0], h[-1, -1] = 120.0, -120.0                   # past exp's range: saturates, no inf / nan
    g_z = torch.randn(rows, width // 2, generator=g)
    for isa in _cpu_isas():
        z, t, s = gate_forward(h, isa=isa)
        for got, want in zip((z, t, s), gate_forward_ref(h)):
            torch.testing.assert_close(got, want, atol=5e-7, rtol=0)
        out = torch.full((rows, width), float("nan"))
        assert gate_backward(g_z, t, s, out=out, isa=isa) is out
        torch.testing.assert_close(out, gate_backward_ref(g_z, t, s), atol=1e-6, rtol=0)


@pytest.mark.skipif("cpu" not in RUNNING, reason="the C++ extension is not built")
def test_training_gate_bad_inputs_and_fallback():
    from speechmax import _C
    from speechmax.ops.gated import gate_forward, gate_forward_ref

    with pytest.raises(ValueError, match="even gate width"):
        gate_forward(torch.zeros(4, 3))
    with pytest.raises(RuntimeError, match="unknown isa"):
        _C.gate_train_forward(torch.zeros(4, 2), "sse")
    with pytest.raises(RuntimeError, match=r"must be \(4, 2\)"):
        _C.gate_train_backward(torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4, 4))
    h = torch.randn(6, 8, dtype=torch.float64)           # float64 and strided inputs take the reference
    for a, b in zip(gate_forward(h), gate_forward_ref(h)):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    hs = torch.randn(8, 6)[:, :4]
    for a, b in zip(gate_forward(hs), gate_forward_ref(hs)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
