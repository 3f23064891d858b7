"""The monitor on a real tmux server with stand-in panes (programs that print what Claude Code
would show), for what the fake API cannot make the real CLI do: its own auto-continue banner
(claude.ai logins only) and a turn that falls silent."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest
from sbr_testlib import retry_until

from sandboxrun.config import load_settings
from sandboxrun.local.monitor import Monitor, auto_continue_armed, limit_from_pane
from sandboxrun.store import SessionStore, Status

# Claude Code 2.1.330's own banner while it waits to continue by itself (from its source:
# "Continuing automatically {when} · Esc to cancel")
BANNER = "Continuing automatically at 3:45pm · Esc to cancel"


def _child(store, tmux, tmp_path, name, screen, **fields):
    reader = tmp_path / f"{name}.in"
    code = (
        "import sys, tty; tty.setraw(0)\n"
        f"print({screen!r}, end='', flush=True)\n"
        f"out = open({str(reader)!r}, 'wb')\n"
        "while True:\n"
        "    b = sys.stdin.buffer.raw.read(1)\n"
        "    out.write(b); out.flush()\n"
    )
    tmux.new_session(f"t_child_{name}", [sys.executable, "-c", code], cwd=tmp_path)
    retry_until(lambda: screen[:20] in tmux.capture(f"t_child_{name}"))
    row = store.create_session(
        name=name,
        mode="local",
        backend="tmux",
        status=Status.RUNNING,
        tmux_session=f"t_child_{name}",
        started_at=time.time() - 3600,
        **fields,
    )
    return row, reader


def _events(store, sid, kind):
    rows = store.conn.execute(
        "SELECT payload FROM events WHERE session_id = ? AND kind = ? ORDER BY id", (sid, kind)
    ).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_auto_continue_banner_is_left_alone_and_a_silent_turn_goes_stale(tmux_server, tmp_path):
    settings = load_settings(None)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    past = time.time() - 60
    quota, quota_in = _child(
        store,
        tmux_server,
        tmp_path,
        "quota",
        BANNER,
        activity="usage_limited",
        activity_at=past,
        resets_at=past,
    )
    silent, _ = _child(
        store,
        tmux_server,
        tmp_path,
        "silent",
        "\u2810 Working...",
        activity="busy",
        activity_at=past - 600,
        last_heartbeat=past - 600,
    )
    mon = Monitor(store, tmux_server, settings, stale_after=0.5)
    states = mon.tick()
    assert states["quota"].name == "waiting_quota"
    retry_until(lambda: time.sleep(0.6) or mon.tick()["silent"].name == "stale", timeout=60)
    # the reset passed long ago, yet nothing was typed into the banner's pane
    assert quota_in.read_bytes() == b""
    assert _events(store, quota.id, "quota_continue") == []
    assert [e["reason"] for e in _events(store, silent.id, "escalation")]
    # a restarted monitor carries on from the database: no duplicate state events
    Monitor(store, tmux_server, settings, stale_after=0.5).tick()
    assert [e["state"] for e in _events(store, quota.id, "state")] == ["waiting_quota"]


def test_a_child_whose_pane_died_is_ended_with_its_presence(tmux_server, tmp_path):
    settings = load_settings(None)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    row = store.create_session(
        name="gone",
        mode="local",
        backend="tmux",
        status=Status.RUNNING,
        tmux_session="t_child_gone",
        started_at=time.time() - 3600,
        activity="busy",
        activity_at=time.time() - 5,
    )
    tmux_server.new_session("t_child_gone", [sys.executable, "-c", "pass"], cwd=tmp_path)
    retry_until(lambda: (p := tmux_server.pane("t_child_gone")) is not None and p.dead)
    assert Monitor(store, tmux_server, settings).tick()["gone"].name == "exited"
    ended = store.get(row.id)
    assert ended.status == "completed" and ended.activity == "exited"
    assert "without a SessionEnd" in (ended.error or "")
    assert not tmux_server.has_session("t_child_gone")


# The texts of Claude Code 2.1.330 (its bundled source) and of earlier versions (LOCAL-MODE.md).
ARMED = [
    "Continuing automatically at 3:45pm · Esc to cancel",
    "Usage limit reached · set to continue automatically at 3:45pm",
    "Usage limit reached again · set to continue automatically at 4:10pm",
    "Usage limit reset · Continuing automatically",
    "Goal paused · usage limit reached · continues automatically when it resets",
    "Usage limit reached · continuing automatically at 3:45pm · esc to cancel",
]
NOT_ARMED = [
    "You've hit your session limit · resets 3:45pm",
    "Usage limit reached",
    "You've used 85% of your session limit",
    "",
]


@pytest.mark.parametrize("line", ARMED)
def test_claude_codes_own_auto_continue_is_recognised(line):
    screen = f"\u273b Worked for 3s\n\n{line}\n\u276f \n"
    assert auto_continue_armed(screen)


@pytest.mark.parametrize("line", NOT_ARMED)
def test_a_plain_limit_is_not_an_auto_continue(line):
    assert not auto_continue_armed(f"{line}\n\u276f \n")


@pytest.mark.parametrize(
    "cancelled",
    [
        "Automatic continue cancelled · /rate-limit-options to wait again",
        "Automatic continue cancelled. Your session will wait for you instead; "
        "/rate-limit-options can arm it again.",
        "Automatic continue stopped · your login changed or ended · send a prompt to continue",
    ],
)
def test_a_cancelled_auto_continue_below_the_banner_is_ours_to_do(cancelled):
    screen = f"Usage limit reached · set to continue automatically at 3:45pm\n{cancelled}\n"
    assert not auto_continue_armed(screen)
    # and a new limit armed again after the cancellation counts again
    assert auto_continue_armed(
        screen + "Usage limit reached again · set to continue automatically at 5pm\n"
    )


def test_the_monitor_takes_over_children_whose_rows_were_lost(
    tmux_server, tmp_path, proj, monkeypatch
):
    monkeypatch.delenv("PROJECT_PREFIX", raising=False)
    settings = load_settings(proj)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    idle = "\u273b Worked for 3s\n\u276f \n"

    def pane(name, cwd, sid):
        code = f"print({idle!r}, flush=True); import time; time.sleep(600)"
        env = {"SANDBOXRUN_SESSION": sid, "CLAUDE_INSTANCE_ID": name.rsplit("_", 1)[1]}
        tmux_server.new_session(name, [sys.executable, "-c", code], cwd=cwd, env=env)

    other = tmp_path / "other"
    other.mkdir()
    (other / ".git").mkdir()  # not proj: another repository's child with the same prefix
    pane("proj_child_lost", proj, "lostid000001")
    pane("proj_child_ending", proj, "endingid0001")
    pane("proj_child_foreign", tmp_path / "other", "foreign00001")
    ended = store.create_session(
        id="endingid0001",
        name="ending",
        mode="local",
        backend="tmux",
        status=Status.COMPLETED,
        repo=str(proj),
        tmux_session="proj_child_ending",
    )
    # the stand-in draws its idle screen on its own time: wait for it (under load it may not
    # have yet, and the monitor would rightly call the child still starting)
    retry_until(lambda: "\u276f" in tmux_server.capture("proj_child_lost"))
    mon = Monitor(store, tmux_server, settings, repo=str(proj))
    assert mon.sync() == ["lost"]
    row = store.get("lostid000001")
    assert (row.name, row.status, row.repo, row.role) == ("lost", "running", str(proj), "lost")
    assert _events(store, row.id, "adopted")
    assert store.get(ended.id).status == "completed"  # an ended row is not revived
    assert all(s.id != "foreign00001" for s in store.list())
    assert mon.sync() == []  # once
    assert mon.tick()["lost"].name == "idle"


def test_a_limit_line_above_a_newer_prompt_is_history():
    """After the monitor continued a child, its old limit line stays on screen for a while:
    it must not read as a new limit (a second continue)."""
    rule = "\u2500" * 40
    limited = (
        "\u276f write after.txt\n\n  \u23bf  You've hit your session limit \u00b7 resets 3:45pm\n\n"
        f"{rule}\n\u276f\n{rule}\n"
    )
    now = 1_800_000_000.0
    hit, reset = limit_from_pane(limited, now)
    assert hit and reset is not None
    continued = limited.replace(
        f"{rule}\n\u276f\n", f"\u276f please continue\n\n\u25cf Write(after.txt)\n{rule}\n\u276f\n"
    )
    assert limit_from_pane(continued, now) == (False, None)
    # no prompt echo at all (a limit at the very first prompt): the line counts
    assert limit_from_pane("You've hit your session limit \u00b7 resets 3:45pm\n\u276f\n", now)[0]
    assert not limit_from_pane("You've used 85% of your session limit\n\u276f\n", now)[0]


def test_a_reset_already_continued_is_not_continued_again(tmux_server, tmp_path):
    """Two monitors, or a pane whose reset is read to the minute after the transcript gave
    the second: one continue per limit."""
    settings = load_settings(None)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    past = time.time() - 120
    row, reader = _child(
        store,
        tmux_server,
        tmp_path,
        "done",
        "You've hit your session limit \u00b7 resets 3:45pm\n\u276f \n",
        activity="usage_limited",
        activity_at=past,
        resets_at=past,
    )
    store.add_event(row.id, "quota_continue", {"outcome": "delivered", "resets_at": past + 40})
    states = Monitor(store, tmux_server, settings, margin=0).tick()
    assert states["done"].name == "busy"
    assert len(_events(store, row.id, "quota_continue")) == 1
    assert reader.read_bytes() == b""  # nothing typed


def test_a_limit_met_again_after_a_continue_is_a_new_episode(tmux_server, tmp_path):
    """A continue sent at a reset read to the minute can meet the limit again (a new
    StopFailure): that limit is continued again, whatever its reset time."""
    settings = load_settings(None)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    row = store.create_session(name="ep", mode="local", backend="tmux", status=Status.RUNNING)
    mon = Monitor(store, tmux_server, settings)
    reset = time.time() + 30
    store.add_event(row.id, "hook", {"event": "StopFailure", "error": "rate_limit"})
    assert mon._continues(row.id, reset) == []
    store.add_event(row.id, "quota_continue", {"outcome": "delivered", "resets_at": reset - 39})
    assert [c["outcome"] for c in mon._continues(row.id, reset)] == ["delivered"]
    store.add_event(row.id, "hook", {"event": "StopFailure", "error": "rate_limit"})
    assert mon._continues(row.id, reset) == []  # the fresh limit: continue it again


def test_a_reset_read_from_the_screen_is_the_end_of_its_minute(monkeypatch):
    from datetime import datetime

    monkeypatch.setenv("TZ", "UTC")  # the screen's times are local times
    time.tzset()
    try:
        now = datetime(2026, 11, 30, 15, 40, 10, tzinfo=UTC).timestamp()
        hit, reset = limit_from_pane("You've hit your session limit \u00b7 resets 3:45pm\n", now)
        minute = datetime(2026, 11, 30, 15, 45, tzinfo=UTC).timestamp()
        assert hit and reset is not None and reset >= minute + 59
    finally:  # the process's time zone is global: the tests after this one get theirs back
        monkeypatch.undo()
        time.tzset()
