"""The terminal dashboard through Textual's headless pilot: keys pressed, screen asserted, rows
following real hook processes and real store writes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest
from dashlib import hook, local_child, make_group, run_app, sandbox_session, until
from sbr_testlib import git

from sandboxrun.config import load_settings
from sandboxrun.dashboard.app import DashboardApp
from sandboxrun.store import Status


def cell(app: DashboardApp, name: str, column: str) -> str:
    row = next(r for r in app.snap.sessions if name in (r.name, r.role))
    table = app.query_one("#sessions")
    return str(table.get_cell(row.id, column))


def detail(app: DashboardApp) -> str:
    return "\n".join(app.query_one("#detail").lines)


def test_row_follows_real_hook_events(proj, store):
    wt = local_child(proj, "api", "claude-api")
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await until(pilot, lambda: app.snap and cell(app, "api", "state") == "idle", "idle row")
        assert cell(app, "api", "branch") == "agent/api/active"
        assert cell(app, "api", "presence") == "active"
        # a real hook process writes the event; the row changes without a key pressed
        await asyncio.to_thread(hook, "UserPromptSubmit", wt, "claude-api", prompt="go")
        await asyncio.to_thread(
            hook,
            "PreToolUse",
            wt,
            "claude-api",
            tool_name="Write",
            tool_input={"file_path": str(wt / "notes.md"), "content": "x"},
        )
        await until(pilot, lambda: cell(app, "api", "state") == "busy", "busy row")
        await until(pilot, lambda: "Write" in cell(app, "api", "last action"), "last action")
        assert cell(app, "api", "last action") == f"Write {wt / 'notes.md'}"
        assert cell(app, "api", "turns") == "1"
        await asyncio.to_thread(
            hook, "Notification", wt, "claude-api", notification_type="permission_prompt"
        )
        await until(pilot, lambda: cell(app, "api", "state") == "needs_permission", "permission")
        # not a tmux child (no pane): answering is refused with a reason, nothing pressed
        await pilot.press("a")
        await until(pilot, lambda: app.said, "a refusal")
        assert "not a tmux child" in app.said[-1]

    run_app(app, script)


def test_log_groups_and_agent_text_stays_text(proj, store):
    sid = sandbox_session(store, "run1", proj, deadline=time.time() + 7200)
    make_group(store, proj)
    app = DashboardApp(load_settings(), str(proj), poll=0.05)
    evil = "[bold red]not markup[/] <script>x</script>"

    async def script(pilot):
        await until(pilot, lambda: app.snap and app.snap.sessions, "a row")
        assert cell(app, "run1", "state") == "running"
        assert re.fullmatch(r"1h[0-5]\dm", cell(app, "run1", "left"))  # under 2 h, over 1 h
        await pilot.press("l")
        await until(pilot, lambda: "log of run1" in detail(app), "the log view")
        store.add_event(sid, "agent", {"type": "text", "text": evil, "message_id": "m1"})
        store.add_event(sid, "agent", {"type": "tool_use", "name": "Edit", "summary": "a.py"})
        await until(pilot, lambda: "Edit: a.py" in detail(app), "a followed event")
        assert evil in detail(app)  # printed as written, not interpreted
        assert cell(app, "run1", "last action") == "Edit a.py"
        await pilot.press("g")
        await until(pilot, lambda: "group feat" in detail(app), "groups")
        assert "  docs: pending after api, ui" in detail(app)
        await pilot.press("r")  # a sandbox run has no conversation: said so
        await until(pilot, lambda: app.said, "a refusal")
        assert "its conversation is its log" in app.said[-1]

    run_app(app, script)


def test_merge_key_merges_a_finished_branch_after_confirmation(proj, store):
    git(proj, "branch", "base")
    git(proj, "checkout", "-q", "-b", "sandboxrun/run2")
    (proj / "new.txt").write_text("work\n")
    git(proj, "add", "new.txt")
    git(proj, "commit", "-q", "-m", "agent work")
    tip = git(proj, "rev-parse", "HEAD").strip()
    git(proj, "checkout", "-q", "main")
    sid = sandbox_session(store, "run2", proj, base_ref="base")
    store.set_status(sid, Status.COMPLETED, cost_usd=0.5)
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await until(pilot, lambda: app.snap and app.snap.sessions, "a row")
        assert cell(app, "run2", "cost") == "$0.50"
        await pilot.press("m")
        await pilot.press("n")  # refused at the question: nothing moves
        await pilot.press("m")
        await pilot.press("y")
        await until(pilot, lambda: app.said, "the merge result")
        assert app.said[-1].startswith("sandboxrun/run2 into base"), app.said

    run_app(app, script)
    assert git(proj, "rev-parse", "base").strip() == tip  # fast-forward to the agent's work


def test_cli_json_snapshot_and_no_screen_without_a_terminal(proj, store):
    sandbox_session(store, "run1", proj)
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "sandboxrun", "dashboard"]
    out = subprocess.run([*cmd, "--json"], cwd=proj, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [s["name"] for s in data["sessions"]] == ["run1"]
    assert data["sessions"][0]["state"] == "running" and data["repo"] == str(proj)
    drawn = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
    assert drawn.returncode == 2 and drawn.stdout == ""
    assert "needs a terminal" in drawn.stderr and "--json" in drawn.stderr


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (125, "2m"), (3700, "1h01m"), (None, "")])
def test_durations(seconds, text):
    from sandboxrun.dashboard.app import fmt_seconds

    assert fmt_seconds(seconds) == text


def test_a_row_it_cannot_read_is_said_and_the_view_recovers(proj, store):
    sid = sandbox_session(store, "run1", proj)
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    def summary() -> str:
        return str(app.query_one("#summary").render())

    async def script(pilot):
        await until(pilot, lambda: app.snap and app.snap.sessions, "a row")
        # a newer sandboxrun wrote a status this version does not know
        store.conn.execute("UPDATE sessions SET status = 'hibernating' WHERE id = ?", (sid,))
        await until(pilot, lambda: "cannot read the database" in summary(), "said")
        assert "hibernating" in summary() and cell(app, "run1", "state") == "running"
        store.set_status(sid, Status.COMPLETED)
        await until(pilot, lambda: cell(app, "run1", "state") == "completed", "recovered")

    run_app(app, script)


def test_merge_key_merges_a_local_childs_branch_into_the_default_branch(proj, store):
    wt = local_child(proj, "api", "claude-api")
    (wt / "api.txt").write_text("endpoint\n")
    git(wt, "add", "api.txt")
    git(wt, "commit", "-q", "-m", "the agent's work")
    tip = git(wt, "rev-parse", "HEAD").strip()
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await until(pilot, lambda: app.snap and app.snap.sessions, "a row")
        await pilot.press("m", "y")
        await until(pilot, lambda: app.said, "the merge result")

    run_app(app, script)
    assert app.said[-1] == f"agent/api/active into main: fast-forward ({tip[:10]})", app.said
    assert git(proj, "rev-parse", "main").strip() == tip
    assert (proj / "api.txt").read_text() == "endpoint\n"  # main is checked out: merged there
