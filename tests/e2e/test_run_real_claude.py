"""``sandboxrun run --backend local`` with the real Claude Code CLI against the fake API.

The whole path a user takes: worktree and branch, packing, the agent's real tool calls, the
follower parsing genuine stream-json, collection as commits, and ``status --json``.
"""

from __future__ import annotations

import time

import pytest
from sbr_testlib import git

from tests.fake_anthropic import error, gateway_token, rate_limited, text, tool, unified_headers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def in_cwd(name: str, **tool_input: str):
    """A tool call whose ``{cwd}`` placeholders become the agent's working directory.

    The sandbox directory is only known once the CLI sends its first request (the
    ``Primary working directory`` line), and Read/Edit want absolute paths.
    """

    def make(req):
        cwd = req.working_directory
        return tool(name, **{k: v.replace("{cwd}", cwd) for k, v in tool_input.items()})

    return make


def result_event(events: list[dict]) -> dict:
    """The CLI's own final result event."""
    (result,) = [e for e in events if e.get("type") == "result"]
    return result


def test_agent_work_is_committed_on_its_branch(sandboxrun, fake_api, project):
    """Write a file, edit another, run a command: all of it lands on sandboxrun/NAME."""
    fake_api.script(
        tool("Write", file_path="notes.txt", content="written by the agent\n"),
        in_cwd("Read", file_path="{cwd}/src/app.py"),
        in_cwd(
            "Edit",
            file_path="{cwd}/src/app.py",
            old_string="print('hello')",
            new_string="print('hello, world')",
        ),
        tool("Bash", command="echo built > out.txt && ls"),
        text("All done."),
    )

    proc = sandboxrun("run", "--backend", "local", "--name", "work", "--prompt", "Do the work")

    assert proc.returncode == 0, proc.stderr + proc.stdout
    status = sandboxrun.status("work")
    assert status["status"] == "completed"
    assert status["branch"] == "sandboxrun/work"
    assert git(project, "show", "sandboxrun/work:notes.txt") == "written by the agent\n"
    assert git(project, "show", "sandboxrun/work:src/app.py") == "print('hello, world')\n"
    assert git(project, "show", "sandboxrun/work:out.txt") == "built\n"
    changed = git(project, "diff", "--name-only", f"{status['base_commit']}..sandboxrun/work")
    assert sorted(changed.split()) == ["notes.txt", "out.txt", "src/app.py"]
    # main is untouched.
    assert git(project, "show", "main:src/app.py") == "print('hello')\n"
    result = result_event(sandboxrun.cli_events("work"))
    assert result["num_turns"] == 5
    assert status["num_turns"] == result["num_turns"]
    assert status["cost_usd"] == pytest.approx(result["total_cost_usd"])
    assert status["cost_usd"] > 0
    assert status["result_subtype"] == "success"


def test_max_turns_fails_clearly_and_keeps_work(sandboxrun, fake_api, project):
    """--max-turns 1 on a longer script: failed with error_max_turns, first step collected."""
    fake_api.script(
        tool("Write", file_path="step1.txt", content="one\n"),
        tool("Write", file_path="step2.txt", content="two\n"),
        text("done"),
    )

    proc = sandboxrun(
        "run", "--backend", "local", "--name", "turns", "--max-turns", "1", "--prompt", "Steps"
    )

    assert proc.returncode == 1
    status = sandboxrun.status("turns")
    assert status["status"] == "failed"
    assert status["result_subtype"] == "error_max_turns"
    assert "error_max_turns" in status["error"]
    assert "turn limit" in status["error"]
    assert git(project, "show", "sandboxrun/turns:step1.txt") == "one\n"
    assert "step2.txt" not in git(project, "ls-tree", "--name-only", "sandboxrun/turns")


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (error(500, times=None), "API Error: 500 Internal server error"),
        (error(529, times=None), "API Error: 529 Overloaded"),
    ],
    ids=["500", "529"],
)
def test_api_error_fails_session_with_api_message(sandboxrun, fake_api, answer, said):
    """A persistent API error fails the session with what the API returned."""
    fake_api.script(answer)

    proc = sandboxrun("run", "--backend", "local", "--name", "apierr", "--prompt", "Try")

    assert proc.returncode == 1
    status = sandboxrun.status("apierr")
    assert status["status"] == "failed"
    assert said in status["error"]
    assert status["exit_code"] == 1


def test_session_id_and_prompt_reach_the_api(sandboxrun, fake_api, project):
    """The CLI's session id is recorded, and the API got exactly the plan we sent."""
    plan = "# Plan\n\n1. Read the code.\n2. Say what it does, in one line.\n"
    (project / "PLAN.md").write_text(plan)
    fake_api.script(text("It prints hello."))

    proc = sandboxrun("run", "--backend", "local", "--name", "plan", "--prompt-file", "PLAN.md")

    assert proc.returncode == 0, proc.stderr
    status = sandboxrun.status("plan")
    init = next(e for e in sandboxrun.cli_events("plan") if e.get("subtype") == "init")
    (request,) = fake_api.main_requests
    assert status["agent_session_id"] == init["session_id"]
    assert request.headers["x-claude-code-session-id"] == init["session_id"]
    # Byte for byte, trailing newline included, as its own text block.
    assert plan in request.user_texts()
    assert request.working_directory == init["cwd"]
    assert status["status"] == "completed_no_changes"


def run_into_usage_limit(sandboxrun, fake_api, name: str) -> tuple[dict, int, object]:
    """One step of work, then a rejected usage limit; returns (status, resets_at, process)."""
    resets_at = int(time.time()) + 3 * 3600 + 17  # not on a whole minute, on purpose
    sandboxrun.env.pop("ANTHROPIC_API_KEY", None)
    sandboxrun.env["ANTHROPIC_AUTH_TOKEN"] = gateway_token()
    fake_api.script(
        tool("Write", file_path="partial.txt", content="before the limit\n"),
        rate_limited(resets_at),
    )
    # The reset is hours away: a run that waited for it would hit this timeout and fail.
    proc = sandboxrun("run", "--backend", "local", "--name", name, "--prompt", "Work", timeout=120)
    return sandboxrun.status(name), resets_at, proc


def test_usage_limit_records_waiting_quota(sandboxrun, fake_api, project):
    """A rejected usage limit mid-run: waiting_quota with the reset time, work collected."""
    status, resets_at, proc = run_into_usage_limit(sandboxrun, fake_api, "quota")

    assert status["status"] == "waiting_quota", status
    assert abs(status["quota_resets_at"] - resets_at) < 60
    assert "usage limit" in status["error"]
    assert proc.returncode != 0
    assert git(project, "show", "sandboxrun/quota:partial.txt") == "before the limit\n"


def test_usage_limit_reset_time_is_exact(sandboxrun, fake_api):
    """The reset time recorded is the rate_limit_event's resetsAt, to the second."""
    status, resets_at, _ = run_into_usage_limit(sandboxrun, fake_api, "exact")

    assert status["quota_resets_at"] == resets_at


def test_agent_waiting_on_usage_limit_is_stopped(sandboxrun, fake_api, project):
    """A CLI that sits waiting for the reset is stopped after the quota stall, not hung."""
    resets_at = int(time.time()) + 3600
    sandboxrun.env.pop("ANTHROPIC_API_KEY", None)
    sandboxrun.env["ANTHROPIC_AUTH_TOKEN"] = gateway_token()
    # The retry watchdog makes the CLI wait until the reset instead of failing.
    sandboxrun.env["CLAUDE_CODE_RETRY_WATCHDOG"] = "1"
    sandboxrun.env["SANDBOXRUN_QUOTA_STALL"] = "2s"
    fake_api.script(
        error(429, "Rate limited", headers=unified_headers("rejected", resets_at), times=None)
    )

    # The CLI would sit until the reset (an hour): only the quota stall ends this run in time.
    proc = sandboxrun(
        "run", "--backend", "local", "--name", "stall", "--prompt", "Work", timeout=120
    )

    assert proc.returncode == 1, proc.stderr
    status = sandboxrun.status("stall")
    assert status["status"] == "waiting_quota", status
    assert status["quota_resets_at"] == resets_at
