"""Merge notifications: subscribe over MCP, merge for real, detect with `sandboxrun merges watch`,
and the subscriber's next prompt carries the notice; rebase_assist previews conflicts."""

from __future__ import annotations

from pathlib import Path

from mcptest_lib import Tools, add_worktree, coord_for, hook
from sbr_testlib import CLI, git

from sandboxrun.coord.merges import is_merged


def commit(wt: Path, name: str, text: str) -> None:
    (wt / name).write_text(text)
    git(wt, "add", name)
    git(wt, "commit", "-q", "-m", f"change {name}")


def test_is_merged_decision():
    assert is_merged(True, False) and not is_merged(True, True) and not is_merged(False, False)


def test_merge_detected_and_subscriber_notified(proj: Path):
    api_wt = add_worktree(proj, "api")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    api = Tools(coord_for(api_wt, "api"))
    sub = api("notify_when_merged")
    assert sub["branch"] == "agent/api/active" and sub["base"] == "main" and sub["notify"] == "api"
    cli = CLI(proj)
    # nothing to detect yet: the branch has no commits of its own
    assert cli("merges", "watch", "--once", "--json").stdout == ""
    commit(api_wt, "src/api.py", "API = 2\n")
    status = api("check_merge_status")
    assert status["merged"] is False and status["ahead"] == 1
    git(proj, "merge", "-q", "--no-ff", "-m", "merge api", "agent/api/active")
    watched = cli("merges", "watch", "--once", "--json")
    assert watched.returncode == 0, watched.stderr
    assert '"branch":"agent/api/active"' in watched.stdout
    assert cli("merges", "watch", "--once", "--json").stdout == ""  # once per merge
    assert api("check_merge_status")["merged"] is True
    events = api("get_merge_events")["events"]
    assert [e["branch"] for e in events] == ["agent/api/active"]
    reply = hook("UserPromptSubmit", api_wt, "claude-api", "api")
    context = reply["hookSpecificOutput"]["additionalContext"]
    assert "says (MERGED): branch agent/api/active was merged into main" in context
    kinds = [n["type"] for n in api("get_notifications")["notifications"]]
    assert "MERGED" in kinds


def test_rebase_assist_previews_without_touching_checkouts(proj: Path):
    api_wt = add_worktree(proj, "api")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    api = Tools(coord_for(api_wt, "api"))
    commit(api_wt, "src/api.py", "API = 'branch'\n")
    commit(api_wt, "notes.txt", "mine\n")
    commit(proj, "src/api.py", "API = 'main'\n")
    commit(proj, "src/web.py", "WEB = 2\n")
    head_before = git(proj, "rev-parse", "HEAD").strip()
    status_before = git(api_wt, "status", "--porcelain")
    preview = api("rebase_assist")
    assert preview["changed_on_onto"] == ["src/api.py", "src/web.py"]
    assert preview["changed_on_branch"] == ["notes.txt", "src/api.py"]
    assert preview["changed_on_both"] == ["src/api.py"]
    assert preview["clean"] is False and preview["conflicts"] == ["src/api.py"]
    assert git(proj, "rev-parse", "HEAD").strip() == head_before
    assert git(api_wt, "status", "--porcelain") == status_before
    clean = api("rebase_assist", branch="main", onto="main")
    assert clean["clean"] is True and clean["conflicts"] == []
    for bad in ({"branch": "nope"}, {"onto": "nope"}):
        text = api.error("rebase_assist", **bad)
        assert "Fix:" in text and "existing branch" in text
    assert "existing branch" in api.error("notify_when_merged", branch="ghost")
    assert "after_id=0" in api.error("get_merge_events", after_id=-2)


def test_the_monitor_detects_a_childs_merge_without_anyone_subscribing(
    proj: Path, tmux_server, monkeypatch
):
    """A tmux child (a plain process stands in for claude): the monitor's own pass subscribes
    its branch for the child and the master, detects each merge once, and the child's next
    prompt carries the notice."""
    import sys
    import time

    from sandboxrun.config import load_settings
    from sandboxrun.local.monitor import Monitor
    from sandboxrun.store import SessionStore, Status

    api_wt = add_worktree(proj, "api")
    settings = load_settings(proj)
    store = SessionStore(settings.db_path)
    tmux_server.new_session(
        "t_child_api", [sys.executable, "-c", "import time; time.sleep(600)"], cwd=api_wt
    )
    child = store.create_session(
        name="api", mode="local", backend="tmux", status=Status.RUNNING, repo=str(proj),
        worktree=str(api_wt), branch="agent/api/active", base_ref="main", role="api",
        tmux_session="t_child_api", started_at=time.time(),
    )  # fmt: skip
    monitor = Monitor(store, tmux_server, settings, repo=str(proj), merge_interval=30)

    def subscriptions() -> list[tuple]:
        rows = store.conn.execute(
            "SELECT branch, base, subscriber, notified_at IS NOT NULL FROM merge_subscriptions "
            "ORDER BY id"
        ).fetchall()
        return [tuple(r) for r in rows]

    def merged_messages(role: str) -> list[str]:
        rows = store.conn.execute(
            "SELECT body FROM messages WHERE type = 'MERGED' AND recipient = ? ORDER BY id",
            (role,),
        ).fetchall()
        return [r[0] for r in rows]

    t0 = time.time()
    monitor.tick(now=t0)
    assert subscriptions() == [
        ("agent/api/active", "main", "api", 0),
        ("agent/api/active", "main", settings.pm_role, 0),
    ]
    commit(api_wt, "src/api.py", "API = 2\n")
    monitor.tick(now=t0 + 31)
    assert merged_messages("api") == []  # committed, not merged
    git(proj, "merge", "-q", "--no-ff", "-m", "merge api", "agent/api/active")
    monitor.tick(now=t0 + 40)  # within merge_interval of the last check: not looked at yet
    assert merged_messages("api") == []
    monitor.tick(now=t0 + 62)
    assert len(merged_messages("api")) == 1 and len(merged_messages(settings.pm_role)) == 1
    assert "branch agent/api/active was merged into main" in merged_messages("api")[0]
    events = store.conn.execute("SELECT branch, base FROM merge_events").fetchall()
    assert [tuple(e) for e in events] == [("agent/api/active", "main")]
    # renewed for the next merge, and that one is announced too (once)
    monitor.tick(now=t0 + 93)
    assert [s for s in subscriptions() if not s[3]] == [
        ("agent/api/active", "main", "api", 0),
        ("agent/api/active", "main", settings.pm_role, 0),
    ]
    assert len(merged_messages("api")) == 1
    commit(api_wt, "src/more.py", "MORE = 1\n")
    git(proj, "merge", "-q", "--no-ff", "-m", "merge api again", "agent/api/active")
    monitor.tick(now=t0 + 124)
    monitor.tick(now=t0 + 155)
    assert len(merged_messages("api")) == 2
    # the child's next prompt carries the notice (the hook, as a real process)
    monkeypatch.setenv("SANDBOXRUN_SESSION", child.id)
    reply = hook("UserPromptSubmit", api_wt, "claude-api", "api")
    context = reply["hookSpecificOutput"]["additionalContext"]
    assert context.count("says (MERGED): branch agent/api/active was merged into main") == 2
    store.close()
