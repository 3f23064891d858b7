"""One child's facts right now: its database row (kept by the hooks) and its tmux pane."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

from sandboxrun.local.states import Facts, State, derive_state
from sandboxrun.store import Session
from sandboxrun.tmux import Tmux

#: Claude Code's permission dialog (a third state: neither busy nor idle)
PERMISSION_TEXT = "Do you want to proceed?"
#: a status line of a turn under way: "✽ Ideating… (12s · ↓ 20 tokens)", "Calling sandboxrun…"
#: (the done line reads "✻ Worked for 25s", without the ellipsis)
_WORKING = re.compile(r"\w\u2026\s*(\(.*\))?\s*$")
_COMPOSER = "\u276f"  # ❯
_RULE = "\u2500" * 20  # ─ the composer's frame


def screen_working(text: str) -> bool | None:
    """What the screen's status line says: True working, False done, None no composer seen
    (a dialog, a start-up screen, something else). Pure.

    The status line sits just above the composer's frame (a few lines: tips may follow it).
    """
    lines = [line.strip() for line in text.splitlines()]
    composer = next(
        (i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith(_COMPOSER)), None
    )
    if composer is None:
        return None
    above = composer - 1
    while above >= 0 and (not lines[above] or lines[above].startswith(_RULE)):
        above -= 1
    status = [line for line in lines[max(0, above - 5) : above + 1] if line][-3:]
    return any(_WORKING.search(line) for line in status)


@dataclass
class PaneMemory:
    """What the pane looked like, to tell "unchanged for N minutes" (kept per process)."""

    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def changed_at(self, session_id: str, text: str, now: float) -> float:
        digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        old = self.seen.get(session_id)
        if old is None or old[0] != digest:
            self.seen[session_id] = (digest, now)
            return now
        return old[1]


def observe(
    tmux: Tmux,
    session: Session,
    *,
    now: float | None = None,
    memory: PaneMemory | None = None,
) -> tuple[Facts, str]:
    """One child's facts now, and its pane text ("" when there is no pane)."""
    now = time.time() if now is None else now
    pane, text = tmux.snapshot(session.tmux_session) if session.tmux_session else (None, "")
    changed = memory.changed_at(session.id, text, now) if memory is not None else None
    facts = Facts(
        now=now,
        activity=session.activity,
        activity_at=session.activity_at,
        last_heartbeat=session.last_heartbeat,
        resets_at=session.resets_at,
        started_at=session.started_at,
        pane_exists=pane is not None,
        pane_dead=bool(pane and pane.dead),
        pane_title=pane.title if pane else None,
        pane_changed_at=changed,
        pane_asks=(PERMISSION_TEXT in _tail(text)) if pane is not None else None,
        pane_working=screen_working(text) if pane is not None else None,
    )
    return facts, text


def state_of(tmux: Tmux, session: Session, **kw: float) -> State:
    """The state of one child now (see :func:`derive_state`)."""
    facts, _ = observe(tmux, session)
    return derive_state(facts, **kw)


def _tail(text: str, lines: int = 25) -> str:
    """The bottom of the screen, where a live dialog is (older ones scroll up)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
