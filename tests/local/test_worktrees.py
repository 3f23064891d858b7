"""`sandboxrun worktree ...` on real repositories, through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sbr_testlib import CLI, commit_file, run_on_pty
from sbr_testlib import plain_git as git


@pytest.fixture
def sbr(proj: Path) -> CLI:
    return CLI(proj)


def rev(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def test_setup_creates_worktree_branch_and_scoped_identity(sbr, proj):
    out = sbr("worktree", "setup", "backend")
    assert out.returncode == 0, out.stderr
    wt = proj / ".worktrees" / "backend"
    assert "created" in out.stdout and wt.is_dir()
    assert git(wt, "branch", "--show-current").strip() == "agent/backend/active"
    assert rev(wt, "HEAD") == rev(proj, "main")
    # The identity is the worktree's own; the main checkout keeps the user's.
    assert git(wt, "config", "user.email").strip() == "backend@agents.sandboxrun.invalid"
    assert git(wt, "config", "user.name").strip() == "backend agent"
    assert git(proj, "config", "user.email").strip() == "human@example.com"
    commit_file(wt, "b.txt", "b\n")
    author = subprocess.run(
        ["git", "-C", str(wt), "log", "-1", "--format=%ae"], capture_output=True, text=True
    ).stdout.strip()
    assert author == "backend@agents.sandboxrun.invalid"
    # .worktrees/ is excluded locally, never in a tracked file.
    assert "/.worktrees/" in (proj / ".git" / "info" / "exclude").read_text()
    assert not (proj / ".gitignore").exists()
    assert git(proj, "status", "--porcelain").strip() == ""


def test_setup_twice_says_exists_and_changes_nothing(sbr, proj):
    assert sbr("worktree", "setup", "qa").returncode == 0
    head = rev(proj, "agent/qa/active")
    config = (proj / ".git" / "config").read_text()
    again = sbr("worktree", "setup", "qa")
    assert again.returncode == 0 and "exists" in again.stdout
    assert rev(proj, "agent/qa/active") == head
    assert (proj / ".git" / "config").read_text() == config


def test_setup_from_base_and_config_keys(sbr, proj):
    commit_file(proj, "second.txt", "2\n")
    (proj / ".env.local").write_text("LOCAL=1\n")
    (proj / ".sandboxrun.toml").write_text(
        'branch_template = "work/{role}"\n'
        'copy_files = [".env.local", "missing.txt"]\n'
        'post_create = ["sh", "-c", "echo made > created.txt"]\n'
        "[identities.api]\n"
        'name = "API Bot"\n'
        'email = "api@example.org"\n'
    )
    out = sbr("worktree", "setup", "api", "--base", "HEAD~1")
    assert out.returncode == 0, out.stderr
    wt = proj / ".worktrees" / "api"
    assert rev(wt, "HEAD") == rev(proj, "HEAD~1")
    assert git(wt, "branch", "--show-current").strip() == "work/api"
    assert git(wt, "config", "user.email").strip() == "api@example.org"
    assert (wt / ".env.local").read_text() == "LOCAL=1\n"
    assert (wt / "created.txt").read_text() == "made\n"
    assert "missing.txt does not exist" in out.stderr


def test_copy_files_never_default_and_never_outside(sbr, proj):
    (proj / ".env.local").write_text("LOCAL=1\n")
    assert sbr("worktree", "setup", "one").returncode == 0
    assert not (proj / ".worktrees" / "one" / ".env.local").exists()
    (proj / ".sandboxrun.toml").write_text('copy_files = ["../outside"]\n')
    out = sbr("worktree", "setup", "two")
    assert out.returncode == 2 and "inside the repository" in out.stderr


def test_post_create_failure_is_reported(sbr, proj):
    (proj / ".sandboxrun.toml").write_text('post_create = "false"\n')
    out = sbr("worktree", "setup", "x")
    assert out.returncode == 1 and "post_create" in out.stderr
    assert (proj / ".worktrees" / "x").is_dir()  # the worktree stays, the failure is said


@pytest.mark.parametrize(
    "role", ["", "..", "a/b", "a b", "x" * 65, "_lead", "a..b", "name.lock", "ü"]
)
@pytest.mark.parametrize("command", ["setup", "teardown", "merge"])
def test_invalid_role_names_are_usage_errors(sbr, proj, command, role):
    out = sbr("worktree", command, role)
    assert out.returncode == 2, out.stderr
    assert "1-64 letters" in out.stderr
    assert not (proj / ".worktrees").exists()


@pytest.mark.parametrize("command", ["setup", "teardown", "merge"])
def test_missing_role_is_a_usage_error_with_the_rules(sbr, command):
    out = sbr("worktree", command)
    assert out.returncode == 2 and "role name is required" in out.stderr
    assert "1-64 letters" in out.stderr


def test_allowed_roles_and_pm_role(sbr, proj):
    (proj / ".sandboxrun.toml").write_text('roles = ["pm", "backend"]\npm_role = "pm"\n')
    out = sbr("worktree", "setup", "frontend")
    assert out.returncode == 2 and "not in the allowed roles (pm, backend)" in out.stderr
    out = sbr("worktree", "setup", "pm")
    assert out.returncode == 2 and "main checkout" in out.stderr
    assert sbr("worktree", "setup", "backend").returncode == 0


def test_not_a_repo_and_bad_base(sbr, proj, tmp_path):
    for args in (["setup", "a"], ["list"], ["teardown", "a"], ["merge", "a"]):
        out = sbr("worktree", *args, cwd=tmp_path)
        assert out.returncode == 1 and "not inside a git repository" in out.stderr, args
    out = sbr("worktree", "setup", "a", "--base", "no-such-ref")
    assert out.returncode == 1 and "no-such-ref" in out.stderr
    assert not (proj / ".worktrees" / "a").exists()
    assert git(proj, "branch", "--list", "agent/*").strip() == ""


@pytest.mark.slow
def test_eight_setups_at_once(proj):
    roles = [f"r{i}" for i in range(8)]
    procs = [CLI(proj).popen("worktree", "setup", r) for r in roles]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outs
    listed = CLI(proj).json("worktree", "list")
    assert sorted(i["role"] for i in listed) == roles
    for r in roles:
        wt = proj / ".worktrees" / r
        assert git(wt, "config", "user.email").strip() == f"{r}@agents.sandboxrun.invalid"
    assert git(proj, "worktree", "list").count("agent/") == 8


def test_list_empty_and_details(sbr, proj):
    assert sbr.json("worktree", "list") == []
    assert "No agent worktrees" in sbr("worktree", "list").stdout
    sbr("worktree", "setup", "a")
    wt = proj / ".worktrees" / "a"
    commit_file(wt, "a.txt", "a\n")
    commit_file(proj, "m.txt", "m\n")
    (wt / "dirty.txt").write_text("untracked\n")
    (info,) = sbr.json("worktree", "list")
    assert info["role"] == "a" and info["branch"] == "agent/a/active"
    assert info["path"] == str(wt) and info["head"] == rev(wt, "HEAD")
    assert info["dirty"] is True and (info["ahead"], info["behind"]) == (1, 1)
    assert info["presence"] is None
    # A sandbox-run worktree under .worktrees/ is not an agent worktree.
    git(proj, "worktree", "add", "-q", "-b", "sandboxrun/other", str(proj / ".worktrees" / "other"))
    assert [i["role"] for i in sbr.json("worktree", "list")] == ["a"]


def test_merge_fast_forward_in_clean_checkout(sbr, proj):
    sbr("worktree", "setup", "a")
    head = commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    out = sbr("worktree", "merge", "a", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["how"] == "fast-forward" and result["where"] == str(proj)
    assert rev(proj, "main") == head and (proj / "a.txt").exists()
    again = sbr("worktree", "merge", "a")
    assert again.returncode == 0 and "already merged" in again.stdout


def test_merge_commit_when_target_checked_out_nowhere(sbr, proj):
    sbr("worktree", "setup", "a")
    git(proj, "switch", "-q", "-c", "elsewhere")
    a_head = commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    git(proj, "switch", "-q", "main")
    main_head = commit_file(proj, "m.txt", "m\n")
    git(proj, "switch", "-q", "elsewhere")
    (proj / "user-work.txt").write_text("mine\n")  # the user's checkout: never touched
    out = sbr("worktree", "merge", "a", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["how"] == "merge-commit" and result["where"] is None
    parents = git(proj, "rev-list", "--parents", "-n", "1", "main").split()[1:]
    assert parents == [main_head, a_head]
    assert set(git(proj, "ls-tree", "--name-only", "main").split()) >= {"a.txt", "m.txt"}
    assert git(proj, "branch", "--show-current").strip() == "elsewhere"
    assert git(proj, "status", "--porcelain").strip() == "?? user-work.txt"


def test_merge_fast_forward_ref_only(sbr, proj):
    sbr("worktree", "setup", "a")
    git(proj, "switch", "-q", "-c", "elsewhere")
    head = commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    out = sbr("worktree", "merge", "a")
    assert out.returncode == 0 and "checked out nowhere" in out.stdout
    assert rev(proj, "main") == head
    assert not (proj / "a.txt").exists()


@pytest.mark.parametrize("checked_out", [True, False])
def test_merge_conflict_changes_nothing(sbr, proj, checked_out):
    sbr("worktree", "setup", "a")
    commit_file(proj / ".worktrees" / "a", "app.txt", "agent\n")
    commit_file(proj, "app.txt", "human\n")
    if not checked_out:
        git(proj, "switch", "-q", "-c", "elsewhere")
    before = rev(proj, "main")
    out = sbr("worktree", "merge", "a")
    assert out.returncode == 1
    assert "conflicts in: app.txt" in out.stderr and "Nothing was changed" in out.stderr
    assert rev(proj, "main") == before
    assert git(proj, "status", "--porcelain").strip() == ""
    assert not (proj / ".git" / "MERGE_HEAD").exists()


def test_merge_refuses_dirty_target_checkout(sbr, proj):
    sbr("worktree", "setup", "a")
    commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    (proj / "app.txt").write_text("edited, not committed\n")
    before = rev(proj, "main")
    out = sbr("worktree", "merge", "a")
    assert out.returncode == 1 and "uncommitted changes" in out.stderr
    assert rev(proj, "main") == before
    assert (proj / "app.txt").read_text() == "edited, not committed\n"


def test_merge_into_other_branch_and_unknown(sbr, proj):
    sbr("worktree", "setup", "a")
    git(proj, "branch", "release")
    head = commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    assert sbr("worktree", "merge", "a", "--into", "release").returncode == 0
    assert rev(proj, "release") == head
    out = sbr("worktree", "merge", "a", "--into", "nope")
    assert out.returncode == 1 and "'nope' does not exist" in out.stderr
    out = sbr("worktree", "merge", "ghost")
    assert out.returncode == 1 and "no agent worktree for role 'ghost'" in out.stderr


def test_teardown_refuses_dirty_then_abandon(sbr, proj):
    sbr("worktree", "setup", "a")
    wt = proj / ".worktrees" / "a"
    (wt / "wip.txt").write_text("unsaved\n")
    out = sbr("worktree", "teardown", "a")
    assert out.returncode == 1 and "uncommitted changes" in out.stderr
    assert (wt / "wip.txt").exists()
    out = sbr("worktree", "teardown", "a", "--abandon")
    assert out.returncode == 0, out.stderr
    assert not wt.exists()
    assert "kept" in out.stdout and rev(proj, "agent/a/active")  # branch kept without a flag


def test_teardown_unmerged_branch_is_kept_even_with_delete_branch(sbr, proj):
    sbr("worktree", "setup", "a")
    head = commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    out = sbr("worktree", "teardown", "a", "--delete-branch")
    assert out.returncode == 0 and "not merged" in out.stdout
    assert rev(proj, "agent/a/active") == head
    # Setting it up again carries on from the kept branch.
    again = sbr("worktree", "setup", "a")
    assert again.returncode == 0 and rev(proj / ".worktrees" / "a", "HEAD") == head


def test_teardown_merge_deletes_merged_branch(sbr, proj):
    sbr("worktree", "setup", "a")
    head = commit_file(proj / ".worktrees" / "a", "a.txt", "a\n")
    out = sbr("worktree", "teardown", "a", "--merge")
    assert out.returncode == 0, out.stderr
    assert rev(proj, "main") == head
    assert git(proj, "branch", "--list", "agent/a/active").strip() == ""


def test_teardown_merge_conflict_leaves_everything(sbr, proj):
    sbr("worktree", "setup", "a")
    wt = proj / ".worktrees" / "a"
    commit_file(wt, "app.txt", "agent\n")
    commit_file(proj, "app.txt", "human\n")
    out = sbr("worktree", "teardown", "a", "--merge")
    assert out.returncode == 1 and "app.txt" in out.stderr
    assert wt.is_dir() and rev(proj, "agent/a/active")


def test_teardown_bad_input(sbr, proj):
    out = sbr("worktree", "teardown", "ghost")
    assert out.returncode == 1 and "no agent worktree for role 'ghost'" in out.stderr
    sbr("worktree", "setup", "a")
    out = sbr("worktree", "teardown", "a", "--merge", "--abandon")
    assert out.returncode == 2 and "exclude each other" in out.stderr
    assert (proj / ".worktrees" / "a").is_dir()


def test_worktree_help_teaches():
    out = subprocess.run(
        [sys.executable, "-m", "sandboxrun", "worktree", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "setup" in out.stdout and "teardown" in out.stdout


@pytest.mark.parametrize(("answer", "removed"), [(b"n", False), (b"y", True)])
def test_teardown_of_dirty_worktree_asks_on_a_terminal(sbr, proj, answer, removed):
    sbr("worktree", "setup", "a")
    wt = proj / ".worktrees" / "a"
    (wt / "wip.txt").write_text("unsaved\n")
    code, output = run_on_pty(["worktree", "teardown", "a"], proj, sbr.env(), b"Discard", answer)
    assert b"uncommitted changes" in output
    assert (code, wt.exists()) == ((0, False) if removed else (1, True)), output
