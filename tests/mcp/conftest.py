"""Fixtures for the MCP tests: a real repository with two agent worktrees."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sbr_testlib import git

from sandboxrun.tmux import SOCKET_ENV


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A git repository on ``main`` with one commit and its own identity."""
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Human User")
    git(root, "config", "user.email", "human@example.com")
    (root / "src" / "api.py").write_text("API = 1\n")
    (root / "src" / "web.py").write_text("WEB = 1\n")
    (root / "README.md").write_text("# proj\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


# The private tmux server and the fake Anthropic API of the tmux tests (one definition).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tmux.conftest import fake_api, logged_in_home, tmux_server  # noqa: E402, F401


@pytest.fixture
def worker_env(proj: Path, tmp_path: Path, tmux_server, fake_api) -> dict[str, str]:  # noqa: F811
    """The environment of an MCP server whose workers run the real claude against
    ``fake_api`` on the test's own tmux server (prefix ``t``)."""
    from tests.fake_anthropic.cli import installed_claude

    env = logged_in_home(fake_api.url, tmp_path / "agent-home")
    env["SANDBOXRUN_CLAUDE_BIN"] = str(installed_claude())
    env["SANDBOXRUN_HOME"] = os.environ["SANDBOXRUN_HOME"]
    env[SOCKET_ENV] = tmux_server.socket_path
    env["PROJECT_PREFIX"] = "t"
    return env
