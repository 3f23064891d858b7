"""Local mode as a new user meets it: a child that cannot start says why and leaves nothing
behind, a name held by another session is refused before anything is made for it, and `send`
never types into some children and then fails on a name further on; a failed message says
what to do next. A real tmux server on its own socket, real git, real SQLite, `sandboxrun` run
as a process."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from sbr_testlib import CLI, db_rows, edge_error, git, git_project, private_tmux

from sandboxrun.local.spawn import SpawnRequest, exit_lines, root_refusal
from sandboxrun.store import SessionStore, Status
from sandboxrun.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def tmux(monkeypatch):
    """A private tmux server (TMUX/TMUX_PANE unset), named to sandboxrun, killed after."""
    monkeypatch.setenv("PROJECT_PREFIX", "t")
    with private_tmux(monkeypatch) as server:
        yield server


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return git_project(tmp_path / "proj", {"app.txt": "hello\n"})


def _store() -> SessionStore:
    return SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")


def _nothing_made(proj: Path, tmux: Tmux, name: str) -> None:
    assert not (proj / ".worktrees" / name).exists()
    assert git(proj, "branch", "--list", f"agent/{name}/active").strip() == ""
    assert tmux.sessions() == []


@pytest.mark.parametrize(
    ("req", "euid", "env", "refused"),
    [
        (SpawnRequest("a", "t", skip_permissions=True), 0, {}, True),
        (SpawnRequest("a", "t", permission_mode="bypassPermissions"), 0, {}, True),
        (SpawnRequest("a", "t", skip_permissions=True), 0, {"IS_SANDBOX": "1"}, False),
        (SpawnRequest("a", "t", skip_permissions=True), 1000, {}, False),
        (SpawnRequest("a", "t", permission_mode="acceptEdits"), 0, {}, False),
        (SpawnRequest("a", "t"), 0, {}, False),
    ],
)
def test_root_refusal_is_decided_before_anything_starts(req, euid, env, refused):
    got = root_refusal(req, euid, env)
    assert (got is not None) == refused
    if got:
        message, hint = got
        assert "root" in message and "IS_SANDBOX=1" in hint and "ordinary user" in hint


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is about running as root")
@pytest.mark.parametrize(
    "flags", [["--skip-permissions"], ["--permission-mode", "bypassPermissions"]]
)
def test_spawn_as_root_skipping_permissions_says_why_and_makes_nothing(
    proj, tmux, monkeypatch, flags
):
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    runs = [["spawn", "api", "--prompt", "hi", *flags]]
    if flags == ["--skip-permissions"]:  # the master takes no --permission-mode
        runs.append(["master", "start", *flags])
    for args in runs:
        proc = CLI(proj)(*args)
        assert proc.returncode == 1, proc.stderr
        message, hint = edge_error(proc.stderr)
        assert "as root" in message and "nothing was started" in message
        assert hint and "IS_SANDBOX=1" in hint
        _nothing_made(proj, tmux, "api")
    assert db_rows("SELECT name FROM sessions") == []


def test_a_claude_that_exits_at_once_says_how_to_see_why(proj, tmux, tmp_path):
    """tmux may drop the last words of a program that exits at once: the error then says the
    screen showed nothing and the hint gives the exact command that shows why, by hand. The
    row is failed, the tmux session ended (no row says running with nothing behind it)."""
    broken = tmp_path / "broken claude"  # a space in the path: the command is quoted
    broken.write_text("#!/bin/sh\necho 'boom: this claude cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    env = {"SANDBOXRUN_CLAUDE_BIN": str(broken)}
    proc = CLI(proj)("spawn", "api", "--prompt", "hi", "--model", "m-1", env=env)
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    # the status, when tmux has it yet; never a placeholder
    assert "claude exited at start" in message and "None" not in message and "?" not in message
    assert "(status" not in message or "(status 3)" in message
    assert "boom: this claude cannot start" in message or "showed anything" in message
    assert "Pane is dead" not in message
    assert hint and f"cd {proj / '.worktrees' / 'api'} && '{broken}' --model m-1" in hint
    assert [r["status"] for r in db_rows("SELECT status FROM sessions")] == ["failed"]
    assert tmux.sessions() == []


def test_a_broken_mcp_json_leaves_no_running_row(proj, tmux):
    (proj / ".mcp.json").write_text("garbage{")
    git(proj, "add", ".mcp.json")
    git(proj, "commit", "-q", "-m", "a broken .mcp.json")
    cli = CLI(proj)
    proc = cli("spawn", "api", "--prompt", "hi")
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert ".mcp.json" in message and hint
    assert db_rows("SELECT status FROM sessions") == []
    assert tmux.sessions() == []
    # the master refuses it the same way: a failed row at most, never a running one
    proc = cli("master", "start")
    assert proc.returncode == 1 and ".mcp.json" in edge_error(proc.stderr)[0]
    assert {r["status"] for r in db_rows("SELECT status FROM sessions")} <= {"failed"}
    assert tmux.sessions() == []


def test_exit_lines_skip_blank_lines_and_the_dead_pane_banner():
    screen = "boom\n" + "\n" * 40 + "Pane is dead (status 1, Tue Dec  1 03:41:24 2026)\n"
    assert exit_lines(screen) == ["boom"]
    assert exit_lines("a\nb\nc\n\nd\ne\nf\n", keep=3) == ["d", "e", "f"]


def test_a_name_held_by_a_sandbox_run_is_refused_before_a_worktree_is_made(proj, tmux):
    store = _store()
    store.create_session(
        name="web", mode="sandbox", backend="local", status=Status.RUNNING, repo=str(proj),
        started_at=time.time(),
    )  # fmt: skip
    store.close()
    proc = CLI(proj)("spawn", "web", "--prompt", "hi")
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "already exists" in message and hint and "another name" in hint
    _nothing_made(proj, tmux, "web")


def test_a_name_whose_worktree_path_is_taken_says_by_what(proj, tmux):
    """Another branch's worktree (e.g. a sandbox run's `.worktrees/NAME`) or a stray directory
    at the child's path: the error names the holder, the hint a name change, and nothing there
    is touched."""
    git(proj, "worktree", "add", "-q", "-b", "sandboxrun/web", str(proj / ".worktrees" / "web"))
    (proj / ".worktrees" / "web" / "work.txt").write_text("uncommitted\n")
    stray = proj / ".worktrees" / "docs"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine\n")
    cli = CLI(proj)
    proc = cli("spawn", "web", "--prompt", "hi")
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "already the worktree of sandboxrun/web" in message
    assert hint and "another name than 'web'" in hint and "setup again" not in hint
    proc = cli("worktree", "setup", "docs")
    message, hint = edge_error(proc.stderr)
    assert proc.returncode == 1 and "not a git worktree" in message
    assert hint and "another name than 'docs'" in hint
    assert (proj / ".worktrees" / "web" / "work.txt").read_text() == "uncommitted\n"
    assert (stray / "notes.txt").read_text() == "mine\n"
    assert git(proj, "branch", "--list", "agent/*").strip() == ""
    assert db_rows("SELECT name FROM sessions") == [] and tmux.sessions() == []
