"""Runs interrupted before their agent started (``sandboxrun/sandbox/interrupted.py``).

A real ``sandboxrun run`` is held at a named point of its start (``SANDBOXRUN_TEST_HOLD``), the
test waits until it is there, and SIGKILLs it: no sleep races the phase. Then ``status`` shows the
session as interrupted with the next step, ``cleanup`` removes the upload it left, and ``kill``
or ``attach`` end it, removing the worktree and branch only when they hold no work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from itertools import product
from pathlib import Path

import pytest
from sbr_testlib import git, retry_until

from sandboxrun.sandbox.interrupted import StartFacts, is_interrupted
from sandboxrun.store import ACTIVE, TERMINAL, Session, Status, process_start, starter_alive

# -- the decision, pure ------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(ACTIVE | TERMINAL))
def test_is_interrupted_table(status):
    flags = (False, True)
    for mode, agent_started, claimed, driver, starter in product(
        ("sandbox", "local"), flags, flags, flags, flags
    ):
        facts = StartFacts(mode, status, agent_started, claimed, driver, starter)
        # before a driver claims the session its starter is responsible for it, then the driver
        responsible = driver if claimed else starter
        expected = mode == "sandbox" and status in ACTIVE and not agent_started and not responsible
        assert is_interrupted(facts) is expected, facts


def test_a_long_lived_starter_does_not_hide_a_dead_driver():
    """The MCP server (or a fan-out scheduler) created the row and lives on; the driver it
    handed the start to died: interrupted."""
    from sandboxrun.sandbox.interrupted import interrupted

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me, host = os.getpid(), os.uname().nodename
    s = _session(starter_pid=me, starter_host=host, starter_start=process_start(me))
    assert not interrupted(s)  # not claimed yet: the live starter is still starting it
    assert interrupted(replace(s, owner_pid=child.pid, owner_host=host))


def _session(**kw) -> Session:
    base = dict(id="x", name="x", mode="sandbox", backend="local", status=Status.PACKING,
                created_at=0.0)  # fmt: skip
    return Session(**{**base, **kw})


def test_starter_alive_checks_the_process_not_only_the_pid():
    host = os.uname().nodename
    me = os.getpid()
    assert starter_alive(_session(starter_pid=me, starter_host=host,
                                  starter_start=process_start(me)))  # fmt: skip
    # the same pid, started at another time: the pid was reused by another process
    assert not starter_alive(_session(starter_pid=me, starter_host=host, starter_start="b:1"))
    # a process that exited (reaped)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = process_start(child.pid)
    child.wait()
    assert not starter_alive(_session(starter_pid=child.pid, starter_host=host,
                                      starter_start=recorded))  # fmt: skip
    # a zombie (exited, not reaped yet) is gone too
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = process_start(zombie.pid)
    retry_until(lambda: _state(zombie.pid) == "Z")
    assert not starter_alive(_session(starter_pid=zombie.pid, starter_host=host,
                                      starter_start=recorded))  # fmt: skip
    zombie.wait()
    # another machine's process cannot be checked from here: never taken over
    assert starter_alive(_session(starter_pid=1, starter_host="elsewhere", starter_start="x"))
    # no starter recorded (rows older than m007): only the driver decides
    assert not starter_alive(_session())


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(") ", 1)[1][:1]


# -- a real run, SIGKILLed at each phase of its start ---------------------------------------------


def start_held(cli, tmp_path: Path, point: str, name: str, *extra: str, detach: bool = False):
    """``sandboxrun run`` held at ``point``; returns (process, the held pid, the gate)."""
    gate = tmp_path / f"gate-{name}"
    args = ["run", "--backend", "local", "--no-isolation", "--name", name, "--prompt",
            "@write out.txt hi", *extra, *(["--detach"] if detach else [])]  # fmt: skip
    proc = cli.popen(*args, env={"SANDBOXRUN_TEST_HOLD": f"{point}:{gate}"})
    reached = Path(f"{gate}.reached")
    # (a detached start returns at once; its driver reaches the point later)
    retry_until(lambda: reached.exists() or (not detach and proc.poll() is not None), timeout=120)
    assert reached.exists(), proc.communicate()
    return proc, int(reached.read_text()), gate


def kill9(pid: int, proc: subprocess.Popen | None = None) -> None:
    os.kill(pid, signal.SIGKILL)
    if proc is not None and proc.pid == pid:
        proc.wait()
    else:  # a detached driver is not our child: wait until it is gone
        retry_until(lambda: not Path(f"/proc/{pid}").exists() or _state(pid) == "Z")


def leftovers(home: Path, session_id: str) -> list[str]:
    art = home / "artifacts" / session_id
    return sorted(p.name for p in art.glob("*upload.tar*")) if art.exists() else []


POINTS = {
    # point: (the status it is held in, whether a tarball / sandbox exists there)
    "created": ("created", False, False),
    "packing": ("packing", False, False),
    "packing-tarball": ("packing", True, False),
    "provisioning": ("provisioning", True, False),
    "sandbox-created": ("provisioning", True, True),
}


@pytest.mark.parametrize(
    ("point", "finish"),
    [
        pytest.param("created", "kill", marks=pytest.mark.slow),
        pytest.param("packing", "attach", marks=pytest.mark.slow),
        ("packing-tarball", "kill"),
        pytest.param("provisioning", "attach", marks=pytest.mark.slow),
        pytest.param("sandbox-created", "kill", marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_each_phase(cli, repo, tmp_path, isolated_env, point, finish):
    status, tarball, sandbox = POINTS[point]
    before = (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"))
    proc, pid, _gate = start_held(cli, tmp_path, point, "victim")
    kill9(pid, proc)

    row = cli.status("victim")
    assert row["status"] == status and row["interrupted"] is True, row
    follow = cli("logs", "victim", "--follow")  # ends (exit 1) instead of waiting forever
    assert follow.returncode == 1 and "sandboxrun kill victim" in follow.stderr, follow
    assert row["next"] == ["sandboxrun kill victim"]
    table = cli("status").stdout
    assert "interrupted" in table, table
    one = cli("status", "victim").stdout
    assert f"interrupted while {status}" in one and f"process {pid} is gone" in one, one
    if tarball:
        assert leftovers(isolated_env, row["id"]), "the start wrote (part of) its upload"
    sandbox_dir = isolated_env / "sandboxes" / row["id"]
    assert sandbox_dir.exists() is sandbox

    # cleanup removes the upload it left (the row stays for kill/attach to end)
    report = cli.json("cleanup")
    assert report["interrupted"] == ["victim"] and report["orphans"] == []
    assert leftovers(isolated_env, row["id"]) == []
    assert cli.status("victim")["interrupted"] is True
    assert not sandbox_dir.exists()

    worktree = repo / ".worktrees" / "victim"
    assert worktree.exists() and git(repo, "branch", "--list", "sandboxrun/victim").strip()
    done = cli(finish, "victim")
    assert done.returncode == (0 if finish == "kill" else 1), done.stderr
    assert "Traceback" not in done.stderr
    end = cli.status("victim")
    assert end["status"] == ("killed" if finish == "kill" else "failed"), end
    assert end["interrupted"] is False and f"interrupted while {status}" in end["error"]
    # the worktree and branch held only the base commit: gone; nothing else of the user's
    assert not worktree.exists()
    assert git(repo, "branch", "--list", "sandboxrun/victim").strip() == ""
    assert (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")) == before
    # and a second kill says it already ended
    again = cli("kill", "victim")
    assert again.returncode == 1 and "already ended" in again.stderr


def test_work_in_the_worktree_is_never_removed(cli, repo, tmp_path):
    """--with-changes commits the user's changes on the branch; a file added later is work too."""
    (repo / "src" / "app.py").write_text("print('changed by the user')\n")
    proc, pid, _ = start_held(cli, tmp_path, "packing", "carried", "--with-changes")
    kill9(pid, proc)
    proc, pid, _ = start_held(cli, tmp_path, "packing", "untracked")
    kill9(pid, proc)
    (repo / ".worktrees" / "untracked" / "notes.txt").write_text("mine\n")
    proc, pid, _ = start_held(cli, tmp_path, "packing", "ignored")
    kill9(pid, proc)
    (repo / ".worktrees" / "ignored" / "debug.log").write_text("ignored, but mine\n")

    for name in ("carried", "untracked", "ignored"):
        assert cli.status(name)["interrupted"] is True
        done = cli("kill", name)
        assert done.returncode == 0, done.stderr
        assert (repo / ".worktrees" / name).exists()
        assert git(repo, "branch", "--list", f"sandboxrun/{name}").strip()
    carried = repo / ".worktrees" / "carried" / "src" / "app.py"
    assert carried.read_text() == "print('changed by the user')\n"
    assert (repo / ".worktrees" / "untracked" / "notes.txt").read_text() == "mine\n"
    assert (repo / ".worktrees" / "ignored" / "debug.log").read_text() == "ignored, but mine\n"
    out = cli("logs", "carried", "--json").stdout
    events = [json.loads(line) for line in out.splitlines()]
    kept = [e for e in events if e["kind"] == "interrupted"][0]["payload"]["kept"]
    assert any("not at its base commit" in k for k in kept), kept


def test_a_start_in_progress_is_not_interrupted(cli, repo, tmp_path):
    """Held but alive: status says packing, cleanup leaves it alone, and the run completes."""
    proc, pid, gate = start_held(cli, tmp_path, "packing-tarball", "alive")
    row = cli.status("alive")
    assert row["status"] == "packing" and row["interrupted"] is False
    assert "sandboxrun logs alive --follow" in row["next"]
    report = cli.json("cleanup")
    assert report["interrupted"] == [] and report["files_removed"] == []
    gate.touch()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert cli.status("alive")["status"] == "completed"


@pytest.mark.slow
def test_detached_driver_killed_while_provisioning(cli, repo, tmp_path, isolated_env):
    proc, pid, _ = start_held(cli, tmp_path, "provisioning", "bg", detach=True)
    assert pid != proc.pid  # the detached driver, not the `run` that started it
    proc.wait()
    assert cli.status("bg")["interrupted"] is False  # its driver is alive, held
    kill9(pid)
    row = cli.status("bg")
    assert row["interrupted"] is True and row["driver_alive"] is False
    assert cli("kill", "bg").returncode == 0
    assert cli.status("bg")["status"] == "killed"
    assert leftovers(isolated_env, row["id"]) == []


def test_pid_reused_by_another_process(cli, repo, tmp_path):
    """The starter's pid now belongs to a live, unrelated process: still interrupted."""
    from sandboxrun.config import load_settings
    from sandboxrun.store import SessionStore

    proc, pid, _ = start_held(cli, tmp_path, "packing", "reused")
    kill9(pid, proc)
    store = SessionStore(load_settings().db_path)
    s = store.resolve("reused")
    # what a reused pid looks like: alive, but started at another time than the one recorded
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        store.update(s.id, starter_pid=sleeper.pid, starter_start=None, owner_pid=None)
        assert starter_alive(store.get(s.id))  # a start recorded without its time: trusted
        assert cli.status("reused")["interrupted"] is False
        store.update(s.id, starter_start=f"{process_start(sleeper.pid)}-earlier")
        assert cli.status("reused")["interrupted"] is True
        assert cli("kill", "reused").returncode == 0
        assert cli.status("reused")["status"] == "killed"
    finally:
        sleeper.kill()
        sleeper.wait()
