"""The claude argv builder, the stream-json parser and usage-limit message parsing (offline)."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from sandboxrun.agent import (
    AgentEvent,
    AgentProgress,
    build_claude_argv,
    parse_limit_message,
    parse_line,
)


def test_argv_has_no_prompt_and_the_required_flags():
    argv = build_claude_argv("claude", model="opus", max_turns=3)
    assert argv[:6] == [
        "claude",
        "-p",
        "--dangerously-skip-permissions",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    assert argv[6:] == ["--model", "opus", "--max-turns", "3"]


def test_argv_without_options():
    assert build_claude_argv("/x/claude")[-1] == "--verbose"


def test_parse_init_tool_use_and_result():
    init = {
        "type": "system",
        "subtype": "init",
        "session_id": "abc",
        "model": "m",
        "cwd": "/r",
        "tools": ["Bash"],
        "claude_code_version": "2.1.330",
        "new": 1,
    }
    (ev,) = parse_line(json.dumps(init))
    assert ev.type == "init" and ev.data["session_id"] == "abc"
    tool = {
        "type": "assistant",
        "message": {
            "content": [
                {"type": "text", "text": "Let me write"},
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "Write",
                    "input": {"file_path": "/r/a.py", "content": "x"},
                },
            ]
        },
    }
    text, use = parse_line(json.dumps(tool))
    assert text.type == "text" and use.summary == "Write: /r/a.py"
    res = {
        "type": "user",
        "message": {
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "oops", "is_error": True}
            ]
        },
    }
    (err,) = parse_line(json.dumps(res))
    assert err.type == "tool_error" and "oops" in err.summary
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 2,
        "total_cost_usd": 0.0123,
        "duration_ms": 500,
        "session_id": "abc",
    }
    (r,) = parse_line(json.dumps(result))
    assert r.type == "result" and r.data["num_turns"] == 2
    assert "$0.0123" in r.summary


def test_unknown_events_and_garbage_are_tolerated():
    (ev,) = parse_line('{"type": "something_new", "x": 1}')
    assert ev.type == "unknown" and ev.data["event_type"] == "something_new"
    (raw,) = parse_line("not json at all")
    assert raw.type == "raw"
    assert parse_line("   ") == []
    (weird,) = parse_line("[1, 2]")
    assert weird.type == "raw"


def test_progress_totals():
    p = AgentProgress()
    p.feed(AgentEvent("init", {"session_id": "s", "model": "m"}))
    p.feed(AgentEvent("tool_use", {"name": "Bash", "summary": "ls"}))
    p.feed(AgentEvent("tool_use", {"name": "Bash", "summary": "pwd"}))
    p.feed(AgentEvent("result", {"num_turns": 3, "total_cost_usd": 0.5, "session_id": "s"}))
    assert p.tools == {"Bash": 2} and p.turns == 3 and p.cost_usd == 0.5
    p.feed(AgentEvent("rate_limit", {"status": "rejected", "resets_at": 100}))
    assert p.rate_limited_until == 100
    p.feed(AgentEvent("rate_limit", {"status": "allowed", "resets_at": 100}))
    assert p.rate_limited_until is None


def test_rate_limit_event():
    line = json.dumps(
        {
            "type": "rate_limit_event",
            "rate_limit_info": {
                "status": "rejected",
                "resetsAt": 1767000000,
                "rateLimitType": "five_hour",
            },
        }
    )
    (ev,) = parse_line(line)
    assert ev.type == "rate_limit" and ev.data["resets_at"] == 1767000000


def test_limit_messages():
    now = datetime(2026, 11, 21, 10, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert parse_limit_message("Claude AI usage limit reached|1767000000") == 1767000000
    assert parse_limit_message("all good") is None
    utc = ZoneInfo("UTC")
    at = parse_limit_message("5-hour limit reached ∙ resets 3am (UTC)", now)
    assert datetime.fromtimestamp(at, utc) == datetime(2026, 11, 22, 3, 0, tzinfo=utc)
    at = parse_limit_message("You've hit your session limit · resets 3:45pm (UTC)", now)
    assert datetime.fromtimestamp(at, utc) == datetime(2026, 11, 21, 15, 45, tzinfo=utc)
    at = parse_limit_message("weekly limit reached · resets Mon 12:00am (UTC)", now)
    assert datetime.fromtimestamp(at, utc) == datetime(2026, 11, 23, 0, 0, tzinfo=utc)
    recife = ZoneInfo("America/Recife")
    at = parse_limit_message("limit reached ∙ resets Apr 23 at 4pm (America/Recife)", now)
    assert datetime.fromtimestamp(at, recife) == datetime(2027, 4, 23, 16, 0, tzinfo=recife)


def test_error_result_with_limit_text_becomes_rate_limit():
    line = json.dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "result": "Claude AI usage limit reached|1767000000",
        }
    )
    events = parse_line(line)
    assert [e.type for e in events] == ["result", "rate_limit"]
    assert events[1].data["resets_at"] == 1767000000


def test_limit_messages_with_dates_and_years():
    utc = ZoneInfo("UTC")
    now = datetime(2026, 11, 21, 10, 0, tzinfo=utc).timestamp()
    at = parse_limit_message("You've hit your 5-hour limit · resets Jan 1, 2030, 12am (UTC)", now)
    assert datetime.fromtimestamp(at, utc) == datetime(2030, 1, 1, 0, 0, tzinfo=utc)
    at = parse_limit_message("You've hit your weekly limit · resets Nov 24, 11:29am (UTC)", now)
    assert datetime.fromtimestamp(at, utc) == datetime(2026, 11, 24, 11, 29, tzinfo=utc)


def test_overage_and_text_do_not_override_exact_reset():
    p = AgentProgress()
    p.feed(
        AgentEvent("rate_limit", {"status": "rejected", "resets_at": 1000, "using_overage": True})
    )
    assert p.rate_limited_until is None
    p.feed(AgentEvent("rate_limit", {"status": "rejected", "resets_at": 1893456000}))
    p.feed(
        AgentEvent(
            "rate_limit", {"status": "rejected", "resets_at": 1893455940, "source": "result"}
        )
    )
    assert p.rate_limited_until == 1893456000
