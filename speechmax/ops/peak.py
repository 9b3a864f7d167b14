"""The machine's arithmetic peak, measured by the project (``csrc/peak.cpp``): independent FMA chains in
registers, fp32 and -- where the CPU has AVX512-BF16 -- bf16 dot products, and AMX tiles (kind amx_bf16) where
it has them, on 1..N threads; with torch's sgemm and bf16 matmul timed the same way beside it.

torch's sgemm is not a roofline (DESIGN, "Measuring speed on these machines": on Zen 5 it reaches about half of
what the FMA units do), so the benches state every efficiency against :func:`measure_peak`'s figures. FLOPs
count 2 per lane of an fp32 FMA and 4 per fp32 lane of a bf16 pair dot (2 multiplies, 2 adds); an AMX
TDPBF16PS adds 32 products to each of its 16 x 16 fp32 elements, 64 FLOPs a lane.
"""
from __future__ import annotations

import math
import time

import torch

from ..machine import cpu_model
from .backends import extension, extension_built

KINDS = ("fp32", "bf16", "amx_bf16")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


def fma_chains_ref(kind: str, iterations: int, threads: int = 1, chains: int | None = None,
                   lanes: int | None = None) -> torch.Tensor:
    """kind: fp32|bf16|amx_bf16, ``iterations`` steps -> (threads, chains, lanes) float32: the peak's accumulators.

    Chain c, lane l starts at c + l/32. An fp32 step adds x*y with x = 1 + l/16, y = 1/2; a bf16 step adds
    x0*y0 + x1*y1 of the bf16 pairs x = (1 + l/16, 1/4), y = (1/2, -1), accumulated in fp32. Every sum is exact
    in fp32 up to ~10^5 steps, so the kernel must match this bit for bit there. amx_bf16 (chains 6 tiles, lanes
    16 x 16): each step adds A B, A row m = pairs (1 + m/8, 1/4), B row of pair p, column n = (1, n/32): element
    (m, n) gains 16 + 2m + n/8 -- exact up to ~10^4 steps."""
    _check_kind(kind)
    chains = chains or (6 if kind == "amx_bf16" else 16)    # default: the widest isa's shape
    lanes = lanes or (256 if kind == "amx_bf16" else 16)
    lane = torch.arange(lanes, dtype=torch.float32)
    acc = (torch.arange(chains, dtype=torch.float32)[:, None] + lane / 32).expand(threads, chains, lanes).clone()
    if kind == "amx_bf16":   # lanes = 16 x 16 tile elements; each step acc += A B (exact: see the docstring)
        side = torch.arange(16, dtype=torch.float64)
        a = torch.stack([(1 + side[:, None] / 8).expand(16, 16), torch.full((16, 16), 0.25, dtype=torch.float64)], -1)
        b = torch.stack([torch.ones(16, 16, dtype=torch.float64), (side / 32).expand(16, 16)], -1)
        step = (a.reshape(16, 32) @ b.permute(1, 0, 2).reshape(16, 32).t()).float().reshape(lanes)
        for _ in range(iterations):
            acc = acc + step
        return acc
    if kind == "fp32":
        x, y = 1 + lane / 16, torch.full((lanes,), 0.5)
        for _ in range(iterations):
            acc = torch.addcmul(acc, x, y)
    else:
        x = torch.stack([1 + lane / 16, torch.full((lanes,), 0.25)], -1).bfloat16().float()
        y = torch.tensor([0.5, -1.0]).bfloat16().float().expand(lanes, 2)
        for _ in range(iterations):
            acc = acc + (x * y).sum(-1)
    return acc


def fma_chains(kind: str, iterations: int, threads: int = 1, isa: str = "auto") -> torch.Tensor:
    """kind: fp32|bf16|amx_bf16, ``iterations`` steps -> (threads, chains, lanes) float32: the accumulators,
    as the C++ kernel leaves them (see :func:`fma_chains_ref`); chains and lanes are the isa's (fp32 avx512:
    16 x 16, avx2: 12 x 8, scalar: 12 x 1; bf16 avx512bf16: 16 x 16; amx_bf16 amx: 6 x 256). isa: auto or one
    of :func:`peak_isas`."""
    _check_kind(kind)
    return extension().peak_chains(kind, iterations, threads=threads, isa=isa)


def peak_isas(kind: str) -> list[str]:
    """The instruction sets the chains of ``kind`` can use on this CPU, widest first (none: bf16 without
    AVX512-BF16)."""
    _check_kind(kind)
    return extension().peak_isas(kind)


def peak_gflops(kind: str, threads: int = 1, seconds: float = 0.3, isa: str = "auto") -> float | None:
    """GFLOP/s of the FMA chains of ``kind`` on ``threads`` threads: the best of three runs filling about
    ``seconds`` (other work can only slow a run down); None where the CPU has no instruction set for ``kind``."""
    _check_kind(kind)
    gflops = extension().peak_gflops(kind, threads=threads, seconds=seconds, isa=isa)
    return None if math.isnan(gflops) else gflops


def matmul_gflops(threads: int, dtype: torch.dtype = torch.float32, n: int = 1536, seconds: float = 0.3) -> float:
    """GFLOP/s of torch's (n x n) @ (n x n) in ``dtype`` on ``threads`` threads, 2 n^3 FLOPs a product: the best
    of as many runs as fill about ``seconds`` (3 to 25), like the peak."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)                                   # warm-up: first touch, the library's kernel choice
        times = []
        while len(times) < 3 or (len(times) < 25 and sum(times) < seconds):
            t = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t)
        return 2 * n ** 3 / min(times) / 1e9
    finally:
        torch.set_num_threads(saved)


def measure_peak(threads=(1, 2), seconds: float = 0.3) -> dict:
    """The machine facts both benches report under "machine", each configuration timed for about ``seconds``:

    {"peak_gflops": {"fp32": x, "bf16": y | None, "amx_bf16": z | None} at the largest of ``threads``,
     "peak_gflops_by_threads": {"fp32": {"1": x, ...}, "bf16": {...} | None, "amx_bf16": ...},
     "peak_isa": {"fp32", "bf16", "amx_bf16"},
     "torch_gflops": {"sgemm": {"1": x, ...}, "bf16_matmul": {...}}, "cpu": model name, "cpu_features": {...}}

    Without the C++ extension the peak fields are None and torch's figures are still measured."""
    threads = sorted(set(threads))
    built = extension_built()
    by_threads, isa = {}, {}
    for kind in KINDS:
        isas = peak_isas(kind) if built else []
        isa[kind] = isas[0] if isas else None
        by_threads[kind] = {str(n): round(peak_gflops(kind, n, seconds), 1) for n in threads} if isas else None
    return {
        "peak_gflops": {kind: g[str(threads[-1])] if g else None for kind, g in by_threads.items()},
        "peak_gflops_by_threads": by_threads,
        "peak_isa": isa,
        "torch_gflops": {name: {str(n): round(matmul_gflops(n, dtype, seconds=seconds), 1) for n in threads}
                         for name, dtype in (("sgemm", torch.float32), ("bf16_matmul", torch.bfloat16))},
        "cpu": cpu_model(),
        "cpu_features": extension().cpu_features() if built else None,
    }
