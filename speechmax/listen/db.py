"""Listening-test storage in SQLite.

WAL mode with ``synchronous=FULL``, one short ``BEGIN IMMEDIATE`` transaction per write and a fresh
connection per call: an answer is on disk before the call returns (so before the HTTP reply that
acknowledges it), concurrent writers queue on SQLite's lock, and a killed server loses nothing it has
acknowledged. Each answer copies the clip's role, condition and word, so the raw data stays
meaningful even if the manifest changes later.
"""
from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    label TEXT NOT NULL DEFAULT ''
);
CREATE TABLE trials (
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    clip_id TEXT NOT NULL,
    served_at REAL,
    PRIMARY KEY (rater_id, position),
    UNIQUE (rater_id, clip_id)
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    clip_id TEXT NOT NULL,
    role TEXT NOT NULL,
    condition TEXT NOT NULL,
    target TEXT,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    word TEXT NOT NULL,
    served_at REAL NOT NULL,
    answered_at REAL NOT NULL,
    UNIQUE (rater_id, clip_id)
);
"""


class NotAssigned(LookupError):
    """The clip is not one of this rater's trials."""


class NotPlayed(ValueError):
    """The rater answered a clip whose audio they never fetched."""


class AlreadyAnswered(ValueError):
    """The rater already gave a different answer for this clip."""


class NotAListenDB(ValueError):
    """--db names a folder, a file that is not SQLite, or another program's SQLite database."""


class ListenDB:
    """One results database, bound to one listening-set name. Safe to share between threads."""

    def __init__(self, path, set_name: str):
        self.path = Path(path)
        if self.path.is_dir():
            raise NotAListenDB(f"{self.path} is a folder; --db takes a file (created if missing)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        try:
            self._init(set_name)
        except sqlite3.Error as e:
            raise NotAListenDB(f"{self.path}: not a usable SQLite database ({e}); use another --db") from None

    def _init(self, set_name: str) -> None:
        with closing(self._open()) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables and "schema_version" not in tables:
                # someone else's database: adding our tables to it would change what they made
                raise NotAListenDB(f"{self.path} is an SQLite database of another program (tables: "
                                   f"{', '.join(tables[:5])}); use another --db")
        with closing(self._open()) as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
                # executescript() would commit the open transaction, so the statements run one by one.
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("hmac_secret", secrets.token_hex(32)), ("set_name", set_name)])
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        if version != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}; this speechmax reads {SCHEMA_VERSION}")
        if meta["set_name"] != set_name:
            raise ValueError(f"{self.path} holds results for set {meta['set_name']!r}, not {set_name!r}; "
                             "use another --db")
        self.secret = bytes.fromhex(meta["hmac_secret"])

    def _open(self, durable: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        # FULL: fsync the WAL at every commit. NORMAL leaves that to the next FULL commit (or checkpoint): such
        # a write still survives a killed process, only not a power cut.
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def _read(self):
        with closing(self._open()) as conn:
            yield conn

    @contextmanager
    def _write(self, durable: bool = True):
        """One transaction, holding the write lock from the start (no read-to-write upgrade deadlock).

        Writers in this process queue on a Python lock: SQLite's own busy handler polls with sleeps of up
        to 100 ms, which starves a busy server; it still arbitrates between processes."""
        with closing(self._open(durable)) as conn, self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def create_rater(self, choose_trials, label: str = "") -> int:
        """Add a rater whose trials are ``choose_trials(times_assigned)`` (clip ids in order; the
        argument maps clip id → how many raters already have it). Returns the rater id."""
        with self._write() as conn:
            times_assigned = dict(conn.execute("SELECT clip_id, COUNT(*) FROM trials GROUP BY clip_id"))
            clip_ids = choose_trials(times_assigned)
            rater_id = conn.execute("INSERT INTO raters (created_at, label) VALUES (?, ?)",
                                    (time.time(), label)).lastrowid
            conn.executemany("INSERT INTO trials (rater_id, position, clip_id) VALUES (?, ?, ?)",
                             [(rater_id, i, clip_id) for i, clip_id in enumerate(clip_ids)])
        return rater_id

    def rater_exists(self, rater_id: int) -> bool:
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM raters WHERE id = ?", (rater_id,)).fetchone() is not None

    def progress(self, rater_id: int) -> dict:
        """``{"total", "done", "next"}``: trial counts and the first unanswered clip id (None when done)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT t.clip_id, a.id IS NOT NULL FROM trials t LEFT JOIN answers a"
                " ON a.rater_id = t.rater_id AND a.clip_id = t.clip_id"
                " WHERE t.rater_id = ? ORDER BY t.position", (rater_id,)).fetchall()
        pending = [clip_id for clip_id, answered in rows if not answered]
        return {"total": len(rows), "done": len(rows) - len(pending), "next": pending[0] if pending else None}

    def mark_served(self, rater_id: int, clip_id: str) -> None:
        """Record that the rater fetched the clip's audio (the first time counts)."""
        with self._read() as conn:
            row = conn.execute("SELECT served_at FROM trials WHERE rater_id = ? AND clip_id = ?",
                               (rater_id, clip_id)).fetchone()
        if row is None:
            raise NotAssigned(clip_id)
        if row[0] is None:
            with self._write(durable=False) as conn:  # a lost mark only means fetching the audio again
                conn.execute("UPDATE trials SET served_at = ? WHERE rater_id = ? AND clip_id = ? AND served_at IS NULL",
                             (time.time(), rater_id, clip_id))

    def add_answer(self, rater_id: int, clip, rating: int, word: str) -> bool:
        """Store one answer in its own committed transaction. Returns False when the identical answer
        was already stored (a retried submit); raises NotAssigned, NotPlayed or AlreadyAnswered."""
        with self._write() as conn:
            row = conn.execute("SELECT served_at FROM trials WHERE rater_id = ? AND clip_id = ?",
                               (rater_id, clip.id)).fetchone()
            if row is None:
                raise NotAssigned(clip.id)
            if row[0] is None:
                raise NotPlayed(clip.id)
            previous = conn.execute("SELECT rating, word FROM answers WHERE rater_id = ? AND clip_id = ?",
                                    (rater_id, clip.id)).fetchone()
            if previous is not None:
                if tuple(previous) == (rating, word):
                    return False
                raise AlreadyAnswered(clip.id)
            conn.execute(
                "INSERT INTO answers (rater_id, clip_id, role, condition, target, rating, word, served_at,"
                " answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rater_id, clip.id, clip.role, clip.condition, clip.word, rating, word, row[0], time.time()))
        return True

    def answers(self) -> list[dict]:
        """Every stored answer with its rater's label, oldest first."""
        with self._read() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT a.id AS answer_id, a.rater_id, r.label AS rater_label, a.clip_id, a.role, a.condition,"
                " a.target, a.rating, a.word, a.served_at, a.answered_at"
                " FROM answers a JOIN raters r ON r.id = a.rater_id ORDER BY a.id").fetchall()
        return [dict(row) for row in rows]
