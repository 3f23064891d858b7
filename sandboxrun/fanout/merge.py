"""Merging task branches without touching anyone's checkout.

``git merge-tree --write-tree`` (git >= 2.38) merges two commits into a tree in the object
database; ``git commit-tree`` makes a commit of it; ``git update-ref`` moves a branch that no
worktree has checked out. The user's working tree, index and HEAD are never read or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sandboxrun import gitops
from sandboxrun.errors import UsageError


@dataclass
class MergeResult:
    """The commit reached, and the conflicting files of the merge that stopped it (if any)."""

    commit: str
    merged: list[str] = field(default_factory=list)
    conflict_with: str | None = None
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.conflict_with is None


def merge_two(repo: Path, ours: str, theirs: str, message: str) -> tuple[str | None, list[str]]:
    """Merge commit ``theirs`` into ``ours``: (new commit, []) or (None, conflicting files).

    When one already contains the other, the newer one is returned as is (no merge commit).
    """
    ours = gitops.resolve_commit(repo, ours)
    theirs = gitops.resolve_commit(repo, theirs)
    if _is_ancestor(repo, theirs, ours):
        return ours, []
    if _is_ancestor(repo, ours, theirs):
        return theirs, []
    res = gitops.git(
        repo, "merge-tree", "--write-tree", "--name-only", "-z", ours, theirs, check=False
    )
    if res.returncode not in (0, 1):
        res = gitops.git(repo, "merge-tree", "--write-tree", ours, theirs)  # raises with stderr
    parts = res.stdout.split("\0")
    tree = parts[0].strip()
    if res.returncode == 1:
        # -z --name-only: tree, conflicted paths, an empty entry, then informational messages
        files: list[str] = []
        for entry in parts[1:]:
            if not entry:
                break
            files.append(entry)
        return None, sorted(set(files))
    env = gitops.identity_env(repo)
    commit = gitops.git(
        repo, "commit-tree", tree, "-p", ours, "-p", theirs, "-m", message, env=env
    ).stdout.strip()
    return commit, []


def _is_ancestor(repo: Path, a: str, b: str) -> bool:
    return gitops.git(repo, "merge-base", "--is-ancestor", a, b, check=False).returncode == 0


def merge_all(repo: Path, start: str, branches: list[str], label: str) -> MergeResult:
    """Merge ``branches`` one by one onto ``start``; stop at the first conflict."""
    result = MergeResult(commit=gitops.resolve_commit(repo, start))
    for branch in branches:
        commit, conflicts = merge_two(repo, result.commit, branch, f"{label}: merge {branch}")
        if commit is None:
            result.conflict_with, result.conflicts = branch, conflicts
            return result
        result.commit = commit
        result.merged.append(branch)
    return result


def checked_out_branches(repo: Path) -> set[str]:
    """Branches some worktree of ``repo`` has checked out (never move those)."""
    out = gitops.git(repo, "worktree", "list", "--porcelain").stdout
    return {
        line.split(" ", 1)[1].removeprefix("refs/heads/")
        for line in out.splitlines()
        if line.startswith("branch ")
    }


def integrate(repo: Path, base: str, branches: list[str], into: str, label: str) -> MergeResult:
    """Merge ``branches`` in order into branch ``into`` (created at ``base`` if missing).

    The branch is moved after every clean merge, so a conflict leaves it at the last one.
    Refuses a branch that a worktree has checked out: moving it would desync that checkout.
    """
    if into in checked_out_branches(repo):
        raise UsageError(
            f"branch {into} is checked out in a worktree; integrating would change its files "
            "under it",
            "Pass another --into, or check out a different branch there first.",
        )
    if gitops.git(repo, "check-ref-format", "--branch", into, check=False).returncode != 0:
        raise UsageError(
            f"{into!r} is not a valid branch name",
            "Pass --into with a branch name such as integration/GROUP (git check-ref-format).",
        )
    start = into if gitops.branch_exists(repo, into) else base
    result = MergeResult(commit=gitops.resolve_commit(repo, start))
    gitops.git(repo, "update-ref", f"refs/heads/{into}", result.commit)
    for branch in branches:
        commit, conflicts = merge_two(repo, result.commit, branch, f"{label}: merge {branch}")
        if commit is None:
            result.conflict_with, result.conflicts = branch, conflicts
            return result
        gitops.git(repo, "update-ref", f"refs/heads/{into}", commit, result.commit)
        result.commit = commit
        result.merged.append(branch)
    return result
