"""Presence: which role is working in which repository right now.

A library over the ``presence`` table of the one database (``store.py`` migration m004),
standard library only, so the hook entry point and the CLI (and later the MCP server) share it.
Functions take an open ``sqlite3.Connection`` (``SessionStore.conn`` or the hook's own); each
write is a single statement, atomic on its own.

A present session is **stale** when more than ``stale_after`` seconds (default 300) passed since
its last heartbeat: at exactly ``stale_after`` seconds it is still active. Stale and
deregistered (``inactive``) sessions stay visible, with their last heartbeat kept for history.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

#: seconds without a heartbeat after which an active session is reported stale
STALE_AFTER = 300.0


def presence_state(
    status: str, last_heartbeat: float, now: float, stale_after: float = STALE_AFTER
) -> str:
    """``active`` / ``stale`` / ``inactive`` (pure): stale strictly after ``stale_after`` s."""
    if status != "active":
        return "inactive"
    return "stale" if now - last_heartbeat > stale_after else "active"


@dataclass(frozen=True)
class Presence:
    """One role's presence in one repository."""

    repo: str
    role: str
    worktree: str | None
    session_id: str | None
    claude_session_id: str | None
    status: str  # stored: active | inactive
    registered_at: float
    last_heartbeat: float
    deregistered_at: float | None
    state: str  # computed: active | stale | inactive
    seconds_since_heartbeat: float

    @property
    def stale(self) -> bool:
        return self.state == "stale"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stale"] = self.stale
        return data


def register(
    conn: sqlite3.Connection,
    repo: str,
    role: str,
    *,
    worktree: str | None = None,
    session_id: str | None = None,
    claude_session_id: str | None = None,
    now: float | None = None,
) -> None:
    """Mark ``role`` present in ``repo`` (a new registration replaces an old one)."""
    now = time.time() if now is None else now
    conn.execute(
        """
        INSERT INTO presence (repo, role, worktree, session_id, claude_session_id, status,
                              registered_at, last_heartbeat, deregistered_at)
        VALUES (?, ?, ?, ?, ?, 'active', ?, ?, NULL)
        ON CONFLICT (repo, role) DO UPDATE SET
            worktree = excluded.worktree, session_id = excluded.session_id,
            claude_session_id = excluded.claude_session_id, status = 'active',
            registered_at = excluded.registered_at, last_heartbeat = excluded.last_heartbeat,
            deregistered_at = NULL
        """,
        (repo, role, worktree, session_id, claude_session_id, now, now),
    )


def deregister(conn: sqlite3.Connection, repo: str, role: str, *, now: float | None = None) -> bool:
    """Mark ``role`` inactive (``last_heartbeat`` kept). False when it was never registered."""
    now = time.time() if now is None else now
    cur = conn.execute(
        "UPDATE presence SET status = 'inactive', deregistered_at = ? WHERE repo = ? AND role = ?",
        (now, repo, role),
    )
    return cur.rowcount > 0


def heartbeat(conn: sqlite3.Connection, repo: str, role: str, *, now: float | None = None) -> bool:
    """Touch only the timestamp of an active registration. False when there is none."""
    now = time.time() if now is None else now
    cur = conn.execute(
        "UPDATE presence SET last_heartbeat = ? WHERE repo = ? AND role = ? AND status = 'active'",
        (now, repo, role),
    )
    return cur.rowcount > 0


def _row(row: sqlite3.Row | tuple, now: float, stale_after: float) -> Presence:
    (repo, role, worktree, session_id, claude_id, status, registered, last, dereg) = tuple(row)
    return Presence(
        repo,
        role,
        worktree,
        session_id,
        claude_id,
        status,
        registered,
        last,
        dereg,
        presence_state(status, last, now, stale_after),
        max(0.0, now - last),
    )


_COLUMNS = (
    "repo, role, worktree, session_id, claude_session_id, status, registered_at, "
    "last_heartbeat, deregistered_at"
)


def get(
    conn: sqlite3.Connection,
    repo: str,
    role: str,
    *,
    stale_after: float = STALE_AFTER,
    now: float | None = None,
) -> Presence | None:
    """The presence of ``role`` in ``repo`` (None when it never registered)."""
    now = time.time() if now is None else now
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM presence WHERE repo = ? AND role = ?", (repo, role)
    ).fetchone()
    return None if row is None else _row(row, now, stale_after)


def list_presence(
    conn: sqlite3.Connection,
    repo: str | None = None,
    *,
    stale_after: float = STALE_AFTER,
    now: float | None = None,
) -> list[Presence]:
    """Every registration (all repositories, or one), stale and inactive ones included."""
    now = time.time() if now is None else now
    sql = f"SELECT {_COLUMNS} FROM presence"
    args: tuple[Any, ...] = ()
    if repo is not None:
        sql += " WHERE repo = ?"
        args = (repo,)
    rows = conn.execute(sql + " ORDER BY repo, role", args).fetchall()
    return [_row(r, now, stale_after) for r in rows]
