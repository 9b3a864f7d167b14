import json
import subprocess
import sys

import pytest

from speechmax.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "speechmax", *args], capture_output=True, text=True)


def test_info_json_contract():
    r = run_cli("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info) == {"version", "torch", "backends", "assets"}
    assert set(info["backends"]) == {"cpu", "triton", "cuda"} and info["backends"]["cpu"] is True
    for name, asset in info["assets"].items():
        assert set(asset) == {"path", "sha256", "metrics"} and len(asset["sha256"]) == 64


def test_unknown_arguments_fail(capsys):
    with pytest.raises(SystemExit) as e:
        main(["info", "--bogus"])
    assert e.value.code == 2


def test_demo_cli_rejects_bad_input(capsys):
    assert main(["demo", "--per-class", "0"]) == 2
    assert "--per-class must be >= 1" in capsys.readouterr().err