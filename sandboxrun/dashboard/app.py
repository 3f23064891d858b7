"""``sandboxrun dashboard``: the whole team in one full-screen terminal view (Textual).

It draws :mod:`sandboxrun.dashboard.model` snapshots and acts through
:mod:`sandboxrun.dashboard.actions` (the CLI's own functions). Updates: a timer asks SQLite's
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
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, Label, Log, Static

from sandboxrun import process
from sandboxrun.config import Settings, parse_duration
from sandboxrun.dashboard import actions
from sandboxrun.dashboard.model import Row, Snapshot, Tracker, describe, events_since
from sandboxrun.dashboard.table import SessionTable
from sandboxrun.errors import SandboxrunError
from sandboxrun.store import Session, SessionStore

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


class Prompt(ModalScreen[str | None]):
    """Ask for one line (a message, a duration); Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(Text(self.question))
            yield Input(value=self.value, id="answer")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """y / n."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(Text(self.question + "  (y/n)"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


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


class DashboardApp(App[None]):
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

    def say(self, text: str, *, error: bool = False) -> None:
        """Tell the person (a toast). Errors and anything with a command to copy stay longer."""
        self.said.append(text)  # what was told, in order (tests and the log of a session)
        keep = 20.0 if error or "tmux" in text else 6.0
        self.notify(text, severity="error" if error else "information", timeout=keep, markup=False)

    # -- acting -------------------------------------------------------------------------------

    def _store(self) -> SessionStore:
        return SessionStore(self.db_path)

    @work(thread=True, exclusive=False)
    def _act(self, what: Callable[[SessionStore], str]) -> None:
        """Run an action in a worker thread (it may wait) with its own store connection."""
        store = self._store()
        try:
            text = what(store)
            self.call_from_thread(self.say, text)
        except SandboxrunError as exc:
            msg = exc.message + (f"\n{exc.hint}" if exc.hint else "")
            self.call_from_thread(self.say, msg, error=True)
        finally:
            store.close()

    def _session(self) -> Session | None:
        row = self.selected()
        if row is None:
            self.say("no session selected", error=True)
            return None
        store = self._store()
        try:
            return store.get(row.id)
        finally:
            store.close()

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

    def action_open_pane(self) -> None:
        """Show the child's tmux pane: switch to it inside the same tmux, open it in a new
        window of another tmux, or (no tmux) hand this terminal to ``tmux attach`` until the
        person detaches. Always says what it did and the attach command for any terminal."""
        session = self._session()
        if session is None:
            return
        try:
            plan = actions.plan_open(session)
        except SandboxrunError as exc:
            self.say(exc.message + (f"\n{exc.hint}" if exc.hint else ""), error=True)
            return
        if plan.how != "attach":
            self._act(lambda _store: actions.open_pane(plan))
            return
        try:
            with self.suspend():
                code = process.run_foreground(plan.argv)
        except SuspendNotSupported:
            self.say(
                f"this terminal cannot be handed to tmux from here; attach to {plan.name} "
                f"from a terminal with: {plan.attach}",
                error=True,
            )
            return
        except SandboxrunError as exc:  # tmux itself missing
            self.say(exc.message, error=True)
            return
        if code != 0:
            self.say(f"tmux attach to {plan.name} failed (exit {code}): {plan.attach}", error=True)
        else:
            self.say(f"back from {plan.name} (detached); attach again from any terminal with: "
                     f"{plan.attach}")  # fmt: skip

    def action_send(self) -> None:
        session = self._session()
        if session is None:
            return

        def sent(text: str | None) -> None:
            if text and text.strip():
                self._act(lambda store: actions.send(self.settings, store, session, text))

        self.push_screen(Prompt(f"message to {session.name}:"), sent)

    def action_kill(self) -> None:
        session = self._session()
        if session is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act(lambda store: actions.kill(self.settings, store, session))

        self.push_screen(Confirm(f"kill {session.name}?"), confirmed)

    def action_extend(self) -> None:
        session = self._session()
        if session is None:
            return

        def extended(value: str | None) -> None:
            if not value:
                return
            try:
                seconds = parse_duration(value)
            except SandboxrunError as exc:
                self.say(exc.message + (f"\n{exc.hint}" if exc.hint else ""), error=True)
                return
            self._act(lambda store: actions.extend(self.settings, store, session, seconds))

        row = self.selected()
        left = f" ({fmt_seconds(row.time_left)} left)" if row and row.time_left is not None else ""
        question = f"extend {session.name}{left} by (e.g. 10m, 1h, 90s):"
        self.push_screen(Prompt(question, "10m"), extended)

    def action_merge(self) -> None:
        session = self._session()
        if session is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act(lambda store: actions.merge(self.settings, session))

        self.push_screen(Confirm(f"merge {session.branch}?"), confirmed)

    def action_approve(self) -> None:
        self._answer(True)

    def action_refuse(self) -> None:
        self._answer(False)

    def _answer(self, approve: bool) -> None:
        session = self._session()
        if session is not None:
            self._act(lambda store: actions.answer_permission(store, session, approve=approve))

    def on_unmount(self) -> None:
        if self.conn is not None:
            self.conn.close()
