"""`spawn` of a child that never takes its first prompt: the error tells the truth about what
is left (its tmux session is ended, so no hint may send anyone to attach to it). A real tmux
server on a private socket, a real git repo and SQLite; the "claude" is a real program that
starts and shows nothing, as a hung or wrong binary would."""

from __future__ import annotations

import shutil

import pytest
from sbr_testlib import git, private_tmux

from sandboxrun.config import load_settings
from sandboxrun.local.spawn import SpawnError, SpawnRequest, spawn
from sandboxrun.store import SessionStore

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


@pytest.fixture
def tmux(monkeypatch):
    with private_tmux(monkeypatch) as server:
        yield server


def test_a_child_that_never_takes_its_prompt_fails_with_a_true_hint(repo, tmux, tmp_path):
    silent = tmp_path / "silent-claude"
    silent.write_text("#!/bin/sh\nexec sleep 600\n")
    silent.chmod(0o755)
    settings = load_settings(repo).with_overrides(claude_bin=str(silent))
    store = SessionStore(settings.db_path)
    with pytest.raises(SpawnError) as info:
        spawn(repo, SpawnRequest(name="api", task="hello"), settings, store, tmux, ready_timeout=1)
    err = info.value
    assert "its screen was blank" in err.message
    assert err.hint and "attach" not in err.hint and "tmux session was ended" in err.hint
    assert tmux.sessions() == []  # ended, as the hint says
    row = store.resolve("api")
    assert row.status == "failed"
    # the worktree and branch stay, as the hint says
    assert (repo / ".worktrees" / "api").is_dir()
    assert "agent/api/active" in git(repo, "branch", "--list")
