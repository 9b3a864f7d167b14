"""Ascent-step speed: autograd vs the fused CPU kernel (fp32, and bf16 where the CPU has bf16 dot products), latent and features mode, batch 1 and 1024, threads 1
and 2, on random-weight models of the shipped default shapes (tcres (64, 64, 96, 96) k9; vae latent 128,
channels 192).

    .venv/bin/pytest benchmarks/bench_maximize.py --benchmark-only
    .venv/bin/pytest benchmarks/bench_maximize.py --benchmark-only -k "1024 and threads2"

Each round is one ascent step of the whole batch; the figure to read is ``extra_info.steps_per_s`` (one start
advanced one step, median round) and, for the fused path, ``extra_info.over_autograd`` (measured in the same
process). ``speechmax bench maximize --json`` prints the same figures. Check the machine is idle first.
"""
import pytest
import torch

from speechmax.maximize.bench import default_models
from speechmax.ops import available_backends
from speechmax.ops.maximize import ascent_step, ascent_step_ref, bf16_isa

MODELS = default_models()
_rates = {}


@pytest.fixture
def threads(request):
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=lambda t: f"threads{t}")
@pytest.mark.parametrize("batch", [1, 1024], ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("mode", ["latent", "features"])
@pytest.mark.parametrize("path", ["autograd", "fused", "fused-bf16"])
def test_ascent_step(benchmark, path, mode, batch, threads):
    if path.startswith("fused") and not available_backends()["cpu"]:
        pytest.skip("speechmax._C is not built")
    if path == "fused-bf16" and bf16_isa() is None:
        pytest.skip("this CPU has no bf16 dot products")
    clf, prior = MODELS[0], (MODELS[1] if mode == "latent" else None)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn((batch, 128) if prior is not None else (batch, 80, 101), generator=g)
    t = torch.randint(0, 35, (batch,), generator=g)
    if path.startswith("fused"):
        precision = "bf16" if path == "fused-bf16" else "fp32"
        step = lambda: ascent_step(clf, prior, x, t, lr=0.01, threads=threads, precision=precision)  # noqa: E731
    else:
        step = lambda: ascent_step_ref(clf, prior, x, t, lr=0.01)  # noqa: E731
    rounds = 3 if batch > 1 else 20
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    rate = batch / benchmark.stats.stats.median
    _rates[(path, mode, batch, threads)] = rate
    benchmark.extra_info["steps_per_s"] = round(rate, 2)
    ref = _rates.get(("autograd", mode, batch, threads))
    if path.startswith("fused") and ref:
        benchmark.extra_info["over_autograd"] = round(rate / ref, 2)
    fp32 = _rates.get(("fused", mode, batch, threads))
    if path == "fused-bf16" and fp32:
        benchmark.extra_info["over_fused_fp32"] = round(rate / fp32, 2)
