"""The listening-test web app (FastAPI): the rater pages, their JSON API, and the admin results.

Raters hold a token ``<rater id>.<HMAC-SHA256 of the id under a secret kept in the database>``; it goes in
the ``X-Rater-Token`` header, or in the ``token`` query parameter of audio URLs (an <audio> element cannot
send headers). Fetching a clip's audio records it as served; the answer to a clip never served is refused.
Admin endpoints take ``Authorization: Bearer <admin token>``.

    GET  /                      rater page            GET  /admin              admin page
    GET  /api/info              set name, the words   POST /api/raters         new rater → token, first trial
    GET  /api/session           progress, next trial  GET  /api/audio/{clip}   the clip's wav (?token=)
    POST /api/answers           store one answer      GET  /api/summary.json   results (admin)
    GET  /api/answers.csv       raw answers (admin)
"""
from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import random
import secrets
from datetime import datetime, timezone
from pathlib import Path

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .db import AlreadyAnswered, ListenDB, NotAssigned, NotPlayed
from .sets import NONE_WORD, ROLES, load_listening_set, trial_order
from .stats import rater_statuses, summarize

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "admin.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # audio URLs carry the rater token
    "Cache-Control": "no-store",
}
# Every JSON body here is a few hundred bytes; a bigger one is refused before it is read in full.
MAX_BODY = 64 * 1024
CSV_COLUMNS = ["answer_id", "rater_id", "rater_label", "rater_status", "clip_id", "role", "condition", "target",
               "rating", "word", "correct", "served_at", "answered_at"]


def rater_token(secret: bytes, rater_id: int) -> str:
    mac = hmac.new(secret, f"rater:{rater_id}".encode(), hashlib.sha256).digest()
    return f"{rater_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def rater_from_token(secret: bytes, token: str | None) -> int | None:
    """The rater id a token was issued for, or None when it was not issued under this secret."""
    rater_id, _, _ = (token or "").partition(".")
    if not (rater_id.isascii() and rater_id.isdigit()) or len(rater_id) > 18:
        return None
    expected = rater_token(secret, int(rater_id)).encode()
    return int(rater_id) if hmac.compare_digest(token.encode(), expected) else None


class NewRater(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.@\-]*$")


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_id: str = Field(min_length=1, max_length=128)
    rating: StrictInt = Field(ge=1, le=5)
    word: str   # one of the set's words or NONE_WORD, checked by the endpoint (the words are the set's)


def create_app(set_dir, db_path, admin_token: str, per_rater: int | None = None) -> FastAPI:
    """The app for one listening set (format: ``speechmax.listen``) storing results in ``db_path``.

    per_rater: test clips each rater hears (None: all), see ``trial_order``.
    """
    if not admin_token or len(admin_token) < 8:
        raise ValueError("the admin token must be at least 8 characters")
    listening_set = load_listening_set(set_dir)
    clips, words = listening_set.clips, frozenset(listening_set.words)
    db = ListenDB(db_path, listening_set.name)
    app = FastAPI(title=f"speechmax listen: {listening_set.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard)
    app.add_middleware(SecurityHeaders)   # added last, so outermost: on the guard's 413 / 400 too
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    trials_per_rater = len(trial_order(clips.values(), random.Random(0), per_rater))
    app.state.set = listening_set

    def rater_from_header(x_rater_token: str | None = Header(None)) -> int:
        return checked_rater(x_rater_token)

    def checked_rater(token: str | None) -> int:
        rater_id = rater_from_token(db.secret, token)
        if rater_id is None or not db.rater_exists(rater_id):
            raise HTTPException(401, "missing or invalid rater token")
        return rater_id

    def admin(authorization: str | None = Header(None)) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(401, "admin token required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    def session(rater_id: int) -> dict:
        progress = db.progress(rater_id)
        clip_id = progress["next"]
        token = rater_token(db.secret, rater_id)
        progress["next"] = None if clip_id is None else {"clip_id": clip_id,
                                                         "audio": f"/api/audio/{clip_id}?token={token}"}
        return {"rater_id": rater_id, **progress}

    @app.get("/", include_in_schema=False)
    def rater_page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/admin", include_in_schema=False)
    def admin_page():
        return FileResponse(STATIC / "admin.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str):
        if name not in ASSETS:  # a fixed list: nothing else on disk is reachable
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    @app.get("/api/info")
    def info():
        return {"name": listening_set.name, "words": list(listening_set.words), "none": NONE_WORD,
                "trials": trials_per_rater}

    @app.post("/api/raters")
    def new_rater(body: NewRater | None = None):
        body = body or NewRater()
        rng = random.Random(secrets.randbits(64))
        rater_id = db.create_rater(
            lambda times_assigned: trial_order(clips.values(), rng, per_rater, times_assigned), body.label)
        return {"token": rater_token(db.secret, rater_id), **session(rater_id)}

    @app.get("/api/session")
    def current_session(rater_id: int = Depends(rater_from_header)):
        return session(rater_id)

    @app.get("/api/audio/{clip_id}")
    def audio(clip_id: str, token: str = Query("")):
        rater_id = checked_rater(token)
        clip = clips.get(clip_id)  # the file comes from the manifest, never from the URL
        try:
            if clip is None:
                raise NotAssigned(clip_id)
            db.mark_served(rater_id, clip_id)
        except NotAssigned:
            raise HTTPException(404, "no such clip for this rater") from None
        return FileResponse(clip.path, media_type="audio/wav")

    @app.post("/api/answers")
    def answer(body: AnswerIn, rater_id: int = Depends(rater_from_header)):
        if body.word != NONE_WORD and body.word not in words:
            raise HTTPException(422, f"word must be one of the set's words or {NONE_WORD!r}")
        clip = clips.get(body.clip_id)
        if clip is None:
            raise HTTPException(422, f"unknown clip id {body.clip_id!r}")
        try:
            stored = db.add_answer(rater_id, clip, body.rating, body.word)
        except NotAssigned:
            raise HTTPException(422, f"clip {clip.id!r} is not one of this rater's trials") from None
        except NotPlayed:
            raise HTTPException(400, f"clip {clip.id!r} has not been played yet") from None
        except AlreadyAnswered:
            raise HTTPException(409, f"clip {clip.id!r} was already answered differently") from None
        return {"stored": stored, **session(rater_id)}

    @app.get("/api/summary.json", dependencies=[Depends(admin)])
    def summary():
        result = summarize(db.answers(), listening_set.name)
        result["clips"] = {role: sum(c.role == role for c in clips.values()) for role in ROLES}
        return result

    @app.get("/api/answers.csv", dependencies=[Depends(admin)])
    def answers_csv():
        answers = db.answers()
        status = {rater: s["status"] for rater, s in rater_statuses(answers).items()}
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for a in answers:
            writer.writerow({**a, "rater_status": status[a["rater_id"]],
                             "correct": "" if a["target"] is None else int(a["word"] == a["target"]),
                             "served_at": _iso(a["served_at"]), "answered_at": _iso(a["answered_at"])})
        filename = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in listening_set.name)
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}-answers.csv"'})

    return app


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every response (lighter than BaseHTTPMiddleware)."""

    headers = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestGuard:
    """ASGI middleware: a body over MAX_BODY bytes gets 413 as soon as its size is known (Content-Length, else
    while it arrives), a body that is JSON only with NaN / Infinity literals gets 400; nothing of it is echoed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return await _reply(send, 413, f"request body too large (limit {MAX_BODY // 1024} KB)")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":     # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                return await _reply(send, 413, f"request body too large (limit {MAX_BODY // 1024} KB)")
        if body and not _strict_json(body):
            return await _reply(send, 400, "NaN and Infinity are not JSON")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _strict_json(body: bytes) -> bool:
    """False when ``body`` parses as JSON only thanks to Python's NaN / Infinity extension; anything else is
    left to the endpoint's own parsing."""
    def reject(constant):
        raise OverflowError(constant)
    try:
        json.loads(body, parse_constant=reject)
    except OverflowError:
        return False
    except ValueError:   # not JSON at all (or not UTF-8): the endpoint reports it
        pass
    return True


async def _reply(send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def _validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """422 naming where and what, never the submitted value (it is not echoed back to anyone)."""
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _internal_error(request, exc: Exception) -> JSONResponse:
    # Starlette sends this from outside every middleware, so the security headers are set here.
    return JSONResponse({"detail": "internal error"}, status_code=500, headers=SECURITY_HEADERS)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")
