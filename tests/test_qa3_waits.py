"""Every wait on another process has a deadline, and says what to look at when it passes: the
master's wait for its Claude session id (bound by the SessionStart hook) ends with an error
naming the pane's last lines instead of spinning forever. A real tmux server on its own socket
and a real SQLite store."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from sbr_testlib import private_tmux

from sandboxrun.local.master import wait_session_id
from sandboxrun.local.spawn import SpawnError
from sandboxrun.store import SessionStore
from sandboxrun.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


@pytest.fixture
def tmux(monkeypatch):
    """A private tmux server (TMUX/TMUX_PANE unset), killed after."""
    with private_tmux(monkeypatch) as server:
        yield server


def _row(tmp_path: Path) -> tuple[SessionStore, str]:
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    row = store.create_session(mode="local", backend="tmux", name="m", repo=str(tmp_path))
    return store, row.id


def test_master_session_id_wait_ends_with_the_screen(tmp_path: Path, tmux: Tmux) -> None:
    store, sid = _row(tmp_path)
    script = "print('no hooks here, sorry'); import time; time.sleep(600)"
    tmux.new_session("m", [sys.executable, "-c", script], cwd=tmp_path)
    with pytest.raises(SpawnError) as err:  # no SessionStart hook will ever bind an id
        wait_session_id(store, tmux, sid, "m", timeout=0.5)
    assert "SessionStart" in err.value.message
    assert "no hooks here, sorry" in err.value.message  # the pane's screen, to see why
    assert "SANDBOXRUN_CLAUDE_BIN" in (err.value.hint or "")


def test_master_session_id_wait_returns_the_bound_id(tmp_path: Path, tmux: Tmux) -> None:
    store, sid = _row(tmp_path)
    store.update(sid, agent_session_id="abc-123")
    assert wait_session_id(store, tmux, sid, "nothing", timeout=0.5) == "abc-123"
