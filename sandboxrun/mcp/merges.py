"""Merge tools: be told when a branch lands, check it now, read merge events, and see what a
merged branch means for yours (changed files and a conflict preview, no checkout touched)."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from sandboxrun.coord import merges
from sandboxrun.errors import UsageError
from sandboxrun.mcp.common import Coord, tool


def _branch(coord: Coord, branch: str | None) -> str:
    if branch:
        return branch
    me = coord.me()
    if me is not None and me.branch:
        return me.branch
    if coord.checkout is not None and coord.checkout.branch():
        return coord.checkout.branch()  # type: ignore[return-value]
    raise UsageError("no branch given and yours is unknown", "Pass branch='agent/api/active'.")


def _base(coord: Coord, base: str | None, repo: str) -> str:
    if base:
        return base
    me = coord.me()
    if me is not None and me.base_ref and me.base_ref != "HEAD":
        return me.base_ref
    for name in ("main", "master"):
        if merges.tip(repo, name):
            return name
    raise UsageError("no base given and neither main nor master exists", "Pass base='develop'.")


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the merge tools to ``mcp``."""

    @tool(mcp)
    def notify_when_merged(
        branch: str | None = None, base: str | None = None, repo: str | None = None
    ) -> dict[str, Any]:
        """Be told when `branch` (default: yours) is merged into `base` (default: main): the
        message reaches you at your next prompt or tool call. Detection runs in
        `sandboxrun merges watch` (or check_merge_status now)."""
        root = coord.repo(repo)
        branch = _branch(coord, branch)
        base = _base(coord, base, root)
        me = coord.me()
        subscriber = coord.role() or (me.role if me else None)
        with coord.store.transaction() as conn:
            sid = merges.subscribe(conn, root, branch, base, subscriber)
        return {"subscription": sid, "branch": branch, "base": base, "notify": subscriber}

    @tool(mcp, read_only=True, idempotent=True)
    def check_merge_status(
        branch: str | None = None, base: str | None = None, repo: str | None = None
    ) -> dict[str, Any]:
        """Whether `branch` (default: yours) is merged into `base` (default: main) right now,
        with how many commits it is ahead and behind."""
        root = coord.repo(repo)
        return merges.status(root, _branch(coord, branch), _base(coord, base, root))

    @tool(mcp, read_only=True, idempotent=True)
    def get_merge_events(repo: str | None = None, after_id: int = 0) -> dict[str, Any]:
        """Branches found merged into their base (by `sandboxrun merges watch`) after event
        id `after_id`, oldest first."""
        if after_id < 0:
            raise UsageError("after_id must be 0 or more", "Pass after_id=0.")
        root = coord.repo(repo)
        found = merges.list_events(coord.store.conn, root, after_id=after_id)
        return {"events": [e.to_dict() for e in found]}

    @tool(mcp, read_only=True, idempotent=True)
    def rebase_assist(
        branch: str | None = None, onto: str | None = None, repo: str | None = None
    ) -> dict[str, Any]:
        """Before rebasing or merging `onto` (default: main) into `branch` (default: yours):
        the files each side changed since they split, the files both changed, and a conflict
        preview (git merge-tree; no checkout is touched)."""
        root = coord.repo(repo)
        return merges.rebase_preview(root, _branch(coord, branch), _base(coord, onto, root))
