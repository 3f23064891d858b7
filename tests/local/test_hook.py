"""`sandboxrun-hook` as a real process: binding, heartbeat, activity, resilience, imports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sbr_testlib import CLI, db_rows, hook_argv, hook_log, run_hook

from sandboxrun.hook import activity_for, resets_at
from sandboxrun.store import SessionStore


@pytest.fixture
def agent_wt(proj: Path) -> Path:
    out = CLI(proj)("worktree", "setup", "api")
    assert out.returncode == 0, out.stderr
    return proj / ".worktrees" / "api"


def payload(event: str, cwd: Path, sid: str = "claude-1", **extra) -> dict:
    return {
        "session_id": sid,
        "transcript_path": f"/t/{sid}.jsonl",
        "cwd": str(cwd),
        "hook_event_name": event,
        **extra,
    }


def session_of(sid: str) -> dict:
    (row,) = db_rows("SELECT * FROM sessions WHERE agent_session_id = ?", (sid,))
    return row


def test_activity_mapping_is_pure():
    assert activity_for("UserPromptSubmit", {}) == "busy"
    assert activity_for("PreToolUse", {}) == "busy"
    assert activity_for("Stop", {}) == "idle"
    assert activity_for("Notification", {"notification_type": "permission_prompt"}) == (
        "needs_permission"
    )
    assert activity_for("Notification", {"notification_type": "idle_prompt"}) == "idle"
    assert activity_for("Notification", {"notification_type": "elicitation_dialog"}) is None
    assert activity_for("StopFailure", {"error": "rate_limit"}) == "usage_limited"
    assert activity_for("StopFailure", {"error": "server_error"}) == "error"
    assert activity_for("SessionEnd", {}) == "exited"
    assert resets_at({"last_assistant_message": "Claude AI usage limit reached|1800000000"}) == (
        1800000000.0
    )
    assert resets_at({"last_assistant_message": "nothing about limits"}) is None


def test_session_lifecycle_from_worktree_identity(agent_wt, proj):
    start = run_hook("SessionStart", payload("SessionStart", agent_wt, source="startup"))
    assert start.returncode == 0 and start.stdout == b""  # no messages, no warnings: silent
    row = session_of("claude-1")
    assert (row["mode"], row["role"], row["status"]) == ("local", "api", "running")
    assert row["worktree"] == str(agent_wt) and row["repo"] == str(proj)
    assert row["branch"] == "agent/api/active" and row["activity"] == "idle"
    assert row["transcript_path"] == "/t/claude-1.jsonl"
    for event, extra, activity in [
        ("UserPromptSubmit", {"prompt": "secret prompt text"}, "busy"),
        ("PreToolUse", {"tool_name": "Bash", "tool_input": {"command": "echo TOKEN=abc"}}, "busy"),
        ("PostToolUse", {"tool_name": "Bash", "tool_response": {"stdout": "TOKEN=abc"}}, "busy"),
        ("Stop", {}, "idle"),
        ("Notification", {"notification_type": "permission_prompt"}, "needs_permission"),
        (
            "StopFailure",
            {
                "error": "rate_limit",
                "last_assistant_message": "Claude AI usage limit reached|1900000000",
            },
            None,
        ),
    ]:
        before = session_of("claude-1")["last_heartbeat"]
        assert run_hook(event, payload(event, agent_wt, **extra)).returncode == 0
        row = session_of("claude-1")
        assert row["last_heartbeat"] >= before
        if activity:
            assert row["activity"] == activity, event
    assert row["activity"] == "usage_limited" and row["resets_at"] == 1900000000.0
    (pres,) = db_rows("SELECT * FROM presence")
    assert pres["status"] == "active" and pres["role"] == "api"
    assert pres["last_heartbeat"] == row["last_heartbeat"]
    assert run_hook("SessionEnd", payload("SessionEnd", agent_wt, reason="exit")).returncode == 0
    row = session_of("claude-1")
    assert (row["status"], row["activity"]) == ("completed", "exited")
    (pres,) = db_rows("SELECT * FROM presence")
    assert pres["status"] == "inactive" and pres["last_heartbeat"] > 0
    kinds = [m["type"] for m in db_rows("SELECT type FROM messages ORDER BY id")]
    assert kinds == ["SESSION_START", "SESSION_END"]
    events = db_rows("SELECT payload FROM events WHERE kind = 'hook' ORDER BY id")
    names = [json.loads(e["payload"])["event"] for e in events]
    assert names[0] == "SessionStart" and names[-1] == "SessionEnd" and len(names) == 8
    assert json.loads(events[2]["payload"])["tool"] == "Bash"
    # Tool inputs, outputs and prompts may hold secrets: never stored.
    everything = json.dumps(db_rows("SELECT * FROM events")) + json.dumps(
        db_rows("SELECT * FROM messages")
    )
    assert "TOKEN=abc" not in everything and "secret prompt" not in everything
    assert hook_log() == ""


def test_a_late_session_end_keeps_a_failed_or_killed_row(agent_wt):
    """spawn marks a child that never started `failed` and ends its pane; that claude's
    SessionEnd can land afterwards (CI saw it): the row keeps the reason it ended."""
    from sandboxrun.hook import _ACTIVE
    from sandboxrun.store import ACTIVE

    assert {str(s) for s in ACTIVE} == _ACTIVE  # the hook's copy of the store's set
    for ended in ("failed", "killed"):
        sid = f"claude-{ended}"
        assert run_hook("SessionStart", payload("SessionStart", agent_wt, sid=sid)).returncode == 0
        row = session_of(sid)
        store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
        store.set_status(row["id"], ended, error="never got past the login screen")
        store.close()
        end = payload("SessionEnd", agent_wt, sid=sid, reason="other")
        assert run_hook("SessionEnd", end).returncode == 0
        row = session_of(sid)
        assert (row["status"], row["error"]) == (ended, "never got past the login screen")
        assert row["activity"] == "exited"


def test_binding_order_env_session_then_instance_id(agent_wt, proj, tmp_path):
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    made = store.create_session(name="spawned", mode="local", backend="tmux", repo=str(proj))
    run_hook("SessionStart", payload("SessionStart", agent_wt, "c-env"), {
        "SANDBOXRUN_SESSION": made.id, "CLAUDE_INSTANCE_ID": "other"
    })  # fmt: skip
    assert store.get(made.id).agent_session_id == "c-env"
    assert store.get(made.id).status == "running"
    # A sandbox run bound the same way: activity recorded, its status left to its driver.
    run = store.create_session(name="run", mode="sandbox", backend="local", status="running")
    for event in ("SessionStart", "Stop", "SessionEnd"):
        run_hook(event, payload(event, agent_wt, "c-run"), {"SANDBOXRUN_SESSION": run.id})
    after = store.get(run.id)
    assert (after.status, after.ended_at, after.activity) == ("running", None, "exited")
    # CLAUDE_INSTANCE_ID wins over the worktree's user.email.
    run_hook(
        "SessionStart", payload("SessionStart", agent_wt, "c-inst"), {"CLAUDE_INSTANCE_ID": "qa"}
    )
    assert session_of("c-inst")["role"] == "qa"
    # No identity at all: bound to the worktree of cwd, without a role.
    plain = tmp_path / "plain"
    plain.mkdir()
    subprocess.run(["git", "init", "-q", str(plain)], check=True)
    (plain / "sub").mkdir()
    run_hook("SessionStart", payload("SessionStart", plain / "sub", "c-none"))
    row = session_of("c-none")
    assert row["role"] is None and row["worktree"] == str(plain)
    # Outside any git checkout and without an identity: nothing recorded, no error.
    outside = tmp_path / "outside"
    outside.mkdir()
    assert run_hook("SessionStart", payload("SessionStart", outside, "c-out")).returncode == 0
    assert db_rows("SELECT id FROM sessions WHERE agent_session_id = 'c-out'") == []
    assert hook_log() == ""


def test_session_start_context_warnings_and_pending_messages(agent_wt, proj):
    (proj / ".sandboxrun.toml").write_text('roles = ["pm", "api"]\n')
    # pm in an agent worktree: a warning, the session still starts and registers.
    out = run_hook(
        "SessionStart", payload("SessionStart", agent_wt, "c1"), {"CLAUDE_INSTANCE_ID": "pm"}
    )
    reply = json.loads(out.stdout)
    assert "belongs in the main checkout" in reply["hookSpecificOutput"]["additionalContext"]
    assert "belongs in the main checkout" in reply["systemMessage"]
    # A non-pm role in the main checkout: warned.
    out = run_hook(
        "SessionStart", payload("SessionStart", proj, "c2"), {"CLAUDE_INSTANCE_ID": "api"}
    )
    assert "should work in its own worktree" in json.loads(out.stdout)["systemMessage"]
    # An unknown role with an allowed list: told, with the fix; no presence for it.
    out = run_hook(
        "SessionStart", payload("SessionStart", proj, "c3"), {"CLAUDE_INSTANCE_ID": "zz"}
    )
    reply = json.loads(out.stdout)
    assert "not in the allowed roles (pm, api)" in reply["systemMessage"]
    assert "CLAUDE_INSTANCE_ID" in reply["hookSpecificOutput"]["additionalContext"]
    assert not db_rows("SELECT * FROM presence WHERE role = 'zz'")
    # Pending messages for the role: count and types.
    from sandboxrun.coord import messages

    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    messages.send(store.conn, str(proj), "STATUS_UPDATE", sender="pm", recipient="api")
    messages.send(store.conn, str(proj), "STATUS_UPDATE", sender="pm", recipient="api")
    messages.send(store.conn, str(proj), "HEARTBEAT", sender="pm", recipient="api")
    messages.send(store.conn, str(proj), "STATUS_UPDATE", sender="pm", recipient="other")
    out = run_hook("SessionStart", payload("SessionStart", agent_wt, "c4"))
    context = json.loads(out.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "3 pending messages for role 'api': HEARTBEAT (1), STATUS_UPDATE (2)" in context
    assert "systemMessage" not in json.loads(out.stdout)


@pytest.mark.parametrize(
    "raw", [b"not json", b"", b"[1, 2]", b"\xff\xfe", b'{"session_id": 5, "cwd": 7}']
)
def test_bad_payloads_cost_a_log_line_not_the_turn(raw, agent_wt):
    out = run_hook("PreToolUse", None, raw=raw)
    assert out.returncode == 0 and out.stdout == b""
    if raw.startswith(b"{"):
        return  # odd field types: handled (bound by the process's own cwd or ignored)
    assert "ignored" in hook_log()


def test_invalid_instance_id_and_broken_config_never_block(agent_wt, proj):
    (proj / ".sandboxrun.toml").write_text("roles = [unclosed\n")
    out = run_hook("SessionStart", payload("SessionStart", agent_wt), {"CLAUDE_INSTANCE_ID": "a b"})
    assert out.returncode == 0
    reply = json.loads(out.stdout)
    assert "config problem" in reply["systemMessage"]
    assert "not a valid role name" in reply["systemMessage"]


def test_missing_and_old_databases_are_created_or_migrated(agent_wt, tmp_path):
    home = Path(os.environ["SANDBOXRUN_HOME"])
    assert not (home / "state.db").exists()
    assert run_hook("PreToolUse", payload("PreToolUse", agent_wt)).returncode == 0
    assert session_of("claude-1")["activity"] == "busy"
    # A database from before local mode (first migration only) is migrated once.
    old_home = tmp_path / "old-home"
    old_home.mkdir()
    db = old_home / "state.db"
    import sqlite_utils

    from sandboxrun import store as store_mod

    conn = sqlite3.connect(db)
    store_mod.migrations._migrations[0].fn(sqlite_utils.Database(conn))
    conn.execute("CREATE TABLE _sqlite_migrations (migration_set TEXT, name TEXT, applied_at TEXT)")
    conn.execute(
        "INSERT INTO _sqlite_migrations VALUES ('sandboxrun', 'm001_sessions_and_events', 'x')"
    )
    conn.commit()
    conn.close()
    out = run_hook(
        "PreToolUse", payload("PreToolUse", agent_wt, "c-old"), {"SANDBOXRUN_HOME": str(old_home)}
    )
    assert out.returncode == 0 and not (old_home / "logs").exists()
    names = [
        r[0]
        for r in sqlite3.connect(db).execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")
    ]
    assert names == [m.name for m in store_mod.migrations._migrations]


def test_locked_database_costs_one_log_line(agent_wt):
    run_hook("SessionStart", payload("SessionStart", agent_wt))
    db = Path(os.environ["SANDBOXRUN_HOME"]) / "state.db"
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # hold the write lock past the hook's bound
    try:
        out = run_hook(
            "PreToolUse",
            payload("PreToolUse", agent_wt, tool_name="Bash"),
            {"SANDBOXRUN_HOOK_LOCK_TIMEOUT": "0.2"},
        )
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert out.returncode == 0
    assert "database is locked" in hook_log() and hook_log().count("\n") == 1


@pytest.mark.slow
def test_a_lock_held_for_seconds_is_waited_out_not_logged(agent_wt):
    """Twenty agents' hooks on two busy cores queue for the write lock for seconds (5 s was
    once not enough in CI): by default a hook waits well past that, and Claude Code waits
    for the hook longer still, so the event is recorded rather than lost."""
    from sandboxrun.hook import DEFAULT_LOCK_TIMEOUT
    from sandboxrun.local.hooks_install import HOOK_TIMEOUT

    assert DEFAULT_LOCK_TIMEOUT >= 20 and HOOK_TIMEOUT > DEFAULT_LOCK_TIMEOUT + 5
    run_hook("SessionStart", payload("SessionStart", agent_wt))
    db = Path(os.environ["SANDBOXRUN_HOME"]) / "state.db"
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(6, lambda: locker.execute("ROLLBACK"))
    release.start()
    try:
        out = run_hook("PreToolUse", payload("PreToolUse", agent_wt, tool_name="Bash"))
    finally:
        release.join()
        locker.close()
    assert out.returncode == 0 and hook_log() == ""
    events = db_rows("SELECT payload FROM events WHERE kind = 'hook'")
    assert [json.loads(e["payload"])["event"] for e in events] == ["SessionStart", "PreToolUse"]


def test_hot_path_imports_only_the_standard_library(agent_wt):
    run_hook("SessionStart", payload("SessionStart", agent_wt))
    for event in ("PreToolUse", "SessionStart", "StopFailure"):
        data = json.dumps(
            payload(event, agent_wt, error="rate_limit", last_assistant_message="resets 3pm")
        )
        out = subprocess.run(
            [sys.executable, "-X", "importtime", *hook_argv(), event],
            input=data.encode(),
            capture_output=True,
            env=dict(os.environ),
        )
        assert out.returncode == 0
        modules = {line.split("|")[-1].strip() for line in out.stderr.decode().splitlines()}
        top = {m.split(".")[0] for m in modules}
        for heavy in ("typer", "rich", "git", "e2b", "fastmcp", "sqlite_utils", "click", "httpx"):
            assert heavy not in top, (event, heavy)
        assert "sqlite3" in top and "sandboxrun" in top
    assert hook_log() == ""


@pytest.mark.slow
def test_twenty_concurrent_sessions_with_zero_lock_errors(proj, tmp_path):
    roles = [f"w{i}" for i in range(20)]
    errors: list[str] = []

    def session(i: int) -> None:
        env = {"CLAUDE_INSTANCE_ID": roles[i]}
        sid = f"claude-{i}"
        for event, extra in [
            ("SessionStart", {}),
            *[("PreToolUse", {"tool_name": "Bash"}), ("PostToolUse", {"tool_name": "Bash"})] * 5,
            ("Stop", {}),
            ("SessionEnd", {}),
        ]:
            try:
                out = run_hook(event, payload(event, proj, sid, **extra), env)
            except Exception as exc:  # a thread's exception would otherwise only be printed
                errors.append(repr(exc))
                continue
            if out.returncode != 0:
                errors.append(out.stderr.decode())

    threads = [threading.Thread(target=session, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and hook_log() == ""
    rows = db_rows("SELECT role, activity, status FROM sessions ORDER BY role")
    assert [r["role"] for r in rows] == sorted(roles)
    assert {(r["activity"], r["status"]) for r in rows} == {("exited", "completed")}
    assert db_rows("SELECT count(*) AS n FROM events WHERE kind = 'hook'")[0]["n"] == 20 * 13
    assert db_rows("SELECT count(*) AS n FROM messages")[0]["n"] == 40


def test_relative_home_is_taken_from_where_claude_started(agent_wt, tmp_path):
    """A relative SANDBOXRUN_HOME (set in a person's shell) is taken from CLAUDE_PROJECT_DIR,
    where Claude Code started: the agent changing directory (the hook's working directory
    is the agent's) does not move the database. Without it, from the current directory,
    as the rest of sandboxrun does."""
    from sandboxrun.home import hook_home

    sub = agent_wt / "src" / "deep"
    sub.mkdir(parents=True)
    env = {"SANDBOXRUN_HOME": "rel-home", "CLAUDE_PROJECT_DIR": str(agent_wt)}
    proc = subprocess.run(
        [*hook_argv(), "SessionStart"],
        input=json.dumps(payload("SessionStart", sub)).encode(),
        env={**os.environ, **env},
        cwd=sub,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == b"", proc
    assert (agent_wt / "rel-home" / "state.db").is_file()
    assert not (sub / "rel-home").exists()
    # the same rule, as a function: ~ expanded, absolute paths kept, the default without one
    assert hook_home(env) == agent_wt / "rel-home"
    assert hook_home({"SANDBOXRUN_HOME": "~/h"}) == Path.home() / "h"
    assert hook_home({"SANDBOXRUN_HOME": str(tmp_path), "CLAUDE_PROJECT_DIR": "/x"}) == tmp_path
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert hook_home({"SANDBOXRUN_HOME": "a/../b"}) == tmp_path / "b"
    finally:
        os.chdir(old)
    assert hook_home({}) == Path.home() / ".local" / "share" / "sandboxrun"
