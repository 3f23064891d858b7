"""Local sessions as ``sandboxrun status`` (and later the MCP server) show them.

A local session is a ``sessions`` row with ``mode = 'local'``: a Claude Code session a person
(or ``spawn``) started, bound by the hook. Standard library only.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sandboxrun.coord.presence import STALE_AFTER, presence_state

#: columns the hook maintains on local sessions, shown beside the common ones
LOCAL_FIELDS = ("role", "activity", "activity_at", "last_heartbeat", "transcript_path", "resets_at")


def local_fields(
    row: dict[str, Any], *, now: float | None = None, stale_after: float = STALE_AFTER
) -> dict[str, Any]:
    """The local-mode part of a session's JSON (pure): activity, heartbeat, presence."""
    now = time.time() if now is None else now
    data = {k: row.get(k) for k in LOCAL_FIELDS}
    beat = row.get("last_heartbeat")
    live = "active" if row.get("status") == "running" else "inactive"
    data["presence"] = presence_state(live, beat, now, stale_after) if beat else None
    data["seconds_since_heartbeat"] = round(max(0.0, now - beat), 1) if beat else None
    return data


def local_sessions(
    conn: sqlite3.Connection,
    repo: str | None = None,
    *,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> list[dict[str, Any]]:
    """Every local session (of one repo or all), oldest first, with its local fields."""
    sql = "SELECT * FROM sessions WHERE mode = 'local'"
    args: tuple[Any, ...] = ()
    if repo is not None:
        sql += " AND repo = ?"
        args = (repo,)
    cur = conn.execute(sql + " ORDER BY created_at", args)
    names = [d[0] for d in cur.description]
    out = []
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        out.append(
            {
                **{k: row[k] for k in ("id", "name", "repo", "worktree", "branch", "status")},
                "claude_session_id": row.get("agent_session_id"),
                **local_fields(row, now=now, stale_after=stale_after),
            }
        )
    return out
