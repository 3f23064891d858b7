"""Fixtures for local-mode tests: a real git repository with an identity of its own.

The helpers these tests share with tests/tmux (hook processes, database rows, a pty) live in
``sbr_testlib`` (a unique module name: ``from conftest import`` is ambiguous across directories).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sbr_testlib import git_project


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A git repository on ``main`` with one commit and the user's own identity in it."""
    return git_project(tmp_path / "proj", {"app.txt": "line 1\nline 2\nline 3\n"})
