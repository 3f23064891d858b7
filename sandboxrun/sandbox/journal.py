"""The record a run keeps as it goes: its session row, its events, and the person watching.

Every stage of a run (provisioning, following, collecting) writes through a :class:`Journal`
rather than through the driver that runs it, and times itself with :class:`PhaseTimes`; the
stages share these two small objects instead of each other's internals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandboxrun import testhold
from sandboxrun.sandbox.reporting import NullReporter, Reporter
from sandboxrun.store import Session, SessionStore, Status


class Journal:
    """One session's record as a run writes it: status, events and what the reporter shows."""

    def __init__(
        self, store: SessionStore, session_id: str, reporter: Reporter | None = None
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.reporter: Reporter = reporter or NullReporter()

    def session(self) -> Session:
        """The session as stored right now (another process may have changed it)."""
        return self.store.get(self.session_id)

    def event(self, kind: str, payload: Any) -> None:
        """Append one event to the session's log."""
        self.store.add_event(self.session_id, kind, payload)

    def update(self, **fields: Any) -> Session:
        """Set columns of the session row."""
        return self.store.update(self.session_id, **fields)

    def phase(self, status: Status, detail: str = "") -> None:
        """Enter a new phase: the status, a ``phase`` event and the reporter all say so."""
        self.store.set_status(self.session_id, status)
        self.event("phase", {"phase": status, "detail": detail})
        self.reporter.phase(status, detail)
        testhold.hold(str(status))  # tests kill a run at each phase of its start

    def end(self, status: Status, **fields: Any) -> bool:
        """Record how the session ended, unless another process already did (then False)."""
        return self.store.set_status(self.session_id, status, only_if_active=True, **fields)

    def warn(self, message: str, *, mark: Any = None) -> None:
        """Tell the person; with a ``mark``, also keep it as a ``warning`` event."""
        if mark is not None:
            self.event("warning", {"mark": mark, "message": message})
        self.reporter.warning(message)


class PhaseTimes:
    """How long each phase of a run took, in seconds (reported in the run's summary)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as phase ``name`` (kept only when the block succeeds)."""
        t0 = time.monotonic()
        yield
        self.record(name, time.monotonic() - t0)

    def record(self, name: str, seconds: float) -> None:
        """Keep ``seconds`` as the time phase ``name`` took."""
        self._seconds[name] = seconds

    def __getitem__(self, name: str) -> float:
        return self._seconds[name]

    def rounded(self) -> dict[str, float]:
        """Every phase measured so far, to the millisecond, in the order they ran."""
        return {k: round(v, 3) for k, v in self._seconds.items()}
