"""HTTP control plane: ``/health``, ``/msg/send``, ``/msg/health``, ``/msg/report``, the MCP
endpoint ``/mcp`` and the dashboard page (``GET /``, ``web/page.py``), all in one Starlette app.

JSON in and out, status codes that mean something (400 bad input, 401 no or wrong token, 403 a
report from a name outside the project's ``{prefix}`` namespace, 404 unknown session, 409 a
target that cannot take the message, 413 body too large, 429 too many messages), and a bearer
token, the contents
of ``$SANDBOXRUN_HOME/http.token`` (created with mode 600 on first use), required on
everything but ``GET /health``. Bound to loopback by default (``cli/mcp_cmd.py``).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastmcp import FastMCP
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandboxrun.coord import messages, reports
from sandboxrun.errors import SandboxrunError, SessionNotFoundError
from sandboxrun.local import send as send_mod
from sandboxrun.local.master import master_session
from sandboxrun.local.spawn import prefix_for
from sandboxrun.mcp.common import Coord
from sandboxrun.mcp.workers import tmux_for
from sandboxrun.store import Session
from sandboxrun.web import page

MAX_BODY = 64 * 1024
#: at most this many /msg/send per target in RATE_WINDOW seconds
RATE_LIMIT = 10
RATE_WINDOW = 10.0
PUBLIC = {"/health"}


def ensure_token(path: Path) -> str:
    """The bearer token in ``path``, created (mode 600) when missing; mode tightened if wider."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        token = path.read_text().strip()
        if token:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <token>`` (public paths exempt)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC or page.is_public(scope):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        bearer = scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        if not bearer and not page.cookie_ok(scope, self.token):  # the dashboard's cookie
            redirect = page.login_redirect(scope)
            if redirect is not None:
                await redirect(scope, receive, send)
                return
            response = JSONResponse(
                {
                    "error": "unauthorized",
                    "hint": "Send 'Authorization: Bearer <token>' with the token in "
                    "$SANDBOXRUN_HOME/http.token.",
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(status: int, error: str, hint: str) -> JSONResponse:
    return JSONResponse({"error": error, "hint": hint}, status_code=status)


class Problem(Exception):
    """A request we refuse, with its status code and a hint that says what to send instead
    (every refusal has one: a client must never be left with only "bad request")."""

    def __init__(self, status: int, error: str, hint: str) -> None:
        super().__init__(error)
        self.response = _error(status, error, hint)


async def _json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Problem(413, f"body over {MAX_BODY} bytes", "Send less (notes, not files).")
    example = _EXAMPLES.get(request.url.path, "{...}")
    if not body.strip():
        raise Problem(400, "the body is empty", f"Send a JSON object, e.g. {example}.")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Problem(400, "the body is not JSON", f"Send a JSON object, e.g. {example}.") from exc
    if not isinstance(data, dict):
        raise Problem(400, "the body must be a JSON object", f"Send a JSON object, e.g. {example}.")
    return data


#: a minimal valid body per route, named in the hints of refused requests
_EXAMPLES = {
    "/msg/send": '{"message": "status please", "sessionId": "api"}',
    "/msg/health": '{"sessionId": "api", "isIdle": true}',
    "/msg/report": '{"sessionId": "api", "state": "done", "notes": "tests pass"}',
}

_JSON_TYPES = {str: "a string", bool: "true or false", list: "a list", int: "a whole number"}


def _field(data: dict[str, Any], key: str, kind: type, required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise Problem(
                400,
                f"missing field {key!r}",
                f"Add {key!r} ({_JSON_TYPES.get(kind, kind.__name__)}) to the JSON object.",
            )
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        what = _JSON_TYPES.get(kind, kind.__name__)
        raise Problem(400, f"field {key!r} must be {what}", f"Send {key!r} as {what}.")
    return value


class Control:
    """The control plane's handlers over the MCP server's :class:`Coord`."""

    def __init__(self, coord: Coord) -> None:
        self.coord = coord
        self.sent: dict[str, deque[float]] = {}
        self.health: dict[str, dict[str, Any]] = {}

    def _session(self, ref: str) -> Session:
        try:
            return self.coord.store.resolve(ref)
        except SessionNotFoundError as exc:
            raise Problem(
                404, f"no session matches {ref!r}", "See GET /health or list_sessions."
            ) from exc

    def _by_tmux_name(self, name: str, repo: str) -> Session | None:
        """The newest session of ``repo`` whose tmux session is ``name`` (None: not known, e.g.
        a child whose row was lost: its report is kept under its name)."""
        row = self.coord.store.conn.execute(
            "SELECT id FROM sessions WHERE tmux_session = ? AND repo = ? "
            "ORDER BY created_at DESC LIMIT 1",
            (name, repo),
        ).fetchone()
        return self.coord.store.get(row[0]) if row else None

    async def health_route(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "sandboxrun", "time": time.time()})

    def _default_target(self) -> Session:
        """The master session of the server's repository (``{prefix}_master``)."""
        root = Path(self.coord.repo(None))
        name = master_session(prefix_for(root, self.coord.settings, self.coord.env))
        row = self.coord.store.conn.execute(
            "SELECT id FROM sessions WHERE name = ? AND repo = ?", (name, str(root))
        ).fetchone()
        master = self.coord.store.get(row[0]) if row else None
        if master is None or not master.is_active:
            raise Problem(
                404,
                f"no master session ({name}) is running for {root}",
                "Start it with `sandboxrun master start`, or pass sessionId.",
            )
        return master

    def _rate_limit(self, target: Session) -> None:
        """At most RATE_LIMIT messages per RATE_WINDOW seconds to one session (429 beyond)."""
        now = time.monotonic()
        window = self.sent.setdefault(target.id, deque())
        while window and now - window[0] > RATE_WINDOW:
            window.popleft()
        if len(window) >= RATE_LIMIT:
            raise Problem(
                429,
                f"over {RATE_LIMIT} messages in {RATE_WINDOW:g}s to {target.name}",
                f"Wait {RATE_WINDOW:g}s, or put several things in one message.",
            )
        window.append(now)

    def _type_into(self, target: Session, text: str) -> send_mod.SendResult:
        """Type ``text`` into the target's tmux pane, as ``sandboxrun send`` does (run in a
        worker thread: it waits for the child's prompt hook)."""
        current = self.coord.store.get(target.id)
        return send_mod.send(
            self.coord.store, tmux_for(self.coord, current), current, text,
            home=self.coord.settings.home,
        )  # fmt: skip

    async def send_route(self, request: Request) -> Response:
        """Type a message into a session's Claude Code (the master by default).

        A tmux session (child or master) gets it typed into its pane, exactly once, through
        the same path as ``sandboxrun send``: 200 delivered, 202 queued (it was busy; Claude
        Code runs it next), 409 failed (with why). A local session without a pane (Claude Code
        started by hand, with the hooks) gets it as a message its hook adds to the next
        prompt's context: 202 pending.
        """
        data = await _json(request)
        text = _field(data, "message", str, required=True)
        if not text.strip():
            raise Problem(400, "the message is empty", "Put the text to type in 'message'.")
        task = _field(data, "taskId", str)
        ref = _field(data, "sessionId", str)
        target = self._session(ref) if ref else self._default_target()
        if target.is_terminal:
            raise Problem(
                409,
                f"session {target.name} has ended ({target.status})",
                "Address a running session (`sandboxrun status --active` lists them).",
            )
        if not target.tmux_session and not target.role:
            raise Problem(
                409,
                f"session {target.name} has no pane or role to deliver to",
                "Address a local session (a worker, the master, or one with the hooks).",
            )
        self._rate_limit(target)
        if target.tmux_session:
            result = await run_in_threadpool(self._type_into, target, text)
            self.coord.store.add_event(
                target.id, "http_message", {"taskId": task, **result.to_dict()}
            )
            body = {"to": target.name, "session": target.id, "taskId": task, **result.to_dict()}
            if result.outcome == send_mod.FAILED:
                body["error"] = f"not delivered: {result.detail}"
                body["hint"] = result.hint or f"Look at it with `sandboxrun open {target.name}`."
                return JSONResponse(body, status_code=409)
            return JSONResponse(body, status_code=200 if result.outcome == "delivered" else 202)
        if not target.repo:
            raise Problem(
                409,
                f"session {target.name} has no repository to deliver in",
                "Address a session started in a git repository (a worker or the master).",
            )
        with self.coord.store.transaction() as conn:
            mid = messages.send(
                conn,
                target.repo,
                "MESSAGE",
                sender="http",
                recipient=target.role,
                body={"text": text, "taskId": task},
            )
        return JSONResponse(
            {"id": mid, "to": target.role, "session": target.id, "repo": target.repo,
             "taskId": task, "outcome": "pending"},
            status_code=202,
        )  # fmt: skip

    async def health_report_route(self, request: Request) -> Response:
        data = await _json(request)
        ref = _field(data, "sessionId", str, required=True)
        s = self._session(ref)
        entry = {
            "sessionId": s.id,
            "name": s.name,
            "taskId": _field(data, "taskId", str),
            "ts": time.time(),
        }
        for key in ("isExecuting", "isIdle", "hasUncommittedChanges", "tmuxPaneBusy"):
            entry[key] = _field(data, key, bool)
        self.health[s.id] = entry
        self.coord.store.add_event(s.id, "health", entry)
        live = list(self.health.values())
        return JSONResponse(
            {
                "sessions": len(live),
                "executing": sum(1 for e in live if e["isExecuting"]),
                "idle": sum(1 for e in live if e["isIdle"]),
                "uncommitted": sum(1 for e in live if e["hasUncommittedChanges"]),
                "pane_busy": sum(1 for e in live if e["tmuxPaneBusy"]),
                "latest": live,
            }
        )

    async def report_route(self, request: Request) -> Response:
        data = await _json(request)
        ref = _field(data, "sessionId", str)
        name = _field(data, "name", str)
        if not ref and not name:
            raise Problem(
                400,
                "a report needs sessionId or name",
                'Add "sessionId" (a session id or name), or "name" (your tmux session\'s).',
            )
        s = self._session(ref) if ref else None
        if name:
            # Only this project's tmux sessions ({prefix}_master, {prefix}_child_NAME) report
            # by name: anything else (another project's prefix, made-up names) is refused.
            root = Path(s.repo) if s and s.repo else Path(self.coord.repo(None))
            prefix = prefix_for(root, self.coord.settings, self.coord.env)
            if not reports.in_namespace(name, prefix):
                raise Problem(
                    403,
                    f"{name!r} is outside this project's namespace ({prefix}_master, "
                    f"{prefix}_child_NAME)",
                    "Report as your tmux session's name, or by sessionId.",
                )
            if s is None:
                s = self._by_tmux_name(name, str(root))
            elif name not in (s.tmux_session, s.name):
                raise Problem(
                    409,
                    f"name {name!r} is not session {s.name}'s",
                    "Send only sessionId, or the name of that session's own tmux session.",
                )
        arts = _field(data, "artifacts", list) or []
        if not all(isinstance(a, str) for a in arts):
            raise Problem(
                400, "artifacts must be a list of strings", 'e.g. "artifacts": ["report.md"].'
            )
        try:
            with self.coord.store.transaction() as conn:
                rid = reports.add(
                    conn,
                    _field(data, "state", str, required=True),
                    session_id=s.id if s else None,
                    task_id=_field(data, "taskId", str),
                    name=s.name if s else name,
                    notes=_field(data, "notes", str),
                    artifacts=arts,
                )
        except SandboxrunError as exc:
            raise Problem(400, exc.message, exc.hint or _FIX_AND_RETRY) from exc
        return JSONResponse({"id": rid, "session": s.id if s else None}, status_code=201)


Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except Problem as exc:
            return exc.response
        except SandboxrunError as exc:
            return _error(400, exc.message, exc.hint or _FIX_AND_RETRY)

    return run


_FIX_AND_RETRY = "Fix the request as the error says and send it again."


def _post_only(path: str) -> Handler:
    """A GET of a POST route: 405 as JSON naming the method and a body to send (Starlette's
    own 405 is a bare text line)."""

    async def run(request: Request) -> Response:
        return JSONResponse(
            {
                "error": f"{path} takes POST, not {request.method}",
                "hint": f"POST a JSON object to {path}, e.g. {_EXAMPLES.get(path, '{...}')}.",
            },
            status_code=405,
            headers={"Allow": "POST"},
        )

    return run


def _repo_or_none(coord: Coord) -> str | None:
    """The server's repository (the dashboard page shows its sessions), None outside one."""
    try:
        return coord.repo(None)
    except SandboxrunError:
        return None


def build_app(server: FastMCP, *, token_path: Path | None = None) -> ASGIApp:
    """The ASGI app: MCP at ``/mcp`` plus the control routes, behind the bearer token."""
    coord: Coord = server.coord  # type: ignore[attr-defined]
    control = Control(coord)
    routes = {
        ("/health", "GET"): control.health_route,
        ("/msg/send", "POST"): control.send_route,
        ("/msg/health", "POST"): control.health_report_route,
        ("/msg/report", "POST"): control.report_route,
    }
    token = ensure_token(token_path or coord.settings.home / "http.token")
    routes.update(page.Page(coord.settings.db_path, token.encode(), _repo_or_none(coord)).routes())
    for (path, method), handler in routes.items():
        server.custom_route(path, methods=[method])(_guard(handler))
    for path in _EXAMPLES:
        server.custom_route(path, methods=["GET"])(_post_only(path))
    app = server.http_app(path="/mcp")
    return BearerAuth(app, token)
