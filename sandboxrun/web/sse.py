"""Server-sent events for the dashboard page: one poller per server, many browsers.

The :class:`Hub` asks SQLite's ``data_version`` every ``interval`` seconds (on its own
connection, in a worker thread so the event loop never waits on the disk). When another process
committed, it folds the new rows of ``events`` into one :class:`~sandboxrun.dashboard.model.Tracker`
per scope (a repository, or every one), and hands each subscriber the newest snapshot and the
new events of its scope's sessions. A slow browser never slows the others: it only ever gets
the latest snapshot, and its event backlog is capped (past the cap it is told to reload).
The poller runs while someone listens and stops with the last subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sandboxrun.dashboard.model import Tracker, data_version, describe, events_since
from sandboxrun.errors import SandboxrunError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: events kept for one subscriber that has not read them; past this it is told to reload
BACKLOG = 2000
#: seconds between keep-alive comments on an idle stream (proxies close silent ones)
KEEPALIVE = 15.0


def event_json(ev: dict[str, Any]) -> dict[str, Any]:
    """What the page gets of one event: a line of text (never HTML) and where it belongs."""
    return {
        "id": ev["id"],
        "session_id": ev["session_id"],
        "ts": ev["ts"],
        "kind": ev["kind"],
        "text": describe(ev),
    }


class Subscriber:
    """One browser's stream: the newest snapshot and the events it has not been sent yet."""

    def __init__(self, scope: str | None) -> None:
        self.scope = scope
        self.wake = asyncio.Event()
        self.snapshot: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.overflow = False
        #: the last event its first snapshot already covers
        self.after = 0


class Hub:
    """The one poller of ``state.db`` behind every open page of this server."""

    def __init__(self, db_path: Path, *, interval: float = 0.2) -> None:
        self.db_path = db_path
        self.interval = interval
        self.subscribers: set[Subscriber] = set()
        self.trackers: dict[str | None, Tracker] = {}
        self.task: asyncio.Task[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        #: the last event handed out (None until the first snapshot fixes where streams start)
        self._last_event_id: int | None = None
        self._lock = asyncio.Lock()
        #: polls and refreshes done (the benchmark reads them)
        self.polls = 0
        self.refreshes = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.db_path, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 5000")
        return self._conn

    def _snapshot(self, scope: str | None) -> dict[str, Any]:
        tracker = self.trackers.get(scope)
        if tracker is None:
            tracker = self.trackers[scope] = Tracker(scope)
        snap = tracker.refresh(self._connection()).to_dict()
        if self._last_event_id is None:
            # events after this snapshot are what the streams carry: none written between the
            # first page's snapshot and the first poll may be lost
            self._last_event_id = snap["last_event_id"]
        return snap

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the hub's connection in a worker thread (one reader at a time)."""
        async with self._lock:
            return await asyncio.to_thread(lambda: fn(self._connection()))

    async def current(self, scope: str | None) -> dict[str, Any]:
        """A snapshot of ``scope`` now (a page's first load, a new stream)."""
        async with self._lock:
            return await asyncio.to_thread(self._snapshot, scope)

    def _poll(self, scopes: set[str | None]) -> tuple[list[dict[str, Any]], dict[Any, Any]] | None:
        """In a worker thread: None when nothing was committed, else (new events, snapshots)."""
        conn = self._connection()
        self.polls += 1
        version = data_version(conn)
        if version == self._version:
            return None
        self._version = version
        if self._last_event_id is None:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            self._last_event_id = int(row[0])
        new: list[dict[str, Any]] = []
        while True:
            batch = events_since(conn, self._last_event_id)
            new.extend(event_json(ev) for ev in batch)
            if batch:
                self._last_event_id = batch[-1]["id"]
            if len(batch) < 500:
                break
        self.refreshes += 1
        return new, {scope: self._snapshot(scope) for scope in scopes}

    async def _run(self) -> None:
        while self.subscribers:
            async with self._lock:
                scopes = {s.scope for s in self.subscribers}
                try:
                    found = await asyncio.to_thread(self._poll, scopes)
                except (sqlite3.Error, SandboxrunError) as exc:
                    # a locked or damaged database, a row from a newer version: say so in the
                    # log and keep polling (the pages keep their last snapshot meanwhile)
                    log.warning("dashboard poll failed: %s", exc)
                    self._version = None
                    found = None
            if found is not None:
                new, snaps = found
                for sub in list(self.subscribers):
                    snap = snaps.get(sub.scope)
                    if snap is None:
                        continue
                    ids = {s["id"] for s in snap["sessions"]}
                    sub.snapshot = snap
                    sub.events.extend(
                        e for e in new if e["session_id"] in ids and e["id"] > sub.after
                    )
                    if len(sub.events) > BACKLOG:
                        sub.events, sub.overflow = [], True
                    sub.wake.set()
            await asyncio.sleep(self.interval)
        self.task = None

    def _ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def stream(self, scope: str | None) -> AsyncIterator[str]:
        """The text/event-stream of one browser: ``snapshot`` and ``events`` messages."""
        sub = Subscriber(scope)
        first = await self.current(scope)
        sub.after = int(first.get("last_event_id") or 0)
        self.subscribers.add(sub)
        self._ensure_running()
        try:
            yield "retry: 2000\n\n"
            yield _message("snapshot", first, first.get("last_event_id"))
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.wake.wait(), KEEPALIVE)
                if not sub.wake.is_set():
                    yield ": keep-alive\n\n"
                    continue
                sub.wake.clear()
                if sub.overflow:
                    sub.overflow = False
                    yield _message("reload", {"why": "too many events at once"})
                if sub.snapshot is not None:
                    snap, sub.snapshot = sub.snapshot, None
                    yield _message("snapshot", snap, snap.get("last_event_id"))
                if sub.events:
                    events, sub.events = sub.events, []
                    yield _message("events", events, events[-1]["id"])
        finally:
            self.subscribers.discard(sub)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _message(event: str, data: Any, event_id: int | None = None) -> str:
    """One SSE message. JSON never holds a raw newline, so ``data:`` is a single line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"
