"""Fan-out groups in the shared database: the group, its tasks, its events.

Everything the scheduler decides is written here before it acts on it, so a driver that died
can be replaced by another (``attach GROUP``) that sees exactly what was started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandboxrun.errors import NameInUseError, SandboxrunError
from sandboxrun.fanout.tasks import TaskGraph, TaskSpec
from sandboxrun.store import Session, SessionStore, new_session_id

#: group statuses after which nothing more happens
GROUP_TERMINAL = frozenset({"completed", "failed", "killed", "stopped"})


class GroupNotFoundError(SandboxrunError):
    """No group has that name or id."""


@dataclass(frozen=True)
class Group:
    """One row of ``groups``."""

    id: str
    name: str
    repo: str
    backend: str
    status: str
    created_at: float
    base_commit: str | None = None
    source: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    owner_pid: int | None = None
    owner_host: str | None = None
    ended_at: float | None = None
    kill_requested: int = 0
    error: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in GROUP_TERMINAL


@dataclass(frozen=True)
class GroupTask:
    """One row of ``group_tasks``: a task's spec and what the scheduler did with it."""

    group_id: str
    name: str
    position: int
    spec: TaskSpec
    state: str  # pending | started | skipped | blocked
    session_id: str | None = None
    base_commit: str | None = None
    reason: str | None = None


def _group(row: Any) -> Group:
    data = dict(row)
    data["options"] = json.loads(data["options"] or "{}")
    return Group(**data)


def _task(row: Any) -> GroupTask:
    data = dict(row)
    data["spec"] = TaskSpec.from_dict(json.loads(data["spec"]))
    return GroupTask(**data)


def create_group(
    store: SessionStore,
    graph: TaskGraph,
    *,
    name: str,
    repo: str,
    backend: str,
    base_commit: str,
    options: dict[str, Any],
) -> Group:
    """Insert the group and all its tasks (``pending``) in one transaction."""
    gid = new_session_id()
    now = time.time()
    try:
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO groups (id, name, repo, backend, status, base_commit, source, "
                "options, created_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (gid, name, repo, backend, base_commit, graph.source, json.dumps(options), now),
            )
            for i, spec in enumerate(graph.tasks):
                conn.execute(
                    "INSERT INTO group_tasks (group_id, name, position, spec, state) "
                    "VALUES (?, ?, ?, ?, 'pending')",
                    (gid, spec.name, i, json.dumps(spec.to_dict())),
                )
            _event(conn, gid, "created", {"tasks": len(graph.tasks), "options": options})
    except Exception as exc:
        if "UNIQUE" in str(exc):
            raise NameInUseError(
                f"a group named {name!r} already exists",
                f"Pick another --name, or see it with `sandboxrun status {name}`.",
            ) from exc
        raise
    return get_group(store, gid)


def _event(conn: Any, gid: str, kind: str, payload: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO group_events (group_id, ts, kind, payload) VALUES (?, ?, ?, ?)",
        (gid, time.time(), kind, json.dumps(payload, default=str)),
    )


def add_event(store: SessionStore, gid: str, kind: str, payload: dict[str, Any]) -> None:
    """Record one scheduler decision (``logs GROUP`` shows them)."""
    with store.transaction() as conn:
        _event(conn, gid, kind, payload)


def events(store: SessionStore, gid: str, after_id: int = 0) -> list[dict[str, Any]]:
    """The group's own events with id > ``after_id``, oldest first."""
    rows = store.conn.execute(
        "SELECT id, ts, kind, payload FROM group_events WHERE group_id = ? AND id > ? ORDER BY id",
        (gid, after_id),
    ).fetchall()
    return [
        {"id": r["id"], "ts": r["ts"], "kind": r["kind"], "payload": json.loads(r["payload"])}
        for r in rows
    ]


def get_group(store: SessionStore, gid: str) -> Group:
    row = store.conn.execute("SELECT * FROM groups WHERE id = ?", (gid,)).fetchone()
    if row is None:
        raise GroupNotFoundError(f"no group with id {gid!r}")
    return _group(row)


def find_group(store: SessionStore, ref: str) -> Group | None:
    """The group named (or with id) ``ref``, or None."""
    row = store.conn.execute(
        "SELECT * FROM groups WHERE name = ? OR id = ?", (ref.strip(), ref.strip())
    ).fetchone()
    return _group(row) if row is not None else None


def list_groups(store: SessionStore) -> list[Group]:
    rows = store.conn.execute("SELECT * FROM groups ORDER BY created_at").fetchall()
    return [_group(r) for r in rows]


def tasks(store: SessionStore, gid: str) -> list[GroupTask]:
    """The group's tasks in dependency order."""
    rows = store.conn.execute(
        "SELECT * FROM group_tasks WHERE group_id = ? ORDER BY position", (gid,)
    ).fetchall()
    return [_task(r) for r in rows]


def sessions(store: SessionStore, gid: str) -> dict[str, Session]:
    """The group's sessions by id."""
    rows = store.conn.execute("SELECT * FROM sessions WHERE group_id = ?", (gid,)).fetchall()
    return {r["id"]: Session.from_row(r) for r in rows}


def update_task(store: SessionStore, gid: str, name: str, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    with store.transaction() as conn:
        conn.execute(
            f"UPDATE group_tasks SET {sets} WHERE group_id = ? AND name = ?",
            [*fields.values(), gid, name],
        )
        if "state" in fields:
            _event(conn, gid, "task", {"task": name, **fields})


def update_group(store: SessionStore, gid: str, **fields: Any) -> None:
    if "options" in fields:
        fields["options"] = json.dumps(fields["options"])
    sets = ", ".join(f"{k} = ?" for k in fields)
    with store.transaction() as conn:
        conn.execute(f"UPDATE groups SET {sets} WHERE id = ?", [*fields.values(), gid])
        if "status" in fields:
            _event(conn, gid, "status", {"status": fields["status"], "error": fields.get("error")})


def claim_group(
    store: SessionStore, gid: str, pid: int, host: str, *, alive: Callable[[Group], bool]
) -> bool:
    """Make ``pid`` the group's driver unless another live driver holds it.

    Checked and written in one ``BEGIN IMMEDIATE`` transaction, so of two processes claiming
    the group at once exactly one wins.
    """
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM groups WHERE id = ?", (gid,)).fetchone()
        current = _group(row)
        if current.owner_pid not in (None, pid) and alive(current):
            return False
        conn.execute(
            "UPDATE groups SET owner_pid = ?, owner_host = ? WHERE id = ?", (pid, host, gid)
        )
        _event(conn, gid, "driver", {"pid": pid})
    return True
