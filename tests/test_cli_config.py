"""--config FILE (issue 20 item 3): a TOML file gives a command's options, flags override it, and a run's
resolved config.toml reproduces it."""
import json
import tomllib

import pytest

from speechmax.cli import main, parse_args

from test_maximize_cli import models  # noqa: F401  (module fixture: tiny classifier, separate, prior)


def write(path, text):
    path.write_text(text)
    return str(path)


def test_maximize_config_flags_override_and_written_config_reproduces(models, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    cfg = write(tmp_path / "run.toml",
                f'target = "yes"\nstarts = 2\nsteps = 5\nmode = "latent"\nvocoder = "griffinlim"\nseed = 3\n'
                f'model = {json.dumps(models["clf"])}\nseparate = {json.dumps(models["sep"])}\n'
                f'prior = {json.dumps(models["prior"])}\nout = {json.dumps(str(out))}\n')
    assert main(["maximize", "--config", cfg, "--steps", "2", "--json"]) == 0   # --out from the file, --steps flag wins
    first = json.loads(capsys.readouterr().out)
    manifest = json.loads(open(first["manifest"]).read())
    assert first["n"] == 2 and manifest["settings"]["steps"] == 2 and manifest["settings"]["mode"] == "latent"
    written = tomllib.loads((out / "config.toml").read_text())
    assert written["steps"] == 2 and written["n"] == 2 and written["seed"] == 3 and written["out"] == str(out)
    assert "config" not in written and "overwrite" not in written
    # the written file is the run: read back it gives the same arguments, and rerunning it resumes (not refused)
    again = vars(parse_args(["maximize", "--config", str(out / "config.toml")]))
    assert {k: again[k] for k in written} == written
    assert main(["maximize", "--config", str(out / "config.toml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] is True
    # flags still override the written file
    assert main(["maximize", "--config", str(out / "config.toml"), "--steps", "3"]) == 2   # other settings: refused
    assert "steps: 2 -> 3" in capsys.readouterr().err


def test_config_gives_required_and_repeatable_options(tmp_path):
    cfg = write(tmp_path / "voc.toml", 'data = ["a", "b"]\nout = "runs/voc"\nsteps = 10\nbf16 = true\n')
    a = parse_args(["train", "vocoder", "--config", cfg])
    assert (a.data, a.out, a.steps, a.bf16, a.lr) == (["a", "b"], "runs/voc", 10, True, 1e-3)
    b = parse_args(["train", "vocoder", "--config", cfg, "--data", "c", "--out", "x", "--steps", "20"])
    assert (b.data, b.out, b.steps, b.bf16) == (["c"], "x", 20, True)   # a repeated flag replaces, not extends
    e = parse_args(["evaluate", "--config", write(tmp_path / "e.toml", 'out = "o"\nper_class = 20\nrecipe = "paper"\n')])
    assert (e.out, e.per_class, e.recipe, e.quick) == ("o", 20, "paper", False)
    m = parse_args(["bench", "maximize", "--config", write(tmp_path / "b.toml", 'quick = true\nthreads = "1"\n')])
    assert m.quick and m.threads == (1,)
    c = parse_args(["train", "classifier", "--config", write(tmp_path / "c.toml", 'data = "d"\nout = "o"\nepochs = 3\n'),
                    "--epochs", "5"])
    assert (c.data, c.out, c.epochs) == ("d", "o", 5)


@pytest.mark.parametrize("text,message", [
    ("stepz = 3\n", "unknown key(s) stepz"),
    ('steps = "many"\n', "invalid int value"),
    ("steps = 1.5\n", "not of type int"),
    ('mode = "both"\n', "is not one of"),
    ("steps = [\n", "--config"),
    ('config = "x.toml"\n', "unknown key(s) config"),
])
def test_bad_config_is_a_usage_error(tmp_path, capsys, text, message):
    cfg = write(tmp_path / "bad.toml", text)
    with pytest.raises(SystemExit) as e:
        parse_args(["maximize", "--config", cfg, "--out", str(tmp_path / "o"), "--target", "yes"])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["evaluate", "--config", str(tmp_path / "none.toml")])
    assert "none.toml" in capsys.readouterr().err


def test_counts_seeds_and_temperature_are_checked_where_they_are_parsed(tmp_path, capsys):
    """Every command's --threads, --seed, --batch(es) and --temperature refuse a bad value by name at parse time,
    on the command line or from a --config file (before: --threads 0 ran on torch's default in maximize and
    synthesize, was refused in evaluate, and failed in set_num_threads in bench and debugbench; --seed -5 built
    debugbench's corpus and then failed in numpy; --batches 0 failed in a reshape; --temperature nan in the
    sampler; train vocoder --steps 0 featurized the corpus first; train classifier --lr -1 failed in torch after
    making its run folder)."""
    from speechmax.cli import build_parser, walk_parsers
    from speechmax.cli.values import Number, Numbers

    checked = {"--threads", "--seed", "--batch", "--batches", "--temperature"}
    seen = []
    for path, parser in walk_parsers(build_parser()):
        for action in parser._actions:
            for flag in checked & set(action.option_strings):
                seen.append((path, flag))
                assert isinstance(action.type, (Number, Numbers)), (path, flag)
    assert len(seen) >= 20 and {p[0] for p, _ in seen} >= {"maximize", "synthesize", "evaluate", "train", "bench",
                                                              "debugbench", "corpus", "demo"}
    bad = [(["maximize", "--target", "yes", "--threads", "0"], "--threads: expected a thread count >= 1, got '0'"),
           (["synthesize", "x", "--out", "o", "--seed", "-1"], "--seed: expected a seed in 0 .. 2**32 - 1"),
           (["synthesize", "x", "--out", "o", "--temperature", "nan"], "--temperature: expected a finite"),
           (["debugbench", "--out", "o", "--seed", "-5"], "--seed: expected a seed"),
           (["bench", "vocoder", "--batches", "1,0"], "--batches: expected comma-separated integers >= 1"),
           (["bench", "maximize", "--threads", "1,x"], "--threads: expected comma-separated thread counts"),
           (["train", "vocoder", "--data", "d", "--out", "o", "--batch", "0"], "--batch: expected an integer >= 1"),
           (["train", "vocoder", "--data", "d", "--out", "o", "--steps", "0"], "--steps: expected an integer >= 1"),
           (["train", "classifier", "--data", "d", "--out", "o", "--lr", "-1"], "--lr: expected a finite learning"),
           (["train", "prior", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs: expected an integer >= 1"),
           (["evaluate", "--config", write(tmp_path / "t.toml", "threads = 0\n")], "threads: expected a thread count"),
           (["bench", "vocoder", "--config", write(tmp_path / "b.toml", "threads = [1, 0]\n")], "comma-separated")]
    for argv, message in bad:
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err, (argv, err)
    assert parse_args(["bench", "vocoder", "--batches", "1, 64", "--threads", "2"]).batches == (1, 64)
    assert parse_args(["synthesize", "x", "--out", "o", "--seed", "4294967295", "--temperature", "0"]).seed == 2 ** 32 - 1
    assert parse_args(["bench", "vocoder", "--config", write(tmp_path / "ok.toml", "threads = [1, 2]\n")]).threads \
        == (1, 2)
