"""Fixtures for tmux children: a private tmux server per test and the real Claude Code CLI.

- ``tmux_server``: a tmux server on its own socket (``TMUX``/``TMUX_PANE`` unset first, so
  nothing joins the developer's own server), named to sandboxrun by ``SANDBOXRUN_TMUX_SOCKET``
  and killed in a finalizer (with every process in it).
- ``children``: the real ``claude`` (interactive) against a fake Anthropic API, set up like a
  logged-in user's machine (onboarding done, the API key approved), ``sandboxrun`` run as a
  process in a real git repository with ``SANDBOXRUN_CLAUDE_BIN`` = the real CLI.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from sbr_testlib import CLI, db_rows, git_project, private_tmux

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandboxrun.local.states import unwrap_pastes  # noqa: E402
from sandboxrun.tmux import SOCKET_ENV, Tmux  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402
from tests.fake_anthropic.cli import installed_claude, logged_in_home  # noqa: E402


@pytest.fixture
def tmux_server(monkeypatch):
    """A private tmux server for this test (socket in a short /tmp dir: sun_path is 108 bytes)."""
    with private_tmux(monkeypatch) as server:
        yield server


class Children:
    """``sandboxrun`` (as a process) on a real repo, children running the real claude."""

    def __init__(self, proj: Path, env: dict[str, str], api: FakeAnthropic, tmux: Tmux):
        self.proj = proj
        self.env = env
        self.api = api
        self.tmux = tmux
        self.cli = CLI(proj)

    def use_gateway(self, home: Path) -> None:
        """Authenticate children with a gateway token (the CLI then acts on usage-limit
        headers, see docs/testing.md) instead of the API key."""
        keep = {k: self.env[k] for k in ("SANDBOXRUN_CLAUDE_BIN", "SANDBOXRUN_HOME", SOCKET_ENV)}
        self.env.pop("ANTHROPIC_API_KEY")
        self.env.update(logged_in_home(self.api.url, home, gateway=True))
        self.env.update(keep)

    def __call__(self, *args: str, timeout: float = 120, **kw):
        return self.cli(*args, env=self.env, timeout=timeout, **kw)

    def row(self, name: str) -> dict:
        return db_rows("SELECT * FROM sessions WHERE name = ?", (name,))[0]

    def events(self, name: str, kind: str) -> list[dict]:
        rows = db_rows(
            "SELECT e.payload FROM events e JOIN sessions s ON s.id = e.session_id "
            "WHERE s.name = ? AND e.kind = ? ORDER BY e.id",
            (name, kind),
        )
        return [json.loads(r["payload"]) for r in rows]

    def prompts(self) -> list[str]:
        """Every user text the fake API received in main requests (the prompts, intact)."""
        out: list[str] = []
        for req in self.api.main_requests:
            for t in req.user_texts():
                t = unwrap_pastes(t).strip()
                if t not in out:
                    out.append(t)
        return out


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return git_project(tmp_path / "proj", {"app.txt": "hello\n"})


@pytest.fixture
def fake_api():
    with FakeAnthropic() as api:
        yield api


@pytest.fixture
def children(proj, tmp_path, tmux_server, fake_api, monkeypatch):
    """Spawn/send/... on ``proj`` with the real claude, against ``fake_api``."""
    claude = installed_claude()
    env = logged_in_home(fake_api.url, tmp_path / "agent-home")
    env["SANDBOXRUN_CLAUDE_BIN"] = str(claude)
    env["SANDBOXRUN_HOME"] = os.environ["SANDBOXRUN_HOME"]
    env[SOCKET_ENV] = os.environ[SOCKET_ENV]
    env["PROJECT_PREFIX"] = "t"
    return Children(proj, env, fake_api, tmux_server)
