"""The SQLite store: migrations, resolution, concurrency with real processes."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from sandboxrun import schema as store_module
from sandboxrun.config import Settings
from sandboxrun.errors import (
    AmbiguousSessionError,
    NameInUseError,
    SandboxrunError,
    SessionNotFoundError,
)
from sandboxrun.sandbox.sessions import cleanup
from sandboxrun.store import ACTIVE, SUCCESS, TERMINAL, Session, SessionStore, Status

#: the migrations store.py defines (functions named m001_..., m002_...), in order
MIGRATIONS = sorted(n for n in vars(store_module) if re.fullmatch(r"m\d{3}_\w+", n))


def make(store: SessionStore, name: str, **kw):
    return store.create_session(name=name, mode="sandbox", backend="local", **kw)


def test_fresh_database_is_migrated_and_in_wal_mode(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    applied = store.conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert [r[0] for r in applied] == MIGRATIONS
    assert MIGRATIONS[0] == "m001_sessions_and_events"
    # Opening again applies nothing twice.
    SessionStore(tmp_path / "state.db")
    count = store.conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    assert count == len(MIGRATIONS)


def test_create_resolve_by_id_prefix_and_name(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    a = make(store, "alpha", id="aaaa1111")
    make(store, "beta", id="aaaa2222")
    assert store.resolve("alpha").id == a.id
    assert store.resolve("aaaa1").name == "alpha"
    with pytest.raises(AmbiguousSessionError, match="matches 2 sessions"):
        store.resolve("aaaa")
    with pytest.raises(SessionNotFoundError):
        store.resolve("zzz")
    with pytest.raises(SessionNotFoundError):
        store.resolve("%")  # LIKE wildcards are escaped
    with pytest.raises(NameInUseError):
        make(store, "alpha")


def test_status_changes_record_events_and_terminal_is_final(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    s = make(store, "x")
    assert store.set_status(s.id, "running")
    assert store.set_status(s.id, "killed", only_if_active=True, error="stop")
    assert not store.set_status(s.id, "completed", only_if_active=True)
    final = store.get(s.id)
    assert final.status == "killed" and final.ended_at
    kinds = [(e["kind"], e["payload"]["status"]) for e in store.events(s.id)]
    assert kinds == [("status", "created"), ("status", "running"), ("status", "killed")]


def test_json_columns_round_trip(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    s = make(store, "j", options={"keep": True}, warn_at=[1.0, 2.0])
    store.update(s.id, result_commits=["abc", "def"])
    got = store.get(s.id)
    assert got.options == {"keep": True} and got.warn_at == [1.0, 2.0]
    assert got.result_commits == ["abc", "def"]


# Spelled out, not taken from TERMINAL: this is what each status means for a run.
ENDING = [
    "completed",
    "completed_no_changes",
    "completed_with_refusals",
    "failed",
    "timeout",
    "killed",
    "lost",
    "waiting_quota",
]


@pytest.mark.parametrize("status", ENDING)
def test_every_ending_status_records_the_end_and_is_no_orphan(tmp_path, status):
    """A status that ends the run (waiting_quota included) stamps ended_at and is final."""
    store = SessionStore(tmp_path / "state.db")
    s = make(store, "ends")
    store.set_status(s.id, Status.RUNNING)
    assert store.set_status(s.id, status, only_if_active=True)
    ended = store.get(s.id)
    assert ended.is_terminal and not ended.is_active and ended.ended_at is not None
    assert not store.set_status(s.id, Status.FAILED, only_if_active=True)
    assert store.list(active_only=True) == []
    report = cleanup(Settings(home=tmp_path), store, dry_run=True)
    assert report.orphans == []


def test_an_active_session_without_a_driver_is_an_orphan(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    s = make(store, "adrift")
    store.set_status(s.id, Status.RUNNING, owner_pid=None)
    assert store.get(s.id).ended_at is None
    assert [x.name for x in store.list(active_only=True)] == ["adrift"]
    assert cleanup(Settings(home=tmp_path), store, dry_run=True).orphans == ["adrift"]


def test_status_sets_partition_the_statuses():
    assert set(Status) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
    assert set(ENDING) == TERMINAL
    assert SUCCESS <= TERMINAL and Status.WAITING_QUOTA in TERMINAL
    assert Status.RUNNING == "running"  # stored and compared as plain strings


def test_a_row_from_a_newer_version_reads_or_fails_clearly(tmp_path):
    """Unknown columns are ignored; an unknown status is an error that says what to do."""
    store = SessionStore(tmp_path / "state.db")
    s = make(store, "newer")
    store.conn.execute("ALTER TABLE sessions ADD COLUMN from_the_future TEXT")
    assert store.get(s.id).name == "newer"
    store.conn.execute("UPDATE sessions SET status = 'hibernating' WHERE id = ?", (s.id,))
    with pytest.raises(SandboxrunError, match="status 'hibernating'") as info:
        store.get(s.id)
    assert "upgrade" in (info.value.hint or "")


def test_session_has_a_typed_field_for_every_column(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    columns = {r[1] for r in store.conn.execute("PRAGMA table_info(sessions)")}
    assert {f.name for f in fields(Session)} == columns
    s = make(store, "typed")
    assert s.status is Status.CREATED and s.options == {} and s.log_offset == 0
    assert s.to_dict()["status"] == "created"


WRITER = """
import sys
from sandboxrun.store import SessionStore
store = SessionStore(sys.argv[1])
sid = sys.argv[2]
for i in range(200):
    store.add_event(sid, "stdout", {"line": i})
    s = store.get(sid)
    store.update(sid, num_turns=(s.num_turns or 0) + 1)
"""


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_many_processes_write_at_once(tmp_path):
    """Concurrent writers on a fresh file: migrations serialize, no 'database is locked'."""
    db = tmp_path / "fresh.db"
    openers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from sandboxrun.store import SessionStore; SessionStore(sys.argv[1])",
                str(db),
            ]
        )
        for _ in range(6)
    ]
    try:
        codes = [p.wait(timeout=60) for p in openers]
    finally:
        _reap(openers)
    assert codes == [0] * 6
    store = SessionStore(db)
    s = make(store, "busy")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), s.id], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    try:
        errors = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        _reap(procs)
    assert [p.returncode for p in procs] == [0] * 4, b"".join(errors).decode()
    assert len(store.events(s.id, kinds=("stdout",))) == 800
    count = sqlite3.connect(db).execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    assert count == len(MIGRATIONS)


def test_home_directory_is_created(tmp_path):
    path = tmp_path / "deep" / "er" / "state.db"
    SessionStore(path)
    assert Path(path).exists()


OPEN_AT_ONCE = """
import os, sys, time
from sandboxrun.store import SessionStore
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
SessionStore(sys.argv[1]).conn.execute("SELECT count(*) FROM sessions").fetchone()
"""


def test_many_processes_open_a_fresh_database_at_the_same_instant(tmp_path):
    """Switching a fresh file to WAL while others open it never fails with 'locked'."""
    for round_ in range(4):
        db, go = tmp_path / f"fresh{round_}.db", tmp_path / f"go{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, str(db), str(go)], stderr=subprocess.PIPE
            )
            for _ in range(10)
        ]
        go.touch()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
        assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_after_pages_by_id_with_optional_filters(tmp_path):
    """The one paging query (events, messages, reports, merge events): id > after, oldest
    first, a None filter matches everything, limit 0/None: no limit."""
    import sqlite3

    from sandboxrun.rows import rows_after

    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT, kind TEXT)")
    conn.executemany(
        "INSERT INTO t (who, kind) VALUES (?, ?)",
        [("a", "x"), ("b", "x"), ("a", "y"), ("a", "x"), ("b", "y")],
    )
    ids = lambda rows: [r[0] for r in rows]  # noqa: E731
    assert ids(rows_after(conn, "t", "id")) == [1, 2, 3, 4, 5]
    assert ids(rows_after(conn, "t", "id", after_id=2, limit=2)) == [3, 4]
    assert ids(rows_after(conn, "t", "id", who="a", kind=None)) == [1, 3, 4]
    assert ids(rows_after(conn, "t", "id", after_id=1, who="a", kind="x", limit=0)) == [4]
    assert ids(rows_after(conn, "t", "id", kind=("y", "z"))) == [3, 5]
    assert ids(rows_after(conn, "t", "id", kind=())) == [1, 2, 3, 4, 5]
    conn.close()
