"""Presence and messages over a real SQLite database; teardown's bookkeeping; status rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sbr_testlib import CLI, db_rows, run_hook

from sandboxrun.coord import messages, presence
from sandboxrun.coord.local_sessions import local_fields, local_sessions
from sandboxrun.errors import UsageError
from sandboxrun.store import SessionStore

T0 = 1_800_000_000.0


@pytest.fixture
def conn(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    yield store.conn
    store.close()


def test_register_heartbeat_get(conn):
    assert presence.get(conn, "/r", "api") is None
    presence.register(conn, "/r", "api", worktree="/r/.worktrees/api", session_id="s1",
                      claude_session_id="c1", now=T0)  # fmt: skip
    p = presence.get(conn, "/r", "api", now=T0 + 10)
    assert (p.state, p.stale, p.seconds_since_heartbeat) == ("active", False, 10)
    assert (p.worktree, p.session_id, p.claude_session_id) == ("/r/.worktrees/api", "s1", "c1")
    assert presence.heartbeat(conn, "/r", "api", now=T0 + 100)
    p2 = presence.get(conn, "/r", "api", now=T0 + 100)
    # A heartbeat touches only the timestamp.
    assert p2.last_heartbeat == T0 + 100 and p2.registered_at == T0
    assert (p2.worktree, p2.session_id, p2.claude_session_id) == (p.worktree, "s1", "c1")
    assert not presence.heartbeat(conn, "/r", "nobody", now=T0)


def test_stale_boundary_is_exact(conn):
    presence.register(conn, "/r", "api", now=T0)
    assert presence.get(conn, "/r", "api", now=T0 + 300).state == "active"  # exactly 5 min
    assert presence.get(conn, "/r", "api", now=T0 + 300.001).state == "stale"
    assert presence.presence_state("active", T0, T0 + 300) == "active"
    assert presence.presence_state("active", T0, T0 + 300.000001) == "stale"
    # Configurable; stale sessions stay visible in the list.
    assert presence.get(conn, "/r", "api", now=T0 + 61, stale_after=60).stale
    (listed,) = presence.list_presence(conn, "/r", now=T0 + 10_000)
    assert listed.state == "stale" and listed.to_dict()["stale"] is True


def test_deregister_keeps_last_heartbeat_and_stops_heartbeats(conn):
    presence.register(conn, "/r", "api", now=T0)
    presence.heartbeat(conn, "/r", "api", now=T0 + 5)
    assert presence.deregister(conn, "/r", "api", now=T0 + 9)
    p = presence.get(conn, "/r", "api", now=T0 + 10)
    assert (p.status, p.state, p.last_heartbeat, p.deregistered_at) == (
        "inactive", "inactive", T0 + 5, T0 + 9
    )  # fmt: skip
    assert not presence.heartbeat(conn, "/r", "api", now=T0 + 20)  # needs a new registration
    assert presence.get(conn, "/r", "api").last_heartbeat == T0 + 5
    presence.register(conn, "/r", "api", now=T0 + 30)
    assert presence.get(conn, "/r", "api", now=T0 + 31).state == "active"
    assert not presence.deregister(conn, "/r", "ghost")
    # Per repository: the same role elsewhere is another registration.
    presence.register(conn, "/other", "api", now=T0)
    assert len(presence.list_presence(conn)) == 2


def test_messages_types_pending_and_read(conn):
    for kind in messages.KNOWN_TYPES:
        messages.send(conn, "/r", kind, sender="pm", recipient="api", body={"k": kind})
    messages.send(conn, "/r", "STATUS_UPDATE", sender="api")  # a broadcast: nobody's pending
    messages.send(conn, "/x", "STATUS_UPDATE", recipient="api")  # another repo
    pending = messages.pending(conn, "/r", "api")
    assert [m.type for m in pending] == list(messages.KNOWN_TYPES)
    assert pending[0].body == {"k": "SESSION_START"} and pending[0].sender == "pm"
    assert messages.pending_counts(conn, "/r", "api") == {k: 1 for k in messages.KNOWN_TYPES}
    assert messages.mark_read(conn, [pending[0].id, pending[1].id]) == 2
    assert messages.mark_read(conn, [pending[0].id]) == 0
    assert len(messages.pending(conn, "/r", "api")) == 2
    listed = messages.list_messages(conn, repo="/r", kind="STATUS_UPDATE")
    assert [m.recipient for m in listed] == ["api", None]
    assert messages.list_messages(conn, after_id=listed[-1].id) != []
    for bad in ("", "lower", "WITH SPACE", "X" * 40, "1ABC"):
        with pytest.raises(UsageError):
            messages.send(conn, "/r", bad)


def test_local_fields_presence_from_heartbeat():
    row = {"status": "running", "last_heartbeat": T0, "activity": "busy", "role": "api"}
    assert local_fields(row, now=T0 + 300)["presence"] == "active"
    assert local_fields(row, now=T0 + 301)["presence"] == "stale"
    assert local_fields({**row, "status": "completed"}, now=T0)["presence"] == "inactive"
    assert local_fields({"status": "running"}, now=T0)["presence"] is None


def test_teardown_deregisters_and_records_session_end(proj):
    cli = CLI(proj)
    assert cli("worktree", "setup", "api").returncode == 0
    wt = proj / ".worktrees" / "api"
    start = {"session_id": "c1", "cwd": str(wt), "hook_event_name": "SessionStart"}
    assert run_hook("SessionStart", start).returncode == 0
    assert cli.json("worktree", "list")[0]["presence"] == "active"
    # Removal fails (a locked worktree), yet presence is deregistered and SESSION_END recorded.
    subprocess_git = ["git", "-C", str(proj), "worktree", "lock", str(wt)]
    import subprocess

    subprocess.run(subprocess_git, check=True)
    out = cli("worktree", "teardown", "api")
    assert out.returncode == 1 and "cannot remove worktree" in out.stderr
    (pres,) = db_rows("SELECT status, last_heartbeat FROM presence")
    assert pres["status"] == "inactive" and pres["last_heartbeat"] > 0
    ends = db_rows("SELECT * FROM messages WHERE type = 'SESSION_END'")
    assert len(ends) == 1 and json.loads(ends[0]["body"])["reason"] == "teardown"
    assert cli.json("worktree", "list")[0]["presence"] == "inactive"


def test_status_lists_local_sessions_beside_runs(proj):
    cli = CLI(proj)
    cli("worktree", "setup", "api")
    wt = proj / ".worktrees" / "api"
    for event in ("SessionStart", "PreToolUse"):
        run_hook(event, {"session_id": "c1", "cwd": str(wt), "hook_event_name": event})
    (item,) = cli.json("status")
    assert item["mode"] == "local" and item["role"] == "api"
    assert item["activity"] == "busy" and item["presence"] == "active"
    assert item["agent_session_id"] == "c1" and item["worktree"] == str(wt)
    table = cli("status").stdout
    assert "api@proj" in table and "running/busy" in table
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    (listed,) = local_sessions(store.conn, str(proj))
    assert listed["role"] == "api" and listed["claude_session_id"] == "c1"
    assert local_sessions(store.conn, "/elsewhere") == []
