"""`send` as a new user meets it: every name is resolved before anything is typed (a typo in
the last name never leaves the message with the first children only), and a failed message
says what to do next, also in --json. A real tmux server on its own socket, real git, real
SQLite, `sandboxrun` run as a process."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import test_qa2_local as _local
from sbr_testlib import CLI, edge_error

from sandboxrun.store import SessionStore, Status
from sandboxrun.tmux import Tmux

#: the private tmux server and the project, as in test_qa2_local
tmux = _local.tmux
proj = _local.proj
_store = _local._store

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _child_row(store: SessionStore, proj: Path, tmux: Tmux, name: str) -> None:
    tmux.new_session(f"t_child_{name}", SLEEPER, cwd=proj)
    store.create_session(
        name=name, mode="local", backend="tmux", status=Status.RUNNING, repo=str(proj),
        worktree=str(proj), role=name, tmux_session=f"t_child_{name}", started_at=time.time(),
        options={"socket": tmux.socket_path},
    )  # fmt: skip


def test_send_resolves_every_name_before_typing_anything(proj, tmux):
    store = _store()
    _child_row(store, proj, tmux, "api")
    store.close()
    proc = CLI(proj)("send", "api", "nosuch", "hello there")
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "nosuch" in message and hint
    assert "hello there" not in tmux.capture("t_child_api")  # nothing typed into api
    assert "delivered" not in proc.stdout and "queued" not in proc.stdout


def test_a_failed_send_says_what_to_do_next(proj, tmux):
    store = _store()
    _child_row(store, proj, tmux, "api")
    store.create_session(
        name="run1", mode="sandbox", backend="local", status=Status.RUNNING, repo=str(proj),
        started_at=time.time(),
    )  # fmt: skip
    store.close()
    tmux.kill_session("t_child_api")
    cli = CLI(proj)
    proc = cli("send", "api", "hello")
    assert proc.returncode == 1
    assert "api: failed (the child has exited" in proc.stderr
    assert "Hint: `sandboxrun read api`" in proc.stderr and "sandboxrun spawn api" in proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(cli("send", "api", "hello", "--json").stdout)
    assert data[0]["outcome"] == "failed" and "sandboxrun spawn api" in data[0]["hint"]
    # a sandbox run is not a child: the hint names the commands that do work on it
    proc = cli("send", "run1", "hello")
    message, hint = edge_error(proc.stderr)
    assert proc.returncode == 2 and "not a local tmux child" in message
    assert hint and "sandboxrun logs run1" in hint
