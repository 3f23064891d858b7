"""`close` of a child that shows one of Claude Code's own screens (here /help, which a `send
/help` opens): /exit would be typed into that screen and the child never exit; close leaves
the screen with Esc first. The real Claude Code CLI against the fake API, in a private tmux
server; `sandboxrun` run as a process."""

from __future__ import annotations

import json
import os

import pytest
import test_qa2_local as _local
from sbr_testlib import CLI

from sandboxrun.local.close import shows_dialog
from sandboxrun.tmux import SOCKET_ENV
from tests.fake_anthropic import FakeAnthropic, text
from tests.fake_anthropic.cli import installed_claude, logged_in_home

tmux = _local.tmux
proj = _local.proj

HELP_SCREEN = """
  Help  General   Commands   Custom commands
  For more help: https://code.claude.com/docs/en/overview

  ←/→ to switch · Esc to close
"""


@pytest.mark.parametrize(
    ("screen", "dialog"),
    [
        (HELP_SCREEN, True),
        ("❯ \n  ? for shortcuts\n", False),
        ("✽ Ideating… (12s · esc to interrupt)\n", False),
        ("Select model\n  Enter to confirm · Esc to exit\n", True),
    ],
)
def test_shows_dialog(screen, dialog):
    assert shows_dialog(screen) is dialog


@pytest.mark.slow
@pytest.mark.e2e
def test_close_leaves_a_help_screen_before_exit(proj, tmux, tmp_path):
    claude = installed_claude()
    with FakeAnthropic() as api:
        api.default = text("done", times=None)
        env = logged_in_home(api.url, tmp_path / "agent-home")
        env.update(
            SANDBOXRUN_CLAUDE_BIN=str(claude), SANDBOXRUN_HOME=os.environ["SANDBOXRUN_HOME"],
            PROJECT_PREFIX="t", IS_SANDBOX="1",
        )  # fmt: skip
        env[SOCKET_ENV] = tmux.socket_path
        cli = CLI(proj)
        proc = cli("spawn", "api", "--prompt", "say hi", "--skip-permissions", env=env)
        assert proc.returncode == 0, proc.stderr
        assert cli("wait", "api", "--timeout", "2m", env=env).returncode == 0
        sent = cli("send", "api", "/help", "--json", env=env)
        # /help opens its screen without a prompt hook: failed, with a hint naming Esc
        result = json.loads(sent.stdout)[0]
        assert result["outcome"] == "failed" and "Esc" in result["hint"]
        assert shows_dialog(tmux.capture("t_child_api"))
        closed = cli("close", "api", "--json", env=env, timeout=180)
        assert closed.returncode == 0, closed.stderr
        assert json.loads(closed.stdout)[0]["how"] == "exited on /exit"
        assert tmux.sessions() == []
