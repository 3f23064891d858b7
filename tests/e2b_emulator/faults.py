"""Fault injection for the E2B emulator: scripted failures per kind of request.

A test says what should go wrong, for which kind of request, how many times, and after how
many good ones::

    emu.faults.add("download", "drop", match="commits", drop_after=4096)   # cut mid-transfer
    emu.faults.add("timeout", "status", status=503, times=10)                # extend fails
    emu.faults.add("command", "lose", match="sandboxrun-collect")           # lost at collect
    emu.faults.add("create", "stall", seconds=3)                             # slow control plane
    emu.faults.add("upload", "stall", seconds=None)                          # hung until cleared
    emu.faults.add("download", "stall", seconds=None, stall_after=65536)     # a stream that stops

Kinds (what the SDK does): ``create``, ``connect``, ``info``, ``list``, ``timeout`` (set_timeout,
i.e. extend), ``kill``, ``upload``, ``download``, ``command`` (``process.Process/Start``: every
``commands.run``), ``signal``, ``fs`` (the filesystem service), ``health``, or ``any``.

Actions:

- ``status``: answer with ``status`` (429, 503, 401, 507...) and E2B's error body.
- ``drop``: cut the connection. Before the response (``drop_after`` None): the client sees a
  connection closed without an answer. With ``drop_after=N``: the request is served, and the
  connection is cut once N bytes of the response body went out (a transfer broken halfway).
- ``stall``: wait ``seconds`` before serving the request (a slow network); ``seconds=None``
  holds it without an answer until the faults are cleared (a hung connection: longer than any
  client timeout), and the connection is then dropped; or until :meth:`Faults.release`, and
  the request is then served, even if the client gave up on it long ago (E2B doing late what
  it was asked: a create held, then released, makes a sandbox nobody was told of); or until
  ``until()`` is true (a condition, polled: a window held open for as long as a test needs
  it, however slow the machine). With ``stall_after=N`` the request is
  served and the stall starts once N bytes of the response body went out (a stream that stops
  mid-way: a command's output, a download); for an ``upload`` it starts once N bytes of the
  request body came in (the server stops reading; the client's send blocks). A client that
  gives up is never answered: the held request ends when the stall does.
- ``lose`` / ``expire``: the request's sandbox is destroyed (lost) or reaches its end now,
  then the request goes on (and finds it gone, as a request racing E2B would).

``match`` narrows a fault to requests whose path and query (and, for commands, body: the
command text is in it) contain that text. ``after`` lets that many matching requests through
first; ``times`` is how many it hits (then it is spent). Faults are additive to the
emulator's older knobs (``fail_control_plane``, ``fail_uploads``, ``expire``, ``lose``).
"""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

KINDS = (
    "create", "connect", "info", "list", "timeout", "kill", "upload", "download",
    "command", "signal", "fs", "health", "any",
)  # fmt: skip
ACTIONS = ("status", "drop", "stall", "lose", "expire")

_SID = re.compile(r"^/(?:v2/)?sandboxes/([^/]+)")


class DroppedConnection(Exception):
    """Raised inside the ASGI app to make the server close the connection mid-request."""


async def _promise_and_drop(send, headers: dict, fault: Fault) -> None:
    """Headers promising a body that never comes, then the connection closes: the client gets
    no usable answer (an exception before the headers would make the server answer 500)."""
    await send(
        {"type": "http.response.start", "status": 200,
         "headers": [(b"content-length", b"1048576"),
                     (b"content-type", headers.get("content-type", "").encode())]}
    )  # fmt: skip
    raise DroppedConnection(f"fault {fault.id}: connection dropped before an answer")


def request_kind(method: str, path: str) -> str:
    """The kind of an emulator request (see the module docstring)."""
    if path == "/health":
        return "health"
    if path == "/files":
        return "upload" if method == "POST" else "download"
    if path.startswith("/process.Process/"):
        return (
            "command"
            if path.endswith("/Start")
            else ("signal" if path.endswith("/SendSignal") else "process")
        )
    if path.startswith("/filesystem.Filesystem/"):
        return "fs"
    if path == "/v2/sandboxes":
        return "create" if method == "POST" else "list"
    if path == "/sandboxes":
        return "list"
    if path.endswith("/connect"):
        return "connect"
    if path.endswith("/timeout"):
        return "timeout"
    if _SID.match(path):
        return "kill" if method == "DELETE" else "info"
    return "other"


async def _buffered(receive):
    """``receive`` with the whole request body read now and handed on as it came."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


@dataclass
class Fault:
    """One scripted failure (see the module docstring for the fields)."""

    kind: str
    action: str
    times: int = 1
    after: int = 0
    status: int = 503
    #: stall: how long; None holds the request until the faults are cleared (then dropped)
    seconds: float | None = 0.0
    match: str = ""
    drop_after: int | None = None
    #: stall: bytes of the response (of the request body, for an upload) served first
    stall_after: int | None = None
    #: stall: ends (the request is served) once this returns true; polled, so keep it cheap
    until: Callable[[], bool] | None = None
    message: str = "injected fault"
    #: matching requests seen and hit so far
    seen: int = 0
    hits: int = 0
    id: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown request kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {', '.join(ACTIONS)}")

    @property
    def spent(self) -> bool:
        return self.hits >= self.times

    def to_dict(self) -> dict:
        return {**asdict(self), "until": self.until is not None}  # JSON: whether it has one


@dataclass
class Faults:
    """The emulator's list of scripted failures; thread-safe (tests add, the loop takes)."""

    faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 1
    #: bumped by clear(): stalls that began before it end (their connection is dropped)
    _generation: int = 0
    #: bumped by release(): stalls that began before it end and their request is served
    _released: int = 0
    #: requests held by a stall right now
    stalled: int = 0

    def add(self, kind: str, action: str, **options) -> Fault:
        """Script a failure; returns it (its ``hits`` count how often it struck)."""
        fault = Fault(kind, action, **options)
        with self._lock:
            fault.id = self._next
            self._next += 1
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault, and end the stalls holding requests now (dropped)."""
        with self._lock:
            self.faults.clear()
            self._generation += 1

    def release(self) -> None:
        """Remove every fault, and end the stalls holding requests now: they are served."""
        with self._lock:
            self.faults.clear()
            self._released += 1

    async def _stall(self, fault: Fault) -> None:
        """Hold for ``fault.seconds`` (None: until clear() or release()); DroppedConnection if
        cleared."""
        with self._lock:
            generation, released = self._generation, self._released
            self.stalled += 1
        loop = asyncio.get_running_loop()
        end = None if fault.seconds is None else loop.time() + fault.seconds
        try:
            while end is None or loop.time() < end:
                if self._generation != generation:
                    raise DroppedConnection(f"fault {fault.id}: stalled connection dropped")
                if self._released != released or (fault.until is not None and fault.until()):
                    return
                await asyncio.sleep(0.05 if end is None else min(0.05, end - loop.time()))
        finally:
            with self._lock:
                self.stalled -= 1

    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self.faults if not f.spent]

    def _take(self, kind: str, text: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.spent or fault.kind not in (kind, "any"):
                    continue
                if fault.match and fault.match not in text:
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.hits += 1
                return fault
        return None

    def _wants_body(self, kind: str) -> bool:
        with self._lock:
            return any(not f.spent and f.match and f.kind in (kind, "any") for f in self.faults)

    async def intercept(self, emulator, scope, receive, send, path: str, headers: dict):
        """Apply the first fault that matches this request.

        Returns the ``(receive, send)`` to serve the request with (possibly wrapped), or None
        when the fault answered it already.
        """
        if not self.faults:
            return receive, send
        method = scope.get("method", "GET")
        kind = request_kind(method, path)
        text = path + "?" + urllib.parse.unquote(scope.get("query_string", b"").decode("latin-1"))
        if kind in ("command", "signal", "process") and self._wants_body(kind):
            # The command text is in the request body (Connect, JSON or protobuf): read it
            # all, then hand the same messages to the app.
            messages, body = [], b""
            while True:
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            text += "\n" + body.decode("latin-1")

            async def replay(queue=messages, rest=receive):
                # then the real channel: it tells of a real disconnect, and only then
                return queue.pop(0) if queue else await rest()

            receive = replay
        fault = self._take(kind, text)
        if fault is None:
            return receive, send
        emulator.stats[f"fault_{kind}_{fault.action}"] += 1
        if fault.action == "status":
            from starlette.responses import JSONResponse

            response = JSONResponse(
                {"code": fault.status, "message": fault.message}, status_code=fault.status
            )
            await response(scope, receive, send)
            return None
        if fault.action == "stall":
            if fault.stall_after is None:
                if kind not in ("upload", "download"):
                    # a small body: read it now, so a request released after its client gave
                    # up is still served whole (as E2B would, having had it all along)
                    receive = await _buffered(receive)
                try:
                    await self._stall(fault)
                except DroppedConnection:
                    await _promise_and_drop(send, headers, fault)
                return receive, send
            return self._stalling(fault, kind, receive, send)
        if fault.action in ("lose", "expire"):
            sid = headers.get("e2b-sandbox-id") or (m.group(1) if (m := _SID.match(path)) else "")
            if sid and fault.action == "lose":
                await emulator.manager.destroy(sid, "lost")
            elif sid and sid in emulator.manager.sandboxes:
                # Reaching its end: the reaper kills it (within ~50 ms); wait for that.
                emulator.manager.sandboxes[sid].end_at = 0
                while sid in emulator.manager.sandboxes:
                    await asyncio.sleep(0.01)
            return receive, send
        # drop
        if fault.drop_after is None:
            await _promise_and_drop(send, headers, fault)
        left = fault.drop_after

        async def cutting_send(message):
            nonlocal left
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if len(body) >= left:
                    if left:
                        await send({**message, "body": body[:left], "more_body": True})
                    raise DroppedConnection(f"fault {fault.id}: connection dropped mid-answer")
                left -= len(body)
            await send(message)

        return receive, cutting_send

    def _stalling(self, fault: Fault, kind: str, receive, send):
        """(receive, send) that stall once ``fault.stall_after`` bytes went through."""
        left = fault.stall_after or 0

        async def stalling_send(message):
            nonlocal left
            if message["type"] == "http.response.body" and left >= 0:
                body = message.get("body", b"")
                if len(body) >= left:
                    cut, left = left, -1
                    if cut:
                        await send({**message, "body": body[:cut], "more_body": True})
                    await self._stall(fault)  # then the rest, as a slow network would
                    message = {**message, "body": body[cut:]}
                else:
                    left -= len(body)
            await send(message)

        async def stalling_receive():
            nonlocal left
            message = await receive()
            if message["type"] == "http.request" and left >= 0:
                left -= len(message.get("body", b""))
                if left < 0:
                    await self._stall(fault)
            return message

        if kind == "upload":
            return stalling_receive, send
        return receive, stalling_send
