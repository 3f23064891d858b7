"""Fixtures for local-mode tests: a real git repository with an identity of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sbr_testlib import git

__all__ = ["git", "plain_git", "commit_file", "run_hook", "db_rows", "hook_log", "run_on_pty"]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A git repository on ``main`` with one commit and the user's own identity in it."""
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Human User")
    git(root, "config", "user.email", "human@example.com")
    (root / "app.txt").write_text("line 1\nline 2\nline 3\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def commit_file(path: Path, name: str, text: str, message: str = "change") -> str:
    """Write ``name`` in the checkout ``path``, commit it with that checkout's identity."""
    import subprocess

    (path / name).write_text(text)
    subprocess.run(["git", "-C", str(path), "add", name], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", message], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def plain_git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with whatever identity the repository/worktree itself has."""
    import subprocess

    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout


ROOT = Path(__file__).resolve().parents[2]


def hook_argv() -> list[str]:
    """The installed ``sandboxrun-hook`` console script (what Claude Code runs)."""
    import sys

    script = Path(sys.executable).parent / "sandboxrun-hook"
    assert script.exists(), "pip install -e . creates the sandboxrun-hook console script"
    return [str(script)]


def run_hook(event: str, payload, env: dict[str, str] | None = None, *, raw: bytes | None = None):
    """Run ``sandboxrun-hook EVENT`` as a process with ``payload`` (JSON) on stdin."""
    import json
    import os
    import subprocess

    data = raw if raw is not None else json.dumps(payload).encode()
    return subprocess.run(
        [*hook_argv(), event],
        input=data,
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=60,
    )


def db_rows(sql: str, args: tuple = ()) -> list[dict]:
    """Rows from the test's ``$SANDBOXRUN_HOME/state.db``."""
    import os
    import sqlite3

    conn = sqlite3.connect(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def hook_log() -> str:
    import os

    log = Path(os.environ["SANDBOXRUN_HOME"]) / "logs" / "hook.log"
    return log.read_text() if log.exists() else ""


def run_on_pty(args: list[str], cwd: Path, env: dict[str, str], prompt: bytes, answer: bytes):
    """Run ``python -m sandboxrun ARGS`` on a real pty; answer ``prompt`` with ``answer``.

    Returns (exit code, everything written to the terminal).
    """
    import os
    import pty
    import sys

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with the pty as its terminal
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "sandboxrun", *args], env)
    output = b""
    try:
        while prompt not in output:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            output += chunk
        os.write(fd, answer + b"\r")
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output
