"""Vocoder sampling speed: samples/s of the reference and the fused samplers on the default WaveNet config
(random weights: speed does not depend on their values), batch 1 and 64, 1 and 2 threads, and sgemm's and the
measured FMA peak's GFLOP/s in the same run -- the figures `speechmax bench vocoder --json` prints, as a
pytest-benchmark suite.

    .venv/bin/pytest benchmarks/bench_vocoder.py --benchmark-only

Read ``extra_info.samples_per_s`` (median round) and ``extra_info.gflops``; ``extra_info.loadavg`` tells
whether the machine was idle (it must be, for the figures to mean anything). ``test_stream_latency_per_chunk``
gives ``Vocoder.stream``'s latency: ms from handing over a log-mel piece to getting its audio.
"""
import os
import time

import pytest
import torch

from speechmax.models.wavenet import WaveNet, WaveNetConfig
from speechmax.ops.peak import matmul_gflops, peak_gflops
from speechmax.ops.wavenet import sample_wavenet, wavenet_backends
from speechmax.vocoder import Vocoder

# Frames per item: enough samples that a round lasts ~0.3-1 s (the reference runs ~1,000 steps/s).
FRAMES = {"reference": 3, "cpu": 41, "cpu-bf16": 41}
STREAM_FRAMES, STREAM_CHUNK = 101, 10   # a 1 s utterance streamed in 100 ms pieces


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WaveNet(WaveNetConfig()).eval()


@pytest.fixture
def threads_set():
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("backend", ["reference", "cpu", "cpu-bf16"])
def test_vocoder_samples_per_s(benchmark, model, threads_set, backend, batch, threads):
    if not wavenet_backends()[backend]:
        pytest.skip(f"backend {backend} does not run here")
    threads_set(threads)
    g = torch.Generator().manual_seed(0)
    frames = FRAMES[backend]
    mel = torch.randn(batch, 80, frames, generator=g) - 5
    u = torch.rand(batch, (frames - 1) * model.cfg.hop_length, generator=g)
    benchmark.pedantic(lambda: sample_wavenet(model, mel, u, backend=backend, threads=threads),
                       rounds=3, iterations=1, warmup_rounds=1)
    rate = u.numel() / benchmark.stats.stats.median
    benchmark.extra_info.update({"samples_per_s": round(rate, 1), "flops_per_sample": model.cfg.flops_per_sample(),
                                 "gflops": round(rate * model.cfg.flops_per_sample() / 1e9, 2),
                                 "loadavg": [round(x, 2) for x in os.getloadavg()]})


@pytest.mark.parametrize("threads", [1, 2])
def test_sgemm_gflops(benchmark, threads):
    gflops = benchmark.pedantic(lambda: matmul_gflops(threads, seconds=0.3), rounds=3, iterations=1)
    benchmark.extra_info.update({"sgemm_gflops": round(gflops, 1), "loadavg": [round(x, 2) for x in os.getloadavg()]})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["fp32", "bf16"])
def test_peak_gflops(benchmark, kind, threads):
    """The FMA peak every efficiency is stated against (speechmax.ops.peak)."""
    gflops = benchmark.pedantic(lambda: peak_gflops(kind, threads, seconds=0.3), rounds=3, iterations=1)
    if gflops is None:
        pytest.skip(f"this CPU has no instruction set for {kind} chains")
    benchmark.extra_info.update({"peak_gflops": round(gflops, 1), "loadavg": [round(x, 2) for x in os.getloadavg()]})


@pytest.mark.parametrize("backend", ["cpu", "cpu-bf16"])
def test_stream_latency_per_chunk(benchmark, model, threads_set, backend):
    """Vocoder.stream on one thread: the time each piece of STREAM_CHUNK frames takes to come back as audio
    (steady-state pieces carry STREAM_CHUNK * hop samples; the first is shorter, held back by the look-ahead)."""
    if not wavenet_backends()[backend]:
        pytest.skip(f"backend {backend} does not run here")
    threads_set(1)
    voc = Vocoder(model)
    mel = torch.randn(model.cfg.n_mels, STREAM_FRAMES, generator=torch.Generator().manual_seed(0)) - 5
    pieces = list(mel.split(STREAM_CHUNK, dim=1))

    def run():
        times, stream = [], voc.stream(pieces, backend=backend, seed=0, threads=1)
        while True:
            t0 = time.perf_counter()
            audio = next(stream, None)
            if audio is None:
                return times
            times.append((time.perf_counter() - t0, len(audio)))

    times = benchmark.pedantic(run, rounds=2, iterations=1)
    steady = sorted(t for t, n in times[1:-1])
    audio_ms = 1e3 * STREAM_CHUNK * model.cfg.hop_length / model.feature_config.sample_rate
    benchmark.extra_info.update({"chunk_frames": STREAM_CHUNK, "chunk_audio_ms": audio_ms,
                                 "chunk_ms_median": round(1e3 * steady[len(steady) // 2], 2),
                                 "chunk_ms_max": round(1e3 * steady[-1], 2),
                                 "first_chunk_ms": round(1e3 * times[0][0], 2),
                                 "loadavg": [round(x, 2) for x in os.getloadavg()]})
