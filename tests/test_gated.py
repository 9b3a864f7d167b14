"""The gated op on every backend that runs here, against its reference."""
import shutil
import subprocess
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
def test_cuda_sources_compile(arch, tmp_path):
    nvcc = shutil.which("nvcc") or (shutil.which("nvcc", path="/usr/local/cuda/bin"))
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    for cu in sorted((CSRC / "cuda").glob("*.cu")):
        r = subprocess.run([nvcc, f"-arch={arch}", "-std=c++17", "-O3", "-c", str(cu), "-o", str(tmp_path / f"{cu.stem}.o")],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{cu.name} failed for {arch}:\n{r.stderr}"
