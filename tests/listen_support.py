"""Helpers for the listening-test tests: a tiny generated listening set and a real server in a subprocess."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from speechmax.data.words import WORDS

ADMIN_TOKEN = "test-admin-token-123"
SR = 16000


def make_listening_set(root, conditions=("features-noise", "latent-noise"), per_condition=3, references=2,
                       anchors=2, seconds=0.2, name="tiny", words=WORDS) -> Path:
    """A set of short sine bursts (tests) and clean/noisy ones (references/anchors); the clips' words cycle over
    ``words`` (the set's answer choices; None writes a set without them, as before they were recorded)."""
    root = Path(root)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    clips = []

    def add(clip_id, condition, word, role, audio):
        path = root / condition / f"{clip_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.astype(np.float32), SR)
        clips.append({"id": clip_id, "file": f"{condition}/{clip_id}.wav", "condition": condition,
                      "word": word, "role": role})

    envelope = np.hanning(len(t))
    choices = words or WORDS
    for c, condition in enumerate(conditions):
        for i in range(per_condition):
            add(f"{condition}-{i}", condition, choices[(c * per_condition + i) % len(choices)], "test",
                0.3 * envelope * np.sin(2 * np.pi * (300 + 50 * i) * t))
    for i in range(references):
        add(f"ref-{i}", "reference", choices[i], "reference", 0.3 * envelope * np.sin(2 * np.pi * 440 * t))
    for i in range(anchors):
        add(f"anchor-{i}", "anchor", choices[-1 - i], "anchor", 0.3 * rng.standard_normal(len(t)))
    manifest = {"name": name, **({"words": list(words)} if words else {}), "clips": clips}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(set_dir, db_path, port: int, timeout: float = 60.0) -> subprocess.Popen:
    """`speechmax listen` in a subprocess on 127.0.0.1:port; returns once it answers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from speechmax.cli import main; sys.exit(main(sys.argv[1:]))",
         "listen", "--set", str(set_dir), "--db", str(db_path),
         "--port", str(port), "--admin-token", ADMIN_TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1.0).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"server did not answer on port {port} within {timeout} s")


def stop_server(proc: subprocess.Popen) -> str:
    """Stop the server (if still running) and return what it printed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with proc.stdout:
        return proc.stdout.read()


@contextmanager
def running_server(set_dir, db_path):
    port = free_port()
    proc = start_server(set_dir, db_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def admin_headers() -> dict:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
