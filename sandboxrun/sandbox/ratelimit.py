"""Spacing sandbox creations: at most ``rate`` per second, across every process on this machine.

E2B limits how fast a team creates sandboxes (Hobby 1/s, Pro 5/s) and answers 429 beyond it.
A fan-out group drives each task from its own process, so the limit is kept in a small file
under the sandboxrun home: under its lock, a process goes ahead only when ``1 / rate`` has
passed since the last one went, and records when it did; otherwise it sleeps (outside the lock)
until then and looks again.
The E2B backend makes every ``Sandbox.create`` (retries included) inside
:meth:`CreateLimiter.turn`; a 429 that still comes (another machine on the same key) is retried with
backoff by the backend.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sandboxrun.tuning import env_rate

#: creations per second when nothing says otherwise: E2B's Hobby plan
DEFAULT_CREATE_RATE = 1.0
RATE_ENV = "SANDBOXRUN_E2B_CREATE_RATE"


def default_rate(env: dict[str, str] | None = None) -> float:
    """The creation rate from ``SANDBOXRUN_E2B_CREATE_RATE`` (per second), else 1/s; a bad
    value is a ``ConfigError`` naming it (:mod:`sandboxrun.tuning`)."""
    return env_rate(RATE_ENV, DEFAULT_CREATE_RATE, env=env)


def next_slot(last_slot: float, now: float, rate: float) -> float:
    """When the next creation may go: now, or ``1 / rate`` after the previous one went."""
    return max(now, last_slot + 1.0 / rate)


def limiter_path(home: Path, api_url: str, api_key: str) -> Path:
    """The slot file for one E2B account (key) on one endpoint: they are limited separately."""
    digest = hashlib.sha256(f"{api_url}\0{api_key}".encode()).hexdigest()[:16]
    return home / "ratelimit" / f"e2b-create-{digest}"


class CreateLimiter:
    """Lets creations go ``1 / rate`` apart, kept in ``path`` (shared by all processes)."""

    def __init__(
        self,
        path: Path,
        rate: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path
        self.rate = rate
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def for_e2b(cls, home: Path, rate: float) -> CreateLimiter:
        """The limiter of the E2B account (``E2B_API_KEY``) at the endpoint in use."""
        url = os.environ.get("E2B_API_URL", "https://api.e2b.app")
        return cls(limiter_path(home, url, os.environ.get("E2B_API_KEY", "")), rate)

    @contextmanager
    def turn(self) -> Iterator[float]:
        """Wait until this process may create, and hold the turn while it does (the ``with``
        block: the creation request); yields how long it waited, in seconds.

        The time recorded is when a process went ahead, not a slot booked in advance, and the
        next process goes no earlier than ``1 / rate`` after it *and* not before its request
        was answered: a process that wakes late or sends slowly on a busy machine does not
        let the next one arrive right behind it.
        """
        if self.rate <= 0:
            yield 0.0
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        waited = 0.0
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.pread(fd, 64, 0).decode(errors="replace").strip()
                try:
                    last = float(raw) if raw else 0.0
                except ValueError:
                    last = 0.0  # a torn or foreign file: start afresh
                now = self._clock()
                slot = next_slot(last, now, self.rate)
                if slot <= now:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{now:.6f}\n".encode(), 0)
                    yield waited  # the lock is held until the creation returns
                    return
            finally:
                os.close(fd)  # releases the lock
            self._sleep(slot - now)
            waited += slot - now
