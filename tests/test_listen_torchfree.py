"""The listening test runs on a machine without torch: importing speechmax.listen, serving a set and writing one
never load torch, nor the speechmax modules that need it."""
import subprocess
import sys

CODE = r"""
import sys, tempfile
import numpy as np
import speechmax.listen
import speechmax.listen.app
from fastapi.testclient import TestClient

root = tempfile.mkdtemp()
waves = np.zeros((2, 1600), np.float32)
clips = speechmax.listen.hidden_controls(waves, waves, ["yes", "no"], 1, 16000, np.random.default_rng(0))
speechmax.listen.write_listening_set(root + "/set", "s", clips, 16000, ["no", "yes"])
with TestClient(speechmax.listen.create_app(root + "/set", root + "/r.db", "admin-token")) as client:
    assert client.get("/api/info").json()["words"] == ["no", "yes"]
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch"
               or m.startswith(("speechmax.features", "speechmax.data", "speechmax.models", "speechmax.ops")))
print(heavy)
"""


def test_the_listening_app_and_set_writing_never_import_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", f"imported: {out.stdout.strip()}"
