"""Status reports sessions post over HTTP (``POST /msg/report``), readable over MCP.

Standard library over the ``reports`` table (``store.py`` migration m005).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from sandboxrun.errors import UsageError
from sandboxrun.rows import rows_after

STATES = ("started", "running", "blocked", "done")


@dataclass(frozen=True)
class Report:
    """One status snapshot."""

    id: int
    ts: float
    session_id: str | None
    task_id: str | None
    name: str | None
    state: str
    notes: str | None
    artifacts: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def in_namespace(name: str, prefix: str) -> bool:
    """Whether a reporter's ``name`` is one of this project's tmux sessions (pure): the
    master ``{prefix}_master`` or a child ``{prefix}_child_<name>`` with a valid child name.

    Reports from any other name are refused, so another project's agents (another prefix)
    or an arbitrary caller holding the token cannot write into this project's reports.
    """
    from sandboxrun.local.identity import validate_role

    if not prefix or not name:
        return False
    if name == f"{prefix}_master":
        return True
    child = name.removeprefix(f"{prefix}_child_")
    if child == name:
        return False
    try:
        validate_role(child)
    except UsageError:
        return False
    return True


def validate_state(state: str) -> str:
    """One of :data:`STATES`; UsageError naming them otherwise."""
    if state not in STATES:
        raise UsageError(f"unknown report state {state!r}", f"Use one of: {', '.join(STATES)}.")
    return state


def add(
    conn: sqlite3.Connection,
    state: str,
    *,
    session_id: str | None = None,
    task_id: str | None = None,
    name: str | None = None,
    notes: str | None = None,
    artifacts: list[str] | None = None,
    now: float | None = None,
) -> int:
    """Store a report; returns its id."""
    cur = conn.execute(
        "INSERT INTO reports (ts, session_id, task_id, name, state, notes, artifacts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            time.time() if now is None else now,
            session_id,
            task_id,
            name,
            validate_state(state),
            notes,
            json.dumps([str(a) for a in artifacts or []]),
        ),
    )
    return int(cur.lastrowid or 0)


def list_reports(
    conn: sqlite3.Connection,
    *,
    session_id: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Report]:
    """Reports (of one session, or all) with id > ``after_id``, oldest first."""
    columns = "id, ts, session_id, task_id, name, state, notes, artifacts"
    out = []
    for row in rows_after(
        conn, "reports", columns, after_id=after_id, limit=limit, session_id=session_id
    ):
        rid, ts, sid, task, name, state, notes, arts = tuple(row)
        out.append(Report(rid, ts, sid, task, name, state, notes, json.loads(arts)))
    return out
