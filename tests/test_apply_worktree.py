"""Updating the session worktree after the branch moved: edited files rewritten in place, the
rest by git, and never a user's change overwritten (sandboxrun/sandbox/worktree_update.py).

Real git repositories throughout. Most tests move a branch from OLD to NEW the way ``land``
does (objects in place, ``update-ref``) and then call :func:`update_worktree`, with the user's
worktree in each awkward state the fast path must recognise and leave to git.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_collect import _APPLY_CHILD, BRANCH, Pipeline, run  # the production pipeline

from sandboxrun.errors import GitError
from sandboxrun.sandbox.apply import FAULT_ENV
from sandboxrun.sandbox.worktree_update import update_worktree

ENV = {
    "GIT_AUTHOR_NAME": "User",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "User",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **ENV}, input=input,
                          capture_output=True, check=False)  # fmt: skip
    assert proc.returncode == 0, f"git {args} failed: {proc.stderr.decode()}"
    return proc.stdout.decode(errors="surrogateescape")


class Repo:
    """A repository whose ``main`` is checked out at OLD, and a commit NEW made elsewhere."""

    def __init__(self, root: Path, old: dict[str, str], attributes: str | None = None) -> None:
        self.path = root / "repo"
        self.path.mkdir()
        git(self.path, "init", "-q", "-b", "main")
        if attributes is not None:
            old = {**old, ".gitattributes": attributes}
        for name, content in old.items():
            self.put(name, content)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", "old")
        self.old = git(self.path, "rev-parse", "HEAD").strip()

    def put(self, name: str, content: str) -> None:
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content.encode())

    def commit_elsewhere(self, files: dict[str, str | None], modes: dict[str, str] = {}) -> str:  # noqa: B006
        """NEW: OLD with ``files`` changed (None deletes), built in a private index."""
        env_index = str(self.path / ".git" / "other.index")
        env = {**os.environ, **ENV, "GIT_INDEX_FILE": env_index}
        subprocess.run(["git", "read-tree", self.old], cwd=self.path, env=env, check=True)
        lines = []
        for name, content in files.items():
            if content is None:
                lines.append(f"0 {'0' * 40}\t{name}")
                continue
            sha = git(self.path, "hash-object", "-w", "--stdin", input=content.encode()).strip()
            lines.append(f"{modes.get(name, '100644')} {sha}\t{name}")
        subprocess.run(["git", "update-index", "--index-info"], cwd=self.path, env=env,
                       input="\n".join(lines).encode() + b"\n", check=True)  # fmt: skip
        tree = subprocess.run(["git", "write-tree"], cwd=self.path, env=env, check=True,
                              capture_output=True).stdout.decode().strip()  # fmt: skip
        new = git(self.path, "commit-tree", tree, "-p", self.old, "-m", "new").strip()
        git(self.path, "update-ref", "refs/heads/main", new, self.old)  # what land() does
        return new

    def status(self) -> str:
        return git(self.path, "status", "--porcelain", "--untracked-files=all")

    def index_tree(self) -> str:
        return git(self.path, "write-tree").strip()

    def tree(self, rev: str) -> str:
        return git(self.path, "rev-parse", f"{rev}^{{tree}}").strip()


def many(n: int, text: str) -> dict[str, str]:
    return {f"d{i % 7}/f{i}.txt": f"{text} {i}\n" * (1 + i % 5) for i in range(n)}


def test_edits_are_written_in_place_and_every_other_change_by_git(tmp_path: Path) -> None:
    old = {**many(40, "old"), "grow.txt": "a\n", "shrink.txt": "a long line\n" * 900,
           "empty.txt": "", "gone/x.txt": "x\n", "tool.sh": "echo\n", "link-me.txt": "t\n"}  # fmt: skip
    r = Repo(tmp_path, old)
    inodes = {n: (r.path / n).stat().st_ino for n in old}
    new_files: dict[str, str | None] = {**many(40, "new"), "grow.txt": "b\n" * 5000,
                                        "shrink.txt": "s\n", "empty.txt": "now text\n",
                                        "gone/x.txt": None, "fresh/dir/n.txt": "n\n",
                                        "tool.sh": "echo\n", "link-me.txt": "grow.txt"}  # fmt: skip
    new = r.commit_elsewhere(new_files, modes={"tool.sh": "100755", "link-me.txt": "120000"})
    written = update_worktree(r.path, r.old, new)
    assert r.status() == ""
    assert r.index_tree() == r.tree(new)
    for name, content in new_files.items():
        f = r.path / name
        if content is None:
            assert not f.exists() and not f.parent.exists()
        elif name == "link-me.txt":
            assert f.is_symlink() and os.readlink(f) == "grow.txt"
        else:
            assert f.read_text() == content
    assert os.access(r.path / "tool.sh", os.X_OK)
    # The plain edits kept their inode (rewritten in place); the rest went through git.
    edited = [n for n in old if n.endswith(".txt") and n not in ("gone/x.txt", "link-me.txt")]
    assert written == len(edited)
    assert all((r.path / n).stat().st_ino == inodes[n] for n in edited)


def test_a_user_edit_among_many_paths_is_never_overwritten(tmp_path: Path) -> None:
    """The check happens file by file at the moment of writing, not only before the apply."""
    r = Repo(tmp_path, many(300, "old"))
    new = r.commit_elsewhere(many(300, "new"))
    mine = r.path / "d3" / "f150.txt"
    mine.write_text("the user's own work\n")  # after apply's checks ran: the race
    same = r.path / "d4" / "f151.txt"  # same size, mtime put back: only ctime/inode tell
    st = same.stat()
    same.write_text(same.read_text().replace("old", "OLD"))
    os.utime(same, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(GitError):
        update_worktree(r.path, r.old, new)
    assert mine.read_text() == "the user's own work\n"
    assert "OLD 151" in same.read_text()
    assert (r.path / "d0" / "f7.txt").read_text().startswith("new 7")  # the rest landed


def test_a_racily_clean_entry_is_left_to_git(tmp_path: Path) -> None:
    r = Repo(tmp_path, many(20, "old"))
    future = r.path / "d1" / "f1.txt"
    later = (int(future.stat().st_mtime) + 3600) * 10**9
    os.utime(future, ns=(later, later))  # the index cannot prove its content by stat
    git(r.path, "update-index", "-q", "--refresh")
    new = r.commit_elsewhere(many(20, "new"))
    assert update_worktree(r.path, r.old, new) == 19  # all but the racy one in place
    assert future.read_text() == "new 1\n" * 2
    assert r.status() == ""


def test_a_hard_linked_file_is_left_to_git(tmp_path: Path) -> None:
    r = Repo(tmp_path, many(10, "old"))
    outside = tmp_path / "elsewhere.txt"
    os.link(r.path / "d2" / "f2.txt", outside)
    git(r.path, "update-index", "-q", "--refresh")  # the index's stat data is current again
    new = r.commit_elsewhere(many(10, "new"))
    update_worktree(r.path, r.old, new)
    assert outside.read_text() == "old 2\n" * 3  # the other name still holds the old file
    assert (r.path / "d2" / "f2.txt").read_text() == "new 2\n" * 3
    assert r.status() == ""


def test_a_directory_swapped_for_a_symlink_is_never_followed(tmp_path: Path) -> None:
    """The files keep their inode and stat data through the move: only the walk protects."""
    r = Repo(tmp_path, many(10, "old"))
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(r.path / "d3", outside / "d3")
    os.symlink(outside / "d3", r.path / "d3")
    new = r.commit_elsewhere(many(10, "new"))
    written = update_worktree(r.path, r.old, new)
    assert written == 9  # d3/f3.txt went to git, which replaces the link with a directory
    assert not (r.path / "d3").is_symlink()
    assert (r.path / "d3" / "f3.txt").read_text() == "new 3\n" * 4
    assert (outside / "d3" / "f3.txt").read_text() == "old 3\n" * 4


@pytest.mark.parametrize("how", ["attributes", "autocrlf", "autocrlf Yes", "attributes changed"])
def test_checkout_conversions_are_left_to_git(tmp_path: Path, how: str) -> None:
    attributes = "*.txt text eol=crlf\n" if how == "attributes" else None
    r = Repo(tmp_path, many(10, "old"), attributes=attributes)
    if how.startswith("autocrlf"):
        git(r.path, "config", "core.autocrlf", "Yes" if how.endswith("Yes") else "true")
    changes: dict[str, str | None] = dict(many(10, "new"))
    if how == "attributes changed":  # the agent's commit adds the conversion
        changes[".gitattributes"] = "*.txt text eol=crlf\n"
    new = r.commit_elsewhere(changes)
    assert update_worktree(r.path, r.old, new) == 0
    assert (r.path / "d1" / "f1.txt").read_bytes() == b"new 1\r\n" * 2
    assert r.status() == ""


def test_autocrlf_input_converts_on_commit_only_so_edits_stay_in_place(tmp_path: Path) -> None:
    r = Repo(tmp_path, many(10, "old"))
    git(r.path, "config", "core.autocrlf", "input")
    new = r.commit_elsewhere(many(10, "new"))
    assert update_worktree(r.path, r.old, new) == 10
    assert (r.path / "d1" / "f1.txt").read_bytes() == b"new 1\n" * 2
    assert r.status() == ""


def test_a_write_error_midway_is_a_git_error_with_the_next_step(tmp_path: Path) -> None:
    """A full disk or an I/O error while rewriting in place ends like a failed git update."""
    import resource
    import signal

    r = Repo(tmp_path, {"a/small.txt": "s\n", "b/big.txt": "old\n"})
    new = r.commit_elsewhere({"a/small.txt": "t\n", "b/big.txt": "x" * 4096})
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, limits[1]))  # writes past 1 KiB: EFBIG
    try:
        with pytest.raises(GitError) as info:
            update_worktree(r.path, r.old, new)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert "could not be updated" in info.value.message
    assert "sandboxrun apply" in (info.value.hint or "")
    assert (r.path / "a" / "small.txt").read_text() == "t\n"  # written before the failure


def test_a_crash_halfway_through_the_in_place_writes_is_finished(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, many(60, "old"))
    for name, content in many(60, "agent").items():
        p.write(name, content)
    p.write("added.txt", "new file\n")
    p.collect()
    old = p.tip()
    child = subprocess.run(
        [sys.executable, "-c", _APPLY_CHILD, str(p.worktree), BRANCH, str(p.artifacts), old],
        env={**os.environ, FAULT_ENV: "inplace"}, capture_output=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stderr.decode()
    assert p.tip() != old
    done = sum((p.worktree / n).read_text() == c for n, c in many(60, "agent").items())
    assert 0 < done < 60  # killed midway: some files new, some old
    applied = p.apply()  # what `attach` / `sandboxrun apply` do next
    assert applied.resumed
    assert p.clean()
    assert all((p.worktree / n).read_text() == c for n, c in many(60, "agent").items())
    assert (p.worktree / "added.txt").read_text() == "new file\n"


def test_uncommitted_user_work_in_one_of_many_paths_refuses_the_apply(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, many(200, "old"))
    for name, content in many(200, "agent").items():
        p.write(name, content)
    p.collect()
    old = p.tip()
    mine = p.worktree / "d5" / "f110.txt"
    mine.write_text("uncommitted user work\n")
    with pytest.raises(GitError) as info:
        p.apply()
    assert "uncommitted changes" in info.value.message
    assert p.tip() == old
    assert mine.read_text() == "uncommitted user work\n"
    run(p.worktree, "git", "stash", "-q")
    p.apply()
    assert p.clean() and (p.worktree / "d0" / "f0.txt").read_text() == "agent 0\n"
