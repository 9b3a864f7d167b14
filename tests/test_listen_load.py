"""The listening-test server under load and when killed: a real `speechmax listen` subprocess on 127.0.0.1."""
import csv
import http.client
import io
import json
import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from listen_support import ADMIN_TOKEN, admin_headers, free_port, make_listening_set, running_server, start_server, stop_server

RATERS = 50
CLIPS = 40  # 4 conditions x 8 + 4 references + 4 anchors: 50 raters x 40 clips = 2,000 answers


@pytest.fixture
def set_dir(tmp_path):
    return make_listening_set(tmp_path / "set", conditions=("c1", "c2", "c3", "c4"), per_condition=8,
                              references=4, anchors=4, seconds=0.05)


def call(conn: http.client.HTTPConnection, method: str, path: str, body=None, token=None):
    """One request on a kept-alive connection (http.client: far lighter on the shared CPU than httpx)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Rater-Token"] = token
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, (json.loads(data) if response.headers["content-type"] == "application/json" else data)


def rate_everything(port: int, rater: int) -> int:
    """One simulated rater: fetch each clip, answer it; the last answer is sent twice at once."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(2)]
    try:
        status, session = call(conns[0], "POST", "/api/raters", {})
        token, stored = session["token"], 0
        while session["next"]:
            trial = session["next"]
            assert call(conns[0], "GET", trial["audio"])[0] == 200
            body = {"clip_id": trial["clip_id"], "rating": 1 + rater % 5, "word": "yes"}
            if session["done"] == session["total"] - 1:
                with ThreadPoolExecutor(1) as other:
                    twin = other.submit(call, conns[1], "POST", "/api/answers", body, token)
                    replies = [call(conns[0], "POST", "/api/answers", body, token), twin.result()]
            else:
                replies = [call(conns[0], "POST", "/api/answers", body, token)]
            assert all(status == 200 for status, _ in replies), replies
            stored += sum(reply["stored"] for _, reply in replies)
            session = replies[0][1]
        return stored
    finally:
        for conn in conns:
            conn.close()


def stored_answers(db_path) -> list[tuple]:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT rater_id, clip_id, rating, word FROM answers").fetchall()
    finally:
        conn.close()


def test_50_concurrent_raters_store_exactly_2000_answers(set_dir, tmp_path):
    db_path = tmp_path / "results.db"
    with running_server(set_dir, db_path) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        started = time.monotonic()
        with ThreadPoolExecutor(RATERS) as pool:
            stored = list(pool.map(rate_everything, [port] * RATERS, range(RATERS)))
        print(f"2,000 answers from {RATERS} raters in {time.monotonic() - started:.1f} s")
        assert stored == [CLIPS] * RATERS  # each double submit stored once
        csv_text = httpx.get(f"{base_url}/api/answers.csv", headers=admin_headers(), timeout=60).text
        summary = httpx.get(f"{base_url}/api/summary.json", headers=admin_headers(), timeout=60).json()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == RATERS * CLIPS == 2000
    assert len({(r["rater_id"], r["clip_id"]) for r in rows}) == 2000
    assert summary["answers"]["total"] == 2000 and summary["raters"]["total"] == RATERS
    assert len(stored_answers(db_path)) == 2000


def test_every_acknowledged_answer_survives_sigkill(set_dir, tmp_path):
    db_path = tmp_path / "results.db"
    port = free_port()
    server = start_server(set_dir, db_path, port)
    acknowledged, tokens, errors = [], [], []
    stop = threading.Event()

    def rater(index):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            _, session = call(conn, "POST", "/api/raters", {})
            token = session["token"]
            tokens.append(token)
            while session["next"] and not stop.is_set():
                trial = session["next"]
                assert call(conn, "GET", trial["audio"])[0] == 200
                answer = (trial["clip_id"], 1 + index, "yes")
                status, reply = call(conn, "POST", "/api/answers",
                                     dict(zip(("clip_id", "rating", "word"), answer)), token)
                assert status == 200, reply
                acknowledged.append((session["rater_id"], *answer))
                session = reply
        except (OSError, http.client.HTTPException):
            pass  # the server is gone
        except Exception as e:  # noqa: BLE001 - reported by the test below
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=rater, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acknowledged) >= 60 and not errors, f"the raters did not get going: {errors}"
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors
        assert len(acknowledged) < 4 * CLIPS, "the server was killed after the run, not during it"
        assert server.returncode == -signal.SIGKILL
    finally:
        stop.set()
        stop_server(server)

    before_restart = set(stored_answers(db_path))
    assert set(acknowledged) <= before_restart
    restarted = start_server(set_dir, db_path, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            rows = list(csv.DictReader(io.StringIO(client.get("/api/answers.csv", headers=admin_headers()).text)))
            stored = {(int(r["rater_id"]), r["clip_id"], int(r["rating"]), r["word"]) for r in rows}
            assert set(acknowledged) <= stored and len(rows) == len(stored)
            # Each rater resumes after the restart where the database says they were.
            for token in tokens:
                session = client.get("/api/session", headers={"X-Rater-Token": token}).json()
                assert session["done"] == sum(s[0] == session["rater_id"] for s in stored)
    finally:
        printed = stop_server(restarted)
    assert f"raters:  http://127.0.0.1:{port}/" in printed and f"admin token: {ADMIN_TOKEN}" in printed
