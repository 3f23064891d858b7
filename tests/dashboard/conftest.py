"""Fixtures for the dashboard tests: a real repository and a real state.db."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/dashboard has no __init__.py: put tests/ on sys.path for the shared `sbr_testlib`
# (pytest puts this directory there itself, for `dashlib`).
_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from sbr_testlib import git, isolated_env  # noqa: E402, F401

from sandboxrun.store import SessionStore  # noqa: E402


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A git repository on ``main`` with one commit and an identity of its own."""
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Human User")
    git(root, "config", "user.email", "human@example.com")
    (root / "app.txt").write_text("line 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture
def store(isolated_env: Path):  # noqa: F811 - the fixture, by name
    s = SessionStore(isolated_env / "state.db")
    yield s
    s.close()


@pytest.fixture
def server(proj: Path, store):
    """The HTTP control plane (with the dashboard page) as a real process in ``proj``."""
    from dashlib import Server

    s = Server(proj)
    yield s
    s.stop()
