"""The dashboard page on the HTTP control plane: ``GET /`` and what it reads.

One static page (``web/static/``: HTML, CSS and plain JavaScript, no build step) that draws
what :mod:`sandboxrun.dashboard.model` says, kept live by server-sent events
(:mod:`sandboxrun.web.sse`). Routes:

- ``GET /login`` (form) and ``POST /login`` (the token in the form body, never in a URL): a
  right token sets an HttpOnly, SameSite=Strict cookie holding a keyed hash of the token (not
  the token itself) and redirects to ``/``; ``POST /logout`` clears it.
- ``GET /`` the page (no cookie: redirected to ``/login``), ``GET /api/snapshot``,
  ``GET /api/sessions/{id}/events?after=N``, ``GET /events`` (the stream). ``?all=1``: every
  repository instead of the server's own.

The cookie is accepted for these GETs only, so no state-changing request can ride on it from
another site; the bearer token works everywhere as before. Every response of the page carries
a Content-Security-Policy without inline scripts: even a string that slipped into markup could
not run. The page itself writes agent text with ``textContent`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.types import Scope

from sandboxrun.dashboard.model import events_since
from sandboxrun.web.sse import Hub, event_json

COOKIE = "sandboxrun_dashboard"
#: reachable without credentials: the login form, logging out, the page's code and style
PUBLIC = {"/login", "/logout", "/static/app.js", "/static/app.css"}
#: GET routes a dashboard cookie opens (the bearer token opens everything)
COOKIE_PATHS = ("/", "/api/snapshot", "/events")
COOKIE_PREFIXES = ("/api/sessions/",)
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_LOGIN_BODY = 4096


def cookie_value(token: bytes) -> str:
    """What the cookie holds: a keyed hash of the token (the token never sits in the browser)."""
    return hmac.new(token, b"sandboxrun dashboard cookie v1", hashlib.sha256).hexdigest()


def is_public(scope: Scope) -> bool:
    return scope["path"] in PUBLIC


def cookie_ok(scope: Scope, token: bytes) -> bool:
    """Whether a GET of a dashboard route carries the right cookie."""
    path = scope["path"]
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    if path not in COOKIE_PATHS and not path.startswith(COOKIE_PREFIXES):
        return False
    header = dict(scope.get("headers") or []).get(b"cookie", b"").decode("latin-1")
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and hmac.compare_digest(value.encode(), cookie_value(token).encode()):
            return True
    return False


def login_redirect(scope: Scope) -> Response | None:
    """A browser asking for the page without credentials goes to the login form."""
    if scope["path"] == "/" and scope.get("method") in ("GET", "HEAD"):
        return RedirectResponse("/login", status_code=303, headers=HEADERS)
    return None


def _static(name: str) -> bytes:
    return (resources.files("sandboxrun.web") / "static" / name).read_bytes()


class Page:
    """The page's handlers; ``repo`` is the server's repository (None: every one)."""

    def __init__(self, db_path: Path, token: bytes, repo: str | None) -> None:
        self.token = token
        self.repo = repo
        self.hub = Hub(db_path)

    def _scope(self, request: Request) -> str | None:
        return None if request.query_params.get("all") == "1" else self.repo

    async def index(self, request: Request) -> Response:
        return HTMLResponse(_static("index.html"), headers=HEADERS)

    async def login_form(self, request: Request) -> Response:
        return HTMLResponse(_static("login.html"), headers=HEADERS)

    async def login(self, request: Request) -> Response:
        body = await request.body()
        given = ""
        if len(body) <= MAX_LOGIN_BODY:
            given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        if not given or not hmac.compare_digest(given.encode(), self.token):
            page = _static("login.html").replace(
                b'<p id="error" hidden>', b'<p id="error" role="alert">'
            )
            return HTMLResponse(page, status_code=401, headers=HEADERS)
        response = RedirectResponse("/", status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE, cookie_value(self.token), httponly=True, samesite="strict", path="/"
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def static(self, request: Request) -> Response:
        name = request.url.path.rsplit("/", 1)[-1]
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(_static(name), media_type=kind, headers=HEADERS)

    async def snapshot(self, request: Request) -> Response:
        return JSONResponse(await self.hub.current(self._scope(request)), headers=HEADERS)

    async def session_events(self, request: Request) -> Response:
        """A session's log: events after ``after`` (default: its last ``tail``), as text."""
        sid = request.path_params["sid"]
        try:
            after = int(request.query_params.get("after") or 0)
            tail = min(2000, max(1, int(request.query_params.get("tail") or 500)))
        except ValueError:
            return JSONResponse({"error": "after and tail are numbers"}, 400, headers=HEADERS)

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            if after:
                return events_since(conn, after, session_id=sid, limit=tail)
            row = conn.execute(
                "SELECT COALESCE(MIN(id), 1) - 1 FROM (SELECT id FROM events "
                "WHERE session_id = ? ORDER BY id DESC LIMIT ?)",
                (sid, tail),
            ).fetchone()
            return events_since(conn, int(row[0]), session_id=sid, limit=tail)

        found = await self.hub.read(read)
        return JSONResponse([event_json(e) for e in found], headers=HEADERS)

    async def events(self, request: Request) -> Response:
        headers = {**HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self.hub.stream(self._scope(request)), media_type="text/event-stream", headers=headers
        )

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("/", "GET"): self.index,
            ("/login", "GET"): self.login_form,
            ("/login", "POST"): self.login,
            ("/logout", "POST"): self.logout,
            ("/static/app.js", "GET"): self.static,
            ("/static/app.css", "GET"): self.static,
            ("/api/snapshot", "GET"): self.snapshot,
            ("/api/sessions/{sid}/events", "GET"): self.session_events,
            ("/events", "GET"): self.events,
        }
