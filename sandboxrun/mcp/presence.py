"""Presence tools: register, deregister, heartbeat and look up which roles are working."""

from __future__ import annotations

import time
from typing import Any

from fastmcp import FastMCP

from sandboxrun.coord import presence
from sandboxrun.errors import UsageError
from sandboxrun.local.identity import validate_role
from sandboxrun.mcp.common import Coord, tool


def own_role(coord: Coord, role: str | None) -> str:
    """``role`` (validated) or the caller's; a UsageError naming the fix when neither."""
    if role:
        return validate_role(role)
    found = coord.role()
    if not found:
        raise UsageError(
            "no role given and this session has none",
            "Pass role='backend' (for example), or start Claude Code with CLAUDE_INSTANCE_ID set "
            "to your role.",
        )
    return found


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the presence tools to ``mcp``."""

    @tool(mcp, idempotent=True)
    def register_presence(
        role: str | None = None, repo: str | None = None, worktree: str | None = None
    ) -> dict[str, Any]:
        """Announce that a role is working in a repository (yours by default), so others see
        it in get_presence. Registering again refreshes the registration."""
        role = own_role(coord, role)
        root = coord.repo(repo)
        me = coord.me()
        with coord.store.transaction() as conn:
            presence.register(
                conn,
                root,
                role,
                worktree=worktree or (str(coord.checkout.top) if coord.checkout else None),
                session_id=me.id if me else None,
                claude_session_id=me.agent_session_id if me else None,
            )
        found = presence.get(coord.store.conn, root, role, stale_after=coord.settings.stale_after)
        return found.to_dict() if found else {}

    @tool(mcp, idempotent=True)
    def deregister_presence(role: str | None = None, repo: str | None = None) -> dict[str, Any]:
        """Mark a role (yours by default) as no longer working here; its history is kept."""
        role = own_role(coord, role)
        root = coord.repo(repo)
        with coord.store.transaction() as conn:
            known = presence.deregister(conn, root, role)
        if not known:
            raise UsageError(
                f"role {role!r} never registered in {root}",
                "See who is registered with get_presence.",
            )
        return {"role": role, "repo": root, "status": "inactive"}

    @tool(mcp, idempotent=True)
    def heartbeat(role: str | None = None, repo: str | None = None) -> dict[str, Any]:
        """Tell sandboxrun a role (yours by default) is still alive; sessions without a
        heartbeat for 5 minutes count as stale and their file claims lapse. The hooks send
        heartbeats on every tool call, so this is only needed by sessions without them."""
        role = own_role(coord, role)
        root = coord.repo(repo)
        now = time.time()
        with coord.store.transaction() as conn:
            ok = presence.heartbeat(conn, root, role, now=now)
            me = coord.me()
            if me is not None:
                conn.execute("UPDATE sessions SET last_heartbeat = ? WHERE id = ?", (now, me.id))
        if not ok:
            raise UsageError(
                f"role {role!r} has no active registration in {root}",
                "Call register_presence first.",
            )
        return {"role": role, "repo": root, "last_heartbeat": now}

    @tool(mcp, read_only=True, idempotent=True)
    def get_presence(
        role: str | None = None, repo: str | None = None, all_repos: bool = False
    ) -> dict[str, Any]:
        """Who is working where: each role's state (active, stale or inactive), seconds since
        its last heartbeat and its worktree. One role, one repository (default: this one) or
        every repository (all_repos=true)."""
        root = None if all_repos else coord.repo(repo)
        stale = coord.settings.stale_after
        if role:
            if root is None:
                raise UsageError("role needs a repository", "Drop all_repos, or pass repo.")
            one = presence.get(coord.store.conn, root, validate_role(role), stale_after=stale)
            if one is None:
                raise UsageError(
                    f"role {role!r} never registered in {root}",
                    "Call get_presence without role to see who did.",
                )
            found = [one]
        else:
            found = presence.list_presence(coord.store.conn, root, stale_after=stale)
        return {"stale_after": stale, "presence": [p.to_dict() for p in found]}
