"""Claude Code as a program: its argv, and its stream-json output turned into events.

Pure functions, tested offline against event lines captured from the real CLI. The parser
tolerates unknown event types and fields: Claude Code adds both between releases.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: statuses of `rate_limit_event` that mean the agent cannot go on until a reset
RATE_LIMIT_BLOCKED = {"rejected"}

#: a stored ``stdout`` event keeps at most this many characters of a line (the whole line
#: stays in the agent.log artifact); a line longer than PARSE_LIMIT is not even parsed
STORED_LINE_LIMIT = 64 * 1024
PARSE_LIMIT = 16 * 1024 * 1024
#: longest text kept in a parsed event (assistant text, result text, error content)
TEXT_LIMIT = 8000
#: plausible reset times (epoch seconds, up to 2096); anything else is not a time
_EPOCH_MIN, _EPOCH_MAX = 0.0, 4e9


# -- validating what the agent wrote: it is untrusted, and so is its output --------------------


def as_number(value: Any, lo: float = 0.0, hi: float = 1e9) -> float | None:
    """A finite number in ``[lo, hi]`` from ``value`` (numeric strings accepted), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) <= 40:
        try:
            value = float(value.strip().lstrip("$"))
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a huge int
        return None
    return min(max(number, lo), hi) if math.isfinite(number) else None


def as_int(value: Any, lo: int = 0, hi: int = 10**12) -> int | None:
    """An integer in ``[lo, hi]`` from ``value``, else None."""
    number = as_number(value, lo, hi)
    return None if number is None else int(number)


def as_text(value: Any, limit: int = 200) -> str | None:
    """A string cut to ``limit`` characters; numbers are written out; anything else is None."""
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value).lower()
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value if len(value) <= limit else value[:limit] + f"…[{len(value) - limit} more chars]"


def as_epoch(value: Any) -> float | None:
    """A reset time in epoch seconds (milliseconds are converted), or None if implausible."""
    number = as_number(value, -math.inf, math.inf)
    if number is not None and _EPOCH_MAX * 1000 >= number > _EPOCH_MAX:
        number /= 1000  # milliseconds
    return number if number is not None and _EPOCH_MIN <= number <= _EPOCH_MAX else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def stored_line(text: str) -> dict[str, Any]:
    """The payload of a ``stdout`` event: the line, cut to :data:`STORED_LINE_LIMIT`."""
    if len(text) <= STORED_LINE_LIMIT:
        return {"line": text}
    return {"line": text[:STORED_LINE_LIMIT], "truncated": len(text) - STORED_LINE_LIMIT}


def build_claude_argv(
    claude_bin: str,
    *,
    model: str | None = None,
    max_turns: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The argv of a headless agent run. The prompt is not in it: it goes in on stdin."""
    argv = [
        claude_bin,
        "-p",
        "--dangerously-skip-permissions",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    if model:
        argv += ["--model", model]
    if max_turns is not None:
        argv += ["--max-turns", str(int(max_turns))]
    return argv + list(extra or [])


@dataclass
class AgentEvent:
    """One thing the agent did, normalized from a stream-json line."""

    type: str  # init | text | tool_use | tool_result | tool_error | result | rate_limit | system | unknown | raw
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """A short human line for the live view and `logs`."""
        d = self.data
        if self.type == "init":
            return f"agent started (model {d.get('model') or '?'}, session {d.get('session_id') or '?'})"
        if self.type == "text":
            return _one_line(d.get("text", ""), 200)
        if self.type == "tool_use":
            detail = _one_line(d.get("summary") or "", 200)
            name = _one_line(d.get("name"), 100)
            return f"{name}: {detail}" if detail else name
        if self.type == "tool_error":
            return f"tool error: {_one_line(d.get('content', ''), 200)}"
        if self.type == "tool_result":
            return f"tool result ({d.get('chars', 0)} chars)"
        if self.type == "result":
            cost = as_number(d.get("total_cost_usd"))
            cost_s = f", ${cost:.4f}" if cost is not None else ""
            return f"result: {d.get('subtype')} after {d.get('num_turns')} turns{cost_s}" + (
                " (error)" if d.get("is_error") else ""
            )
        if self.type == "rate_limit":
            reset = as_epoch(d.get("resets_at"))
            when = datetime.fromtimestamp(reset).isoformat(" ", "minutes") if reset else "?"
            return f"rate limit {d.get('status')} ({d.get('limit_type') or '?'}), resets {when}"
        if self.type == "system":
            return f"system: {d.get('subtype')}"
        if self.type == "raw":
            return _one_line(d.get("line", ""), 200)
        return f"{_one_line(d.get('event_type', 'unknown'), 100)} event"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.data}


def _one_line(value: Any, limit: int) -> str:
    text = " ".join(str(value)[: limit * 4].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_TOOL_SUMMARY_KEYS = (
    "file_path",
    "command",
    "pattern",
    "path",
    "url",
    "query",
    "description",
    "notebook_path",
    "prompt",
)


def summarize_tool_input(name: str, tool_input: Any) -> str:
    """The one detail a person wants to see for a tool call (file, command, pattern...)."""
    if not isinstance(tool_input, dict):
        return ""
    if name == "TodoWrite" and isinstance(tool_input.get("todos"), list):
        return f"{len(tool_input['todos'])} todos"
    for key in _TOOL_SUMMARY_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return _one_line(value, 120)
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for item in content:
            if isinstance(item, dict) and item.get("type") == "text":
                parts.append(str(item.get("text", "")))
        return "\n".join(parts)
    return ""


def parse_event(obj: dict[str, Any]) -> list[AgentEvent]:
    """Normalize one decoded stream-json object into zero or more events.

    Every field is validated and bounded here (numbers are finite and in range, texts are cut,
    containers have the expected type), so nothing downstream (the session row, ``status``,
    ``logs``) ever sees a list where a number belongs or a 50 MB string.
    """
    etype = obj.get("type")
    if etype == "system":
        subtype = as_text(obj.get("subtype"), 100)
        if subtype == "init":
            tools = obj.get("tools")
            return [
                AgentEvent(
                    "init",
                    {
                        "session_id": as_text(obj.get("session_id")),
                        "model": as_text(obj.get("model")),
                        "cwd": as_text(obj.get("cwd"), 1000),
                        "claude_code_version": as_text(obj.get("claude_code_version"), 100),
                        "permission_mode": as_text(obj.get("permissionMode"), 100),
                        "tools": len(tools) if isinstance(tools, list) else 0,
                    },
                )
            ]
        return [AgentEvent("system", {"subtype": subtype})]
    if etype == "assistant":
        events = []
        message = _dict(obj.get("message"))
        # One API response is one turn, whatever number of lines and blocks it spans: the CLI
        # prints each content block of a response as its own line with the same message id.
        message_id = as_text(message.get("id"))
        turn = {"message_id": message_id} if message_id else {}
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            text = as_text(block.get("text"), TEXT_LIMIT)
            if block.get("type") == "text" and text and text.strip():
                events.append(AgentEvent("text", {"text": text, **turn}))
            elif block.get("type") == "tool_use":
                name = as_text(block.get("name"), 100) or "?"
                events.append(
                    AgentEvent(
                        "tool_use",
                        {
                            "name": name,
                            "id": as_text(block.get("id")),
                            "summary": summarize_tool_input(name, block.get("input")),
                            **turn,
                        },
                    )
                )
        return events
    if etype == "user":
        events = []
        content = _dict(obj.get("message")).get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _content_text(block.get("content"))
                tool_use_id = as_text(block.get("tool_use_id"))
                if block.get("is_error") is True:
                    events.append(
                        AgentEvent(
                            "tool_error",
                            {"tool_use_id": tool_use_id, "content": _one_line(text[:2000], 500)},
                        )
                    )
                else:
                    events.append(
                        AgentEvent("tool_result", {"tool_use_id": tool_use_id, "chars": len(text)})
                    )
        return events
    if etype == "result":
        result_text = as_text(obj.get("result"), TEXT_LIMIT)
        status = obj.get("api_error_status")
        data = {
            "subtype": as_text(obj.get("subtype"), 100),
            "is_error": obj.get("is_error") is True,
            "num_turns": as_int(obj.get("num_turns"), 0, 10**6),
            "total_cost_usd": as_number(obj.get("total_cost_usd"), 0.0, 1e6),
            "duration_ms": as_int(obj.get("duration_ms"), 0, 10**12),
            "session_id": as_text(obj.get("session_id")),
            "result": result_text,
            "terminal_reason": as_text(obj.get("terminal_reason"), 100),
            "api_error_status": as_int(status, 0, 999) if not isinstance(status, str)
            else as_text(status, 100),
        }  # fmt: skip
        events = [AgentEvent("result", data)]
        reset = parse_limit_message((result_text or "")[:2000])
        if data["is_error"] and reset is not None:
            events.append(
                AgentEvent(
                    "rate_limit",
                    {
                        "status": "rejected",
                        "resets_at": reset,
                        "limit_type": None,
                        "source": "result",
                    },
                )
            )
        return events
    if etype == "rate_limit_event":
        info = _dict(obj.get("rate_limit_info"))
        return [
            AgentEvent(
                "rate_limit",
                {
                    "status": as_text(info.get("status"), 50),
                    "resets_at": as_epoch(info.get("resetsAt")),
                    "limit_type": as_text(info.get("rateLimitType"), 100),
                    # Paid overage lets the agent go on despite a "rejected" plan limit.
                    "using_overage": info.get("isUsingOverage") is True,
                },
            )
        ]
    return [AgentEvent("unknown", {"event_type": as_text(etype, 100) or str(type(etype).__name__)})]


def parse_line(line: str) -> list[AgentEvent]:
    """Parse one line of stream-json output; anything else becomes a ``raw`` event.

    Never raises: non-JSON, JSON that is not an object, nesting too deep for the decoder and
    lines over :data:`PARSE_LIMIT` are all kept as (cut) raw text.
    """
    line = line.strip()
    if not line:
        return []
    raw = [AgentEvent("raw", {"line": as_text(line, TEXT_LIMIT)})]
    if len(line) > PARSE_LIMIT:
        return raw
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return raw
    if not isinstance(obj, dict):
        return raw
    return parse_event(obj)


@dataclass
class AgentProgress:
    """Running totals over the events seen so far (for the live view and the session row)."""

    session_id: str | None = None
    model: str | None = None
    #: turns as the CLI counts them (``num_turns``): one per assistant response (message id)
    turns: int = 0
    tools: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    result: dict[str, Any] | None = None
    rate_limited_until: float | None = None
    last_lines: list[str] = field(default_factory=list)
    _messages: set[str] = field(default_factory=set, repr=False)

    def _count_turn(self, message_id: str | None) -> None:
        # Blocks of one response share its id; a block without one counts on its own.
        if message_id is None or message_id not in self._messages:
            self.turns += 1
        if message_id is not None:
            self._messages.add(message_id)

    def feed(self, event: AgentEvent) -> None:
        """Update totals with one event."""
        d = event.data
        if event.type == "init":
            self.session_id = d.get("session_id") or self.session_id
            self.model = d.get("model") or self.model
        elif event.type in ("text", "tool_use"):
            self._count_turn(d.get("message_id"))
            if event.type == "tool_use":
                name = str(d.get("name") or "?")
                self.tools[name] = self.tools.get(name, 0) + 1
        elif event.type == "result":
            self.result = d
            self.turns = as_int(d.get("num_turns")) or self.turns
            cost = as_number(d.get("total_cost_usd"), 0.0, 1e6)
            if cost is not None:
                self.cost_usd = cost
            self.session_id = as_text(d.get("session_id")) or self.session_id
        elif event.type == "rate_limit":
            if d.get("status") in RATE_LIMIT_BLOCKED and not d.get("using_overage"):
                # The event's resetsAt is exact; a time parsed from text (source "result") is
                # only to the minute, so it never replaces one we already have.
                if d.get("source") != "result" or self.rate_limited_until is None:
                    self.rate_limited_until = (
                        as_epoch(d.get("resets_at")) or self.rate_limited_until
                    )
            elif d.get("status") is not None and d.get("source") != "result":
                self.rate_limited_until = None
        if event.type in ("text", "raw"):
            # What the agent says; its actions are listed elsewhere (tools, printed lines).
            self.last_lines = [*self.last_lines, event.summary][-3:]


# -- usage-limit messages ------------------------------------------------------------------

_EPOCH_RE = re.compile(r"usage limit reached\|(\d{9,})", re.I)
_RESETS_RE = re.compile(
    r"(?:limit|limits).*?resets\s+(?:(?P<dow>mon|tue|wed|thu|fri|sat|sun)\w*\s+)?"
    r"(?:(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\w*\s+(?P<day>\d{1,2})"
    r"(?:,\s*(?P<year>\d{4}))?(?:\s+at\s+|,\s*))?"
    r"(?P<hour>\d{1,2})(?::(?P<min>\d{2}))?\s*(?P<ampm>am|pm)"
    r"(?:\s*\((?P<tz>[A-Za-z_]+(?:/[A-Za-z_+-]+)*)\))?",
    re.I,
)
_DOWS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def parse_limit_message(text: str, now: float | None = None) -> float | None:
    """Reset time (epoch seconds) from a Claude usage-limit message, or None if it is not one.

    Understands ``Claude AI usage limit reached|<epoch>`` and the ``... resets 3am``,
    ``resets 3:45pm``, ``resets Mon 12:00am``, ``resets Apr 23 at 4pm (Area/City)`` forms.
    Times without a date mean the next such time after ``now``.
    """
    m = _EPOCH_RE.search(text)
    if m:
        return as_epoch(float(m.group(1)))
    m = _RESETS_RE.search(text)
    if not m:
        return None
    tz = None
    if m.group("tz"):
        try:
            tz = ZoneInfo(m.group("tz"))
        except (ZoneInfoNotFoundError, ValueError):
            tz = None
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=tz).astimezone(tz)
    hour = int(m.group("hour")) % 12 + (12 if m.group("ampm").lower() == "pm" else 0)
    minute = int(m.group("min") or 0)
    if m.group("mon"):
        month = _MONTHS.index(m.group("mon").lower()[:3]) + 1
        candidate = now_dt.replace(
            month=month, day=int(m.group("day")), hour=hour, minute=minute, second=0, microsecond=0
        )
        if m.group("year"):
            candidate = candidate.replace(year=int(m.group("year")))
        elif candidate < now_dt - timedelta(days=1):
            candidate = candidate.replace(year=candidate.year + 1)
        return candidate.timestamp()
    candidate = now_dt.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if m.group("dow"):
        delta = (_DOWS.index(m.group("dow").lower()[:3]) - candidate.weekday()) % 7
        candidate += timedelta(days=delta)
        if candidate <= now_dt:
            candidate += timedelta(days=7)
    elif candidate <= now_dt:
        candidate += timedelta(days=1)
    return candidate.timestamp()
