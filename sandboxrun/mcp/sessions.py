"""Session tools (both modes): list, who am I, examine, annotate; and the session resources."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from fastmcp import FastMCP
from fastmcp.tools.base import ToolResult

from sandboxrun.coord import claims, presence
from sandboxrun.coord.local_sessions import local_fields
from sandboxrun.errors import UsageError
from sandboxrun.mcp.common import COMPACT_FIELDS, Coord, compact, json_text, tool
from sandboxrun.store import ACTIVE, Session, Status

Mode = Literal["sandbox", "local"]
#: ``active`` / ``ended`` or one exact status
STATES = ("active", "ended", *(str(s) for s in Status))


def _state_filter(state: str) -> tuple[str, list[str]]:
    if state == "active":
        statuses = sorted(str(s) for s in ACTIVE)
    elif state == "ended":
        statuses = sorted(str(s) for s in set(Status) - ACTIVE)
    elif state in STATES:
        statuses = [state]
    else:
        raise UsageError(
            f"unknown state {state!r}",
            f"Use 'active', 'ended' or a status: {', '.join(str(s) for s in Status)}.",
        )
    return f"status IN ({', '.join('?' for _ in statuses)})", statuses


def list_sessions(
    coord: Coord,
    repo: str | None = None,
    mode: str | None = None,
    state: str | None = None,
    limit: int = 200,
) -> dict[str, Any]:
    """The sessions matching the filters, newest first (pure over the store)."""
    if limit < 1:
        raise UsageError("limit must be at least 1", "Pass limit=50, for example.")
    where, args = [], []
    if repo:
        where.append("repo = ?")
        args.append(coord.repo(repo))
    if mode:
        if mode not in ("sandbox", "local"):
            raise UsageError(f"unknown mode {mode!r}", "Use 'sandbox' or 'local'.")
        where.append("mode = ?")
        args.append(mode)
    if state:
        clause, values = _state_filter(state)
        where.append(clause)
        args += values
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    conn = coord.store.conn
    total = conn.execute(f"SELECT COUNT(*) FROM sessions{clause}", args).fetchone()[0]
    # Only the short form's columns, straight into dicts, newest first through the
    # created_at index (m008): 1,000 sessions in a few ms. Empty (NULL) fields are left out:
    # what crosses the wire (twice: text and structured content) is ~17 % smaller, and so
    # are the tokens an agent reads.
    cur = conn.execute(
        f"SELECT {', '.join(COMPACT_FIELDS)} FROM sessions{clause} "
        "ORDER BY created_at DESC LIMIT ?",
        [*args, limit],
    )
    sessions = [
        {k: v for k, v in zip(COMPACT_FIELDS, tuple(r), strict=True) if v is not None}
        for r in cur.fetchall()
    ]
    return {"total": total, "returned": len(sessions), "sessions": sessions}


def examine(coord: Coord, s: Session, events: int = 20) -> dict[str, Any]:
    """Everything about one session: its row, latest events, presence, claims, reports."""
    from sandboxrun.coord import reports

    store = coord.store
    data = s.to_dict()
    if s.mode == "local":
        data.update(local_fields(data, stale_after=coord.settings.stale_after))
    recent = store.conn.execute(
        "SELECT id, ts, kind, payload FROM events WHERE session_id = ? ORDER BY id DESC LIMIT ?",
        (s.id, events),
    ).fetchall()
    data["events"] = [
        {"id": r["id"], "ts": r["ts"], "kind": r["kind"], "payload": json.loads(r["payload"])}
        for r in reversed(recent)
    ]
    data["notes"] = [e["payload"] for e in store.events(s.id, kinds=("note",))]
    data["claims"] = [
        c.to_dict()
        for c in claims.list_claims(
            store.conn, session_id=s.id, stale_after=coord.settings.stale_after
        )
    ]
    data["reports"] = [r.to_dict() for r in reports.list_reports(store.conn, session_id=s.id)][-10:]
    return data


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the session tools and resources to ``mcp``."""

    @tool(mcp, read_only=True, idempotent=True, name="list_sessions", text_only=True)
    def list_sessions_tool(
        repo: str | None = None,
        mode: Mode | None = None,
        state: str | None = None,
        limit: int = 200,
    ) -> ToolResult:
        """List sandboxrun sessions (sandbox runs and local Claude Code sessions), newest first.

        Filters: repo (a path in the repository), mode ('sandbox' or 'local'), state ('active',
        'ended' or an exact status such as 'running', 'completed', 'failed'). Returns the total
        matching and up to `limit` sessions with id, name, status, role, activity and branch
        (fields a session does not have are left out), as JSON text.
        """
        return json_text(list_sessions(coord, repo, mode, state, limit))

    @tool(mcp, read_only=True, idempotent=True)
    def get_my_session() -> dict[str, Any]:
        """Who am I: my session, role, worktree and branch, whether I am in the main checkout,
        and how many other sessions are active in this repository."""
        me = coord.me()
        checkout = coord.checkout
        repo = str(checkout.main) if checkout else None
        others = 0
        if repo:
            others = coord.store.conn.execute(
                f"SELECT COUNT(*) FROM sessions WHERE repo = ? AND id IS NOT ? AND status IN "
                f"({', '.join('?' for _ in ACTIVE)})",
                (repo, me.id if me else None, *sorted(ACTIVE)),
            ).fetchone()[0]
        return {
            "session": compact(me) if me else None,
            "tracked": me is not None,
            "role": coord.role(),
            "repo": repo,
            "worktree": str(checkout.top) if checkout else None,
            "branch": checkout.branch() if checkout else None,
            "in_main_checkout": bool(checkout and checkout.is_main),
            "other_active_sessions": others,
            "hint": None
            if me
            else "Not a tracked session: install the hooks (`sandboxrun hooks install`) and "
            "restart Claude Code, or pass session= to the tools that act for a session.",
        }

    @tool(mcp, read_only=True, idempotent=True)
    def examine_session(session: str, events: int = 20) -> dict[str, Any]:
        """Everything about one session (id, id prefix or name): its full record, the latest
        `events` events, notes, live file claims and status reports."""
        if events < 0:
            raise UsageError("events must be 0 or more", "Pass events=20, for example.")
        return examine(coord, coord.session(session), events)

    @tool(mcp, idempotent=False)
    def annotate_session(note: str, session: str | None = None) -> dict[str, Any]:
        """Attach a note to a session (yours by default), e.g. what it is for or why it
        stopped; notes show in examine_session."""
        if not note.strip():
            raise UsageError("the note is empty", "Pass the text to attach as note.")
        s = coord.session(session)
        me = coord.me()
        event_id = coord.store.add_event(
            s.id, "note", {"text": note, "by": me.name if me else None, "ts": time.time()}
        )
        return {"session": s.id, "name": s.name, "event_id": event_id}

    @mcp.resource("sandboxrun://sessions", mime_type="application/json")
    def sessions_resource() -> str:
        """Every session, newest first (the same view as list_sessions)."""
        return json.dumps(list_sessions(coord, limit=1000), default=str)

    @mcp.resource("sandboxrun://sessions/{session_id}", mime_type="application/json")
    def session_resource(session_id: str) -> str:
        """One session in full (as examine_session shows it)."""
        return json.dumps(examine(coord, coord.session(session_id)), default=str)

    @mcp.resource("sandboxrun://presence", mime_type="application/json")
    def presence_resource() -> str:
        """Every role's presence in every repository, with the stale flag."""
        found = presence.list_presence(coord.store.conn, stale_after=coord.settings.stale_after)
        return json.dumps([p.to_dict() for p in found])
