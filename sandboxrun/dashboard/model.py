"""The dashboard's read model: every session and fan-out group as one snapshot, from the database.

No UI here (the terminal app in ``dashboard/app.py`` and the page in ``web/page.py`` both draw
this): it reads ``state.db`` with plain SQL over a ``sqlite3`` connection, the tables the hooks
and runs write, never a screen. A :class:`Tracker` keeps what each session's events say (last
action, turns, when its state last changed) and folds in only the events written since the
last look (``events since id``), so a refresh with 100 sessions costs a few indexed queries.
``changed(conn)`` asks SQLite's ``data_version`` whether any other connection committed since
the last look: a refresh loop can poll it many times a second for next to nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sandboxrun.agent import AgentEvent
from sandboxrun.coord.presence import presence_state
from sandboxrun.local.states import DEFAULT_STALE_AFTER, Facts, derive_state
from sandboxrun.rows import rows_after
from sandboxrun.store import ACTIVE, SUCCESS, Session, Status

#: tools whose input names one file (the hook records the tool; the claim gate the file)
EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit", "Read"})
#: statuses whose branch holds finished work that may be merged
MERGEABLE = frozenset({*SUCCESS, Status.COMPLETED_WITH_REFUSALS})
#: the most events one ``events_since`` call returns (a reader that falls behind pages on)
EVENTS_PAGE = 500
#: action events read to find a newly seen session's last action (not its whole history)
PRIME_TAIL = 200


@dataclass
class Activity:
    """What a session's events say, folded in event order (see :func:`fold`)."""

    last_tool: str | None = None
    last_file: str | None = None
    last_action_at: float | None = None
    #: distinct assistant responses (sandbox) or prompts submitted (local)
    turns: int = 0
    messages: set[str] = field(default_factory=set)
    state_at: float | None = None
    phase: str | None = None
    last_event_id: int = 0


def fold(act: Activity, kind: str, payload: Any, ts: float, event_id: int = 0) -> None:
    """Fold one event into a session's :class:`Activity` (pure apart from ``act``)."""
    act.last_event_id = max(act.last_event_id, event_id)
    if not isinstance(payload, dict):
        return
    if kind == "status" or kind == "phase":
        act.state_at = ts
        if kind == "phase":
            act.phase = _text(payload.get("phase"))
    elif kind == "agent":
        etype = payload.get("type")
        mid = payload.get("message_id")
        if etype in ("text", "tool_use") and isinstance(mid, str) and mid not in act.messages:
            act.messages.add(mid)
            act.turns += 1
        if etype == "tool_use":
            act.last_tool = _text(payload.get("name"))
            act.last_file = _text(payload.get("summary")) or None
            act.last_action_at = ts
        elif etype == "result" and isinstance(payload.get("num_turns"), int):
            act.turns = max(act.turns, payload["num_turns"])
    elif kind == "hook":
        event = payload.get("event")
        if event == "UserPromptSubmit":
            act.turns += 1
        if event == "PreToolUse" and payload.get("tool"):
            act.last_tool = _text(payload.get("tool"))
            # the hook records the file of file tools (never other inputs)
            act.last_file = _text(payload.get("file")) or None
            act.last_action_at = ts
    elif kind == "claim_gate" and payload.get("path"):
        # The claim gate (an edit near a claim) names the file relative to the work tree.
        act.last_file = _text(payload.get("path"))
        act.last_action_at = ts


def _text(value: Any, limit: int = 300) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Row:
    """One session as the dashboard shows it (JSON-ready through :meth:`to_dict`)."""

    id: str
    name: str
    mode: str
    backend: str
    status: str
    state: str
    state_reason: str
    state_since: float | None
    branch: str | None
    repo: str | None
    role: str | None
    group: str | None
    last_tool: str | None
    last_file: str | None
    last_action_at: float | None
    turns: int | None
    cost_usd: float | None
    time_left: float | None
    presence: str | None
    tmux_session: str | None
    active: bool
    mergeable: bool
    needs_permission: bool
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskRow:
    """One task of a fan-out group."""

    name: str
    depends_on: list[str]
    state: str
    session_id: str | None
    session: str | None
    status: str | None
    cost_usd: float | None
    started_at: float | None
    ended_at: float | None
    reason: str | None


@dataclass
class GroupRow:
    """One fan-out group with its tasks, dependency edges and cost total."""

    id: str
    name: str
    repo: str
    status: str
    created_at: float
    ended_at: float | None
    tasks: list[TaskRow]
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Snapshot:
    """Everything the dashboard shows at one moment."""

    at: float
    repo: str | None
    sessions: list[Row]
    groups: list[GroupRow]
    last_event_id: int

    @property
    def cost_usd(self) -> float:
        return round(sum(r.cost_usd or 0.0 for r in self.sessions), 6)

    def counts(self) -> dict[str, int]:
        """Sessions per state."""
        out: dict[str, int] = {}
        for r in self.sessions:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "repo": self.repo,
            "last_event_id": self.last_event_id,
            "cost_usd": self.cost_usd,
            "counts": self.counts(),
            "sessions": [r.to_dict() for r in self.sessions],
            "groups": [g.to_dict() for g in self.groups],
        }


def row_for(
    session: Session,
    act: Activity,
    *,
    now: float,
    presence: tuple[str, float] | None = None,
    group: str | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> Row:
    """The dashboard row of one session (pure).

    A local session's state comes from its hook facts (``local/states.derive_state`` without
    pane facts: the dashboard reads the database, not screens); a sandbox session's is its
    status (``running`` shows the phase while it prepares).
    """
    if session.mode == "local" and session.status == Status.RUNNING:
        state = derive_state(
            Facts(
                now=now,
                activity=session.activity,
                activity_at=session.activity_at,
                last_heartbeat=session.last_heartbeat,
                resets_at=session.resets_at,
                started_at=session.started_at or session.created_at,
            ),
            stale_after=stale_after,
        )
        name, reason = state.name, state.reason
        since = session.activity_at or act.state_at or session.started_at
    elif session.mode == "local":
        name, reason = "exited", f"session {session.status}"
        since = session.ended_at or act.state_at
    else:
        name = str(session.status)
        reason = act.phase if session.status in ACTIVE and act.phase else (session.error or "")
        since = act.state_at or session.started_at or session.created_at
    if session.mode == "sandbox" and session.deadline and session.status in ACTIVE:
        left: float | None = max(0.0, session.deadline - now)
    elif name == "waiting_quota" and session.resets_at:
        left = max(0.0, session.resets_at - now)
    else:
        left = None
    pres = None
    if presence is not None:
        pres = presence_state(presence[0], presence[1], now, stale_after)
    turns = session.num_turns if session.num_turns is not None else (act.turns or None)
    return Row(
        id=session.id,
        name=session.name,
        mode=session.mode,
        backend=session.backend,
        status=str(session.status),
        state=name,
        state_reason=reason or "",
        state_since=since,
        branch=session.branch,
        repo=session.repo,
        role=session.role,
        group=group,
        last_tool=act.last_tool,
        last_file=act.last_file,
        last_action_at=act.last_action_at,
        turns=turns,
        cost_usd=session.cost_usd,
        time_left=left,
        presence=pres,
        tmux_session=session.tmux_session,
        active=session.status in ACTIVE,
        mergeable=session.status in MERGEABLE and bool(session.branch),
        needs_permission=name == "needs_permission",
        error=session.error,
    )


def events_since(
    conn: sqlite3.Connection,
    after_id: int,
    *,
    session_id: str | None = None,
    limit: int = EVENTS_PAGE,
) -> list[dict[str, Any]]:
    """Events with id > ``after_id`` (of one session, or all), oldest first, at most ``limit``.

    A reader pages on with the last id it got; a payload that is not JSON reads as its text.
    """
    out = []
    columns = "id, session_id, ts, kind, payload"
    for eid, sid, ts, kind, payload in rows_after(
        conn, "events", columns, after_id=after_id, limit=limit, session_id=session_id
    ):
        try:
            data = json.loads(payload)
        except ValueError:
            data = payload
        out.append({"id": eid, "session_id": sid, "ts": ts, "kind": kind, "payload": data})
    return out


def describe(event: dict[str, Any]) -> str:
    """One human line for an event (the log view): plain text, never markup."""
    kind, p = event.get("kind"), event.get("payload")
    if not isinstance(p, dict):
        return f"{kind}: {_text(p, 500)}"
    if kind == "agent":
        data = {k: v for k, v in p.items() if k != "type"}
        return AgentEvent(str(p.get("type")), data).summary
    if kind == "status":
        prev = f" (was {p.get('previous')})" if p.get("previous") else ""
        err = f": {_text(p.get('error'), 300)}" if p.get("error") else ""
        return f"status {p.get('status')}{prev}{err}"
    if kind == "phase":
        detail = f": {_text(p.get('detail'), 300)}" if p.get("detail") else ""
        return f"phase {p.get('phase')}{detail}"
    if kind == "hook":
        bits = [str(p.get("event"))]
        for key in ("tool", "notification_type", "source", "reason", "error"):
            if p.get(key):
                bits.append(f"{key}={_text(p.get(key), 100)}")
        return "hook " + " ".join(bits)
    if kind == "stdout":
        return ""  # the raw stream-json line: the agent events parsed from it say it better
    if kind == "warning":
        return f"warning: {_text(p.get('message'), 500)}"
    if kind == "claim_gate":
        return f"claim gate {p.get('decision')} {_text(p.get('path'), 300)}"
    return f"{kind}: {_text(json.dumps(p, default=str), 300)}"


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's ``data_version``: changes when another connection commits to the database."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


class Tracker:
    """The dashboard's memory between refreshes: each session's :class:`Activity`, kept current
    by reading only the events written since the last refresh.

    ``repo``: the main checkout whose sessions are shown (None: every repository).
    """

    def __init__(
        self, repo: str | None = None, *, stale_after: float = DEFAULT_STALE_AFTER
    ) -> None:
        self.repo = repo
        self.stale_after = stale_after
        self.acts: dict[str, Activity] = {}
        self.last_event_id = 0
        self._version: int | None = None
        #: what the last refresh read: sessions, presence by (repo, role), groups
        self._read: tuple[list[Session], dict[tuple[str, str], tuple[str, float]], list[GroupRow]]
        self._read = ([], {}, [])

    def changed(self, conn: sqlite3.Connection) -> bool:
        """Whether another connection committed since the last call (first call: True)."""
        version = data_version(conn)
        if version == self._version:
            return False
        self._version = version
        return True

    def _prime(self, conn: sqlite3.Connection, session_id: str) -> Activity:
        """A session seen for the first time: its activity from its own events up to now.

        Not by folding every event (a finished run can have thousands): the last status/phase
        event, the last ``PRIME_TAIL`` action events folded in order, and the turns counted in
        SQL (distinct message ids of agent lines, prompts submitted to a local child).
        """
        act = Activity()
        upto = self.last_event_id
        last = conn.execute(
            "SELECT id, ts, kind, payload FROM events WHERE session_id = ? AND id <= ? "
            "AND kind IN ('status', 'phase') ORDER BY id DESC LIMIT 1",
            (session_id, upto),
        ).fetchone()
        phase = conn.execute(
            "SELECT payload FROM events WHERE session_id = ? AND id <= ? AND kind = 'phase' "
            "ORDER BY id DESC LIMIT 1",
            (session_id, upto),
        ).fetchone()
        tail = conn.execute(
            "SELECT id, ts, kind, payload FROM (SELECT id, ts, kind, payload FROM events "
            "WHERE session_id = ? AND id <= ? AND kind IN ('agent', 'hook', 'claim_gate') "
            "ORDER BY id DESC LIMIT ?) ORDER BY id",
            (session_id, upto, PRIME_TAIL),
        ).fetchall()
        for eid, ts, kind, payload in tail:
            data = _loads(payload)
            if isinstance(data, dict) and kind in ("agent", "hook"):
                # turns are counted below over all events, not over this tail
                data = {k: v for k, v in data.items() if k not in ("message_id", "num_turns")}
                if data.get("event") == "UserPromptSubmit":
                    data["event"] = None
            fold(act, kind, data, ts, eid)
        act.messages = {
            str(m)
            for (m,) in conn.execute(
                "SELECT DISTINCT json_extract(payload, '$.message_id') FROM events "
                "WHERE session_id = ? AND id <= ? AND kind = 'agent' "
                "AND json_extract(payload, '$.message_id') IS NOT NULL",
                (session_id, upto),
            )
        }
        prompts = conn.execute(
            "SELECT COUNT(*) FROM events WHERE session_id = ? AND id <= ? AND kind = 'hook' "
            "AND json_extract(payload, '$.event') = 'UserPromptSubmit'",
            (session_id, upto),
        ).fetchone()[0]
        act.turns = len(act.messages) + int(prompts)
        if last is not None:
            act.state_at = last[1]
        if phase is not None:
            data = _loads(phase[0])
            act.phase = _text(data.get("phase")) if isinstance(data, dict) else None
        act.last_event_id = max(act.last_event_id, last[0] if last else 0)
        return act

    def refresh(self, conn: sqlite3.Connection, *, now: float | None = None) -> Snapshot:
        """Fold in new events, then read the sessions, presence and groups: one snapshot."""
        now = time.time() if now is None else now
        self.ingest(conn)
        sql = "SELECT * FROM sessions"
        args: list[Any] = []
        if self.repo is not None:
            sql += " WHERE repo = ?"
            args.append(self.repo)
        cur = conn.execute(sql + " ORDER BY created_at", args)
        names = [d[0] for d in cur.description]
        sessions = [Session.from_row(dict(zip(names, v, strict=True))) for v in cur.fetchall()]
        presence = {
            (r[0], r[1]): (r[2], r[3])
            for r in conn.execute("SELECT repo, role, status, last_heartbeat FROM presence")
        }
        groups = self._groups(conn, sessions)
        for s in sessions:
            if s.id not in self.acts:
                self.acts[s.id] = self._prime(conn, s.id)
        self._read = (sessions, presence, groups)
        return self.at(now)

    def at(self, now: float) -> Snapshot:
        """The last snapshot read, with its clock-derived parts (ages, time left, local states
        that go stale, presence) as of ``now``: no SQL, for a view's per-second tick."""
        sessions, presence, groups = self._read
        group_names = {g.id: g.name for g in groups}
        rows = []
        for s in sessions:
            pres = presence.get((s.repo or "", s.role)) if s.role else None
            rows.append(
                row_for(
                    s,
                    self.acts.get(s.id) or Activity(),
                    now=now,
                    presence=pres,
                    group=group_names.get(s.group_id or ""),
                    stale_after=self.stale_after,
                )
            )
        return Snapshot(now, self.repo, rows, groups, self.last_event_id)

    def ingest(self, conn: sqlite3.Connection) -> set[str]:
        """Fold every event written since the last call; returns the sessions they touched."""
        touched: set[str] = set()
        if not self.acts and not self.last_event_id:
            # First look: nothing to fold into yet; sessions are primed from their own events.
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            self.last_event_id = int(row[0])
            return touched
        while True:
            batch = events_since(conn, self.last_event_id, limit=5000)
            for ev in batch:
                act = self.acts.get(ev["session_id"])
                if act is not None:  # unseen sessions are primed from their events later
                    fold(act, ev["kind"], ev["payload"], ev["ts"], ev["id"])
                touched.add(ev["session_id"])
                self.last_event_id = ev["id"]
            if len(batch) < 5000:
                return touched

    def _groups(self, conn: sqlite3.Connection, sessions: list[Session]) -> list[GroupRow]:
        by_id = {s.id: s for s in sessions}
        sql = "SELECT id, name, repo, status, created_at, ended_at FROM groups"
        args: list[Any] = []
        if self.repo is not None:
            sql += " WHERE repo = ?"
            args.append(self.repo)
        out = []
        for gid, name, repo, status, created, ended in conn.execute(
            sql + " ORDER BY created_at", args
        ).fetchall():
            tasks = []
            for tname, spec, state, sid, reason in conn.execute(
                "SELECT name, spec, state, session_id, reason FROM group_tasks "
                "WHERE group_id = ? ORDER BY position",
                (gid,),
            ).fetchall():
                deps = _loads(spec).get("depends_on") if isinstance(_loads(spec), dict) else []
                s = by_id.get(sid or "")
                tasks.append(
                    TaskRow(
                        name=tname,
                        depends_on=[str(d) for d in deps or []],
                        state=state,
                        session_id=sid,
                        session=s.name if s else None,
                        status=str(s.status) if s else None,
                        cost_usd=s.cost_usd if s else None,
                        started_at=s.started_at if s else None,
                        ended_at=s.ended_at if s else None,
                        reason=reason,
                    )
                )
            cost = round(sum(t.cost_usd or 0.0 for t in tasks), 6)
            out.append(GroupRow(gid, name, repo, status, created, ended, tasks, cost))
        return out


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def snapshot(
    conn: sqlite3.Connection,
    repo: str | None = None,
    *,
    now: float | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> Snapshot:
    """One snapshot from scratch (``dashboard --json``, the page's first load)."""
    return Tracker(repo, stale_after=stale_after).refresh(conn, now=now)


def fmt_seconds(seconds: float | None) -> str:
    """A short duration: 42s, 7m, 3h05m, 2d (empty for None)."""
    if seconds is None:
        return ""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"
