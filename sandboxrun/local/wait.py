"""Waiting for children until they are done with their turn: what ``sandboxrun wait`` and the
MCP ``wait_idle_workers`` / ``message_workers(wait=...)`` tools share.

A child is *done* when it is idle, needs a permission answer, or has exited: in each of those
states nothing more happens until someone acts. :func:`wait_for` polls the children's states
(:func:`sandboxrun.local.observe.state_of`: the hooks' row plus the tmux pane) until one
(``any``) or all of them are done, or the timeout passes.

Claude Code's Stop hook can fire before the turn's records reach the transcript (its writes
are batched; on a loaded machine the gap is seconds). A wait that ends is followed at once by
reading the conversation (``read_worker_logs``, ``sandboxrun read``), so a child done by its
hooks also waits, up to :data:`SETTLE` seconds, until its transcript holds its last prompt and
an answer after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxrun.local import transcript
from sandboxrun.local.observe import state_of
from sandboxrun.local.states import State, prompt_hash
from sandboxrun.store import Session, SessionStore
from sandboxrun.tmux import Tmux

#: the states that end a wait
DONE_STATES = ("idle", "needs_permission", "exited")
#: the longest a done child waits for its transcript to catch up with its hooks (seconds):
#: a bound, not a delay; a transcript that never shows the turn (an interrupted one) costs this
SETTLE = 15.0


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


def holds_turn(entries: Sequence[dict[str, Any]], digest: str) -> bool:
    """Whether a conversation holds the prompt with this hash and an answer after it. Pure."""
    for i in range(len(entries) - 1, -1, -1):
        entry = entries[i]
        if entry.get("role") == "user" and prompt_hash(entry.get("text") or "") == digest:
            return any(e.get("role") == "assistant" for e in entries[i + 1 :])
    return False


def last_prompt(store: SessionStore, session_id: str) -> dict[str, Any] | None:
    """The hook record of the child's newest UserPromptSubmit, if any."""
    row = store.conn.execute(
        "SELECT payload FROM events WHERE session_id = ? AND kind = 'hook' "
        "AND json_extract(payload, '$.event') = 'UserPromptSubmit' ORDER BY id DESC LIMIT 1",
        (session_id,),
    ).fetchone()
    return json.loads(row[0]) if row else None


def turn_recorded(store: SessionStore, session: Session) -> bool:
    """Whether the child's transcript already holds its last prompt and an answer to it.

    True when there is nothing to wait for: no prompt hash recorded, a slash command (its
    transcript record is the command's markup, not the prompt), or no transcript file at all.
    """
    prompt = last_prompt(store, session.id)
    digest = prompt.get("prompt_sha256") if prompt else None
    if not isinstance(digest, str) or (prompt or {}).get("slash"):
        return True
    paths = transcript.transcript_paths(store, session)
    if not paths:
        return True
    return holds_turn(transcript.conversation(paths[-1:]), digest)


def wait_for(
    store: SessionStore,
    tmux: Tmux,
    sessions: Sequence[Session],
    *,
    any_: bool = False,
    timeout: float | None = None,
    poll: float = 0.25,
    settle: float = SETTLE,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll ``sessions`` until one (``any_``) or all are done, or ``timeout`` seconds pass.

    Done children that are idle also wait (up to ``settle`` seconds from when the wait would
    have ended) for their transcript to hold the turn, so a read right after sees the answer.
    """
    start = time.monotonic()
    settle_until: float | None = None
    while True:
        rows = {s.name: store.get(s.id) for s in sessions}
        states = {name: state_of(tmux, row) for name, row in rows.items()}
        if finished(states, any_):
            now = time.monotonic()
            settle_until = now + settle if settle_until is None else settle_until
            lagging = [
                name
                for name, row in rows.items()
                if states[name].name == "idle" and not turn_recorded(store, row)
            ]
            out_of_time = timeout is not None and now - start > timeout
            if not lagging or now >= settle_until or out_of_time:
                return WaitResult(states, True)
        else:
            settle_until = None
        if timeout is not None and time.monotonic() - start > timeout:
            return WaitResult(states, False)
        sleep(poll)
