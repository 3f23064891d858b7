"""Fixtures for the MCP tests: a real repository with two agent worktrees."""

from __future__ import annotations

from pathlib import Path

import pytest
from sbr_testlib import git


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
