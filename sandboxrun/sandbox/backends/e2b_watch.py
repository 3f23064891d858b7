"""Bounds on E2B calls the SDK leaves unbounded: a streamed transfer that stops moving.

The SDK gives a streamed upload (``files.write`` with a file object) no client-side timeout at
all, and a streamed download only a fixed 60 s idle bound; a connection that hangs without
closing would hold either for as long as the network lets it. :func:`watched` runs such a
transfer in a worker thread and gives up once no byte has moved for ``idle`` seconds
(:class:`~.e2b_errors.StalledTransfer`, which the callers retry or resume like a dropped
connection). A blocked socket read cannot be interrupted from Python, so the worker is left
behind (a daemon thread: it ends with the connection, or with the process); from the moment
it is given up on it is fenced off, so it can never again touch the file it was reading or
writing: its next read fails and its writes are refused.

The timeouts come from the environment (tests make them short; see docs/e2b.md):
``SANDBOXRUN_E2B_REQUEST_TIMEOUT`` (each API call, the SDK's ``request_timeout``, default 60 s),
``SANDBOXRUN_E2B_STALL_TIMEOUT`` (a transfer with no progress, default 60 s) and
``SANDBOXRUN_E2B_COMMAND_TIMEOUT`` (a ceiling on any one command's run, default none: each
command has its own limit, a provisioning one ``lifetime.command_bound`` of the upload).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from sandboxrun import tuning
from sandboxrun.sandbox.backends.e2b_errors import NETWORK_HINT, StalledTransfer

T = TypeVar("T")

#: a transfer with no byte moving for this long is given up on (and retried or resumed)
DEFAULT_STALL_TIMEOUT = 60.0


def env_seconds(name: str, default: float | None) -> float | None:
    """A positive number of seconds from the environment variable ``name``, else ``default``
    (unset or blank); a bad value is a ``ConfigError`` naming it (:mod:`sandboxrun.tuning`)."""
    return tuning.env_seconds(name, default)


class Progress:
    """When bytes last moved, and whether the transfer was given up on (a fence)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.abandoned = False

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle(self) -> float:
        return time.monotonic() - self.last

    def abandon(self) -> None:
        # Taken under the lock: a write in progress finishes first, none starts after.
        with self.lock:
            self.abandoned = True


class WatchedReader:
    """A file object's ``read`` that marks progress and fails once the transfer is abandoned.

    Not an ``IOBase``, so the SDK streams it through its chunked reader (still never whole in
    memory) rather than handing the raw file to the transport.
    """

    def __init__(self, fh: BinaryIO, progress: Progress) -> None:
        self._fh = fh
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        if self._progress.abandoned:
            raise OSError("this upload was given up on (it stalled)")
        data = self._fh.read(size)
        self._progress.touch()
        return data


class WatchedWriter:
    """A file's ``write`` that marks progress and refuses bytes once abandoned."""

    def __init__(self, out: BinaryIO, progress: Progress) -> None:
        self._out = out
        self._progress = progress

    def write(self, data: bytes) -> int:
        with self._progress.lock:
            if self._progress.abandoned:
                raise OSError("this download was given up on (it stalled)")
            written = self._out.write(data)
        self._progress.touch()
        return written


def watched(fn: Callable[[Progress], T], *, idle: float, what: str) -> T:
    """``fn(progress)`` in a worker thread; StalledTransfer once nothing moved for ``idle`` s.

    ``fn`` must report progress through ``progress`` (:class:`WatchedReader` /
    :class:`WatchedWriter`). Its result or exception is passed on as it is.
    """
    progress = Progress()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = fn(progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=work, name=f"e2b-transfer: {what}", daemon=True)
    worker.start()
    while True:
        worker.join(min(0.2, idle))
        if not worker.is_alive():
            break
        if progress.idle() > idle:
            progress.abandon()
            if not worker.is_alive():  # it finished just now: keep its answer
                break
            raise StalledTransfer(
                f"{what}: nothing moved for {idle:g}s (the connection hangs); given up",
                NETWORK_HINT,
            )
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
