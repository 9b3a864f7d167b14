"""The listening test runs on a machine without torch: importing speechmax.listen, serving a set, writing one and
`speechmax listen`'s command line never load torch, nor the speechmax modules that need it."""
import subprocess
import sys

CODE = r"""
import sys
import numpy as np
import speechmax.listen
import speechmax.listen.app
from fastapi.testclient import TestClient
from speechmax.cli import parse_args

root = sys.argv[1]
waves = np.zeros((2, 1600), np.float32)
clips = speechmax.listen.hidden_controls(waves, waves, ["yes", "no"], 1, 16000, np.random.default_rng(0))
speechmax.listen.write_listening_set(root + "/set", "s", clips, 16000, ["no", "yes"])
with TestClient(speechmax.listen.create_app(root + "/set", root + "/r.db", "admin-token")) as client:
    assert client.get("/api/info").json()["words"] == ["no", "yes"]
assert parse_args(["listen", "--set", root + "/set", "--db", root + "/r.db"]).func.__module__ == "speechmax.cli.listen"
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch"
               or m.startswith(("speechmax.features", "speechmax.data", "speechmax.models", "speechmax.ops")))
print(heavy)
"""


def test_the_listening_app_set_writing_and_command_never_import_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", f"imported: {out.stdout.strip()}"
