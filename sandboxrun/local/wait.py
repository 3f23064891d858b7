"""Waiting for children until they are done with their turn: what ``sandboxrun wait`` and the
MCP ``wait_idle_workers`` / ``message_workers(wait=...)`` tools share.

A child is *done* when it is idle, needs a permission answer, or has exited: in each of those
states nothing more happens until someone acts. :func:`wait_for` polls the children's states
(:func:`sandboxrun.local.observe.state_of`: the hooks' row plus the tmux pane) until one
(``any``) or all of them are done, or the timeout passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxrun.local.observe import state_of
from sandboxrun.local.states import State
from sandboxrun.store import Session, SessionStore
from sandboxrun.tmux import Tmux

#: the states that end a wait
DONE_STATES = ("idle", "needs_permission", "exited")


@dataclass
class WaitResult:
    """The children's states when the wait ended, and whether it ended by their doing."""

    states: dict[str, State] = field(default_factory=dict)
    finished: bool = False

    @property
    def done(self) -> dict[str, State]:
        """The children in a done state."""
        return {n: s for n, s in self.states.items() if s.name in DONE_STATES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "timed_out": not self.finished,
            "states": {n: s.to_dict() for n, s in self.states.items()},
        }


def finished(states: dict[str, State], any_: bool) -> bool:
    """Whether a wait for these states is over (pure): one done (``any_``) or all done."""
    done = [s for s in states.values() if s.name in DONE_STATES]
    return bool(done) if any_ else len(done) == len(states)


def wait_for(
    store: SessionStore,
    tmux: Tmux,
    sessions: Sequence[Session],
    *,
    any_: bool = False,
    timeout: float | None = None,
    poll: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll ``sessions`` until one (``any_``) or all are done, or ``timeout`` seconds pass."""
    start = time.monotonic()
    while True:
        states = {s.name: state_of(tmux, store.get(s.id)) for s in sessions}
        if finished(states, any_):
            return WaitResult(states, True)
        if timeout is not None and time.monotonic() - start > timeout:
            return WaitResult(states, False)
        sleep(poll)
