"""``sandboxrun dashboard``: the whole team in one full-screen terminal view (Textual).

It draws :mod:`sandboxrun.dashboard.model` snapshots; the keys that act on a session live in
:mod:`sandboxrun.dashboard.keys` (through :mod:`sandboxrun.dashboard.actions`, the CLI's own
functions). Updates: a timer asks SQLite's
``data_version`` every ``poll`` seconds (a pragma, no table read) and refreshes only when some
other process committed; once a second the clock-derived cells (ages, time left, local states
going stale) are recomputed from the last read, without SQL. The table
(:mod:`sandboxrun.dashboard.table`) redraws only the rows whose text changed. Everything an
agent can write (names, branches, files, log lines, conversation) is shown as plain text, never
as markup. Actions that wait (kill collects, send confirms) run in worker threads.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Log, Static

from sandboxrun.config import Settings
from sandboxrun.dashboard import actions
from sandboxrun.dashboard.keys import ActingApp
from sandboxrun.dashboard.model import Row, Snapshot, Tracker, describe, events_since, fmt_seconds
from sandboxrun.dashboard.table import SessionTable
from sandboxrun.errors import SandboxrunError
from sandboxrun.store import SessionStore

#: the columns, in the order shown: the short ones first, so a narrow terminal still shows
#: each session's state, time left and cost; the last action takes the rest of the width
COLUMNS = (
    "name",
    "mode",
    "state",
    "age",
    "branch",
    "turns",
    "cost",
    "left",
    "presence",
    "last action",
)
#: each column's width with room to spare, and the least it shrinks to (equal: fixed; the
#: state column fits "needs_permission"); longer text is cut with "…". A row is redrawn alone
#: when its cells change, never the whole table to re-measure a column.
WIDTHS = (18, 7, 16, 5, 24, 5, 7, 6, 8, 40)
LEAST = (10, 7, 16, 5, 12, 5, 7, 6, 8, 12)


def cells(row: Row, now: float, *, with_repo: bool = False) -> tuple[str, ...]:
    """The table's cells of one row (plain strings, drawn as text: never markup).

    ``with_repo`` (every repository shown): the name says whose it is, ``repo:name``."""
    action = " ".join(x for x in (row.last_tool or "", row.last_file or "") if x)
    name = f"{Path(row.repo).name}:{row.name}" if with_repo and row.repo else row.name
    return (
        name,
        row.mode,
        row.state,
        fmt_seconds(now - row.state_since) if row.state_since else "",
        row.branch or "",
        "" if row.turns is None else str(row.turns),
        "" if row.cost_usd is None else f"${row.cost_usd:.2f}",
        fmt_seconds(row.time_left),
        row.presence or "",
        action,
    )


def group_lines(snap: Snapshot) -> list[str]:
    """The fan-out groups as text: each task with its state and what it waits on."""
    lines = []
    for g in snap.groups:
        lines.append(f"group {g.name}: {g.status}, ${g.cost_usd:.2f}, {len(g.tasks)} tasks")
        for t in g.tasks:
            deps = f" after {', '.join(t.depends_on)}" if t.depends_on else ""
            status = f" [{t.status}]" if t.status else ""
            lines.append(f"  {t.name}: {t.state}{status}{deps}")
    return lines or ["no fan-out groups"]


#: the keys: (key, action, what the footer says)
KEYS = (
    ("q", "quit", "Quit"),
    ("o", "open_pane", "Open pane"),
    ("s", "send", "Send"),
    ("r", "read", "Read"),
    ("l", "follow", "Log"),
    ("K", "kill", "Kill"),
    ("e", "extend", "Extend"),
    ("m", "merge", "Merge"),
    ("a", "approve", "Approve"),
    ("x", "refuse", "Refuse"),
    ("g", "groups", "Groups"),
)
HELP = [
    "keys on the selected session (arrows, PgUp/PgDn, Home/End, click): o open its tmux pane,",
    "s send a message, r read its conversation, l follow its log, K kill, e extend,",
    "m merge its finished branch, a approve / x refuse the permission it waits on;",
    "g fan-out groups, q quit",
]


class DashboardApp(ActingApp):
    """The live table of sessions, a detail pane (log, conversation or groups), and keys."""

    TITLE = "sandboxrun dashboard"
    CSS = """
    #summary { height: 1; padding: 0 1; }
    #sessions { height: 2fr; }
    #detail { height: 1fr; border-top: solid $accent; }
    #prompt { width: 80; height: auto; padding: 1 2; border: thick $accent; background: $panel; }
    Prompt, Confirm { align: center middle; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding(*k) for k in KEYS]

    def __init__(
        self,
        settings: Settings,
        repo: str | None,
        *,
        poll: float = 0.2,
        db_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.db_path = db_path or settings.db_path
        self.tracker = Tracker(repo)
        self.poll = poll
        self.snap: Snapshot | None = None
        self.following: str | None = None
        self.follow_after = 0
        self.detail_mode = "help"
        self.conn: sqlite3.Connection | None = None
        self.said: list[str] = []
        self._said_summary = ""
        self._group_lines: list[str] = []
        self._unread = False

    # -- drawing ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="summary")
        columns = list(zip(COLUMNS, WIDTHS, LEAST, strict=True))
        yield SessionTable(columns, keep_end=("branch", "last action"), id="sessions")
        yield Log(id="detail", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        SessionStore(self.db_path).close()  # the schema exists before we read it
        self.conn = sqlite3.connect(self.db_path, check_same_thread=False)
        table = self.query_one("#sessions", SessionTable)
        self.tracker.changed(self.conn)  # the version read now: the first poll reads no more
        self.refresh_view()
        self.detail(HELP)
        self.set_interval(self.poll, self.check)
        self.set_interval(1.0, self.tick)  # ages, time left, stale states
        table.focus()

    def check(self) -> None:
        """The cheap poll: redraw only when another process committed something."""
        if self.conn is not None and self.tracker.changed(self.conn):
            self.refresh_view()

    def tick(self) -> None:
        """Once a second: what the clock changes (ages, time left, local states going stale),
        from the last read, without SQL; only rows whose text changed are redrawn."""
        if self._unread:
            self.refresh_view()  # the last read failed: try again
        elif self.snap is not None:
            self.show(self.tracker.at(time.time()))

    def refresh_view(self) -> None:
        """Read the database (new events, the sessions) and show it."""
        if self.conn is None:
            return
        try:
            snap = self.tracker.refresh(self.conn)
        except (sqlite3.Error, SandboxrunError) as exc:
            # a locked or damaged database, a row from a newer version: say it, keep the last
            # view, try again at the next tick
            text = exc.message if isinstance(exc, SandboxrunError) else str(exc)
            self._summary(f"cannot read the database: {text}")
            self._unread = True
            return
        self._unread = False
        self.show(snap)
        if self.following:
            self._follow_more()
        elif self.detail_mode == "groups" and group_lines(snap) != self._group_lines:
            self.action_groups()

    def show(self, snap: Snapshot) -> None:
        """Put a snapshot on screen: only the rows whose cells changed are redrawn."""
        self.snap = snap
        table = self.query_one("#sessions", SessionTable)
        now = snap.at
        every = snap.repo is None
        table.sync((row.id, cells(row, now, with_repo=every)) for row in snap.sessions)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(snap.counts().items()))
        scope = snap.repo or "every repository"
        if snap.sessions:
            self._summary(
                f"{len(snap.sessions)} sessions ({counts}) · ${snap.cost_usd:.2f} · {scope}"
            )
        else:
            where = f" in {snap.repo}" if snap.repo else ""
            other = " (--all: every repository's)" if snap.repo else ""
            self._summary(f"no sessions{where} yet: start one with `sandboxrun run` or "
                          f"`sandboxrun spawn`{other}")  # fmt: skip

    def _summary(self, text: str) -> None:
        if text != self._said_summary:
            self._said_summary = text
            self.query_one("#summary", Static).update(Text(text), layout=False)

    def detail(self, lines: list[str]) -> None:
        log = self.query_one("#detail", Log)
        log.clear()
        log.write_lines(lines)

    def selected(self) -> Row | None:
        """The session under the cursor."""
        key = self.query_one("#sessions", SessionTable).cursor_key
        if self.snap is None or key is None:
            return None
        return next((r for r in self.snap.sessions if r.id == key), None)

    # -- the detail pane: a log, a conversation, the groups -----------------------------------

    def action_follow(self) -> None:
        row = self.selected()
        if row is None:
            return
        self.following, self.follow_after, self.detail_mode = row.id, 0, "log"
        self.detail([f"log of {row.name} (follows new events)"])
        self._follow_more()

    def _follow_more(self) -> None:
        if self.conn is None or self.following is None:
            return
        log = self.query_one("#detail", Log)
        while True:
            batch = events_since(self.conn, self.follow_after, session_id=self.following)
            for ev in batch:
                line = describe(ev)
                if line:
                    stamp = time.strftime("%H:%M:%S", time.localtime(ev["ts"]))
                    log.write_line(f"{stamp} {line}")
                self.follow_after = ev["id"]
            if len(batch) < 500:
                return

    def action_read(self) -> None:
        session = self._session()
        if session is None:
            return
        self.following, self.detail_mode = None, "read"
        store = self._store()
        try:
            entries = actions.conversation(store, session)
        except SandboxrunError as exc:
            self.say(exc.message, error=True)
            return
        finally:
            store.close()
        lines = [f"conversation of {session.name} ({len(entries)} messages)"]
        for e in entries:
            lines.append(f"{e['role']}: {e['text']}")
            lines.extend(f"  tool {t['name']}" for t in e["tool_uses"])
        self.detail(lines)

    def action_groups(self) -> None:
        self.following, self.detail_mode = None, "groups"
        if self.snap is not None:
            self._group_lines = group_lines(self.snap)
            self.detail(self._group_lines)

    def on_unmount(self) -> None:
        if self.conn is not None:
            self.conn.close()
