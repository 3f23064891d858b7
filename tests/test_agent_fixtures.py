"""Our stream-json parser against event lines captured from the real Claude Code CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandboxrun.agent import AgentProgress, parse_line
from sandboxrun.sandbox.collect import describe_failure

FIXTURES = Path(__file__).parent / "fixtures" / "stream_json"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def replay(name: str) -> tuple[AgentProgress, list]:
    progress, events = AgentProgress(), []
    for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines():
        for event in parse_line(line):
            events.append(event)
            progress.feed(event)
    return progress, events


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.jsonl")))
def test_every_captured_line_parses(name):
    """No line is lost as `raw`: every line of the real CLI is JSON we understand or tolerate."""
    progress, events = replay(name)
    assert events
    assert not [e for e in events if e.type == "raw"]
    for event in events:
        assert isinstance(event.summary, str)


def test_success_run():
    progress, events = replay("success_write_bash")
    init = next(e for e in events if e.type == "init")
    assert init.data["claude_code_version"] == MANIFEST["_captured_with"]["claude_code"]
    assert init.data["session_id"] and init.data["cwd"]
    assert progress.tools.get("Write") and progress.tools.get("Bash")
    assert progress.result["subtype"] == "success" and not progress.result["is_error"]
    assert progress.result["num_turns"] >= 3
    assert progress.cost_usd is not None
    assert progress.session_id == init.data["session_id"]


def test_max_turns_run_is_an_error_with_a_clear_reason():
    progress, _ = replay("error_max_turns")
    assert progress.result["subtype"] == "error_max_turns"
    reason = describe_failure(progress.result, 1, "", 1)
    assert "turn limit (--max-turns 1)" in reason


@pytest.mark.parametrize("name", ["api_error_500", "api_error_529_retried"])
def test_api_errors_say_what_the_api_returned(name):
    progress, _ = replay(name)
    assert progress.result["is_error"]
    reason = describe_failure(progress.result, 1, "", None)
    assert "api_error" in reason and "API Error: 5" in reason


def test_rejected_rate_limit_keeps_the_exact_reset_time():
    progress, events = replay("rate_limit_rejected")
    assert any(e.type == "rate_limit" and e.data["status"] == "rejected" for e in events)
    assert progress.rate_limited_until == 1893456000


def test_usage_limit_text_without_an_event():
    progress, _ = replay("usage_limit_text_429")
    assert progress.rate_limited_until == 1893456000


def test_allowed_warning_is_not_blocking():
    progress, _ = replay("rate_limit_allowed_warning")
    assert progress.rate_limited_until is None
    assert progress.result and not progress.result["is_error"]
