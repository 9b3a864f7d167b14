"""Corpus throughput: clips/s of `build_corpus` (2 workers) and of the loader's first (cold) and cached
(warm) pass over a split.

    .venv/bin/pytest benchmarks/bench_corpus.py --benchmark-only
    SPEECHMAX_BENCH_SPEAKERS=20 ... for a bigger build (default 10 speakers = 350 clips a round)

The figure to read is ``extra_info.clips_per_s`` (median round). Check the machine is idle first: the build
runs one engine process per worker and competes with anything else on the two cores.
"""
import itertools
import os
import shutil
import warnings

import pytest

from speechmax.data import SpeechCommands, build_corpus

SPEAKERS = int(os.environ.get("SPEECHMAX_BENCH_SPEAKERS", "10"))
WORKERS = int(os.environ.get("SPEECHMAX_BENCH_WORKERS", "2"))

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _build(out, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_corpus(out, SPEAKERS, seed=seed, workers=WORKERS)


def test_build_corpus_clips_per_s(benchmark, tmp_path):
    seeds = itertools.count()
    rates = []

    def run():
        s = _build(tmp_path / f"c{next(seeds)}", 100)  # same seed: same speakers every round
        rates.append(s.clips_per_s)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    rates.sort()
    benchmark.extra_info.update({"speakers": SPEAKERS, "workers": WORKERS, "clips": SPEAKERS * 35,
                                 "clips_per_s": round(rates[len(rates) // 2], 1),
                                 "clips_per_s_all": [round(r, 1) for r in rates]})


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_loader_clips_per_s(benchmark, tmp_path, cache):
    root = tmp_path / "c"
    _build(root, 100)
    n = len(SpeechCommands(root, "training", cache_dir=tmp_path / "warm"))
    rounds = itertools.count()

    def run():
        cache_dir = tmp_path / ("warm" if cache == "warm" else f"cold{next(rounds)}")
        return SpeechCommands(root, "training", cache_dir=cache_dir).tensors()

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update({"clips": n, "clips_per_s": round(n / benchmark.stats.stats.median, 1)})
