"""A loopback fake of the Anthropic Messages API, good enough for the real Claude Code CLI.

It serves ``POST /v1/messages`` (the CLI adds ``?beta=true``) with streaming SSE, answers
main-loop requests from a script (see :mod:`tests.fake_anthropic.script`) and side requests
(the CLI's own small-model calls, token counting) without consuming it, and records every
request so tests can assert on what the CLI sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_anthropic.script import (
    ErrorReply,
    Reply,
    ScriptItem,
    StreamErrorReply,
    TextBlock,
    ToolUseBlock,
    consume_one,
    error,
    text,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-5"


@dataclass
class RecordedRequest:
    """One HTTP request the fake received, and how it was classified and answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    #: ``main`` (answered from the script), ``side``, ``count_tokens`` or ``other``
    kind: str = "other"
    #: the script item (or a description) that answered it
    answer: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of a Messages API request body."""
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def system_text(self) -> str:
        """The system prompt, its blocks joined by newlines."""
        system = self.body.get("system", "") if isinstance(self.body, dict) else ""
        if isinstance(system, str):
            return system
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools offered to the model."""
        tools = self.body.get("tools") or [] if isinstance(self.body, dict) else []
        return [t.get("name", "") for t in tools]

    def texts(self, roles: Iterable[str] = ("user",)) -> list[str]:
        """Every text block (or plain string content) of the messages with these roles."""
        roles = tuple(roles)
        return [t for m in self.messages if m.get("role") in roles for t in _texts(m)]

    def user_texts(self) -> list[str]:
        """Text blocks of the user messages: the prompt is one of them, exactly as sent."""
        return self.texts(("user",))

    def tool_results(self) -> list[dict[str, Any]]:
        """``tool_result`` blocks of the last user message (the answer to the previous reply)."""
        users = [m for m in self.messages if m.get("role") == "user"]
        if not users or isinstance(users[-1].get("content"), str):
            return []
        return [b for b in users[-1]["content"] if b.get("type") == "tool_result"]

    @property
    def working_directory(self) -> str | None:
        """The path on the ``Primary working directory: ...`` line the CLI sends.

        Claude Code 2.1.330 puts its environment section in a ``system``-role message inside
        ``messages``; older versions had it in the top-level system prompt: look in both.
        """
        for chunk in [self.system_text, *self.texts(("system", "user"))]:
            for line in chunk.splitlines():
                _, sep, rest = line.partition("Primary working directory:")
                if sep:
                    return rest.strip()
        return None


def _texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in content or [] if b.get("type") == "text"]


def is_main_request(req: RecordedRequest) -> bool:
    """Whether a ``/v1/messages`` request is the agent's main loop (answered from the script).

    The main loop always offers the tools; the CLI's side calls (titles, summaries, checks)
    offer none, so the tools' presence is the distinguishing mark.
    """
    return bool(isinstance(req.body, dict) and req.body.get("tools"))


def sse_events(reply: Reply | StreamErrorReply, model: str) -> Iterator[tuple[str, dict]]:
    """The ``(event, data)`` pairs of a streamed Messages API response, in wire order."""
    message_id = f"msg_fake{id(reply):x}"
    usage = reply.usage.as_dict() if isinstance(reply, Reply) else {"input_tokens": 10}
    start_usage = {**usage, "output_tokens": 1}
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    yield "ping", {"type": "ping"}
    if isinstance(reply, StreamErrorReply):
        yield (
            "error",
            {"type": "error", "error": {"type": reply.error_type, "message": reply.message}},
        )
        return
    for index, block in enumerate(reply.blocks):
        if isinstance(block, TextBlock):
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _empty(block)},
            )
            for piece in _halves(block.text):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _empty(block)},
            )
            # Split the JSON in two so the client has to accumulate partial_json, as it must
            # with the real API.
            for piece in _halves(json.dumps(dict(block.input))):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.effective_stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def message_json(reply: Reply, model: str) -> dict[str, Any]:
    """A non-streamed Messages API response body for ``reply``."""
    content: list[dict[str, Any]] = []
    for block in reply.blocks:
        if isinstance(block, TextBlock):
            content.append({"type": "text", "text": block.text})
        else:
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    return {
        "id": f"msg_fake{id(reply):x}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.effective_stop_reason,
        "stop_sequence": None,
        "usage": reply.usage.as_dict(),
    }


def _empty(block: TextBlock | ToolUseBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": ""}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}


def _halves(s: str) -> list[str]:
    mid = len(s) // 2
    return [p for p in (s[:mid], s[mid:]) if p] or [""]


class FakeAnthropic:
    """The fake API server: a context manager serving on ``127.0.0.1`` in a daemon thread.

    ``script`` is consumed by main-loop requests; when it runs out, ``default`` answers (a
    plain "done" text unless given). ``side_reply`` answers side requests. All requests are
    in :attr:`requests`.
    """

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        default: ScriptItem | None = None,
        side_reply: ScriptItem | None = None,
        classify: Callable[[RecordedRequest], bool] = is_main_request,
    ) -> None:
        self._lock = threading.Lock()
        self._script: list[ScriptItem] = list(script)
        self.default: ScriptItem = default or text("done", times=None)
        self.side_reply: ScriptItem = side_reply or text("Fake title", times=None)
        self.classify = classify
        self.requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        """Bind a free loopback port and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # A short poll interval keeps stop() (which waits for the loop) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic",
            daemon=True,
        )
        self._thread.start()
        log.debug("fake Anthropic API on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``ANTHROPIC_BASE_URL``."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *items: ScriptItem) -> None:
        """Replace the remaining script."""
        with self._lock:
            self._script = list(items)

    def extend(self, *items: ScriptItem) -> None:
        """Append to the script."""
        with self._lock:
            self._script.extend(items)

    @property
    def remaining(self) -> list[ScriptItem]:
        """Script items not used yet."""
        with self._lock:
            return list(self._script)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        """The recorded main-loop requests, in order."""
        with self._lock:
            return [r for r in self.requests if r.kind == "main"]

    def _answer(self, req: RecordedRequest) -> ScriptItem:
        with self._lock:
            self.requests.append(req)
            if not req.path.startswith("/v1/messages"):
                req.kind = "other"
                return error(404, f"fake API has no {req.path}")
            if req.path.rstrip("/").endswith("/count_tokens"):
                req.kind = "count_tokens"
                return _CountTokens()
            if not self.classify(req):
                req.kind = "side"
                item = self.side_reply
            else:
                req.kind = "main"
                if self._script:
                    item = self._script[0]
                    rest = consume_one(item)
                    if rest is None:
                        self._script.pop(0)
                    else:
                        self._script[0] = rest
                else:
                    item = self.default
            if not isinstance(item, Reply | ErrorReply | StreamErrorReply):
                item = item(req)  # a dynamic reply
            req.answer = item
            return item


class _CountTokens:
    """Marker answer for ``/v1/messages/count_tokens``."""


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    # HTTP/1.1 so the client may keep the connection; each response sets its own framing.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake-anthropic: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        parts = urlsplit(self.path)
        req = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        item = self.fake._answer(req)
        hold = getattr(item, "hold", None)
        if hold is not None:  # outside the fake's lock: other requests go on meanwhile
            hold.wait(timeout=300)
        model = body.get("model", DEFAULT_MODEL) if isinstance(body, dict) else DEFAULT_MODEL
        stream = isinstance(body, dict) and bool(body.get("stream"))
        if isinstance(item, _CountTokens):
            self._send_json(200, {"input_tokens": 100})
        elif isinstance(item, ErrorReply):
            payload = {
                "type": "error",
                "error": {"type": item.error_type, "message": item.message},
                "request_id": "req_fake",
            }
            self._send_json(item.status, payload, item.headers)
        elif stream:
            self._send_sse(sse_events(item, model), item.headers)
        elif isinstance(item, Reply):
            self._send_json(200, message_json(item, model), item.headers)
        else:  # a stream error asked for by a non-streaming request: plain 529-like error
            payload = {"type": "error", "error": {"type": item.error_type, "message": item.message}}
            self._send_json(529, payload, item.headers)

    def _common_headers(self, extra: dict[str, str] | Any) -> None:
        self.send_header("request-id", "req_fake")
        self.send_header("anthropic-organization-id", "00000000-0000-0000-0000-000000000000")
        for k, v in dict(extra).items():
            self.send_header(k, v)

    def _send_json(self, status: int, payload: Any, headers: Any = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self._common_headers(headers)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_sse(self, events: Iterable[tuple[str, dict]], headers: Any = ()) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        # No length is known up front: close the connection to mark the end of the stream.
        self.send_header("connection", "close")
        self._common_headers(headers)
        self.end_headers()
        self.close_connection = True
        for event, data in events:
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
