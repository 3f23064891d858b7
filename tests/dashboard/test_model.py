"""The dashboard's read model on real state.db files written by real hooks and the real store."""

from __future__ import annotations

import json
import sqlite3
import time

from dashlib import hook, local_child, make_group, sandbox_session

from sandboxrun.dashboard.model import Tracker, describe, events_since, snapshot
from sandboxrun.fanout import groups
from sandboxrun.store import Status


def _conn(store) -> sqlite3.Connection:
    """A second connection, as the dashboard has its own (data_version sees others' commits)."""
    return sqlite3.connect(store.path, isolation_level=None)


def _row(snap, name):
    (row,) = [r for r in snap.sessions if name in (r.name, r.role)]
    return row


def test_local_child_state_action_turns_follow_real_hooks(proj, store):
    wt = local_child(proj, "api", "claude-api")
    conn = _conn(store)
    tracker = Tracker(str(proj))
    assert tracker.changed(conn)
    row = _row(tracker.refresh(conn), "api")
    assert (row.mode, row.state, row.branch, row.turns) == (
        "local",
        "idle",
        "agent/api/active",
        None,
    )
    assert row.presence == "active" and row.role == "api"
    assert not tracker.changed(conn)  # nothing written since: the cheap check says so

    hook("UserPromptSubmit", wt, "claude-api", prompt="add a health endpoint")
    hook(
        "PreToolUse",
        wt,
        "claude-api",
        tool_name="Edit",
        tool_input={"file_path": str(wt / "app.txt"), "old_string": "SECRET-OLD"},
    )
    assert tracker.changed(conn)
    row = _row(tracker.refresh(conn), "api")
    assert (row.state, row.last_tool, row.last_file, row.turns) == (
        "busy",
        "Edit",
        str(wt / "app.txt"),
        1,
    )
    # only the file of a file tool is stored, never the rest of its input
    raw = conn.execute("SELECT group_concat(payload) FROM events").fetchone()[0]
    assert "SECRET-OLD" not in raw and "add a health endpoint" not in raw

    hook("PreToolUse", wt, "claude-api", tool_name="Bash", tool_input={"command": "ls"})
    hook("Notification", wt, "claude-api", notification_type="permission_prompt")
    row = _row(tracker.refresh(conn), "api")
    assert (row.state, row.needs_permission, row.last_tool, row.last_file) == (
        "needs_permission",
        True,
        "Bash",
        None,
    )
    assert row.state_since is not None and row.state_since <= time.time()

    hook("SessionEnd", wt, "claude-api", reason="exit")
    row = _row(tracker.refresh(conn), "api")
    assert row.state == "exited" and not row.active
    # a fresh tracker (the --json snapshot) reads the same from scratch
    fresh = _row(snapshot(conn, str(proj)), "api")
    assert (fresh.state, fresh.last_tool, fresh.turns) == ("exited", "Bash", 1)


def test_sandbox_sessions_cost_time_left_merge_and_scope(proj, store, tmp_path):
    now = time.time()
    sid = sandbox_session(store, "run1", proj, deadline=now + 600)
    store.add_events(
        sid,
        [
            ("phase", {"phase": "provisioning", "detail": "creating the sandbox"}),
            ("agent", {"type": "text", "text": "looking", "message_id": "m1"}),
            (
                "agent",
                {"type": "tool_use", "name": "Read", "summary": "src/app.py", "message_id": "m1"},
            ),
            (
                "agent",
                {"type": "tool_use", "name": "Bash", "summary": "pytest -q", "message_id": "m2"},
            ),
        ],
    )
    done = sandbox_session(store, "run2", proj)
    store.set_status(done, Status.COMPLETED, cost_usd=0.25, num_turns=7)
    other = tmp_path / "elsewhere"
    sandbox_session(store, "far", other)

    conn = _conn(store)
    snap = snapshot(conn, str(proj), now=now)
    assert [r.name for r in snap.sessions] == ["run1", "run2"]  # the repo's own only
    r1, r2 = _row(snap, "run1"), _row(snap, "run2")
    assert (r1.state, r1.state_reason, r1.last_tool, r1.last_file, r1.turns) == (
        "running",
        "provisioning",
        "Bash",
        "pytest -q",
        2,
    )
    assert 599 <= r1.time_left <= 600 and not r1.mergeable
    assert (r2.state, r2.cost_usd, r2.turns, r2.mergeable, r2.time_left) == (
        "completed",
        0.25,
        7,
        True,
        None,
    )
    assert snap.cost_usd == 0.25 and snap.counts() == {"running": 1, "completed": 1}
    assert {r.name for r in snapshot(conn, None).sessions} == {"run1", "run2", "far"}
    assert json.loads(json.dumps(snap.to_dict()))["sessions"][0]["name"] == "run1"


def test_group_tasks_dependencies_and_cost_totals(proj, store):
    gid = make_group(store, proj)
    api = sandbox_session(store, "feat-api", proj, group_id=gid)
    store.set_status(api, Status.COMPLETED, cost_usd=0.5)
    groups.update_task(store, gid, "api", state="started", session_id=api)
    ui = sandbox_session(store, "feat-ui", proj, group_id=gid)
    store.update(ui, cost_usd=0.125)
    groups.update_task(store, gid, "ui", state="started", session_id=ui)

    snap = snapshot(_conn(store), str(proj))
    (g,) = snap.groups
    assert (g.name, g.status, g.cost_usd) == ("feat", "running", 0.625)
    assert [(t.name, t.depends_on, t.state, t.status) for t in g.tasks] == [
        ("api", [], "started", "completed"),
        ("ui", ["api"], "started", "running"),
        ("docs", ["api", "ui"], "pending", None),
    ]
    assert _row(snap, "feat-ui").group == "feat"


def test_events_since_pages_and_describe_is_plain_text(proj, store):
    sid = sandbox_session(store, "run1", proj)
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    store.add_events(sid, [("agent", {"type": "text", "text": f"{evil} {i}"}) for i in range(7)])
    conn = _conn(store)
    first = events_since(conn, 0, session_id=sid, limit=4)
    assert len(first) == 4 and [e["id"] for e in first] == sorted(e["id"] for e in first)
    rest = events_since(conn, first[-1]["id"], session_id=sid, limit=100)
    texts = [describe(e) for e in first + rest if e["kind"] == "agent"]
    assert texts == [f"{evil} {i}" for i in range(7)]  # text as written: the UI escapes it
    assert describe(
        {"kind": "status", "payload": {"status": "running", "previous": "created"}}
    ) == ("status running (was created)")
    assert events_since(conn, rest[-1]["id"]) == []


def test_a_long_history_is_primed_without_folding_it_all_and_counts_stay_exact(proj, store):
    sid = sandbox_session(store, "long", proj)
    items = [("phase", {"phase": "running", "detail": "agent started"})]
    for i in range(1200):  # 400 responses of three lines each
        mid = f"msg{i // 3}"
        items.append(("agent", {"type": "text", "text": f"line {i}", "message_id": mid}))
    items.append(
        ("agent", {"type": "tool_use", "name": "Grep", "summary": "TODO", "message_id": "msg399"})
    )
    store.add_events(sid, items)
    conn = _conn(store)
    tracker = Tracker(str(proj))
    row = _row(tracker.refresh(conn), "long")
    assert (row.turns, row.last_tool, row.last_file, row.state_reason) == (
        400,
        "Grep",
        "TODO",
        "running",
    )
    # a line of an already counted response adds no turn; a new response adds one
    store.add_event(sid, "agent", {"type": "text", "text": "more", "message_id": "msg399"})
    assert _row(tracker.refresh(conn), "long").turns == 400
    store.add_event(
        sid,
        "agent",
        {"type": "tool_use", "name": "Read", "summary": "b.py", "message_id": "msg400"},
    )
    row = _row(tracker.refresh(conn), "long")
    assert (row.turns, row.last_tool, row.last_file) == (401, "Read", "b.py")
