"""speechmax under torchrun (issue 19): a world read from torchrun's environment, work shared out by rank, the same
result whatever the world size, a dead rank's finished pieces kept, mismatched ranks refused, and every flag of
every subcommand surviving torchrun's own parser."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechmax import distributed
from speechmax.distributed import World, from_env

from test_evaluate import models  # noqa: F401  (a fixture: the tiny models)
from torchrun_output import why

HERE = Path(__file__).resolve().parent
N_PIECES = 4 * 35 * 2   # four noise runs x the tiny classifier's 35 targets x 2 blocks of starts


def test_world_from_torchruns_environment():
    assert from_env({}) == World() and not World().distributed and World().is_main
    w = from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (w.rank, w.size, w.local_rank, w.local_size) == (3, 4, 1, 2) and w.distributed and not w.is_main
    assert w.shard(range(10)) == [3, 7] and [i for i in range(10) if w.owns(i)] == [3, 7]
    assert World(0, 3).shard("abcdefg") == list("adg")
    assert sum(len(World(r, 3).shard(range(7))) for r in range(3)) == 7   # every item once
    cores = len(os.sched_getaffinity(0))
    assert w.default_threads() == max(1, cores // 2) and World().default_threads() == cores
    with pytest.raises(ValueError, match="inconsistent"):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="malformed"):
        from_env({"RANK": "x", "WORLD_SIZE": "4"})
    # a world of one: the collective steps are local
    assert distributed.gather(World(), 5) == [5]
    distributed.check_same_settings(World(), {"seed": 1})
    assert distributed.main_first(World(), lambda: 7) == 7


def test_every_flag_survives_torchruns_parser():
    """torchrun reads abbreviations of its own options anywhere on its line: a speechmax flag that is a prefix of
    one of them (``--n`` of --nnodes, --nproc-per-node...) fails there. Every flag of every subcommand, given after
    ``-m speechmax <command>``, must reach speechmax untouched -- except the plain-run aliases listed here."""
    import contextlib
    import io

    from torch.distributed.run import get_args_parser

    from speechmax.cli import build_parser, walk_parsers

    plain_run_aliases = {"--n"}   # maximize --starts' old name
    torchrun, bad, seen = get_args_parser(), {}, 0
    for path, p in walk_parsers(build_parser()):
        for action in p._actions:
            for flag in action.option_strings:
                if not flag.startswith("--") or flag in plain_run_aliases:
                    continue
                seen += 1
                argv = ["--standalone", "--nproc-per-node", "2", "-m", "speechmax", *path, flag, "1"]
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err):
                        ns = torchrun.parse_args(argv)
                    if ns.training_script_args[-2:] != [flag, "1"]:
                        bad[(path, flag)] = f"reached speechmax as {ns.training_script_args}"
                except SystemExit:
                    bad[(path, flag)] = err.getvalue().strip().splitlines()[-1]
    assert seen > 100 and not bad, bad
    # and the alias is what it is said to be: ambiguous under torchrun, so the full name exists beside it
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        torchrun.parse_args(["--standalone", "-m", "speechmax", "maximize", "--n", "3"])
    maximize = dict(walk_parsers(build_parser()))[("maximize",)]
    assert maximize.parse_args(["--starts", "3", "--out", "x"]).n == maximize.parse_args(["--n", "3", "--out", "x"]).n


def test_every_rank_closes_its_process_group_before_the_interpreter_exits(tmp_path):
    """Regression: the commands left the gloo group open at exit, and now and then a rank aborted while the
    interpreter tore down its still-running worker threads ("terminate called without an active exception",
    SIGABRT) -- after its files were written, failing the run. The group is closed by an exit hook registered
    when it is joined; a hook registered before it runs after it and sees the group closed."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import atexit, os, sys\n"
        "import torch.distributed as dist\n"
        "from speechmax import distributed\n"
        "log = sys.argv[1] + os.environ['RANK']\n"
        "atexit.register(lambda: open(log, 'w').write(str(dist.is_initialized())))\n"
        "world = distributed.current()\n"
        "assert dist.is_initialized() and world.size == 2\n"
        "distributed.barrier(world)\n")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script), str(tmp_path / "initialized-at-exit-")], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, why(r)
    assert [(tmp_path / f"initialized-at-exit-{rank}").read_text() for rank in (0, 1)] == ["False", "False"]


@pytest.fixture(scope="module")
def tiny_models(models):
    """The folder of test_evaluate's tiny models (clf, sep, prior, pp, voc)."""
    return Path(models["clf"]).parent


def _evaluate(models, out, ranks=None, env=None, pieces=None):
    """tests/distributed_evaluate.py alone or under torchrun with ``ranks`` gloo ranks, one thread each."""
    script = [str(HERE / "distributed_evaluate.py"), str(models), str(out)]
    cmd = [sys.executable, *script] if ranks is None else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *script]
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), **(env or {})}
    if pieces is not None:
        e["PIECES_LOG"] = str(pieces)
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=600)


def _pieces(log: Path) -> list:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def _comparable(metrics: dict):
    """metrics.json without what differs by run and machine: timings, threads, world size, the output path."""
    drop = {"seconds", "seconds_by_cpu", "timing", "threads", "world_size", "local_world_size", "path"}
    if isinstance(metrics, dict):
        return {k: _comparable(v) for k, v in metrics.items() if k not in drop}
    if isinstance(metrics, list):
        return [_comparable(v) for v in metrics]
    return metrics


@pytest.fixture(scope="module")
def one_process(tiny_models, tmp_path_factory):
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("dist-one") / "eval"
    r = _evaluate(tiny_models, out)
    assert r.returncode == 0, why(r)
    return json.loads((out / "metrics.json").read_text())


def test_two_ranks_write_the_same_evaluation_as_one_process(tiny_models, one_process, tmp_path):
    r = _evaluate(tiny_models, tmp_path / "eval", ranks=2, pieces=tmp_path / "pieces.log")
    assert r.returncode == 0, why(r)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # a thread per rank (2 cores / 2 ranks) for the pieces; rank 0 goes on alone with both ranks' threads
    assert m["settings"]["world_size"] == 2 and m["settings"]["threads"] == 2 * max(1, len(os.sched_getaffinity(0)) // 2)
    assert _comparable(m) == _comparable(one_process)
    assert "2 torchrun ranks" in (tmp_path / "eval" / "report.html").read_text()
    done = _pieces(tmp_path / "pieces.log")
    assert len(done) == len(set(p.split(" ", 1)[1] for p in done)) == N_PIECES   # every piece once
    assert {p.split()[0] for p in done} == {"0", "1"}   # by both ranks


def test_a_rank_that_dies_loses_only_its_unfinished_pieces(tiny_models, one_process, tmp_path):
    out, log = tmp_path / "eval", tmp_path / "pieces.log"
    r = _evaluate(tiny_models, out, ranks=2, env={"DIE_AFTER": "3"}, pieces=log)
    assert r.returncode != 0 and not (out / "metrics.json").exists()
    first = _pieces(log)
    on_disk = len(list((out / "partial").glob("noise-*/target*.safetensors")))
    assert sum(p.startswith("1 ") for p in first) == 3 and on_disk == len(first) < N_PIECES
    # the same command in one process takes up every finished piece and computes only the rest
    log.unlink()
    r = _evaluate(tiny_models, out, pieces=log)
    assert r.returncode == 0, why(r)
    assert len(_pieces(log)) == N_PIECES - on_disk
    assert _comparable(json.loads((out / "metrics.json").read_text())) == _comparable(one_process)


def test_ranks_started_with_different_settings_write_nothing(tiny_models, tmp_path):
    r = _evaluate(tiny_models, tmp_path / "eval", ranks=2, env={"SEED_BY_RANK": "1"})
    assert r.returncode != 0
    assert "different settings" in r.stderr and "seed" in r.stderr
    assert not (tmp_path / "eval").exists()


def test_synthesize_on_two_ranks_writes_the_files_one_process_writes(tmp_path):
    """synthesize shares the files out by rank; each file's audio depends on it and the seed only, so two ranks
    write byte-identical wavs, and rank 0 alone reports them all."""
    import numpy as np
    import torch

    from speechmax.models.wavenet import WaveNet, WaveNetConfig, save_wavenet

    torch.manual_seed(0)
    save_wavenet(WaveNet(WaveNetConfig(residual_channels=8, gate_channels=16, skip_channels=16, out_channels=16,
                                       n_layers=4, dilation_cycle=2, cond_channels=8)).eval(), tmp_path / "voc")
    mels = tmp_path / "mels"
    mels.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(mels / f"m{i}.npy", rng.normal(-4, 1, (80, 12)).astype(np.float32))
    np.save(mels / "batch.npy", rng.normal(-4, 1, (2, 80, 12)).astype(np.float32))
    args = ["-m", "speechmax", "synthesize", str(mels), "--model", str(tmp_path / "voc"), "--backend", "cpu",
            "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, why(two)
    wavs = sorted(p.name for p in (tmp_path / "one").glob("*.wav"))
    assert len(wavs) == 5 and wavs == sorted(p.name for p in (tmp_path / "two").glob("*.wav"))
    for name in wavs:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert "wrote 5 wav(s)" in two.stdout and "2 ranks" in two.stdout and two.stdout.count("wrote") == 1
    marker = json.loads((tmp_path / "two" / "run.json").read_text())
    assert marker["complete"] is True


def _maximize(args, ranks=None):
    cmd = [sys.executable, "-m", "speechmax", *args] if ranks is None else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m",
         "speechmax", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)


def test_maximize_on_two_ranks_writes_what_one_process_writes(tiny_models, tmp_path):
    """Pieces -- (target, block of --chunk starts) -- shared out by rank; every sample keeps the number, the
    features (within 1e-5), the audio and the manifest entry one process gives it; rank 0 alone writes the manifest
    and prints the summary. A rank with no piece (more ranks than pieces) exits cleanly."""
    import numpy as np

    base = ["maximize", "--model", str(tiny_models / "clf"), "--separate", str(tiny_models / "sep"),
            "--steps", "3", "--vocoder", "griffinlim", "--seed", "5", "--chunk", "2", "--json"]
    # 3 targets x starts 0-1 and 2: rank 0 takes the first blocks of all three, rank 1 the second ones
    one = _maximize([*base, "--target", "up,down,left", "--starts", "3", "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _maximize([*base, "--target", "up,down,left", "--starts", "3", "--out", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, why(two)
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert [s["npy"] for s in a["samples"]] == [s["npy"] for s in b["samples"]] and len(a["samples"]) == 9
    assert [s["start"] for s in a["samples"]] == [s["start"] for s in b["samples"]] == [0, 1, 2] * 3
    for s, t in zip(a["samples"], b["samples"]):
        np.testing.assert_allclose(np.load(tmp_path / "one" / s["npy"]), np.load(tmp_path / "two" / t["npy"]),
                                   atol=1e-5, rtol=0)
        assert s["classifier"]["after"]["top"]["label"] == t["classifier"]["after"]["top"]["label"]
        np.testing.assert_allclose(s["classifier"]["after"]["probs"], t["classifier"]["after"]["probs"], atol=1e-5)
        assert (tmp_path / "one" / s["wav"]).read_bytes() == (tmp_path / "two" / t["wav"]).read_bytes()
    assert a["hit_rate"] == b["hit_rate"] and a["nan_stopped"] == b["nan_stopped"]
    assert json.loads(two.stdout)["samples"] == 9 and json.loads(two.stdout)["n"] == 3   # one summary, rank 0's
    # more ranks than pieces: rank 1 has nothing to do and exits cleanly
    idle = _maximize([*base, "--target", "yes", "--starts", "2", "--out", str(tmp_path / "idle")], ranks=2)
    assert idle.returncode == 0, why(idle)
    assert len(json.loads((tmp_path / "idle" / "manifest.json").read_text())["samples"]) == 2
