"""The listening-test app through its HTTP API (in process), its statistics and its storage."""
import csv
import io
import json
import random
import sqlite3
import warnings
from collections import Counter
from dataclasses import replace

import pytest
from listen_support import ADMIN_TOKEN, admin_headers, make_listening_set

from speechmax.data.words import WORDS
from speechmax.listen import (
    ListenDB, SetClip, anchor, create_app, hidden_controls, load_listening_set, mean_ci, rater_status, trial_order,
    wilson_interval, write_listening_set,
)
from speechmax.listen.app import rater_token

with warnings.catch_warnings():  # Starlette 1.x asks for "httpx2" here; the test client works the same
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient


@pytest.fixture
def set_dir(tmp_path):
    return make_listening_set(tmp_path / "set")


@pytest.fixture
def manifest(set_dir):
    return {c["id"]: c for c in json.loads((set_dir / "manifest.json").read_text())["clips"]}


@pytest.fixture
def client(set_dir, tmp_path):
    with TestClient(create_app(set_dir, tmp_path / "results.db", ADMIN_TOKEN)) as c:
        yield c


def new_rater(client):
    r = client.post("/api/raters", json={})
    assert r.status_code == 200, r.text
    return r.json()


def answer(client, session, rating, word, play=True):
    """Play (fetch) the session's next clip and answer it; returns the response."""
    trial = session["next"]
    if play:
        assert client.get(trial["audio"]).status_code == 200
    return client.post("/api/answers", json={"clip_id": trial["clip_id"], "rating": rating, "word": word},
                       headers={"X-Rater-Token": session["token"]})


def careful(clip):
    """What an attentive rater answers: references clean and right, anchors bad."""
    return {"reference": 5, "anchor": 1}.get(clip["role"], 4), clip["word"] or "none"


def complete(client, manifest, respond=careful):
    session = new_rater(client)
    while session["next"]:
        r = answer(client, session, *respond(manifest[session["next"]["clip_id"]]))
        assert r.status_code == 200, r.text
        session = {**r.json(), "token": session["token"]}
    return session


# --- trial order ----------------------------------------------------------------------------------------

def test_trial_order_plays_each_clip_once_spread_over_the_session(set_dir):
    clips = [replace(c, id=f"{c.id}-{i}") for i in range(10) for c in load_listening_set(set_dir).clips.values()]
    order = trial_order(clips, random.Random(0))
    assert sorted(order) == sorted(c.id for c in clips)
    condition = {c.id: c.condition for c in clips}
    totals = Counter(condition.values())
    first_half = Counter(condition[i] for i in order[: len(order) // 2])
    for name, total in totals.items():
        assert abs(first_half[name] - total / 2) <= 1, (name, first_half)


def test_per_rater_limit_shares_conditions_and_clips_evenly(tmp_path):
    clips = load_listening_set(make_listening_set(tmp_path, conditions=("a", "b", "c"), per_condition=4,
                                                  references=3, anchors=3)).clips
    times_assigned = Counter()
    for seed in range(12):
        order = trial_order(clips.values(), random.Random(seed), per_rater=6, times_assigned=times_assigned)
        assert len(set(order)) == len(order)
        roles = Counter(clips[i].role for i in order)
        assert roles == {"test": 6, "reference": 2, "anchor": 2}
        assert Counter(clips[i].condition for i in order if clips[i].role == "test") == {"a": 2, "b": 2, "c": 2}
        times_assigned.update(order)
    tests = [times_assigned[i] for i, c in clips.items() if c.role == "test"]
    assert max(tests) - min(tests) <= 1
    # Fewer clips than conditions: the conditions take turns.
    times_assigned = Counter()
    for seed in range(9):
        order = trial_order(clips.values(), random.Random(seed), per_rater=1, times_assigned=times_assigned)
        times_assigned.update(order)
    per_condition = Counter(clips[i].condition for i in times_assigned.elements() if clips[i].role == "test")
    assert per_condition == {"a": 3, "b": 3, "c": 3}


# --- the rater flow --------------------------------------------------------------------------------------

def test_a_whole_session_resumes_after_reload(client, manifest):
    session = new_rater(client)
    assert session["total"] == len(manifest) and session["done"] == 0
    seen = []
    for k in range(3):
        seen.append(session["next"]["clip_id"])
        r = answer(client, session, *careful(manifest[seen[-1]]))
        assert r.status_code == 200 and r.json()["stored"] is True and r.json()["done"] == k + 1
        session = {**r.json(), "token": session["token"]}
    # A reload: only the token survives, in the browser.
    resumed = client.get("/api/session", headers={"X-Rater-Token": session["token"]}).json()
    assert resumed["done"] == 3 and resumed["next"] == session["next"]
    while session["next"]:
        seen.append(session["next"]["clip_id"])
        session = {**answer(client, session, *careful(manifest[seen[-1]])).json(), "token": session["token"]}
    assert sorted(seen) == sorted(manifest) and session["done"] == session["total"]


def test_an_answer_needs_the_clip_played_first(client):
    session = new_rater(client)
    assert answer(client, session, 3, "yes", play=False).status_code == 400
    assert answer(client, session, 3, "yes").status_code == 200


def test_a_repeated_submit_is_stored_once(client):
    session = new_rater(client)
    first = answer(client, session, 3, "yes")
    again = answer(client, session, 3, "yes")
    assert first.json()["stored"] is True and again.status_code == 200 and again.json()["stored"] is False
    assert answer(client, session, 4, "yes").status_code == 409
    rows = list(csv.DictReader(io.StringIO(client.get("/api/answers.csv", headers=admin_headers()).text)))
    assert len(rows) == 1 and rows[0]["rating"] == "3"


@pytest.mark.parametrize("change", [
    {"rating": 0}, {"rating": 6}, {"rating": "x"}, {"rating": 3.5}, {"rating": "3"}, {"rating": None},
    {"word": "banana"}, {"word": ""}, {"word": "YES"}, {"word": 7},
    {"clip_id": "no-such-clip"}, {"clip_id": ""}, {"clip_id": "../manifest.json"}, {"extra": 1},
])
def test_invalid_answers_are_rejected(client, change):
    session = new_rater(client)
    client.get(session["next"]["audio"])
    body = {"clip_id": session["next"]["clip_id"], "rating": 3, "word": "yes", **change}
    r = client.post("/api/answers", json=body, headers={"X-Rater-Token": session["token"]})
    assert r.status_code in (400, 422), r.text
    assert client.get("/api/summary.json", headers=admin_headers()).json()["answers"]["total"] == 0


def test_missing_fields_and_bad_labels_are_rejected(client):
    session = new_rater(client)
    r = client.post("/api/answers", json={"rating": 3}, headers={"X-Rater-Token": session["token"]})
    assert r.status_code == 422
    assert client.post("/api/raters", json={"label": "<script>"}).status_code == 422
    assert client.post("/api/raters", json={"label": "prolific_5f2a"}).status_code == 200


def test_clips_outside_the_raters_trials_are_refused(set_dir, tmp_path):
    app = create_app(set_dir, tmp_path / "r.db", ADMIN_TOKEN, per_rater=2)
    with TestClient(app) as client:
        session = new_rater(client)
        assigned = {t[0] for t in sqlite3.connect(tmp_path / "r.db").execute(
            "SELECT clip_id FROM trials WHERE rater_id = ?", (session["rater_id"],))}
        other = next(c for c in app.state.set.clips if c not in assigned)
        token = session["token"]
        assert client.get(f"/api/audio/{other}", params={"token": token}).status_code == 404
        r = client.post("/api/answers", json={"clip_id": other, "rating": 3, "word": "yes"},
                        headers={"X-Rater-Token": token})
        assert r.status_code == 422


# --- security ------------------------------------------------------------------------------------------

def forged_tokens(client, tmp_path, set_dir):
    real = new_rater(client)["token"]
    rater_id, signature = real.split(".")
    foreign = rater_token(ListenDB(tmp_path / "other.db", "tiny").secret, int(rater_id))
    return ["", "1", f"{rater_id}.", f"{rater_id}.{signature[:-2]}xx", f"{int(rater_id) + 1}.{signature}",
            f"0{rater_id}.{signature}", foreign, f"-1.{signature}", real + "x", "1" * 40 + "." + signature,
            f"\u00b9.{signature}", f"{rater_id}.{signature[:-1]}\u00e9"]


def test_forged_rater_tokens_are_refused(client, tmp_path, set_dir):
    clip_id = next(iter(json.loads((set_dir / "manifest.json").read_text())["clips"]))["id"]
    for token in forged_tokens(client, tmp_path, set_dir):
        headers = {"X-Rater-Token": token.encode("utf-8")}  # raw bytes, as any client may send
        assert client.get("/api/session", headers=headers).status_code == 401, token
        r = client.post("/api/answers", json={"clip_id": clip_id, "rating": 3, "word": "yes"}, headers=headers)
        assert r.status_code == 401, token
        assert client.get(f"/api/audio/{clip_id}", params={"token": token}).status_code == 401, token
    assert client.get("/api/session").status_code == 401


@pytest.mark.parametrize("path", [
    "/api/audio/..%2F..%2Fetc%2Fpasswd", "/api/audio/%2Fetc%2Fpasswd", "/api/audio/..%2fmanifest.json",
    "/api/audio/%2e%2e%2f%2e%2e%2fresults.db", "/api/audio/manifest.json", "/api/audio/..%5Cmanifest.json",
    "/api/audio/features-noise%2Ffeatures-noise-0.wav", "/static/..%2Fapp.py", "/static/%2e%2e%2fdb.py",
    "/static/%2Fetc%2Fpasswd", "/static/index.html%00.js", "/static/..%2F..%2F..%2Fpyproject.toml",
    "//etc/passwd", "/api/audio//etc/passwd", "/static/app.js/..%2F..%2Fapp.py",
])
def test_path_traversal_is_refused(client, path):
    token = new_rater(client)["token"]
    r = client.get(path, params={"token": token})
    assert r.status_code in (400, 404, 422), (path, r.status_code)
    assert b"root:" not in r.content and b"import" not in r.content


def test_only_the_listed_static_files_are_served(client):
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/index.html").status_code == 404  # pages only at / and /admin
    r = client.get("/")
    assert r.status_code == 200 and "Listening test" in r.text
    assert r.headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize("manifest_file", ["../outside.wav", "/etc/hosts.wav", "sub/../../outside.wav",
                                           "link.wav", "clip.mp3", "missing.wav"])
def test_manifest_files_must_stay_inside_the_set(tmp_path, manifest_file):
    set_dir = make_listening_set(tmp_path / "set")
    (tmp_path / "outside.wav").write_bytes((set_dir / "reference" / "ref-0.wav").read_bytes())
    (set_dir / "link.wav").symlink_to(tmp_path / "outside.wav")
    (set_dir / "clip.mp3").write_bytes(b"")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    manifest["clips"][0]["file"] = manifest_file
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises((ValueError, FileNotFoundError)):
        load_listening_set(set_dir)


@pytest.mark.parametrize("change, message", [
    ({"role": "judge"}, "role"), ({"word": "banana"}, "word"), ({"condition": ""}, "condition"),
    ({"id": "a/b"}, "id"), ({"id": ".."}, "id"), ({"role": "reference", "word": None}, "reference"),
])
def test_manifest_errors_name_the_bad_value(tmp_path, change, message):
    set_dir = make_listening_set(tmp_path / "set")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    manifest["clips"][0].update(change)
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=message):
        load_listening_set(set_dir)


@pytest.mark.parametrize("path", ["/api/summary.json", "/api/answers.csv"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN,
                                           f"Bearer {ADMIN_TOKEN}x", "Bearer "])
def test_admin_endpoints_need_the_admin_token(client, path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    assert client.get(path, headers=headers).status_code == 401
    assert client.get(path, headers=admin_headers()).status_code == 200


def test_a_rater_token_is_not_an_admin_token(client):
    token = new_rater(client)["token"]
    assert client.get("/api/summary.json", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# --- results ---------------------------------------------------------------------------------------------

def test_summary_scores_careful_raters_and_leaves_out_careless_ones(client, manifest):
    complete(client, manifest)
    complete(client, manifest, respond=lambda clip: (3, "none"))  # same rating everywhere, no words
    summary = client.get("/api/summary.json", headers=admin_headers()).json()
    assert summary["raters"]["ok"] == 1 and summary["raters"]["failed"] == 1
    assert summary["answers"] == {"total": 2 * len(manifest), "included": len(manifest)}
    assert summary["clips"] == {"test": 6, "reference": 2, "anchor": 2}
    conditions = {c["condition"]: c for c in summary["conditions"]}
    assert set(conditions) == {"features-noise", "latent-noise", "reference", "anchor"}
    assert conditions["features-noise"]["mos"]["mean"] == 4.0 and conditions["anchor"]["mos"]["mean"] == 1.0
    assert conditions["features-noise"]["accuracy"]["k"] == conditions["features-noise"]["accuracy"]["n"] == 3
    assert {c["word"] for c in conditions["latent-noise"]["classes"]} == {
        c["word"] for c in manifest.values() if c["condition"] == "latent-noise"}
    assert len(summary["classes"]) == 6  # test clips only, pooled over conditions
    rows = list(csv.DictReader(io.StringIO(client.get("/api/answers.csv", headers=admin_headers()).text)))
    assert len(rows) == 2 * len(manifest)
    assert Counter(r["rater_status"] for r in rows) == {"ok": len(manifest), "failed": len(manifest)}
    assert {r["correct"] for r in rows if r["rater_status"] == "ok"} == {"1"}


def test_summary_intervals_match_the_formulas():
    assert mean_ci([1, 2, 3, 4, 5]) == pytest.approx({"n": 5, "mean": 3.0, "lo": 3 - 1.963243, "hi": 3 + 1.963243})
    assert mean_ci([4])["lo"] is None and mean_ci([])["mean"] is None
    assert wilson_interval(8, 10) == pytest.approx({"n": 10, "k": 8, "p": 0.8, "lo": 0.490162, "hi": 0.943318}, abs=1e-6)
    assert wilson_interval(0, 10)["lo"] == 0.0 and wilson_interval(0, 10)["hi"] == pytest.approx(0.277533, abs=1e-6)
    assert wilson_interval(0, 0)["p"] is None
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)


def test_rater_status_rule():
    def a(role, rating, word, target="yes"):
        return {"role": role, "rating": rating, "word": word, "target": target}

    assert rater_status([a("test", 3, "yes")])["status"] == "pending"
    assert rater_status([a("reference", 5, "yes")])["status"] == "pending"
    assert rater_status([a("reference", 5, "yes"), a("anchor", 1, "none")])["status"] == "ok"
    assert rater_status([a("reference", 5, "yes"), a("reference", 5, "no")])["status"] == "ok"  # 1 of 2 is half
    wrong = rater_status([a("reference", 5, "no"), a("reference", 5, "none"), a("reference", 5, "yes")])
    assert wrong["status"] == "failed" and "1 of 3" in wrong["reasons"][0]
    flat = rater_status([a("reference", 3, "yes"), a("anchor", 3, "none")])
    assert flat["status"] == "failed" and "anchors" in flat["reasons"][0]


# --- storage -----------------------------------------------------------------------------------------------

def test_database_is_versioned_durable_and_bound_to_one_set(tmp_path):
    db = ListenDB(tmp_path / "r.db", "tiny")
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ListenDB(tmp_path / "r.db", "tiny").secret == db.secret  # generated once
    with pytest.raises(ValueError, match="'tiny'"):
        ListenDB(tmp_path / "r.db", "another-set")
    with conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        ListenDB(tmp_path / "r.db", "tiny")


def test_the_admin_token_must_not_be_trivial(set_dir, tmp_path):
    with pytest.raises(ValueError, match="admin token"):
        create_app(set_dir, tmp_path / "r.db", "")


def test_the_info_endpoint_lists_the_sets_words(client):
    info = client.get("/api/info").json()
    assert info["words"] == list(WORDS) and len(WORDS) == 35 and info["none"] not in WORDS
    assert info["trials"] == 10


# --- the set's words (any vocabulary) --------------------------------------------------------------------------

def answer_word(client, word):
    session = new_rater(client)
    return answer(client, session, 3, word)


def test_a_set_offers_its_own_words_in_its_order(tmp_path):
    words = ("zebra", "alpha", "mango")
    set_dir = make_listening_set(tmp_path / "set", words=words)
    assert load_listening_set(set_dir).words == words
    with TestClient(create_app(set_dir, tmp_path / "r.db", ADMIN_TOKEN)) as client:
        assert client.get("/api/info").json()["words"] == list(words)
        assert answer_word(client, "yes").status_code == 422   # one of the 35, not of this set
        assert answer_word(client, "mango").status_code == 200
        assert answer_word(client, "none").status_code == 200


def test_a_set_written_before_words_were_recorded_offers_its_clips_words(tmp_path):
    set_dir = make_listening_set(tmp_path / "set", words=None)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert "words" not in manifest
    named = sorted({c["word"] for c in manifest["clips"]})
    assert load_listening_set(set_dir).words == tuple(named) and len(named) < len(WORDS)
    with TestClient(create_app(set_dir, tmp_path / "r.db", ADMIN_TOKEN)) as client:
        assert client.get("/api/info").json()["words"] == named
        assert answer_word(client, named[0]).status_code == 200
        assert answer_word(client, next(w for w in WORDS if w not in named)).status_code == 422


@pytest.mark.parametrize("words", [[], "yes", ["yes", "yes"], ["yes", "none"], ["yes", ""], ["yes", 7], {"a": 1}])
def test_bad_words_are_a_clear_error(tmp_path, words):
    set_dir = make_listening_set(tmp_path / "set")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    manifest["words"] = words
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="'words'"):
        load_listening_set(set_dir)


# --- writing a set from numpy ----------------------------------------------------------------------------------

def test_write_listening_set_with_references_and_anchors(tmp_path):
    import numpy as np
    import soundfile as sf

    sr, words = 16000, ("left", "right")
    t = np.arange(sr // 4) / sr
    originals = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in (200, 300, 3000, 4000)]).astype(np.float32)
    resynthesized = 0.9 * originals
    clip_words = ["left", "left", "right", "right"]
    tests = [SetClip(f"t-{i}", "c", w, "test", originals[i], {"source_clip": i}) for i, w in enumerate(clip_words)]
    controls = hidden_controls(originals, resynthesized, clip_words, 1, sr, np.random.default_rng(0))
    assert [c.id for c in controls] == ["reference-left-0", "anchor-left-0", "reference-right-2", "anchor-right-2"]
    ls = write_listening_set(tmp_path / "set", "built", tests + controls, sr, words, vocoder="griffinlim")
    assert ls.words == words and list(ls.clips) == [c.id for c in tests + controls]
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["vocoder"] == "griffinlim" and manifest["clips"][0]["source_clip"] == 0
    ref, _ = sf.read(ls.clips["reference-right-2"].path, dtype="float32")
    assert np.allclose(ref, resynthesized[2], atol=1 / 2 ** 15)   # 16-bit PCM
    # the anchor: a 4 kHz tone low-passed at 1 kHz is gone, noise at 5 dB below what is left
    a = anchor(originals[3], sr, np.random.default_rng(1))
    assert a.dtype == np.float32 and a.shape == originals[3].shape and np.abs(a).max() <= 1
    assert np.sqrt(np.mean(a ** 2)) < 0.05 * np.sqrt(np.mean(originals[3] ** 2))
    with pytest.raises(ValueError, match="t-bad"):
        write_listening_set(tmp_path / "bad", "bad", [SetClip("t-bad", "c", "left", "test", np.full(4, np.nan))], sr,
                            words)


def test_the_command_line_reports_a_bad_set(tmp_path, capsys):
    from speechmax.cli import main

    assert main(["listen", "--set", str(tmp_path / "missing"), "--db", str(tmp_path / "r.db")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
