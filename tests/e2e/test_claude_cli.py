"""The real Claude Code CLI driven directly by the fake Anthropic API (no sandboxrun yet).

These pin down what the pinned CLI does with each kind of API answer: what sandboxrun's parser
and runner are built on.
"""

from __future__ import annotations

import time

import pytest

from tests.fake_anthropic import error, rate_limited, stream_error, text, tool
from tests.fake_anthropic.cli import claude_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_write_tool_creates_file_and_prompt_reaches_api(run_claude, fake_api, workdir):
    """A Write tool call creates the file; the API sees our prompt, the cwd and the result."""
    fake_api.script(tool("Write", file_path="hello.txt", content="hi\n"), text("Wrote it."))

    run = run_claude("Create hello.txt containing hi")

    assert run.returncode == 0, run.stderr
    assert (workdir / "hello.txt").read_text() == "hi\n"
    first, second = fake_api.main_requests
    assert "Create hello.txt containing hi" in first.user_texts()
    assert first.working_directory == str(workdir)
    assert first.query == {"beta": ["true"]}
    # The follow-up request answers our tool_use with a tool_result.
    tool_use_id = first.answer.blocks[0].id
    (result_block,) = second.tool_results()
    assert result_block["tool_use_id"] == tool_use_id
    assert not result_block.get("is_error")
    assert run.result["subtype"] == "success"
    assert run.result["result"] == "Wrote it."
    assert run.result["num_turns"] == 2
    assert run.result["total_cost_usd"] > 0


def test_bash_output_comes_back_as_tool_result(run_claude, fake_api):
    """The Bash tool really runs, and its output reaches the next request."""
    fake_api.script(tool("Bash", command="echo from-bash-$((6*7))"), text("ok"))

    run = run_claude("Run a command")

    assert run.returncode == 0, run.stderr
    (result_block,) = fake_api.main_requests[1].tool_results()
    assert "from-bash-42" in str(result_block["content"])


def test_session_id_matches_init_event_and_header(run_claude, fake_api):
    """The init event's session id is the one the CLI sends the API and ends with."""
    fake_api.script(text("hello"))

    run = run_claude("Say hello")

    session_id = run.init["session_id"]
    assert run.init["claude_code_version"]
    assert fake_api.main_requests[0].headers["x-claude-code-session-id"] == session_id
    assert run.result["session_id"] == session_id


def test_script_exhausted_falls_back_to_default_reply(run_claude, fake_api):
    """With no script left, the fake answers "done" so a stray request cannot hang a test."""
    run = run_claude("Anything")

    assert run.returncode == 0
    assert run.result["result"] == "done"


def test_max_turns_ends_with_error_max_turns(run_claude, fake_api, workdir):
    """--max-turns 1 stops after the first tool call: exit 1, error_max_turns, work kept."""
    fake_api.script(
        tool("Write", file_path="a.txt", content="a\n"),
        tool("Bash", command="echo b > b.txt"),
        text("done"),
    )

    run = run_claude("Two steps", "--max-turns", "1")

    assert run.returncode == 1
    assert run.result["subtype"] == "error_max_turns"
    assert run.result["is_error"] is True
    assert (workdir / "a.txt").exists()
    assert not (workdir / "b.txt").exists()


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (error(500, times=None), 500, "API Error: 500 Internal server error"),
        (error(529, times=None), 529, "API Error: 529 Overloaded"),
        (stream_error(times=None), 529, "API Error: 529 Overloaded"),
        (error(401, times=None), 401, "Invalid API key"),
    ],
    ids=["500", "529", "overloaded-in-stream", "401"],
)
def test_api_error_fails_fast_with_is_error(run_claude, fake_api, answer, status, message):
    """A persistent API error ends the run (exit 1) with is_error and the API's status.

    Note the subtype stays "success": is_error and terminal_reason say it failed.
    """
    fake_api.script(answer)

    run = run_claude("Do something")

    assert run.returncode == 1
    assert run.result["is_error"] is True
    assert run.result["subtype"] == "success"
    assert run.result["terminal_reason"] == "api_error"
    assert run.result["api_error_status"] == status
    assert run.result["result"].startswith(message)


def test_api_error_is_retried_once_then_succeeds(run_claude, fake_api):
    """One 500 is retried (a system/api_retry event) and the run then succeeds."""
    fake_api.script(error(500), text("recovered"))

    run = run_claude("Do something")

    assert run.returncode == 0
    (retry,) = run.of_type("system", "api_retry")
    assert retry["error_status"] == 500
    assert run.result["result"] == "recovered"


def test_usage_limit_rejection_emits_rate_limit_event(run_claude, fake_api, agent_env, tmp_path):
    """Through a gateway token, a rejected 429 gives rate_limit_event and exits (no hang)."""
    resets_at = int(time.time()) + 2 * 3600
    fake_api.script(rate_limited(resets_at))
    agent_env.update(claude_env(fake_api.url, tmp_path / "agent-home", gateway=True))

    run = run_claude("Do something", timeout=120)

    assert not run.timed_out
    assert run.returncode == 1
    (event,) = run.of_type("rate_limit_event")
    assert event["rate_limit_info"]["status"] == "rejected"
    assert event["rate_limit_info"]["resetsAt"] == resets_at
    assert event["rate_limit_info"]["rateLimitType"] == "five_hour"
    assert run.result["is_error"] is True
    assert run.result["api_error"] == "usage_limit_reached"
    assert run.result["result"].startswith("You've hit your 5-hour limit · resets ")


def test_usage_limit_headers_ignored_with_api_key(run_claude, fake_api):
    """With a plain API key the CLI ignores usage-limit headers: a generic 429 error."""
    fake_api.script(rate_limited(int(time.time()) + 3600))

    run = run_claude("Do something", timeout=120)

    assert run.returncode == 1
    assert not run.of_type("rate_limit_event")
    assert run.result["result"] == "API Error: Request rejected (429) · Rate limited"


def test_usage_limit_text_in_error_body_reaches_result(run_claude, fake_api):
    """The old "Claude AI usage limit reached|<epoch>" text passes through to the result."""
    resets_at = int(time.time()) + 3600
    fake_api.script(error(429, f"Claude AI usage limit reached|{resets_at}", times=None))

    run = run_claude("Do something", timeout=120)

    assert run.returncode == 1
    assert run.result["result"].endswith(f"Claude AI usage limit reached|{resets_at}")


def test_retry_watchdog_waits_on_usage_limit(run_claude, fake_api, agent_env, tmp_path):
    """With CLAUDE_CODE_RETRY_WATCHDOG=1 the CLI sits until the reset: event, no result."""
    resets_at = int(time.time()) + 3600
    fake_api.script(error(429, "Rate limited", headers=_rejected_headers(resets_at), times=None))
    agent_env.update(claude_env(fake_api.url, tmp_path / "agent-home", gateway=True))
    agent_env["CLAUDE_CODE_RETRY_WATCHDOG"] = "1"

    def waiting(events: list[dict]) -> bool:
        return any(e.get("subtype") == "api_retry" for e in events) and any(
            e.get("type") == "rate_limit_event" for e in events
        )

    # It would sit until the reset (an hour): stopped once it said so, or after 120 s
    run = run_claude("Do something", timeout=120, stop_when=waiting)

    assert run.timed_out
    assert run.result is None
    (event,) = run.of_type("rate_limit_event")
    assert event["rate_limit_info"]["status"] == "rejected"
    (retry,) = run.of_type("system", "api_retry")
    # It plans to sleep until (about) the reset time.
    assert retry["retry_delay_ms"] > 3000 * 1000


def _rejected_headers(resets_at: int) -> dict[str, str]:
    # No x-should-retry: false, so the CLI is allowed to wait and retry.
    from tests.fake_anthropic import unified_headers

    return unified_headers("rejected", resets_at)
