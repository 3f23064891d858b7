"""Pure scheduling decisions, merges without a checkout, and the report's escaping."""

from __future__ import annotations

import pytest
from sbr_testlib import git

from sandboxrun.errors import UsageError
from sandboxrun.fanout.groups import GroupTask
from sandboxrun.fanout.merge import integrate, merge_all
from sandboxrun.fanout.report import render
from sandboxrun.fanout.scheduler import budget_level, session_cost, task_outcome
from sandboxrun.fanout.tasks import TaskSpec
from sandboxrun.store import Session, Status


def session(**kw):
    base = {"id": "s1", "name": "g-a", "mode": "sandbox", "backend": "local", "created_at": 0.0}
    return Session(**{**base, "status": Status.RUNNING, **kw})


def test_budget_levels():
    assert budget_level({}, 100.0, 1e6) == "ok"
    opts = {"budget_usd": 1.0, "hard_factor": 1.5}
    assert budget_level(opts, 0.99, 0) == "ok"
    assert budget_level(opts, 1.0, 0) == "soft"
    assert budget_level(opts, 1.5, 0) == "hard"
    opts = {"budget_minutes": 2, "hard_factor": 1.25}
    assert budget_level(opts, 0, 119) == "ok"
    assert budget_level(opts, 0, 120) == "soft"
    assert budget_level(opts, 0, 150) == "hard"
    # the stricter of two budgets wins
    assert budget_level({"budget_usd": 1.0, "budget_minutes": 1}, 2.0, 10) == "hard"


def test_cost_is_agent_dollars_plus_sandbox_time():
    s = session(cost_usd=0.5, started_at=100.0, ended_at=110.0)
    assert session_cost(s, 0.01, now=500.0) == pytest.approx(0.6)
    live = session(cost_usd=None, started_at=100.0)
    assert session_cost(live, 0.01, now=130.0) == pytest.approx(0.3)
    assert session_cost(session(), 0.01, now=130.0) == 0.0


def test_task_outcomes():
    spec = TaskSpec(name="a", prompt="x")

    def task(state, sid=None):
        return GroupTask("g", "a", 0, spec, state, session_id=sid)

    done = {"s1": session(status=Status.COMPLETED_NO_CHANGES)}
    assert task_outcome(task("pending"), {}) == "pending"
    assert task_outcome(task("skipped"), {}) == "failed"
    assert task_outcome(task("blocked"), {}) == "failed"
    assert task_outcome(task("started", "s1"), {"s1": session()}) == "running"
    assert task_outcome(task("started", "s1"), done) == "success"
    assert task_outcome(task("started", "s1"), {"s1": session(status=Status.KILLED)}) == "failed"


def _branch(repo, name, path, text, start="main"):
    git(repo, "branch", name, start)
    wt = repo.parent / f"wt-{name}"
    git(repo, "worktree", "add", "-q", str(wt), name)
    (wt / path).write_text(text)
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", f"{name}: {path}")
    git(repo, "worktree", "remove", str(wt))


def test_merges_never_touch_the_checkout(repo):
    _branch(repo, "b1", "one.txt", "1\n")
    _branch(repo, "b2", "two.txt", "2\n")
    _branch(repo, "b3", "README.md", "clash\n")
    _branch(repo, "b4", "README.md", "other\n")
    before = (git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"))

    ok = merge_all(repo, "b1", ["b2"], "t")
    assert ok.ok and ok.merged == ["b2"]
    assert set(git(repo, "ls-tree", "--name-only", ok.commit).split()) >= {"one.txt", "two.txt"}
    assert len(git(repo, "rev-list", "--parents", "-n1", ok.commit).split()) == 3

    res = integrate(repo, "main", ["b1", "b3", "b4", "b2"], "sandboxrun/g/integration", "g")
    assert not res.ok and res.conflict_with == "b4" and res.conflicts == ["README.md"]
    # left at the last clean merge (b1 + b3), b2 never merged
    tip = git(repo, "rev-parse", "sandboxrun/g/integration").strip()
    assert tip == res.commit and res.merged == ["b1", "b3"]
    assert git(repo, "show", f"{tip}:README.md") == "clash\n"
    assert (git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD")) == before

    with pytest.raises(UsageError, match="checked out"):
        integrate(repo, "main", ["b1"], "main", "g")


def test_html_escapes_what_agents_wrote():
    rep = {
        "group": "g<script>",
        "status": "failed",
        "cost_usd": 0.0,
        "wall_s": 1.0,
        "sum_task_s": 1.0,
        "speedup": 1.0,
        "critical_path": ["a"],
        "critical_path_s": 1.0,
        "tasks": [
            {
                "task": "a",
                "depends_on": [],
                "status": "failed",
                "outcome": "failed",
                "reason": "<img src=x onerror=alert(1)>",
                "branch": "sandboxrun/g-a",
                "commits": 0,
                "files_changed": None,
                "cost_usd": None,
                "turns": None,
                "started_at": 10.0,
                "ended_at": 11.0,
                "duration_s": 1.0,
            }
        ],
    }
    page = render(rep, "html")
    assert "<img" not in page and "<script>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<svg" in page
    md = render(rep, "md")
    assert "| a | failed |" in md
    assert "<img" not in md and "&lt;img" in md


def test_one_driver_claims_a_task_session(tmp_path):
    """Of two drivers started for one task, one runs it; a dead owner's session is taken over;
    a session that already started is never started again (only attached to)."""
    import subprocess
    import sys

    from sandboxrun.fanout.scheduler import claim_session
    from sandboxrun.store import SessionStore

    store = SessionStore(tmp_path / "state.db")
    s = store.create_session(name="g-a", mode="sandbox", backend="local")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert claim_session(store, s.id, other.pid, attach=False)
        assert not claim_session(store, s.id, 999_999_999, attach=False)  # a live owner holds it
    finally:
        other.kill()
        other.wait()
    assert claim_session(store, s.id, 999_999_999, attach=False)  # the owner died: taken over
    store.set_status(s.id, Status.RUNNING)
    store.update(s.id, owner_pid=None)
    assert not claim_session(store, s.id, 4242, attach=False)
    assert claim_session(store, s.id, 4242, attach=True)
    store.close()
