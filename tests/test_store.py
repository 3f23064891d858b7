"""The SQLite store: migrations, resolution, concurrency with real processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sandboxrun.errors import AmbiguousSessionError, NameInUseError, SessionNotFoundError
from sandboxrun.store import SessionStore


def make(store: SessionStore, name: str, **kw):
    return store.create_session(name=name, mode="sandbox", backend="local", **kw)


def test_fresh_database_is_migrated_and_in_wal_mode(tmp_path):
    store = SessionStore(tmp_path / "state.db")
    mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    applied = store.conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert [r[0] for r in applied] == ["m001_sessions_and_events"]
    # Opening again applies nothing twice.
    SessionStore(tmp_path / "state.db")
    assert store.conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 1


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
    assert sqlite3.connect(db).execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 1


def test_home_directory_is_created(tmp_path):
    path = tmp_path / "deep" / "er" / "state.db"
    SessionStore(path)
    assert Path(path).exists()
