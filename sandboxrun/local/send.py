"""``sandboxrun send``: give a running child a message, exactly once, and say truthfully what
happened to it.

The text is pasted through a tmux buffer (bracketed paste: newlines, a leading ``/`` or ``@``,
non-ASCII and long texts arrive as they are), then Enter is pressed as a separate key. Delivery
is confirmed by the child's UserPromptSubmit hook, which records the hash of the prompt it saw
(:func:`sandboxrun.local.states.prompt_hash`). When the hook does not come, only Enter is
pressed again (a few times, bounded): a stray Enter on an empty composer does nothing, whereas
pasting again could deliver the message twice. A child that was busy queues the message itself:
that is reported as ``queued``, not as a failure. Claude Code 2.1.330 fires UserPromptSubmit as
it takes such a message and shows it to the model within the running turn (with the next tool
result) or, when the model was writing its last reply, as the next turn; a version that holds
it back without the hook is reported ``queued`` with ``confirmed`` false.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandboxrun.local.observe import state_of
from sandboxrun.local.states import prompt_hash
from sandboxrun.store import Session, SessionStore
from sandboxrun.tmux import Tmux

#: outcomes of one send
DELIVERED, QUEUED, FAILED = "delivered", "queued", "failed"
_TAKEN_WHILE_BUSY = (
    "the child was busy; Claude Code took the message (UserPromptSubmit hook seen) and gives "
    "it to the model at its next step, or as the next turn"
)


@dataclass
class SendResult:
    """What happened to one message to one child."""

    name: str
    outcome: str  # delivered | queued | failed
    detail: str
    enters: int = 0
    #: the child's UserPromptSubmit hook showed the text (False: queued, not yet confirmed)
    confirmed: bool = False
    #: what to do next when the message failed (a command that works for this child)
    hint: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "outcome": self.outcome,
            "detail": self.detail,
            "enters": self.enters,
            "confirmed": self.confirmed,
        }
        if self.hint:
            out["hint"] = self.hint
        return out


@contextmanager
def child_lock(home: Path, session_id: str, name: str) -> Iterator[None]:
    """Hold the child's lock ``name`` (a file under ``home/local/<id>/``) while typing into its
    pane: ``send`` (two pastes must never interleave in one composer), the monitor's
    ``continue`` after a usage limit."""
    path = home / "local" / session_id / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _last_event_id(store: SessionStore, session_id: str) -> int:
    row = store.conn.execute(
        "SELECT COALESCE(MAX(id), 0) FROM events WHERE session_id = ?", (session_id,)
    ).fetchone()
    return int(row[0])


def prompt_seen(store: SessionStore, session_id: str, digest: str, after: int) -> bool:
    """Whether a UserPromptSubmit hook with this prompt hash was recorded after event ``after``."""
    row = store.conn.execute(
        "SELECT 1 FROM events WHERE session_id = ? AND id > ? AND kind = 'hook' "
        "AND json_extract(payload, '$.event') = 'UserPromptSubmit' "
        "AND json_extract(payload, '$.prompt_sha256') = ? LIMIT 1",
        (session_id, after, digest),
    ).fetchone()
    return row is not None


def send(
    store: SessionStore,
    tmux: Tmux,
    session: Session,
    text: str,
    *,
    home: Path,
    confirm_after: float = 3.0,
    enter_retries: int = 3,
    enter_delay: float = 0.2,
    last_wait: float = 20.0,
) -> SendResult:
    """Paste ``text`` into the child, press Enter, and confirm by the hook.

    ``confirm_after``: seconds to wait for the hook after each Enter; Enter is pressed at most
    ``1 + enter_retries`` times, then the hook is waited for ``last_wait`` seconds more
    before the send is a failure (on a loaded machine the child and its hook process can take
    longer than the Enter presses: a message it took is not a failure).
    """
    name = session.name
    if not text.strip():
        return SendResult(name, FAILED, "the message is empty", hint="Send some text.")
    tmux_name = session.tmux_session
    if not tmux_name:
        return SendResult(
            name, FAILED, "not a tmux child (no tmux session recorded)",
            hint="`sandboxrun send` talks to children started with `sandboxrun spawn`; "
            "`sandboxrun messages send` reaches any session with the hooks.",
        )  # fmt: skip
    with child_lock(home, session.id, "send"):
        pane = tmux.pane(tmux_name)
        if pane is None or pane.dead:
            return SendResult(
                name, FAILED, f"the child has exited (no live pane {tmux_name})",
                hint=_EXITED_HINT.format(name=name),
            )  # fmt: skip
        current = store.get(session.id)
        state = state_of(tmux, current)
        if state.name == "needs_permission":
            # A paste would type into the permission dialog (and might answer it).
            return SendResult(
                name, FAILED, "the child is waiting for a permission answer; answer it first",
                hint=f"Answer it in its pane (`sandboxrun open {name}`, or a / x in "
                "`sandboxrun dashboard`), then send again.",
            )  # fmt: skip
        was_busy = state.name in ("busy", "starting")
        digest = prompt_hash(text)
        after = _last_event_id(store, session.id)
        tmux.paste(tmux_name, text)
        enters = 0
        for attempt in range(1 + enter_retries):
            # Enter separately and a moment later: in the same write it is part of the paste.
            time.sleep(enter_delay)
            tmux.send_keys(tmux_name, "Enter")
            enters += 1
            last = attempt == enter_retries
            deadline = time.monotonic() + confirm_after + (last_wait if last else 0)
            while time.monotonic() < deadline:
                if last and _gone(tmux, tmux_name):
                    break
                if prompt_seen(store, session.id, digest, after):
                    if was_busy:
                        return SendResult(name, QUEUED, _TAKEN_WHILE_BUSY, enters, True)
                    return SendResult(name, DELIVERED, "UserPromptSubmit hook seen", enters, True)
                time.sleep(0.05)
            if was_busy or store.get(session.id).activity == "busy":
                # Claude Code queues a message typed during a turn and submits it after.
                return SendResult(
                    name, QUEUED, "the child is busy; Claude Code queued the message", enters
                )
        gone = _gone(tmux, tmux_name)
        why = "the child exited" if gone else "no UserPromptSubmit hook"
        hint = (
            _EXITED_HINT.format(name=name)
            if gone
            else f"Look at its screen with `sandboxrun open {name}`: a dialog or a slash "
            "command's screen may hold the composer (Esc closes it); `sandboxrun read "
            f"{name}` shows what it received."
        )
        return SendResult(name, FAILED, f"{why} after {enters} Enter presses", enters, hint=hint)


_EXITED_HINT = (
    "`sandboxrun read {name}` shows its conversation; start it again with "
    "`sandboxrun spawn {name} --prompt ...` (its worktree and branch are reused)."
)


def _gone(tmux: Tmux, tmux_name: str) -> bool:
    pane = tmux.pane(tmux_name)
    return pane is None or pane.dead
