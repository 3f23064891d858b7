"""Messages between sessions, stored in the ``messages`` table (``store.py`` migration m004).

Standard library only (the hook records SESSION_START/SESSION_END through it). The message
types this part defines are lifecycle and status notices; the coordination issue adds
addressed messages (questions, hand-offs) on the same table. ``recipient`` None is a
broadcast (for observers: the pm, the dashboard); "pending" messages of a role are the unread
ones addressed to it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from sandboxrun.errors import UsageError
from sandboxrun.rows import rows_after

SESSION_START = "SESSION_START"
SESSION_END = "SESSION_END"
HEARTBEAT = "HEARTBEAT"
STATUS_UPDATE = "STATUS_UPDATE"
#: the types defined so far; others must look like them (upper case, underscores)
KNOWN_TYPES = (SESSION_START, SESSION_END, HEARTBEAT, STATUS_UPDATE)
_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


def validate_type(kind: str) -> str:
    """A message type: one of :data:`KNOWN_TYPES` or the same shape (``UPPER_CASE``)."""
    if not _TYPE_RE.match(kind or ""):
        raise UsageError(
            f"invalid message type {kind!r}",
            f"Use an upper-case name such as {', '.join(KNOWN_TYPES)}.",
        )
    return kind


@dataclass(frozen=True)
class Message:
    """One stored message."""

    id: int
    ts: float
    repo: str | None
    type: str
    sender: str | None
    recipient: str | None
    session_id: str | None
    body: dict[str, Any]
    read_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def send(
    conn: sqlite3.Connection,
    repo: str | None,
    kind: str,
    *,
    sender: str | None = None,
    recipient: str | None = None,
    session_id: str | None = None,
    body: dict[str, Any] | None = None,
    now: float | None = None,
) -> int:
    """Store a message; returns its id."""
    cur = conn.execute(
        "INSERT INTO messages (ts, repo, type, sender, recipient, session_id, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            time.time() if now is None else now,
            repo,
            validate_type(kind),
            sender,
            recipient,
            session_id,
            json.dumps(body or {}, default=str),
        ),
    )
    return int(cur.lastrowid or 0)


_COLUMNS = "id, ts, repo, type, sender, recipient, session_id, body, read_at"


def _message(row: sqlite3.Row | tuple) -> Message:
    mid, ts, repo, kind, sender, recipient, session_id, body, read_at = tuple(row)
    return Message(mid, ts, repo, kind, sender, recipient, session_id, json.loads(body), read_at)


def pending(conn: sqlite3.Connection, repo: str | None, recipient: str) -> list[Message]:
    """Unread messages addressed to ``recipient`` in ``repo``, oldest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE repo IS ? AND recipient = ? AND read_at IS NULL "
        "ORDER BY id",
        (repo, recipient),
    ).fetchall()
    return [_message(r) for r in rows]


def pending_counts(conn: sqlite3.Connection, repo: str | None, recipient: str) -> dict[str, int]:
    """``{type: count}`` of the unread messages addressed to ``recipient``."""
    rows = conn.execute(
        "SELECT type, COUNT(*) FROM messages WHERE repo IS ? AND recipient = ? "
        "AND read_at IS NULL GROUP BY type ORDER BY type",
        (repo, recipient),
    ).fetchall()
    return {kind: int(count) for kind, count in rows}


def mark_read(conn: sqlite3.Connection, ids: list[int], *, now: float | None = None) -> int:
    """Mark messages read; returns how many were unread."""
    if not ids:
        return 0
    marks = ", ".join("?" for _ in ids)
    cur = conn.execute(
        f"UPDATE messages SET read_at = ? WHERE read_at IS NULL AND id IN ({marks})",
        (time.time() if now is None else now, *ids),
    )
    return cur.rowcount


def list_messages(
    conn: sqlite3.Connection,
    *,
    repo: str | None = None,
    kind: str | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> list[Message]:
    """Messages (optionally of one repo / type) with id > ``after_id``, oldest first."""
    rows = rows_after(
        conn, "messages", _COLUMNS, after_id=after_id, limit=limit, repo=repo, type=kind
    )
    return [_message(r) for r in rows]
