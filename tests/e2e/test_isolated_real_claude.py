"""The real Claude Code CLI under bubblewrap: as root, with --dangerously-skip-permissions and
no ``IS_SANDBOX``, it runs (uid 1000 inside), its Bash tool cannot reach the user's files, and
its legitimate work comes back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sbr_testlib import git

from sandboxrun.sandbox.backends.bwrap import find_bwrap
from tests.fake_anthropic import text, tool

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed"),
]


def test_real_claude_runs_confined_without_is_sandbox(sandboxrun, fake_api, project, tmp_path):
    """The CLI accepts --dangerously-skip-permissions as uid 1000; the escapes it tries fail."""
    sandboxrun.env.pop("IS_SANDBOX", None)
    user_home = Path(sandboxrun.env["HOME"])
    (user_home / ".ssh").mkdir(parents=True, exist_ok=True)
    (user_home / ".ssh" / "id_rsa").write_text("ssh-secret-of-the-user\n")
    state = Path(sandboxrun.env["SANDBOXRUN_HOME"])
    fake_api.script(
        tool(
            "Bash",
            command=(
                "id -u > uid.txt; "
                f"cat {user_home}/.ssh/id_rsa > stolen.txt 2>&1; "
                f"echo pwned > {project}/pwned.txt; "
                f"echo pwned > {state}/pwned.txt; "
                f"git -C {project} branch -f main HEAD 2>> stolen.txt; "
                "echo done"
            ),
        ),
        tool("Write", file_path="notes.txt", content="legitimate work\n"),
        text("All done."),
    )

    proc = sandboxrun("run", "--backend", "local", "--name", "confined", "--prompt", "Work")

    assert proc.returncode == 0, proc.stderr + proc.stdout
    status = sandboxrun.status("confined")
    assert status["status"] == "completed", status
    assert status["isolated"] is True
    assert git(project, "show", "sandboxrun/confined:notes.txt") == "legitimate work\n"
    assert git(project, "show", "sandboxrun/confined:uid.txt").strip() == "1000"
    stolen = git(project, "show", "sandboxrun/confined:stolen.txt")
    assert "ssh-secret-of-the-user" not in stolen
    assert not (project / "pwned.txt").exists() and not (state / "pwned.txt").exists()
    if os.geteuid() == 0:
        # As root, the CLI refuses this flag outside a sandbox; it ran, so it saw uid 1000.
        assert "--dangerously-skip-permissions cannot be used with root" not in proc.stderr
