"""The real Claude Code CLI in an emulated E2B sandbox, against the fake Anthropic API.

`sandboxrun run --backend e2b` with nothing faked on the agent's side: the pinned CLI runs
inside the sandbox (as `claude` on its PATH, as the template installs it), talks to the fake
Messages API over loopback, and its genuine stream-json and file changes come back as commits.
Skipped when the CLI is not installed (scripts/install_claude.sh).
"""

from __future__ import annotations

import pytest
from sbr_testlib import git

from tests.e2e.conftest import locate_claude
from tests.fake_anthropic import FakeAnthropic, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_real_claude_runs_in_the_sandbox(cli, repo, emulator, monkeypatch):
    """Write + Bash by the real CLI in /home/user/repo land on the session's branch."""
    claude, reason = locate_claude()
    if claude is None:
        pytest.skip(reason)
    emulator.set_claude(claude)
    with FakeAnthropic() as api:
        api.script(
            tool("Write", file_path="notes.txt", content="written in the sandbox\n"),
            tool("Bash", command="echo built > out.txt && pwd"),
            text("All done."),
        )
        env = {
            "SANDBOXRUN_CLAUDE_BIN": "claude",
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-fake-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        proc = cli("run", "--backend", "e2b", "--name", "real", "--prompt", "Do it", timeout=180)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        # The agent really worked inside the sandbox's own /home/user.
        assert api.main_requests[0].working_directory == "/home/user/repo"
    st = cli.status("real")
    assert st["status"] == "completed" and st["result_subtype"] == "success"
    assert st["backend"] == "e2b" and st["cost_usd"] > 0
    assert git(repo, "show", "sandboxrun/real:notes.txt") == "written in the sandbox\n"
    assert git(repo, "show", "sandboxrun/real:out.txt") == "built\n"
    assert emulator.sandbox_ids() == []
