"""The dashboard's keys that act on the selected session (open its pane, send, kill, extend,
merge, approve or refuse a permission), the prompts they ask with, and the worker that runs an
action off the screen's thread. The live view itself is :mod:`sandboxrun.dashboard.app`.

Every action calls the same function as its command (:mod:`sandboxrun.dashboard.actions`) and
says what happened in a toast; an action that may wait runs in a worker thread with its own
database connection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from sandboxrun import process
from sandboxrun.config import Settings, parse_duration
from sandboxrun.dashboard import actions
from sandboxrun.dashboard.model import Row, fmt_seconds
from sandboxrun.errors import SandboxrunError
from sandboxrun.store import Session, SessionStore


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


class ActingApp(App[None]):
    """The acting half of the dashboard: what each key does to the selected session."""

    settings: Settings
    db_path: Path
    #: what was told, in order (tests and the log of a session)
    said: list[str]

    def selected(self) -> Row | None:
        """The session under the cursor (the view knows it)."""
        raise NotImplementedError

    def say(self, text: str, *, error: bool = False) -> None:
        """Tell the person (a toast). Errors and anything with a command to copy stay longer."""
        self.said.append(text)  # what was told, in order (tests and the log of a session)
        keep = 20.0 if error or "tmux" in text else 6.0
        self.notify(text, severity="error" if error else "information", timeout=keep, markup=False)

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
