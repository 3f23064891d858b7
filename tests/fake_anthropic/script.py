"""The scripting DSL: what the fake Messages API answers, one reply per model request.

A test lists replies in order, e.g.::

    [tool("Write", file_path="a.txt", content="hi"), tool("Bash", command="ls"), text("done")]

Each main-loop request made by Claude Code consumes the next reply. Helpers build them:

- :func:`text` / :func:`tool` / :func:`reply` - a successful streamed assistant message;
- :func:`error` - an HTTP error with Anthropic's JSON error body (500, 529, 401, ...);
- :func:`stream_error` - HTTP 200, then an ``error`` SSE event mid-stream (how overload often
  arrives in practice);
- :func:`rate_limited` - a 429 carrying the ``anthropic-ratelimit-unified-*`` headers Claude Code
  reads for subscription usage limits (see :func:`unified_headers`).

Any item may be repeated with ``times=N`` (``None``: for ever, which is how a persistent
outage is scripted, since the CLI retries errors).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fake_anthropic.server import RecordedRequest

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    # Real ids look like toolu_01AbC...; the CLI only needs them unique within a session.
    return f"{prefix}_fake{next(_ids):08d}"


@dataclass(frozen=True)
class TextBlock:
    """A text content block."""

    text: str


@dataclass(frozen=True)
class ToolUseBlock:
    """A ``tool_use`` content block; ``id`` is generated when not given."""

    name: str
    input: Mapping[str, Any]
    id: str = field(default_factory=lambda: _next_id("toolu"))


Block = TextBlock | ToolUseBlock


@dataclass(frozen=True)
class Usage:
    """Token counts reported for a reply; Claude Code prices them into ``total_cost_usd``."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """The ``usage`` object of the Messages API."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass(frozen=True)
class Reply:
    """A successful assistant message, streamed as SSE (or JSON when ``stream`` is false)."""

    blocks: tuple[Block, ...]
    usage: Usage = Usage()
    #: None: ``tool_use`` when any block is a tool call, else ``end_turn``
    stop_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int | None = 1
    #: when set, the response waits for this event (a turn held open: the agent stays busy)
    hold: threading.Event | None = field(default=None, compare=False)

    @property
    def effective_stop_reason(self) -> str:
        """The stop reason sent in ``message_delta``."""
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUseBlock) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error response with Anthropic's ``{"type": "error", "error": {...}}`` body."""

    status: int
    error_type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int | None = 1


@dataclass(frozen=True)
class StreamErrorReply:
    """HTTP 200 with ``message_start``, then an ``error`` event and the stream ends."""

    error_type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int | None = 1


#: a reply computed from the request it answers
DynamicReply = Callable[["RecordedRequest"], "Reply | ErrorReply | StreamErrorReply"]
ScriptItem = Reply | ErrorReply | StreamErrorReply | DynamicReply

# Anthropic's error types by HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

ERROR_MESSAGES = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed your account's rate limit. Please try again later.",
    500: "Internal server error",
    529: "Overloaded",
}


def text(content: str, *, usage: Usage | None = None, times: int | None = 1) -> Reply:
    """A reply holding one text block (ends the turn)."""
    return Reply((TextBlock(content),), usage=usage or Usage(), times=times)


def tool(name: str, /, _text: str | None = None, **tool_input: Any) -> Reply:
    """A reply calling one tool, e.g. ``tool("Bash", command="ls")``; ``_text`` precedes it."""
    blocks: list[Block] = [TextBlock(_text)] if _text else []
    blocks.append(ToolUseBlock(name, dict(tool_input)))
    return Reply(tuple(blocks))


def held(item: Reply, gate: threading.Event) -> Reply:
    """``item``, answered only once ``gate`` is set: the request hangs as a slow model's would,
    so the agent stays busy mid-turn (without blocking the fake's other requests)."""
    return replace(item, hold=gate)


def reply(
    *blocks: Block | Reply,
    usage: Usage | None = None,
    stop_reason: str | None = None,
    headers: Mapping[str, str] | None = None,
    times: int | None = 1,
) -> Reply:
    """Combine blocks (or the blocks of other replies) into one message, e.g. two tool calls."""
    flat: list[Block] = []
    for b in blocks:
        flat.extend(b.blocks if isinstance(b, Reply) else (b,))
    return Reply(
        tuple(flat),
        usage=usage or Usage(),
        stop_reason=stop_reason,
        headers=dict(headers or {}),
        times=times,
    )


def error(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    times: int | None = 1,
) -> ErrorReply:
    """An HTTP error (``times=None`` keeps failing, so the CLI's retries fail too)."""
    return ErrorReply(
        status,
        error_type or ERROR_TYPES.get(status, "api_error"),
        message or ERROR_MESSAGES.get(status, "Error"),
        dict(headers or {}),
        times,
    )


def stream_error(
    error_type: str = "overloaded_error", message: str = "Overloaded", *, times: int | None = 1
) -> StreamErrorReply:
    """An error event inside a 200 SSE stream."""
    return StreamErrorReply(error_type, message, times=times)


def unified_headers(
    status: str,
    resets_at: int,
    *,
    claim: str = "five_hour",
    overage_status: str | None = "rejected",
    overage_disabled_reason: str | None = "org_level_disabled",
) -> dict[str, str]:
    """The ``anthropic-ratelimit-unified-*`` headers of a subscription (usage-limit) response.

    ``status`` is ``allowed``, ``allowed_warning`` or ``rejected``; ``resets_at`` is epoch
    seconds; ``claim`` the window (``five_hour``, ``seven_day``, ``seven_day_opus``, ...).
    Claude Code 2.1.330 reads them only for claude.ai logins and gateways: see
    :func:`gateway_token`.
    """
    headers = {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": str(resets_at),
        "anthropic-ratelimit-unified-representative-claim": claim,
        "anthropic-ratelimit-unified-fallback": "unavailable",
    }
    short = {"five_hour": "5h", "seven_day": "7d"}.get(claim)
    if short:
        headers[f"anthropic-ratelimit-unified-{short}-status"] = status
        headers[f"anthropic-ratelimit-unified-{short}-reset"] = str(resets_at)
        headers[f"anthropic-ratelimit-unified-{short}-utilization"] = (
            "1.0" if status == "rejected" else "0.9"
        )
    if overage_status:
        headers["anthropic-ratelimit-unified-overage-status"] = overage_status
    if overage_disabled_reason:
        headers["anthropic-ratelimit-unified-overage-disabled-reason"] = overage_disabled_reason
    return headers


def rate_limited(
    resets_at: int,
    *,
    claim: str = "five_hour",
    message: str = "Rate limited",
    retry_after: int | None = None,
    times: int | None = None,
) -> ErrorReply:
    """A 429 usage-limit rejection, as api.anthropic.com sends it to a subscriber.

    Repeats for ever by default, like a real exhausted quota.
    """
    headers = unified_headers("rejected", resets_at, claim=claim)
    headers["x-should-retry"] = "false"
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return error(429, message, error_type="rate_limit_error", headers=headers, times=times)


def gateway_token(claims: Mapping[str, Any] | None = None) -> str:
    """An unsigned JWT with ``aud: claude-gateway`` for ``ANTHROPIC_AUTH_TOKEN``.

    Claude Code only acts on ``anthropic-ratelimit-unified-*`` headers (usage limits,
    ``rate_limit_event``) for claude.ai subscribers or when it talks to a "Claude gateway":
    a custom ``ANTHROPIC_BASE_URL`` plus an auth token whose JWT payload has that audience.
    It decodes the payload without verifying a signature, so this is enough offline.
    """
    import base64

    def b64(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    payload = {"aud": "claude-gateway", "sub": "sandboxrun-test", **(claims or {})}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}.fake-signature"


def consume_one(item: ScriptItem) -> ScriptItem | None:
    """What is left of a script item after it answered one request (None: used up)."""
    times = getattr(item, "times", 1)
    if times is None:
        return item
    if times <= 1:
        return None
    return replace(item, times=times - 1)  # type: ignore[type-var]
