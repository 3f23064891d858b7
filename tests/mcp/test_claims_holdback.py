"""Files another live session claimed exclusively are held back from a sandbox run's result:
kept in refused.diff, named in the output and the session's events, applied later with
``--allow-claimed`` (or once the claim ends). Real git repositories, real runs (local backend)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from mcptest_lib import add_worktree, claim_as, hook
from sbr_testlib import branch_files, git

from sandboxrun.coord import claims
from sandboxrun.coord.claims import CLAIMED_REASON, Claim, held_back
from sandboxrun.store import SessionStore


def _claim(path: str, mode: str = "exclusive", sid: str = "other", state: str = "live") -> Claim:
    return Claim(1, "/r", path, mode, sid, "api@r", "api", 0.0, None, None, None, state)


def test_held_back_decision():
    touched = ["README.md", "src/a.py", "src/deep/b.py", "srcx.py", "docs/x.md", "mine.txt"]
    live = [
        _claim("README.md"),
        _claim("src/"),  # a directory claim covers everything under it, not "srcx.py"
        _claim("docs/x.md", mode="advisory"),  # advisory: warns editors, holds nothing back
        _claim("mine.txt", sid="run"),  # the run's own claim
        _claim("srcx.py", state="lapsed"),  # its holder went stale
    ]
    held = held_back(touched, live, own_session="run")
    assert sorted(held) == ["README.md", "src/a.py", "src/deep/b.py"]
    assert all(r.startswith(CLAIMED_REASON) and "--allow-claimed" in r for r in held.values())
    assert "role api" in held["README.md"] and "as part of src/" in held["src/deep/b.py"]
    assert held_back(touched, live, own_session="run", allow_claimed=True) == {}
    assert held_back(touched, [], own_session="run") == {}
    assert claims.allow_flags([held["README.md"], "sensitive path (x)"]) == [
        "--allow-sensitive",
        "--allow-claimed",
    ]


def _db() -> sqlite3.Connection:
    return sqlite3.connect(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")


def _summary(name: str) -> dict:
    db = _db()
    try:
        row = db.execute(
            "SELECT e.payload FROM events e JOIN sessions s ON s.id = e.session_id "
            "WHERE s.name = ? AND e.kind = 'summary' ORDER BY e.id DESC LIMIT 1",
            (name,),
        ).fetchone()
    finally:
        db.close()
    return json.loads(row[0])


@pytest.mark.slow
def test_a_run_holds_back_claimed_files_until_allowed(cli, repo: Path):
    git(repo, "config", "user.name", "Human")
    git(repo, "config", "user.email", "human@example.com")
    api_wt = add_worktree(repo, "api")
    web_wt = add_worktree(repo, "web")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    hook("SessionStart", web_wt, "claude-web", "web", source="startup")
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    api_id = store.conn.execute("SELECT id FROM sessions WHERE role = 'api'").fetchone()[0]
    web_id = store.conn.execute("SELECT id FROM sessions WHERE role = 'web'").fetchone()[0]
    with store.transaction() as conn:
        claims.claim(conn, str(repo), ["README.md", "src/"], "exclusive", api_id, role="api")
        claims.claim(conn, str(repo), ["notes.txt"], "advisory", web_id, role="web")
    plan = (
        "@append README.md from the sandbox\n@write src/new.py NEW = 2\n@commit agent: work\n"
        "@write notes.txt advisory is fine\n@write free.txt free"
    )
    proc = cli("run", "--backend", "local", "--name", "held", "--prompt", plan)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "README.md" in out and "src/new.py" in out and "api@" in out
    assert "sandboxrun apply held --allow-claimed" in out
    assert cli.status("held")["status"] == "completed_with_refusals"
    files = branch_files(repo, "sandboxrun/held")
    assert {"notes.txt", "free.txt"} <= files and "src/new.py" not in files
    assert git(repo, "show", "sandboxrun/held:README.md") == "# project\n"
    summary = _summary("held")
    assert {p for p, r in summary["refused"] if r.startswith(CLAIMED_REASON)} == {
        "README.md",
        "src/new.py",
    }
    kept = Path(summary["kept_patch"]).read_text()
    assert "from the sandbox" in kept and "NEW = 2" in kept and "free" not in kept

    # the claim still holds: a plain apply keeps them back; --allow-claimed lands them
    again = cli("apply", "held")
    assert again.returncode == 1 and "--allow-claimed" in again.stdout
    landed = cli("apply", "held", "--allow-claimed")
    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert "src/new.py" in branch_files(repo, "sandboxrun/held")
    assert git(repo, "show", "sandboxrun/held:README.md") == "# project\nfrom the sandbox\n"
    assert cli.status("held")["status"] == "completed"
    assert git(repo / ".worktrees" / "held", "status", "--porcelain") == ""

    # --allow-claimed on the run itself: nothing held back
    proc = cli(
        "run", "--backend", "local", "--name", "allowed", "--allow-claimed", "--prompt", plan
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "src/new.py" in branch_files(repo, "sandboxrun/allowed")

    # once the holder's session ends, its claims lapse and hold nothing back
    hook("SessionEnd", api_wt, "claude-api", "api", reason="exit")
    proc = cli("run", "--backend", "local", "--name", "after", "--prompt", plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "src/new.py" in branch_files(repo, "sandboxrun/after")
    store.close()


@pytest.mark.slow
def test_a_claim_that_ends_before_apply_lets_the_kept_change_through(cli, repo: Path):
    api_id = claim_as(repo, "api", ["src/app.py"], expires_at=time.time() + 3600)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    proc = cli("run", "--backend", "local", "--name", "wait", "--prompt", "@write src/app.py X = 1")
    assert proc.returncode == 1 and "src/app.py" in proc.stdout + proc.stderr
    with store.transaction() as conn:
        assert claims.release(conn, str(repo), api_id) == 1
    proc = cli("apply", "wait")  # no flag needed any more: nobody claims the file now
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(repo, "show", "sandboxrun/wait:src/app.py") == "X = 1\n"
    store.close()


def test_a_lost_runs_checkpoint_holds_back_claimed_files_too(tmp_path: Path):
    """The other way a sandbox's work lands: the last checkpoint of a lost run."""
    from test_checkpoint_fetch import Checkpointed

    from sandboxrun.sandbox.checkpoint import land_checkpoint, mark_lost
    from sandboxrun.store import Status

    cp = Checkpointed(tmp_path)
    try:
        holder = cp.store.create_session(
            name="api", mode="local", backend="tmux", status=Status.RUNNING, repo=str(cp.repo),
            role="api", last_heartbeat=time.time(),
        )  # fmt: skip
        with cp.store.transaction() as conn:
            claims.claim(conn, str(cp.repo), ["README.md"], "exclusive", holder.id, role="api")
        cp.write("README.md", "# changed in the sandbox\n")
        cp.write("one.txt", "1\n")
        cp.checkpoint()
        mark_lost(cp.store, cp.store.get(cp.sid), cp.artifacts, "the sandbox is gone")
        note = land_checkpoint(cp.store, cp.store.get(cp.sid), cp.artifacts, stale_after=300)
        assert "applied to branch" in note and "README.md" in note
        assert "one.txt" in cp.files()
        assert cp.show("sandboxrun/t", "README.md") == b"# project\n"
    finally:
        cp.store.close()


@pytest.mark.parametrize(("stale_after", "held"), [(60.0, False), (600.0, True)])
def test_a_lost_runs_checkpoint_judges_the_holder_by_the_configured_stale_after(
    tmp_path: Path, stale_after: float, held: bool
):
    """A holder silent for 200 s: stale (its claim lapsed) with stale_after 60 s, still live
    with 600 s; the default (300 s) would give the same answer for both."""
    from test_checkpoint_fetch import Checkpointed

    from sandboxrun.sandbox.checkpoint import land_checkpoint, mark_lost
    from sandboxrun.store import Status

    cp = Checkpointed(tmp_path)
    try:
        holder = cp.store.create_session(
            name="api", mode="local", backend="tmux", status=Status.RUNNING, repo=str(cp.repo),
            role="api", last_heartbeat=time.time() - 200,
        )  # fmt: skip
        with cp.store.transaction() as conn:
            claims.claim(conn, str(cp.repo), ["README.md"], "exclusive", holder.id, role="api")
        cp.write("README.md", "# changed in the sandbox\n")
        cp.checkpoint()
        mark_lost(cp.store, cp.store.get(cp.sid), cp.artifacts, "the sandbox is gone")
        land_checkpoint(cp.store, cp.store.get(cp.sid), cp.artifacts, stale_after=stale_after)
        readme = cp.show("sandboxrun/t", "README.md")
        assert readme == (b"# project\n" if held else b"# changed in the sandbox\n")
    finally:
        cp.store.close()


@pytest.mark.slow
def test_a_run_judges_the_holder_by_the_configured_stale_after(cli, repo: Path):
    """The final collection's hold-back check uses the repository's ``stale_after`` (1m here):
    a holder silent for 200 s holds nothing back (the default, 300 s, would keep it)."""
    (repo / ".sandboxrun.toml").write_text('stale_after = "1m"\n')
    api_id = claim_as(repo, "api", ["src/"])
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    store.update(api_id, last_heartbeat=time.time() - 200)
    proc = cli(
        "run", "--backend", "local", "--name", "stale", "--prompt", "@write src/new.py X = 1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "src/new.py" in branch_files(repo, "sandboxrun/stale")
    store.close()
