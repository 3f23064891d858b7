"""``sandboxrun discover`` / ``adopt``: children alive in tmux that the database does not know.

After a lost database (or rows deleted by hand), the children keep running in their tmux
sessions ``{prefix}_child_{name}``. Each pane's environment still holds the
``SANDBOXRUN_SESSION`` it was started with, so adopting recreates the row under that same id:
the child's hooks bind to it again at their next call, with nothing to reconfigure. Until then
the state comes from the pane (title, permission dialog).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from sandboxrun.local.identity import find_checkout
from sandboxrun.local.observe import PERMISSION_TEXT, screen_working
from sandboxrun.local.states import title_busy
from sandboxrun.store import ACTIVE, SessionStore, Status
from sandboxrun.tmux import Tmux


@dataclass
class Orphan:
    """A child's tmux session without a live row."""

    tmux_session: str
    name: str
    session_id: str | None
    worktree: str
    pid: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discover(store: SessionStore, tmux: Tmux, prefix: str) -> list[Orphan]:
    """Live ``{prefix}_child_*`` sessions that no active row points at."""
    marker = f"{prefix}_child_"
    known = {
        s.tmux_session
        for s in store.list()
        if s.backend == "tmux" and s.status in ACTIVE and s.tmux_session
    }
    out = []
    for name in tmux.sessions(marker):
        if name in known:
            continue
        pane = tmux.pane(name)
        if pane is None or pane.dead:
            continue
        out.append(
            Orphan(
                tmux_session=name,
                name=name[len(marker) :],
                session_id=tmux.session_env(name, "SANDBOXRUN_SESSION"),
                worktree=pane.path,
                pid=pane.pid,
            )
        )
    return out


def adopt(store: SessionStore, tmux: Tmux, orphan: Orphan) -> Any:
    """Recreate the row of one orphan (same id when the pane says it); the session."""
    checkout = find_checkout(orphan.worktree) if orphan.worktree else None
    role = tmux.session_env(orphan.tmux_session, "CLAUDE_INSTANCE_ID") or orphan.name
    pane, text = tmux.snapshot(orphan.tmux_session)
    busy = screen_working(text)  # the status line; the title stays "✳" mid-turn (2.1.330)
    if busy is None:
        busy = title_busy(pane.title if pane else None)
    activity = (
        "needs_permission"
        if PERMISSION_TEXT in text
        else ("busy" if busy else "idle" if busy is False else None)
    )
    sid = orphan.session_id
    for row in store.conn.execute(
        "SELECT id FROM sessions WHERE name = ? AND id != ?", (orphan.name, sid or "")
    ).fetchall():  # an ended row of the same name: renamed out of the way, kept
        store.update(row["id"], name=f"{orphan.name}~{row['id'][:8]}")
    fields: dict[str, Any] = {
        "name": orphan.name,
        "repo": str(checkout.main) if checkout else orphan.worktree,
        "worktree": str(checkout.top) if checkout else orphan.worktree,
        "branch": checkout.branch() if checkout else None,
        "role": role,
        "tmux_session": orphan.tmux_session,
        "activity": activity,
        "activity_at": time.time() if activity else None,
        "options": {"adopted": True, "socket": tmux.socket_path},
    }
    exists = (
        sid is not None
        and store.conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone()
    )
    if (
        sid is not None and exists
    ):  # the child's own (ended) row: revive it, so its hooks land there again
        store.set_status(sid, Status.RUNNING, ended_at=None, **fields)
        session = store.get(sid)
    else:
        if sid:
            fields["id"] = sid
        session = store.create_session(
            mode="local", backend="tmux", status=Status.RUNNING, started_at=time.time(), **fields
        )
    store.add_event(session.id, "adopted", {"tmux_session": orphan.tmux_session})
    return session
