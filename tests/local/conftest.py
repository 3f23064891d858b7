"""Fixtures for local-mode tests: a real git repository with an identity of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sbr_testlib import git

__all__ = ["git", "plain_git", "commit_file"]


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
