"""``sandboxrun open`` on a real pty: the terminal is attached to the child's tmux session."""

from __future__ import annotations

import os
import pty
import sys
import time
from pathlib import Path

from sbr_testlib import retry_until

from sandboxrun.store import SessionStore, Status


def test_open_attaches_the_terminal_to_the_child(tmux_server, tmp_path, proj):
    tmux_server.new_session(
        "t_child_o", [sys.executable, "-c", "print('CHILD SCREEN 42'); input()"], cwd=tmp_path
    )
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    store.create_session(
        name="o", mode="local", backend="tmux", status=Status.RUNNING, tmux_session="t_child_o"
    )
    env = {**os.environ, "TERM": "xterm", "PYTHONPATH": str(Path(__file__).parents[2])}
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(proj)
        os.execve(sys.executable, [sys.executable, "-m", "sandboxrun", "open", "o"], env)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"CHILD SCREEN 42" not in seen and time.monotonic() < deadline:
            seen += os.read(fd, 4096)
        assert b"CHILD SCREEN 42" in seen
        retry_until(
            lambda: tmux_server.cmd("list-clients", "-F", "#{session_name}") == ["t_child_o"]
        )
        tmux_server.cmd("detach-client", "-s", "=t_child_o")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tmux_server.has_session("t_child_o")  # detaching leaves the child running
