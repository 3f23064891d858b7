"""What a new user meets with the real Claude Code CLI: turns counted as the CLI counts them,
and a `claude` that cannot run (not logged in, root) refused before anything is created."""

from __future__ import annotations

import json
import os

import pytest
from sbr_testlib import git

from sandboxrun.agent import AgentEvent, AgentProgress
from tests.fake_anthropic import reply, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_live_turns_match_the_result(sandboxrun, fake_api):
    """A response with text and a tool call is one turn while running, as in num_turns."""
    fake_api.script(
        reply(text("I will write it."), tool("Write", file_path="a.txt", content="a\n")),
        reply(text("And a second file."), tool("Write", file_path="b.txt", content="b\n")),
        text("Done."),
    )
    proc = sandboxrun("run", "--backend", "local", "--name", "turns", "--prompt", "go", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    progress = AgentProgress()
    for line in lines:
        if line.get("kind") == "agent" and line["type"] != "result":
            data = {k: v for k, v in line.items() if k not in ("session", "kind", "type")}
            progress.feed(AgentEvent(line["type"], data))
    end = lines[-1]
    assert end["kind"] == "end" and end["num_turns"] == 3
    assert progress.turns == end["num_turns"]  # counted live, before the result said so


def test_claude_not_logged_in_is_refused_before_anything_exists(sandboxrun):
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        sandboxrun.env.pop(var, None)
    proc = sandboxrun("run", "--backend", "local", "--prompt", "hello")
    assert proc.returncode == 1, proc.stderr
    assert "is not logged in" in proc.stderr
    assert "claude auth login" in proc.stderr
    assert json.loads(sandboxrun("status", "--all", "--json").stdout) == []
    assert not (sandboxrun.project / ".worktrees").exists()
    assert git(sandboxrun.project, "branch", "--list", "sandboxrun/*") == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="Claude Code refuses only root")
def test_root_refusal_is_real_and_caught_first(sandboxrun, run_claude, agent_env, fake_api):
    """The real CLI refuses as root without IS_SANDBOX; unconfined (--no-isolation), sandboxrun
    says so before starting (confined, bubblewrap runs it as uid 1000: see the isolation tests)."""
    fake_api.script(text("hi"))
    agent_env.pop("IS_SANDBOX", None)
    refused = run_claude("hello")
    assert refused.returncode != 0
    assert "root" in (refused.stderr + refused.stdout)

    sandboxrun.env.pop("IS_SANDBOX", None)
    proc = sandboxrun("run", "--backend", "local", "--no-isolation", "--prompt", "hello")
    assert proc.returncode == 1, proc.stderr
    assert "as root" in proc.stderr and "IS_SANDBOX=1" in proc.stderr
    assert json.loads(sandboxrun("status", "--all", "--json").stdout) == []
    assert not (sandboxrun.project / ".worktrees").exists()
