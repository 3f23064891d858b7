"""The one SQLite database both modes share: sessions and their events.

WAL mode and a busy timeout let many ``sandboxrun`` processes use it at once; every
read-modify-write runs inside ``BEGIN IMMEDIATE`` so two writers never interleave; the schema
evolves through named migrations (sqlite-utils ``Migrations``), applied under a file lock so two
processes opening a fresh database never race.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandboxrun import faults
from sandboxrun.errors import (
    AmbiguousSessionError,
    ConfigError,
    NameInUseError,
    SandboxrunError,
    SessionNotFoundError,
)
from sandboxrun.redact import clamp
from sandboxrun.rows import rows_after
from sandboxrun.schema import migrations
from sandboxrun.tuning import env_seconds

#: the most one event stores (JSON characters); longer strings in a payload are cut. Agent
#: output is bounded before it gets here (agent.stored_line, agent.parse_line): this is the
#: backstop for every other writer.
MAX_EVENT_CHARS = 1 << 20
#: how long a query waits for another process's write lock before it is a "locked" fault
BUSY_TIMEOUT = 30.0


def busy_timeout(on_bad: Callable[[ConfigError], None] | None = None) -> float:
    """Seconds to wait for a lock: ``SANDBOXRUN_DB_LOCK_TIMEOUT``, else :data:`BUSY_TIMEOUT`.

    A bad value is a :class:`ConfigError` (``tuning.env_seconds``); the hook passes ``on_bad``
    to log it and wait the default instead.
    """
    wait = env_seconds("SANDBOXRUN_DB_LOCK_TIMEOUT", BUSY_TIMEOUT, zero_ok=True, on_bad=on_bad)
    return BUSY_TIMEOUT if wait is None else wait


class Status(StrEnum):
    """Where a session stands. A ``StrEnum``: members compare equal to their stored strings."""

    CREATED = "created"
    PREPARING = "preparing"
    PACKING = "packing"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    COLLECTING = "collecting"
    COMPLETED = "completed"
    COMPLETED_NO_CHANGES = "completed_no_changes"
    #: on the branch except what a check kept back (`sandboxrun apply` lands that later)
    COMPLETED_WITH_REFUSALS = "completed_with_refusals"
    FAILED = "failed"
    TIMEOUT = "timeout"
    KILLED = "killed"
    LOST = "lost"
    #: the agent hit a Claude usage limit; the run ended and its work so far was collected
    WAITING_QUOTA = "waiting_quota"


#: statuses of a session whose agent may still be working (or is about to start)
ACTIVE = frozenset(
    {
        Status.CREATED,
        Status.PREPARING,
        Status.PACKING,
        Status.PROVISIONING,
        Status.RUNNING,
        Status.COLLECTING,
    }
)
#: statuses after which nothing more happens to a session
TERMINAL = frozenset(Status) - ACTIVE
#: the terminal statuses of a run that did what it was asked
SUCCESS = frozenset({Status.COMPLETED, Status.COMPLETED_NO_CHANGES})


_JSON_COLUMNS = {"warn_at", "result_commits", "options"}


@dataclass(frozen=True)
class Session:
    """One row of ``sessions``, typed, with JSON columns decoded. Built by :meth:`from_row`."""

    id: str
    name: str
    mode: str  # sandbox | local
    backend: str  # e2b | local | tmux
    status: Status
    created_at: float
    repo: str | None = None
    worktree: str | None = None
    branch: str | None = None
    base_ref: str | None = None
    base_commit: str | None = None
    prompt: str | None = None
    prompt_file: str | None = None
    model: str | None = None
    max_turns: int | None = None
    sandbox_id: str | None = None
    sandbox_home: str | None = None
    tmux_session: str | None = None
    agent_session_id: str | None = None
    agent_pgid: int | None = None
    #: baseline commit inside the sandbox
    sandbox_base: str | None = None
    #: bytes of the agent log already consumed
    log_offset: int = 0
    owner_pid: int | None = None
    owner_host: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    last_heartbeat: float | None = None
    timeout_s: float | None = None
    deadline: float | None = None
    warn_at: list[float] | None = None
    exit_code: int | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    result_subtype: str | None = None
    result_commits: list[str] | None = None
    files_changed: int | None = None
    insertions: int | None = None
    deletions: int | None = None
    error: str | None = None
    kill_requested: int = 0
    discard: int = 0
    #: when the sandbox was created (the plan's lifetime cap counts from it)
    sandbox_created_at: float | None = None
    #: the sandbox's end as the backend last confirmed it (None: no end, e.g. local)
    sandbox_end: float | None = None
    #: why we stopped the agent (timeout, killed, quota), kept for a resumed collection
    stop_reason: str | None = None
    #: when the last checkpoint of the work was saved
    checkpoint_at: float | None = None
    #: keep, allow_sensitive, dry_run, compression, ... (NULL in the row reads as {})
    options: dict[str, Any] = field(default_factory=dict)
    #: whether the agent was confined (E2B, or local under bubblewrap); None for sessions
    #: recorded before the column existed, and local-mode sessions
    isolated: bool | None = None
    # -- local mode (m004; maintained by sandboxrun/hook.py) --
    role: str | None = None
    #: busy | idle | needs_permission | usage_limited | error | exited
    activity: str | None = None
    activity_at: float | None = None
    transcript_path: str | None = None
    #: when a usage limit resets (unix seconds), when known
    resets_at: float | None = None
    #: the fan-out group the session belongs to (``groups.id``), if any
    group_id: str | None = None
    #: the process that created the row, and its start time (``process_start``), m007
    starter_pid: int | None = None
    starter_host: str | None = None
    starter_start: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> Session:
        """The session of a ``sessions`` row: JSON columns decoded, status typed.

        Columns this version does not know (added by a newer sandboxrun sharing the database)
        are ignored.
        """
        data = {k: v for k, v in dict(row).items() if k in _SESSION_FIELDS}
        for key in _JSON_COLUMNS:
            if data.get(key):
                data[key] = json.loads(data[key])
        data["options"] = data.get("options") or {}
        try:
            data["status"] = Status(data["status"])
        except ValueError:
            raise SandboxrunError(
                f"session {data.get('name')!r} has status {data['status']!r}, which this "
                "version of sandboxrun does not know",
                "A newer sandboxrun wrote it: upgrade (scripts/install.sh) to work with it.",
            ) from None
        if data.get("isolated") is not None:
            data["isolated"] = bool(data["isolated"])
        return cls(**data)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (``cost_usd``, ``num_turns`` ... as stored; status as a string)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = str(self.status)
        return data


_SESSION_FIELDS = frozenset(f.name for f in fields(Session))


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values ready for SQLite: JSON columns serialized."""
    return {
        k: (json.dumps(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in fields.items()
    }


def _update_row(conn: sqlite3.Connection, session_id: str, fields: dict[str, Any]) -> None:
    row = _encode(fields)
    sets = ", ".join(f"{k} = ?" for k in row)
    conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", [*row.values(), session_id])


def new_session_id() -> str:
    """A short random id, unique enough to be typed as a prefix."""
    return os.urandom(6).hex()  # secrets.token_hex(6), without importing secrets (hmac...)


class SessionStore:
    """Access to ``state.db``. Cheap to create; open one per process (or per thread)."""

    def __init__(self, path: Path, *, timeout: float | None = None) -> None:
        """``timeout``: seconds to wait for another process's lock (None: :func:`busy_timeout`)."""
        self.path = Path(path)
        wait = busy_timeout() if timeout is None else timeout
        # Every fault of the database or the disk under it (corrupt, read-only, locked, full)
        # is a StateError with the next step, here and in every later query: faults.py.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we BEGIN ourselves, so read-modify-write can be IMMEDIATE.
            self.conn = faults.connect(self.path, timeout=wait)
        except OSError as exc:
            raise faults.open_fault(exc, self.path) from exc
        try:
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int((self.conn.busy_wait or 0) * 1000)}")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except OSError as exc:  # the migration lock file
            self.conn.close()
            raise faults.open_fault(exc, self.path) from exc
        except BaseException:
            self.conn.close()
            raise

    def _migrate(self) -> None:
        # WAL is a property of the file: once set it stays. Switching needs an exclusive lock
        # that busy_timeout does not wait for, so two processes opening a fresh database at
        # once could fail with "database is locked"; switch only under the file lock.
        wal = self.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        if wal and not migrations.pending_names(self.conn):
            return  # the usual case: no sqlite-utils import at all (schema.MigrationSet)
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not wal:
                self.conn.execute("PRAGMA journal_mode = WAL")
            try:
                migrations.apply(db)  # re-checks pending under the lock
            except sqlite3.Error as exc:  # faults of the disk are StateErrors already
                raise faults.schema_fault(exc, self.path) from exc

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock up front."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            # After a fault (disk full, I/O error) SQLite may have rolled back already.
            with contextlib.suppress(sqlite3.Error, faults.StateError):
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error, faults.StateError):
                self.conn.execute("ROLLBACK")
            raise

    # -- sessions ---------------------------------------------------------------------------

    def create_session(self, **fields: Any) -> Session:
        """Insert a session; raises NameInUseError if the name is taken."""
        fields.setdefault("id", new_session_id())
        fields.setdefault("created_at", time.time())
        fields.setdefault("status", Status.CREATED)
        # Who is starting it: until a driver claims the session, only this process can move
        # it on; once it is gone the start was interrupted (sandbox.interrupted).
        fields.setdefault("starter_pid", os.getpid())
        fields.setdefault("starter_host", os.uname().nodename)
        fields.setdefault("starter_start", process_start(os.getpid()))
        row = _encode(fields)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self.transaction() as conn:
                conn.execute(f"INSERT INTO sessions ({cols}) VALUES ({marks})", list(row.values()))
                self._add_event(conn, fields["id"], "status", {"status": fields["status"]})
        except sqlite3.IntegrityError as exc:
            raise NameInUseError(
                f"a session named {fields.get('name')!r} already exists",
                f"Pick another --name, or see it with `sandboxrun status {fields.get('name')}`.",
            ) from exc
        return self.get(fields["id"])

    def get(self, session_id: str) -> Session:
        row = self.conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFoundError(
                f"no session with id {session_id!r}", "List sessions with `sandboxrun status`."
            )
        return Session.from_row(row)

    def resolve(self, ref: str) -> Session:
        """Find a session by exact id, exact name, or unique id prefix."""
        ref = ref.strip()
        row = self.conn.execute(
            "SELECT * FROM sessions WHERE id = ? OR name = ?", (ref, ref)
        ).fetchone()
        if row is not None:
            return Session.from_row(row)
        if ref:
            rows = self.conn.execute(
                "SELECT * FROM sessions WHERE id LIKE ? ESCAPE '\\'",
                (ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
            if len(rows) == 1:
                return Session.from_row(rows[0])
            if len(rows) > 1:
                names = ", ".join(f"{r['id']} ({r['name']})" for r in rows[:5])
                raise AmbiguousSessionError(
                    f"{ref!r} matches {len(rows)} sessions: {names}",
                    "Type more characters of the id, or use the session name.",
                )
        raise SessionNotFoundError(
            f"no session matches {ref!r}",
            "List sessions with `sandboxrun status` and use an id, id prefix or name.",
        )

    def list(self, *, repo: str | None = None, active_only: bool = False) -> list[Session]:
        sql = "SELECT * FROM sessions"
        where, args = [], []
        if repo:
            where.append("repo = ?")
            args.append(repo)
        if active_only:
            where.append(f"status IN ({', '.join('?' for _ in ACTIVE)})")
            args.extend(sorted(ACTIVE))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at"
        return [Session.from_row(r) for r in self.conn.execute(sql, args).fetchall()]

    def update(self, session_id: str, **fields: Any) -> Session:
        """Set columns on a session (JSON columns encoded)."""
        if fields:
            with self.transaction() as conn:
                _update_row(conn, session_id, fields)
        return self.get(session_id)

    def set_status(
        self, session_id: str, status: Status, *, only_if_active: bool = False, **fields: Any
    ) -> bool:
        """Change status (and other columns) and record a ``status`` event, atomically.

        With ``only_if_active`` nothing happens when the session already reached a terminal
        status: the first process to finish a session decides how it ended.
        """
        with self.transaction() as conn:
            current = conn.execute(
                "SELECT status FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if current is None:
                raise SessionNotFoundError(f"no session with id {session_id!r}")
            if only_if_active and current["status"] in TERMINAL:
                return False
            if status in TERMINAL:
                fields.setdefault("ended_at", time.time())
            _update_row(conn, session_id, {"status": status, **fields})
            payload: dict[str, Any] = {"status": status, "previous": current["status"]}
            if fields.get("error"):
                payload["error"] = fields["error"]
            self._add_event(conn, session_id, "status", payload)
        return True

    def request_kill(self, session_id: str, *, discard: bool) -> None:
        """Flag a session for the process that drives it to stop (and maybe discard)."""
        self.update(session_id, kill_requested=1, discard=1 if discard else 0)

    def delete(self, session_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # -- events -----------------------------------------------------------------------------

    @staticmethod
    def _add_event(conn: sqlite3.Connection, session_id: str, kind: str, payload: Any) -> int:
        data = json.dumps(payload, default=str)
        if len(data) > MAX_EVENT_CHARS:  # last resort: whatever the source, one event stays small
            data = json.dumps(clamp(payload, 4096, items=50), default=str)
            if len(data) > MAX_EVENT_CHARS:
                data = json.dumps({"truncated": True, "head": data[: MAX_EVENT_CHARS // 2]})
        cur = conn.execute(
            "INSERT INTO events (session_id, ts, kind, payload) VALUES (?, ?, ?, ?)",
            (session_id, time.time(), kind, data),
        )
        return int(cur.lastrowid or 0)

    def add_event(self, session_id: str, kind: str, payload: Any) -> int:
        """Append one event; returns its id."""
        with self.transaction() as conn:
            return self._add_event(conn, session_id, kind, payload)

    def add_events(self, session_id: str, items: builtins.list[tuple[str, Any]]) -> None:
        """Append several events in one transaction (cheap for bursts of log lines)."""
        if not items:
            return
        with self.transaction() as conn:
            for kind, payload in items:
                self._add_event(conn, session_id, kind, payload)

    def events(
        self,
        session_id: str,
        *,
        after_id: int = 0,
        kinds: tuple[str, ...] | None = None,
        limit: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Events of a session with id > ``after_id``, oldest first."""
        rows = rows_after(self.conn, "events", "id, ts, kind, payload", after_id=after_id,
                          limit=limit, session_id=session_id, kind=tuple(kinds or ()))  # fmt: skip
        return [
            {"id": r["id"], "ts": r["ts"], "kind": r["kind"], "payload": json.loads(r["payload"])}
            for r in rows
        ]


def owner_alive(session: Session) -> bool:
    """True when the process driving ``session`` is alive on this machine."""
    pid = session.owner_pid
    if not pid or session.owner_host not in (None, os.uname().nodename):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque token (``/proc/PID/stat`` field 22: clock
    ticks after boot, plus the boot id); None where there is no ``/proc`` or no such process.

    Two processes with the same pid never share it, so a recorded (pid, start) pair names one
    process even after the pid is reused.
    """
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            ticks = fh.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = ""
    return f"{boot}:{ticks}"


def same_process(recorded: str | None, current: str | None) -> bool:
    """Whether a process seen now is the one recorded: pure. Without a recorded start time
    (an older row, no ``/proc``), a live pid counts as the same process."""
    return recorded is None or current is None or recorded == current


def starter_alive(session: Session) -> bool:
    """True when the process that created ``session`` may still be starting it.

    A starter on another machine cannot be checked from here: it counts as alive (never take a
    start over from under a process we cannot see).
    """
    pid = session.starter_pid
    if not pid:
        return False
    if session.starter_host not in (None, os.uname().nodename):
        return True
    if not _pid_alive(int(pid)):
        return False
    return same_process(session.starter_start, process_start(int(pid)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); treat it as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
