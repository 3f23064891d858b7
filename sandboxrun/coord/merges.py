"""Merge notifications: who wants to know when a branch lands in its base, detecting it, and
what a merged branch means for another one (changed files, a conflict preview).

Detection is a pure decision over commits (:func:`is_merged`): a branch is merged when its tip
is an ancestor of the base's tip and was not already one when the subscription was made (a
branch with no commits of its own is not "merged"). :func:`check_merges` runs it for every open
subscription of a repository, records a ``merge_events`` row (once per tip) and sends the
subscriber a ``MERGED`` message, which the hook puts into its next prompt's context. Nothing
here touches a checkout: previews use ``git merge-tree --write-tree``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sandboxrun import gitops
from sandboxrun.coord import messages
from sandboxrun.errors import GitError, UsageError
from sandboxrun.rows import rows_after
from sandboxrun.store import ACTIVE

MERGED = "MERGED"


def tip(repo: Path | str, ref: str) -> str | None:
    """The commit ``ref`` names (None when it does not exist)."""
    out = gitops.git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def is_ancestor(repo: Path | str, commit: str, of: str) -> bool:
    """Whether ``commit`` is reachable from ``of``."""
    return gitops.git(repo, "merge-base", "--is-ancestor", commit, of, check=False).returncode == 0


def is_merged(tip_in_base: bool, was_in_base_at_start: bool) -> bool:
    """The decision (pure): in the base now, and not merely because it never left it."""
    return tip_in_base and not was_in_base_at_start


def require_branch(repo: Path | str, branch: str) -> str:
    """The tip of ``branch``; a UsageError naming the fix when there is no such branch."""
    found = tip(repo, branch)
    if found is None:
        raise UsageError(
            f"no branch or commit {branch!r} in {repo}",
            "Name an existing branch (git branch --list shows them).",
        )
    return found


def subscribe(
    conn: sqlite3.Connection,
    repo: str,
    branch: str,
    base: str,
    subscriber: str | None,
    *,
    now: float | None = None,
) -> int:
    """Ask to be told when ``branch`` is merged into ``base``; the subscription's id."""
    branch_tip = require_branch(repo, branch)
    base_tip = require_branch(repo, base)
    cur = conn.execute(
        "INSERT INTO merge_subscriptions (repo, branch, base, subscriber, created_at, last_tip, "
        "base_at_start) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (repo, branch, base, subscriber, time.time() if now is None else now, branch_tip, base_tip),
    )
    return int(cur.lastrowid or 0)


@dataclass(frozen=True)
class MergeEvent:
    """A branch found merged into its base."""

    id: int
    ts: float
    repo: str
    branch: str
    base: str
    tip: str
    base_tip: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_merges(
    conn: sqlite3.Connection, repo: str, *, now: float | None = None
) -> list[MergeEvent]:
    """Detect merges for the open subscriptions of ``repo``; new events (and messages sent).

    Git runs outside any transaction; each detected merge is recorded in its own short one.
    """
    now = time.time() if now is None else now
    subs = conn.execute(
        "SELECT id, branch, base, subscriber, last_tip, base_at_start FROM merge_subscriptions "
        "WHERE repo = ? AND notified_at IS NULL ORDER BY id",
        (repo,),
    ).fetchall()
    found: list[MergeEvent] = []
    for sid, branch, base, subscriber, last_tip, base_at_start in subs:
        base_tip = tip(repo, base)
        if base_tip is None:
            continue
        branch_tip = tip(repo, branch) or last_tip  # a branch deleted after merging
        if branch_tip is None:
            continue
        started_in = bool(base_at_start) and is_ancestor(repo, branch_tip, base_at_start)
        if not is_merged(is_ancestor(repo, branch_tip, base_tip), started_in):
            if branch_tip != last_tip:
                conn.execute(
                    "UPDATE merge_subscriptions SET last_tip = ? WHERE id = ?", (branch_tip, sid)
                )
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT OR IGNORE INTO merge_events (ts, repo, branch, base, tip, base_tip) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now, repo, branch, base, branch_tip, base_tip),
            )
            row = conn.execute(
                "SELECT id, ts FROM merge_events WHERE repo = ? AND branch = ? AND base = ? "
                "AND tip = ?",
                (repo, branch, base, branch_tip),
            ).fetchone()
            conn.execute(
                "UPDATE merge_subscriptions SET notified_at = ?, last_tip = ? WHERE id = ?",
                (now, branch_tip, sid),
            )
            messages.send(
                conn,
                repo,
                MERGED,
                sender=None,
                recipient=subscriber,
                body={
                    "text": f"branch {branch} was merged into {base} (at {base_tip[:12]}). "
                    "If you work on a branch from it, call rebase_assist to see what changed.",
                    "branch": branch,
                    "base": base,
                    "tip": branch_tip,
                    "base_tip": base_tip,
                },
                now=now,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        found.append(MergeEvent(row[0], row[1], repo, branch, base, branch_tip, base_tip))
    return found


def watched_repos(conn: sqlite3.Connection) -> list[str]:
    """Repositories with open subscriptions."""
    rows = conn.execute(
        "SELECT DISTINCT repo FROM merge_subscriptions WHERE notified_at IS NULL ORDER BY repo"
    ).fetchall()
    return [r[0] for r in rows]


def list_events(
    conn: sqlite3.Connection, repo: str | None = None, *, after_id: int = 0, limit: int = 100
) -> list[MergeEvent]:
    """Merge events (of one repo, or all) with id > ``after_id``, oldest first."""
    columns = "id, ts, repo, branch, base, tip, base_tip"
    rows = rows_after(conn, "merge_events", columns, after_id=after_id, limit=limit, repo=repo)
    return [MergeEvent(*tuple(r)) for r in rows]


def status(repo: str, branch: str, base: str) -> dict[str, Any]:
    """Whether ``branch`` is in ``base`` now, and how far apart they are."""
    branch_tip = require_branch(repo, branch)
    base_tip = require_branch(repo, base)
    counts = gitops.git(repo, "rev-list", "--left-right", "--count", f"{base}...{branch}").stdout
    behind, ahead = (int(x) for x in counts.split())
    return {
        "branch": branch,
        "base": base,
        "branch_tip": branch_tip,
        "base_tip": base_tip,
        "merged": ahead == 0,
        "ahead": ahead,
        "behind": behind,
    }


def _files(repo: str, a: str, b: str) -> list[str]:
    out = gitops.git(repo, "diff", "--name-only", "-z", a, b).stdout
    return sorted(p for p in out.split("\0") if p)


def rebase_preview(repo: str, branch: str, onto: str) -> dict[str, Any]:
    """What ``onto`` changed since ``branch`` left it, what ``branch`` changed, the overlap,
    and whether merging them conflicts (``git merge-tree --write-tree``: no checkout touched)."""
    require_branch(repo, branch)
    require_branch(repo, onto)
    base = gitops.git(repo, "merge-base", onto, branch, check=False).stdout.strip()
    if not base:
        raise UsageError(
            f"{branch} and {onto} share no history", "Pick the branch this one was made from."
        )
    theirs = _files(repo, base, onto)
    mine = _files(repo, base, branch)
    tree = gitops.git(
        repo, "merge-tree", "--write-tree", "--name-only", "-z", onto, branch, check=False
    )
    if tree.returncode not in (0, 1):
        raise GitError(
            f"git merge-tree failed in {repo}: {tree.stderr.strip()}",
            "git 2.38 or newer is needed for merge previews.",
        )
    conflicts: list[str] = []
    if tree.returncode == 1:
        # -z output: tree id NUL, conflicted file names NUL..., NUL, then messages
        parts = tree.stdout.split("\0")
        for name in parts[1:]:
            if not name:
                break
            conflicts.append(name)
    return {
        "branch": branch,
        "onto": onto,
        "merge_base": base,
        "changed_on_onto": theirs,
        "changed_on_branch": mine,
        "changed_on_both": sorted(set(theirs) & set(mine)),
        "clean": tree.returncode == 0,
        "conflicts": sorted(set(conflicts)),
    }


def _open_subscription(conn: sqlite3.Connection, repo: str, branch: str, base: str,
                       subscriber: str | None) -> bool:  # fmt: skip
    return (
        conn.execute(
            "SELECT 1 FROM merge_subscriptions WHERE repo = ? AND branch = ? AND base = ? "
            "AND subscriber IS ? AND notified_at IS NULL LIMIT 1",
            (repo, branch, base, subscriber),
        ).fetchone()
        is not None
    )


def watch_children(
    conn: sqlite3.Connection,
    repo: str | None,
    *,
    pm_role: str | None,
    now: float | None = None,
) -> int:
    """Subscribe to merges of every active local child's branch into its base, for the child
    itself and for the master (``pm_role``), unless such a subscription is already open; the
    number of new subscriptions.

    A subscription ends with its notification, and the next one is made while the child
    lives, so each later merge of the same branch is announced too; one made for a child that
    has since ended stays open until its merge is seen (children are often merged after they
    exit).
    """
    active = sorted(str(s) for s in ACTIVE)
    sql = (
        "SELECT repo, branch, base_ref, role FROM sessions WHERE mode = 'local' "
        f"AND status IN ({', '.join('?' for _ in active)}) AND branch IS NOT NULL "
        "AND base_ref IS NOT NULL AND base_ref != branch AND role IS NOT NULL"
    )
    args: list[Any] = [*active]
    if repo is not None:
        sql += " AND repo = ?"
        args.append(repo)
    made = 0
    for child_repo, branch, base, role in conn.execute(sql, args).fetchall():
        if base == "HEAD" or tip(child_repo, base) is None or tip(child_repo, branch) is None:
            continue  # no branch to compare with (a detached base, a deleted branch)
        for subscriber in dict.fromkeys((role, pm_role)):
            if subscriber is None or _open_subscription(conn, child_repo, branch, base, subscriber):
                continue
            subscribe(conn, child_repo, branch, base, subscriber, now=now)
            made += 1
    return made


def monitor_pass(
    conn: sqlite3.Connection, repo: str | None, *, pm_role: str | None, now: float | None = None
) -> list[MergeEvent]:
    """What the tmux monitor runs every few seconds: subscribe children's branches
    (:func:`watch_children`), then detect merges in every watched repository (``repo`` only,
    when given); the new merge events (their subscribers got a MERGED message)."""
    watch_children(conn, repo, pm_role=pm_role, now=now)
    found: list[MergeEvent] = []
    for watched in [repo] if repo is not None else watched_repos(conn):
        found += check_merges(conn, watched, now=now)
    return found
