"""Message tools: send to a session, a role or everyone; check (and mark read); notifications.

Addressed messages reach a running local session without anyone polling: the hook entry adds
them to the agent's context on its next prompt or tool call (see ``hook.py``).
"""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from sandboxrun.coord import messages, presence
from sandboxrun.errors import SessionNotFoundError, UsageError
from sandboxrun.mcp import workers
from sandboxrun.mcp.common import Coord, tool
from sandboxrun.mcp.presence import own_role

#: what the hook does not deliver into an agent's context (lifecycle notices)
LIFECYCLE = (messages.SESSION_START, messages.SESSION_END, messages.HEARTBEAT)
ALL = ("all", "*", "everyone")


def recipients(coord: Coord, root: str, to: str, sender: str | None) -> list[str]:
    """The roles ``to`` names: everyone present, one role, or the role of one session."""
    to = to.strip()
    if not to:
        raise UsageError("no recipient", "Pass to='all', a role name or a session id/name.")
    conn = coord.store.conn
    if to in ALL:
        roles = [
            p.role
            for p in presence.list_presence(conn, root, stale_after=coord.settings.stale_after)
            if p.state != "inactive" and p.role != sender
        ]
        if not roles:
            raise UsageError(
                "nobody else is present in this repository",
                "See get_presence; sessions register when Claude Code starts with the hooks.",
            )
        return roles
    known_roles = {
        r[0]
        for r in conn.execute(
            "SELECT role FROM presence WHERE repo = ? UNION "
            "SELECT role FROM sessions WHERE repo = ? AND role IS NOT NULL",
            (root, root),
        ).fetchall()
    }
    if to in known_roles:
        return [to]
    try:
        target = coord.store.resolve(to)
    except SessionNotFoundError:
        target = None
    if target is not None and target.role:
        return [target.role]
    if target is not None:
        raise UsageError(
            f"session {target.name} has no role, so it cannot receive messages",
            "Only local sessions with a role (CLAUDE_INSTANCE_ID) get messages.",
        )
    raise UsageError(
        f"no role or session named {to!r} in {root}",
        f"Known roles: {', '.join(sorted(known_roles)) or 'none'}; or pass to='all'.",
    )


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the message tools to ``mcp``."""

    @tool(mcp)
    def send_message(
        to: str, body: str, type: str = "MESSAGE", repo: str | None = None, wake: bool = False
    ) -> dict[str, Any]:
        """Send a message to a role, a session (id or name) or everyone present ('all').

        `type` is an upper-case word saying what it is (MESSAGE, QUESTION, HANDOFF,
        STATUS_UPDATE...). A running local session sees it in its context at its next prompt
        or tool call, as "Session '<you>' says: <body>". wake=true also wakes recipients that
        are idle workers (tmux children) by typing a short prompt, so they read it now.
        """
        if not body.strip():
            raise UsageError("the message body is empty", "Pass the text to send as body.")
        messages.validate_type(type)
        root = coord.repo(repo)
        me = coord.me()
        sender = coord.role() or (me.name if me else None)
        roles = recipients(coord, root, to, sender)
        ids = []
        with coord.store.transaction() as conn:
            for role in roles:
                ids.append(
                    messages.send(
                        conn,
                        root,
                        type,
                        sender=sender,
                        recipient=role,
                        session_id=me.id if me else None,
                        body={"text": body},
                    )
                )
        out: dict[str, Any] = {"sent": len(ids), "ids": ids, "to": roles, "type": type,
                               "from": sender}  # fmt: skip
        if wake:
            out["woken"] = [w for role in roles for w in workers.wake(coord, root, role, sender)]
        return out

    @tool(mcp)
    def check_messages(
        role: str | None = None, repo: str | None = None, mark_read: bool = True
    ) -> dict[str, Any]:
        """The unread messages addressed to a role (yours by default), oldest first; they are
        marked read unless mark_read is false."""
        role = own_role(coord, role)
        root = coord.repo(repo)
        with coord.store.transaction() as conn:
            found = messages.pending(conn, root, role)
            if mark_read:
                messages.mark_read(conn, [m.id for m in found])
        return {"role": role, "messages": [m.to_dict() for m in found]}

    @tool(mcp, read_only=True, idempotent=True)
    def get_notifications(
        repo: str | None = None, after_id: int = 0, limit: int = 50
    ) -> dict[str, Any]:
        """What happened in a repository since message id `after_id`: sessions starting and
        ending, status updates, broadcasts and merges. Nothing is marked read; pass the
        returned `last_id` as after_id next time."""
        if after_id < 0 or limit < 1:
            raise UsageError("after_id must be >= 0 and limit >= 1", "Pass after_id=0, limit=50.")
        root = coord.repo(repo)
        rows = coord.store.conn.execute(
            "SELECT id FROM messages WHERE repo = ? AND id > ? AND "
            f"(recipient IS NULL OR type IN ({', '.join('?' for _ in LIFECYCLE)}) "
            "OR type = 'MERGED') ORDER BY id LIMIT ?",
            (root, after_id, *LIFECYCLE, limit),
        ).fetchall()
        ids = {r[0] for r in rows}
        found = [
            m
            for m in messages.list_messages(coord.store.conn, repo=root, after_id=after_id)
            if m.id in ids
        ]
        last = max(ids) if ids else after_id
        return {"notifications": [m.to_dict() for m in found], "last_id": last}
