"""`status` and `cleanup` scoped to the repository you are in, and `cleanup --branches`.

Real repositories and real session rows; the CLI as a real process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sbr_testlib import CLI, git
from test_cli_output import add_session


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "f.txt").write_text("x\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


@pytest.fixture
def two_repos(tmp_path):
    a = make_repo(tmp_path / "alpha")
    b = make_repo(tmp_path / "beta")
    add_session(a, "a-done", status="completed", ended_at=time.time())
    add_session(a, "a-run", status="running", started_at=time.time(), deadline=time.time() + 99)
    add_session(b, "b-done", status="completed", ended_at=time.time())
    return a, b


def names(cli: CLI, *args: str, cwd: Path | None = None) -> list[str]:
    proc = cli("status", *args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [s["name"] for s in json.loads(proc.stdout)]


def test_status_shows_the_current_repository_by_default(two_repos, tmp_path):
    a, b = two_repos
    cli = CLI(a)
    assert names(cli) == ["a-done", "a-run"]
    assert names(cli, cwd=b / ".") == ["b-done"]
    assert names(cli, "--all") == ["a-done", "a-run", "b-done"]
    assert names(cli, "--repo", str(b)) == ["b-done"]
    assert names(cli, "--active") == ["a-run"]
    # outside any repository: every repository, with a REPO column
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert names(cli, cwd=outside) == ["a-done", "a-run", "b-done"]
    table = cli("status", cwd=outside).stdout
    assert "REPO" in table.splitlines()[0] and str(b) in table


def test_status_table_has_branch_age_and_time_left(two_repos):
    a, _ = two_repos
    table = CLI(a)("status").stdout.splitlines()
    header = table[0].split()
    assert header[:7] == ["ID", "NAME", "STATUS", "BRANCH", "AGE", "LEFT", "BACKEND"]
    running = next(line for line in table if "a-run" in line)
    assert "sandboxrun/a-run" in running
    assert "1m" in running  # time left: 1m39s or a little less


def test_status_says_what_is_empty(two_repos, tmp_path):
    _, b = two_repos
    cli = CLI(b)
    proc = cli("status", "--active")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"No active sessions for {b}.")
    c = make_repo(tmp_path / "gamma")
    empty = cli("status", cwd=c)
    assert f"No sessions for {c} yet." in empty.stdout and "--all" in empty.stdout


def test_status_with_no_sessions_at_all(cli):
    proc = cli("status")
    assert proc.returncode == 0
    assert "No sessions" in proc.stdout and "sandboxrun run" in proc.stdout


def test_cleanup_forget_stays_in_this_repository_and_says_what_stays(two_repos):
    a, b = two_repos
    wt = a / ".worktrees" / "a-done"
    git(a, "worktree", "add", "-q", "-b", "sandboxrun/a-done", str(wt))
    cli = CLI(a)
    proc = cli("cleanup", "--forget")
    assert proc.returncode == 0, proc.stderr
    assert "forgot 1 session(s)" in proc.stdout
    assert f"a-done is forgotten; still on disk: worktree {wt}" in proc.stdout
    assert names(cli, "--all") == ["a-run", "b-done"]  # beta's session is untouched
    assert wt.is_dir()

    everywhere = cli("cleanup", "--forget", "--all", "--json")
    report = json.loads(everywhere.stdout)
    assert report["forgotten"] == ["b-done"]
    assert names(cli, "--all") == ["a-run"]


def test_cleanup_outside_a_repository_needs_all(cli, tmp_path):
    outside = tmp_path / "nowhere"
    outside.mkdir()
    proc = cli("cleanup", "--forget", cwd=outside)
    assert proc.returncode == 2
    assert "not inside a git repository" in proc.stderr and "--all" in proc.stderr


def test_cleanup_branches_deletes_only_merged_ones(tmp_path):
    repo = make_repo(tmp_path / "r")
    cli = CLI(repo)
    base = git(repo, "rev-parse", "HEAD").strip()
    # merged: nothing beyond main (an agent that changed nothing), and one merged into main
    git(repo, "branch", "sandboxrun/empty")
    add_session(repo, "empty", status="completed_no_changes", ended_at=time.time())
    git(repo, "checkout", "-q", "-b", "sandboxrun/merged")
    (repo / "m.txt").write_text("m\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "m")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--ff-only", "sandboxrun/merged")
    # not merged, and one still checked out in its worktree
    git(repo, "checkout", "-q", "-b", "sandboxrun/unmerged", base)
    (repo / "u.txt").write_text("u\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "u")
    git(repo, "checkout", "-q", "main")
    git(repo, "worktree", "add", "-q", "-b", "sandboxrun/busy", str(repo / ".worktrees" / "busy"))
    git(repo, "branch", "keep-me")  # not ours: never looked at

    dry = cli("cleanup", "--branches", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete branch sandboxrun/empty" in dry.stdout
    assert "would delete branch sandboxrun/merged" in dry.stdout
    assert "kept branch sandboxrun/unmerged: has commits not merged into main" in dry.stdout
    assert "kept branch sandboxrun/busy: checked out in" in dry.stdout
    assert "sandboxrun/empty" in git(repo, "branch", "--list", "sandboxrun/*")

    proc = cli("cleanup", "--branches")
    assert proc.returncode == 0, proc.stderr
    left = git(repo, "branch", "--list", "sandboxrun/*", "--format=%(refname:short)").split()
    assert sorted(left) == ["sandboxrun/busy", "sandboxrun/unmerged"]
    assert "keep-me" in git(repo, "branch")

    # with --worktrees the clean worktree of an ended session goes first, then its branch
    add_session(
        repo,
        "busy",
        status="completed",
        ended_at=time.time(),
        worktree=str(repo / ".worktrees" / "busy"),
    )
    both = cli("cleanup", "--worktrees", "--branches")
    assert both.returncode == 0, both.stderr
    left = git(repo, "branch", "--list", "sandboxrun/*", "--format=%(refname:short)").split()
    assert left == ["sandboxrun/unmerged"]


def test_cleanup_branches_never_touches_a_running_session(tmp_path):
    repo = make_repo(tmp_path / "r")
    git(repo, "branch", "sandboxrun/live")
    add_session(repo, "live", status="running", started_at=time.time())
    proc = CLI(repo)("cleanup", "--branches")
    assert proc.returncode == 0, proc.stderr
    assert "kept branch sandboxrun/live: session live is still running on it" in proc.stdout
    assert "sandboxrun/live" in git(repo, "branch")
