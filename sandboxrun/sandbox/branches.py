"""`cleanup --branches`: delete ``sandboxrun/*`` branches whose work is already merged.

A branch is deleted only when its tip is an ancestor of its base branch (nothing on it would be
lost), no worktree has it checked out, and no running session owns it. The ref is deleted with
its old value checked, so a branch that moved meanwhile is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandboxrun import gitops
from sandboxrun.store import Session


@dataclass(frozen=True)
class BranchVerdict:
    """What cleanup does with one branch, and why."""

    repo: str
    branch: str
    tip: str
    delete: bool
    reason: str


def decide(
    *, merged_into: str | None, base: str, running: str | None, checked_out_at: str | None
) -> tuple[bool, str]:
    """Pure rule: (delete?, why). ``merged_into`` is the base when the tip is in it."""
    if running:
        return False, f"session {running} is still running on it"
    if checked_out_at:
        return False, f"checked out in {checked_out_at} (`cleanup --worktrees` removes clean ones)"
    if merged_into is None:
        return False, f"has commits not merged into {base}"
    return True, f"fully merged into {merged_into}"


def _checked_out(repo: Path) -> dict[str, str]:
    """branch name -> worktree path, for every worktree of ``repo``."""
    out: dict[str, str] = {}
    path = None
    for line in gitops.git(repo, "worktree", "list", "--porcelain").stdout.splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree ") :]
        elif line.startswith("branch refs/heads/") and path is not None:
            out[line[len("branch refs/heads/") :]] = path
    return out


def _default_base(repo: Path) -> str:
    res = gitops.git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return res.stdout.strip() if res.ok and res.stdout.strip() else "HEAD"


def review_branches(
    repo: Path,
    prefix: str,
    sessions: list[Session],
    *,
    freed_worktrees: frozenset[str] = frozenset(),
) -> list[BranchVerdict]:
    """A verdict for every ``prefix*`` branch of ``repo``.

    The base of a session's branch is the branch it was started from (``--base``), else the
    branch checked out in the main work tree. ``freed_worktrees`` are worktrees this cleanup
    removes (or, in a dry run, would remove) first.
    """
    by_branch = {s.branch: s for s in sessions if s.branch}
    checked_out = _checked_out(repo)
    default_base = _default_base(repo)
    refs = gitops.git(
        repo, "for-each-ref", "--format=%(refname:short) %(objectname)", f"refs/heads/{prefix}"
    ).stdout.splitlines()
    verdicts = []
    for line in refs:
        branch, tip = line.rsplit(" ", 1)
        s = by_branch.get(branch)
        base = default_base
        if s is not None and s.base_ref and gitops.branch_exists(repo, s.base_ref):
            base = s.base_ref
        ancestor = gitops.git(repo, "merge-base", "--is-ancestor", tip, base, check=False).ok
        where = checked_out.get(branch)
        delete, reason = decide(
            merged_into=base if ancestor else None,
            base=base,
            running=s.name if s is not None and not s.is_terminal else None,
            checked_out_at=None if where in freed_worktrees else where,
        )
        verdicts.append(BranchVerdict(str(repo), branch, tip, delete, reason))
    return verdicts


def delete_branch(repo: Path, verdict: BranchVerdict) -> bool:
    """Delete the branch if it still points where it did when judged; True when deleted."""
    with gitops.repo_lock(repo):
        return gitops.git(
            repo, "update-ref", "-d", f"refs/heads/{verdict.branch}", verdict.tip, check=False
        ).ok
