"""Removing a worktree never deletes ignored files worth keeping without an explicit flag: `git
worktree remove` deletes ignored files with the tree (a `.env`, local notes), so `worktree
teardown` and `close --remove-worktree` refuse them, naming a few and a count; caches, build
output and unchanged `copy_files` copies never block. Real git, real SQLite, real tmux on its
own socket, `sandboxrun` run as a process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import test_qa2_local as _local
from sbr_testlib import CLI, edge_error, git

from sandboxrun.config import load_settings
from sandboxrun.local.close import CloseRefusedError, close
from sandboxrun.local.keep import describe, is_clutter, worth_keeping
from sandboxrun.store import SessionStore, Status

tmux = _local.tmux
proj = _local.proj


@pytest.mark.parametrize(
    ("rel", "clutter"),
    [
        ("__pycache__/", True),
        ("pkg/__pycache__/", True),
        ("node_modules/", True),
        ("mod.pyc", True),
        ("src/thing.egg-info/", True),
        (".DS_Store", True),
        (".env", False),
        ("notes/", False),
        ("secrets/prod.key", False),
        ("distribution.txt", False),
    ],
)
def test_is_clutter(rel, clutter):
    assert is_clutter(rel) is clutter


def test_worth_keeping_leaves_out_unchanged_copies_and_describes_a_few():
    assert worth_keeping([".env.local", ".env", "x.pyc"], {".env.local"}) == [".env"]
    assert describe(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
    assert describe(["a"]) == "a"


def _ignoring(proj: Path, *patterns: str) -> None:
    (proj / ".gitignore").write_text("".join(p + "\n" for p in patterns))
    git(proj, "add", ".gitignore")
    git(proj, "commit", "-qm", "ignore")


def test_teardown_refuses_ignored_files_then_abandon_removes_keeping_the_branch(proj):
    _ignoring(proj, ".env", "notes/", "__pycache__/", "node_modules/", "*.log")
    cli = CLI(proj)
    assert cli("worktree", "setup", "a").returncode == 0
    wt = proj / ".worktrees" / "a"
    (wt / ".env").write_text("TOKEN=mine\n")
    (wt / "notes").mkdir()
    (wt / "notes" / "plan.md").write_text("todo\n")
    for i in range(3):
        (wt / f"run{i}.log").write_text("x\n")
    (wt / "__pycache__").mkdir()
    (wt / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (wt / "node_modules" / "left-pad").mkdir(parents=True)
    out = cli("worktree", "teardown", "a")
    assert out.returncode == 1
    message, hint = edge_error(out.stderr)
    assert "5 ignored file(s)" in message and ".env" in message and "2 more" in message
    assert "__pycache__" not in message and "node_modules" not in message
    assert "--abandon" in (hint or "")
    assert (wt / ".env").read_text() == "TOKEN=mine\n"  # nothing removed
    out = cli("worktree", "teardown", "a", "--abandon")
    assert out.returncode == 0, out.stderr
    assert not wt.exists()
    assert git(proj, "branch", "--list", "agent/a/active").strip()  # the branch stays


def test_teardown_with_only_clutter_and_unchanged_copies_goes_ahead(proj):
    _ignoring(proj, ".env.local", "__pycache__/", "dist/")
    (proj / ".env.local").write_text("LOCAL=1\n")
    (proj / ".sandboxrun.toml").write_text('copy_files = [".env.local"]\n')
    cli = CLI(proj)
    assert cli("worktree", "setup", "a").returncode == 0
    wt = proj / ".worktrees" / "a"
    assert (wt / ".env.local").is_file()
    (wt / "__pycache__").mkdir()
    (wt / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (wt / "dist").mkdir()
    (wt / "dist" / "pkg.whl").write_bytes(b"\0")
    out = cli("worktree", "teardown", "a")
    assert out.returncode == 0, out.stderr
    assert not wt.exists()


def test_teardown_refuses_a_changed_copy(proj):
    _ignoring(proj, ".env.local")
    (proj / ".env.local").write_text("LOCAL=1\n")
    (proj / ".sandboxrun.toml").write_text('copy_files = [".env.local"]\n')
    cli = CLI(proj)
    assert cli("worktree", "setup", "a").returncode == 0
    (proj / ".worktrees" / "a" / ".env.local").write_text("LOCAL=2\n")
    out = cli("worktree", "teardown", "a")
    assert out.returncode == 1
    assert ".env.local" in edge_error(out.stderr)[0]


def test_close_remove_worktree_refuses_ignored_files_before_closing(proj, tmux):
    _ignoring(proj, ".env")
    cli = CLI(proj)
    assert cli("worktree", "setup", "a").returncode == 0
    wt = proj / ".worktrees" / "a"
    (wt / ".env").write_text("TOKEN=mine\n")
    tmux.new_session("t_a", _local.SLEEPER, cwd=wt)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    row = store.create_session(
        mode="local", backend="tmux", status=Status.RUNNING, name="a", role="a",
        repo=str(proj), worktree=str(wt), tmux_session="t_a",
        options={"socket": tmux.socket_path},
    )  # fmt: skip
    with pytest.raises(CloseRefusedError) as err:
        close(store, tmux, row, force=True, remove_worktree=load_settings(repo=proj))
    assert ".env" in err.value.message and "1 ignored file(s)" in err.value.message
    assert "without --remove-worktree" in (err.value.hint or "")
    assert tmux.has_session("t_a")  # checked before anything was closed
    assert store.get(row.id).status == Status.RUNNING
    assert (wt / ".env").is_file()
