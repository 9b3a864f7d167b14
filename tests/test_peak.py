"""The measured FMA peak (csrc/peak.cpp, speechmax.ops.peak): the chains against their reference on every
instruction set this CPU runs, and the machine facts the benches report. Speed is never asserted."""
import math

import pytest
import torch

from speechmax.ops import available_backends
from speechmax.ops import peak
from speechmax.ops.peak import fma_chains, fma_chains_ref, measure_peak, peak_gflops, peak_isas

pytestmark = pytest.mark.skipif(not available_backends()["cpu"], reason="the C++ extension is not built")


def _features():
    return __import__("speechmax")._C.cpu_features()


def _cases():
    if not available_backends()["cpu"]:
        return []
    return [(kind, isa) for kind in peak.KINDS for isa in peak_isas(kind)]


@pytest.mark.parametrize("kind, isa", _cases())
@pytest.mark.parametrize("iterations", [0, 1, 7, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_chains_match_ref(kind, isa, iterations, threads):
    out = fma_chains(kind, iterations, threads=threads, isa=isa)
    assert out.dtype == torch.float32 and out.shape[0] == threads
    # every sum is exact in fp32 at these lengths: bit for bit, every thread, chain and lane
    assert torch.equal(out, fma_chains_ref(kind, iterations, threads, *out.shape[1:]))


@pytest.mark.parametrize("kind", peak.KINDS)
def test_ref_tells_step_counts_and_lanes_apart(kind):
    """So a dropped step, a lost half of a bf16 pair or a swapped lane cannot pass the comparison above."""
    a, b = fma_chains_ref(kind, 10), fma_chains_ref(kind, 11)
    assert (a != b).all() and a[0, 0].unique().numel() == a.shape[-1]


def test_isas_follow_the_cpu_features():
    f = _features()
    assert peak_isas("fp32")[0] == ("avx512" if f["avx512f"] else "avx2" if f["avx2"] and f["fma"] else "scalar")
    assert peak_isas("bf16") == (["avx512bf16"] if f["avx512f"] and f["avx512bf16"] else [])
    # AMX also needs the OS to grant the tiles, which the bf16 ascent's isa list reflects the same way
    from speechmax.ops.maximize import bf16_isa
    assert peak_isas("amx_bf16") == (["amx"] if bf16_isa() == "amx" else [])
    if not f["amx_bf16"]:
        assert peak_isas("amx_bf16") == [] and peak_gflops("amx_bf16", 1, 0.05) is None


def test_peak_gflops_positive_and_bf16_only_with_the_instruction():
    fp32 = peak_gflops("fp32", threads=1, seconds=0.05)
    assert fp32 > 0 and math.isfinite(fp32)
    bf16 = peak_gflops("bf16", threads=1, seconds=0.05)
    assert (bf16 is None) == (not _features()["avx512bf16"])
    assert bf16 is None or bf16 > 0


def test_measure_peak_reports_the_machine():
    report = measure_peak(threads=(1,), seconds=0.05)
    assert report["peak_gflops"]["fp32"] > 0 and report["peak_gflops_by_threads"]["fp32"]["1"] > 0
    assert (report["peak_gflops"]["bf16"] is None) == (not _features()["avx512bf16"])
    assert report["torch_gflops"]["sgemm"]["1"] > 0 and report["torch_gflops"]["bf16_matmul"]["1"] > 0
    assert report["cpu"] and report["cpu_features"] == _features()
    assert report["peak_isa"]["fp32"] == peak_isas("fp32")[0]


def test_measure_peak_without_bf16_instructions(monkeypatch):
    """A CPU without AVX512-BF16 (the Intel machines of some sittings): bf16 is null, fp32 still measured."""
    monkeypatch.setattr(peak, "peak_isas", lambda kind: ["avx2"] if kind == "fp32" else [])
    report = measure_peak(threads=(1, 2), seconds=0.05)
    assert report["peak_gflops"]["bf16"] is None and report["peak_gflops_by_threads"]["bf16"] is None
    assert report["peak_isa"] == {"fp32": "avx2", "bf16": None, "amx_bf16": None}
    assert set(report["peak_gflops_by_threads"]["fp32"]) == {"1", "2"}
    assert report["peak_gflops"]["fp32"] == report["peak_gflops_by_threads"]["fp32"]["2"]


def test_bad_kind_and_isa():
    with pytest.raises(ValueError, match="unknown kind 'fp64'"):
        fma_chains("fp64", 1)
    with pytest.raises(RuntimeError, match="no isa 'avx512bf16' for kind fp32"):
        fma_chains("fp32", 1, isa="avx512bf16")
    if not _features()["avx512bf16"]:
        with pytest.raises(RuntimeError, match="this CPU has no instruction set for kind bf16"):
            fma_chains("bf16", 1)
