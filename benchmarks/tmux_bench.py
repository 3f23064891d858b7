"""What the local-children benchmarks (``bench_spawn.py``, ``bench_monitor.py``) share.

:func:`workspace` makes the temporary directory, ``SANDBOXRUN_HOME``, a private tmux server
(``TMUX``/``TMUX_PANE`` unset, so nothing reaches the tmux you may be in) and a git repository
with one commit; :func:`claude_child_env` the environment in which a real interactive Claude Code
child talks to the fake Anthropic API without asking anything first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandboxrun.tmux import SOCKET_ENV, Tmux  # noqa: E402


@dataclass(frozen=True)
class Workspace:
    """A benchmark's temporary directory, its repository and its private tmux server."""

    tmp: Path
    repo: Path
    tmux: Tmux


def workspace(prefix: str) -> Workspace:
    """A fresh temporary directory holding ``home/`` (this process's ``SANDBOXRUN_HOME``), the
    private tmux server's socket and ``repo/`` (a git repository with one empty commit)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.pop("TMUX", None)
    os.environ.pop("TMUX_PANE", None)
    os.environ["SANDBOXRUN_HOME"] = str(tmp / "home")
    os.environ[SOCKET_ENV] = str(tmp / "tmux.sock")
    repo = tmp / "repo"
    repo.mkdir()
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "i"],
    ):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    return Workspace(tmp, repo, Tmux(socket_path=tmp / "tmux.sock"))


def claude_child_env(api_url: str, ws: Workspace) -> dict[str, str]:
    """The environment for real Claude Code children against the fake API at ``api_url``:
    onboarding done, the key approved, this workspace's home and tmux socket."""
    from tests.fake_anthropic.cli import logged_in_home

    env = logged_in_home(api_url, ws.tmp / "agent-home")
    env["SANDBOXRUN_HOME"] = os.environ["SANDBOXRUN_HOME"]
    env[SOCKET_ENV] = os.environ[SOCKET_ENV]
    return env
