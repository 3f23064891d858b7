"""The schema of ``state.db``: named migrations, applied in order on every open.

Never edit a migration that has shipped: add a new one at the end. ``SessionStore`` applies them
under a file lock; ``sandboxrun/hook.py`` relies on the tables they create.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations


@dataclass(frozen=True)
class Migration:
    """One named migration (``fn`` takes a ``sqlite_utils.Database``)."""

    name: str
    fn: Callable[[Any], None]
    transactional: bool = True


class MigrationSet:
    """sqlite-utils ``Migrations`` (same decorator, same ``_sqlite_migrations`` table), made
    only when one is pending: importing sqlite-utils (click, dateutil...) costs ~30 ms, most of
    every process's store opening, and a database is nearly always up to date. Telling that
    takes one plain query (:meth:`pending_names`)."""

    table = "_sqlite_migrations"

    def __init__(self, name: str) -> None:
        self.name = name
        self._migrations: list[Migration] = []

    def __call__(
        self, *, name: str | None = None, transactional: bool = True
    ) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
        """``@migrations()``: register the function as the next migration."""

        def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
            label = name or fn.__name__
            if any(m.name == label for m in self._migrations):
                raise ValueError(f"migration {label!r} is registered twice")
            self._migrations.append(Migration(label, fn, transactional))
            return fn

        return register

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._migrations]

    def pending_names(self, conn: sqlite3.Connection) -> list[str]:
        """The migrations ``conn``'s database has not had yet, in order (reads only)."""
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        done: set[str] = set()
        if exists:
            rows = conn.execute(
                f"SELECT name FROM {self.table} WHERE migration_set = ?", (self.name,)
            ).fetchall()
            done = {row[0] for row in rows}
        return [n for n in self.names if n not in done]

    def as_sqlite_utils(self) -> Migrations:
        """The same migrations as sqlite-utils ``Migrations`` (imported now)."""
        from sqlite_utils.migrations import Migrations

        real = Migrations(self.name)
        for m in self._migrations:
            real(name=m.name, transactional=m.transactional)(m.fn)
        return real

    def pending(self, db: sqlite_utils.Database) -> list[str]:
        """As ``Migrations.pending`` (names)."""
        return self.pending_names(db.conn)

    def apply(self, db: sqlite_utils.Database) -> None:
        """Apply the pending migrations, each in its transaction (``Migrations.apply``)."""
        self.as_sqlite_utils().apply(db)


migrations = MigrationSet("sandboxrun")


@migrations()
def m001_sessions_and_events(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            mode TEXT NOT NULL,              -- sandbox | local
            backend TEXT NOT NULL,           -- e2b | local | tmux
            status TEXT NOT NULL,
            repo TEXT,
            worktree TEXT,
            branch TEXT,
            base_ref TEXT,
            base_commit TEXT,
            prompt TEXT,
            prompt_file TEXT,
            model TEXT,
            max_turns INTEGER,
            sandbox_id TEXT,
            sandbox_home TEXT,
            tmux_session TEXT,
            agent_session_id TEXT,
            agent_pgid INTEGER,
            sandbox_base TEXT,               -- baseline commit inside the sandbox
            log_offset INTEGER NOT NULL DEFAULT 0,  -- bytes of the agent log already consumed
            owner_pid INTEGER,
            owner_host TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            last_heartbeat REAL,
            timeout_s REAL,
            deadline REAL,
            warn_at TEXT,                    -- JSON list of seconds
            exit_code INTEGER,
            cost_usd REAL,
            num_turns INTEGER,
            duration_ms INTEGER,
            result_subtype TEXT,
            result_commits TEXT,             -- JSON list of SHAs
            files_changed INTEGER,
            insertions INTEGER,
            deletions INTEGER,
            error TEXT,
            kill_requested INTEGER NOT NULL DEFAULT 0,
            discard INTEGER NOT NULL DEFAULT 0,
            options TEXT                     -- JSON: keep, allow_sensitive, dry_run, ...
        )
        """
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX events_session ON events(session_id, id)")
    db.execute("CREATE INDEX sessions_status ON sessions(status)")


@migrations()
def m002_sessions_isolated(db: sqlite_utils.Database) -> None:
    # Whether the agent was confined (E2B, or local under bubblewrap): 1, 0, or NULL for
    # sessions recorded before this column existed (and local-mode sessions: no sandbox).
    db.execute("ALTER TABLE sessions ADD COLUMN isolated INTEGER")


@migrations()
def m003_sandbox_lifetime_and_checkpoints(db: sqlite_utils.Database) -> None:
    """The sandbox's end as E2B accepted it, why the agent was stopped, the last checkpoint."""
    for column, kind in (
        ("sandbox_created_at", "REAL"),  # when the sandbox was created (lifetime cap)
        ("sandbox_end", "REAL"),  # the end E2B last accepted for the sandbox
        ("stop_reason", "TEXT"),  # why we stopped the agent (timeout, killed, quota)
        ("checkpoint_at", "REAL"),  # when the last checkpoint of the work was saved
    ):
        db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")


@migrations()
def m004_local_mode_presence_messages(db: sqlite_utils.Database) -> None:
    """Local mode: what hooks learn about a session, presence per role, and messages.

    Written by ``sandboxrun/hook.py`` with plain ``sqlite3`` (the hot path) and read through
    ``sandboxrun/coord``. ``agent_session_id`` holds the Claude session id in both modes.
    """
    for column, kind in (
        ("role", "TEXT"),  # local mode: the agent's role (worktree .worktrees/<role>)
        ("activity", "TEXT"),  # busy | idle | needs_permission | usage_limited | error | exited
        ("activity_at", "REAL"),
        ("transcript_path", "TEXT"),
        ("resets_at", "REAL"),  # usage limit: when it resets (unix seconds), when known
    ):
        db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX sessions_agent_session ON sessions(agent_session_id)")
    db.execute("CREATE INDEX sessions_local_role ON sessions(repo, role)")
    db.execute(
        """
        CREATE TABLE presence (
            repo TEXT NOT NULL,               -- main checkout of the repository
            role TEXT NOT NULL,
            worktree TEXT,
            session_id TEXT,                  -- sandboxrun session
            claude_session_id TEXT,
            status TEXT NOT NULL,             -- active | inactive (stale is computed)
            registered_at REAL NOT NULL,
            last_heartbeat REAL NOT NULL,
            deregistered_at REAL,
            PRIMARY KEY (repo, role)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            repo TEXT,
            type TEXT NOT NULL,               -- SESSION_START | SESSION_END | HEARTBEAT | ...
            sender TEXT,                      -- role (or None for sandboxrun itself)
            recipient TEXT,                   -- role; None: everyone (a broadcast)
            session_id TEXT,
            body TEXT NOT NULL,               -- JSON
            read_at REAL
        )
        """
    )
    db.execute("CREATE INDEX messages_recipient ON messages(repo, recipient, read_at)")


@migrations()
def m005_claims_reports_merges(db: sqlite_utils.Database) -> None:
    """Coordination (issue 11): file claims, status reports, merge subscriptions and events,
    read and written through ``sandboxrun/coord`` (the hook's gate reads ``claims``)."""
    db.execute(
        """
        CREATE TABLE claims (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            repo TEXT NOT NULL,               -- main checkout of the repository
            path TEXT NOT NULL,               -- relative to the work tree, '/'-separated
            mode TEXT NOT NULL,               -- advisory | exclusive
            session_id TEXT NOT NULL,         -- the holder
            role TEXT, claimed_at REAL NOT NULL,
            expires_at REAL,                  -- NULL: until released or the session ends
            released_at REAL, note TEXT
        )
        """
    )
    db.execute("CREATE INDEX claims_path ON claims(repo, path, released_at)")
    db.execute(
        """
        CREATE TABLE reports (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, session_id TEXT,
            task_id TEXT, name TEXT,
            state TEXT NOT NULL,              -- started | running | blocked | done
            notes TEXT, artifacts TEXT NOT NULL DEFAULT '[]'  -- JSON list
        )
        """
    )
    db.execute("CREATE INDEX reports_session ON reports(session_id, id)")
    db.execute(
        """
        CREATE TABLE merge_subscriptions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, branch TEXT NOT NULL,
            base TEXT NOT NULL,
            subscriber TEXT,                  -- role to notify (None: broadcast)
            created_at REAL NOT NULL,
            last_tip TEXT,                    -- branch tip when last checked
            base_at_start TEXT,               -- base tip when subscribed
            notified_at REAL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE merge_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, repo TEXT NOT NULL,
            branch TEXT NOT NULL, base TEXT NOT NULL,
            tip TEXT NOT NULL,                -- the merged commit of the branch
            base_tip TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE UNIQUE INDEX merge_events_once ON merge_events(repo, branch, base, tip)")


@migrations()
def m006_groups(db: sqlite_utils.Database) -> None:
    # Fan-out groups (sandboxrun/fanout): the group, its tasks (the scheduler's whole state, so
    # a new driver can resume it) and its own events; sessions point at their group.
    db.execute(
        """
        CREATE TABLE groups (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            repo TEXT NOT NULL,
            backend TEXT NOT NULL,
            status TEXT NOT NULL,            -- running | completed | failed | killed | stopped
            base_commit TEXT,
            source TEXT,                     -- the TASKS file or directory
            options TEXT,                    -- JSON: max_parallel, budgets, keep_going, ...
            owner_pid INTEGER,
            owner_host TEXT,
            created_at REAL NOT NULL,
            ended_at REAL,
            kill_requested INTEGER NOT NULL DEFAULT 0,
            error TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE group_tasks (
            group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            spec TEXT NOT NULL,              -- JSON TaskSpec
            state TEXT NOT NULL,             -- pending | started | skipped | blocked
            session_id TEXT,
            base_commit TEXT,
            reason TEXT,
            PRIMARY KEY (group_id, name)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE group_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL
        )
        """
    )
    db.execute("ALTER TABLE sessions ADD COLUMN group_id TEXT")


@migrations()
def m007_session_starter(db: sqlite_utils.Database) -> None:
    # The process that created the session row (``sandboxrun run``, the MCP server, a fan-out
    # scheduler) and when it started (``/proc/PID/stat``, so a reused pid is not taken for it):
    # a session whose agent never started, with neither its starter nor a driver alive, was
    # interrupted (``sandboxrun/sandbox/interrupted.py``) rather than still starting.
    for column, kind in (
        ("starter_pid", "INTEGER"),
        ("starter_host", "TEXT"),
        ("starter_start", "TEXT"),
    ):
        db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")


@migrations()
def m008_sessions_created_index(db: sqlite_utils.Database) -> None:
    """Sessions by creation time: lists (``status``, MCP ``list_sessions``) are newest first
    and paged, so a page reads the index instead of sorting every row."""
    db.execute("CREATE INDEX IF NOT EXISTS sessions_created ON sessions(created_at)")
