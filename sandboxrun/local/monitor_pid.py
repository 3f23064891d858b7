"""One monitor per ``$SANDBOXRUN_HOME`` and repository: a pidfile held under an exclusive lock.

The monitor takes ``$SANDBOXRUN_HOME/monitor/<key>.pid`` with ``flock(LOCK_EX | LOCK_NB)`` and
keeps it for its whole life; the kernel drops the lock when the process ends however it ends
(SIGKILL included). So the lock, not the pid written in the file, says whether a monitor runs:
a pidfile nobody holds is stale (its process died, or the pid was reused by something else)
and the next monitor simply takes it over. The file is never unlinked (unlinking a lock file
races with a process that has just opened it); a clean exit empties it.

The key is the repository (a monitor given ``--repo``) or ``all`` (a monitor of every
repository's children). A per-repository monitor and the ``all`` one may both run: continuing a
child after a usage limit is made idempotent per reset in the monitor itself, so two of them
never send "continue" twice.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from sandboxrun.errors import SandboxrunError


class MonitorRunningError(SandboxrunError):
    """Another monitor already watches these children."""


def pidfile_path(home: Path, repo: str | None) -> Path:
    """The pidfile of the monitor of ``repo`` (None: of every repository)."""
    if repo is None:
        key = "all"
    else:
        digest = hashlib.sha1(str(repo).encode(), usedforsecurity=False).hexdigest()[:12]
        key = f"{Path(repo).name or 'repo'}-{digest}"
    return home / "monitor" / f"{key}.pid"


@dataclass
class MonitorStatus:
    """What the pidfile says: whether a monitor holds it, and who wrote it last."""

    running: bool
    pidfile: str
    pid: int | None = None
    repo: str | None = None
    started_at: float | None = None
    #: a pidfile with a pid in it that no live monitor holds (its monitor died)
    stale: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``monitor --status --json``)."""
        return asdict(self)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _held(path: Path) -> bool:
    """Whether some process holds the lock on ``path`` (a shared try-lock fails)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    finally:
        os.close(fd)  # closing drops our shared lock, if we got it
    return False


def status(home: Path, repo: str | None) -> MonitorStatus:
    """Whether the monitor of ``repo`` runs (its lock is held), and its pid."""
    path = pidfile_path(home, repo)
    data = _read(path) if path.exists() else {}
    running = _held(path)
    pid = data.get("pid") if isinstance(data.get("pid"), int) else None
    return MonitorStatus(
        running=running,
        pidfile=str(path),
        pid=pid,
        repo=data.get("repo"),
        started_at=data.get("started_at"),
        stale=not running and pid is not None,
    )


def wait_running(home: Path, repo: str | None, *, pid: int | None = None, timeout: float) -> bool:
    """Until a monitor (``pid``, when given) holds the pidfile of ``repo``; whether one does."""
    deadline = time.monotonic() + timeout
    while True:
        info = status(home, repo)
        if info.running and (pid is None or info.pid == pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


class MonitorLock:
    """The held pidfile of a running monitor (:meth:`acquire` once, :meth:`release` at exit)."""

    def __init__(self, home: Path, repo: str | None) -> None:
        self.path = pidfile_path(home, repo)
        self.repo = repo
        self._fh: IO[str] | None = None

    def acquire(self) -> MonitorLock:
        """Take the lock and write our pid; :class:`MonitorRunningError` when a monitor runs."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the monitor's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            other = status(self.path.parent.parent, self.repo)
            where = self.repo or "every repository"
            raise MonitorRunningError(
                f"a monitor is already running for {where} (pid {other.pid or '?'})",
                "See it with `sandboxrun monitor --status`; stop it with "
                "`sandboxrun monitor --stop` to start another.",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "repo": self.repo, "started_at": time.time()}))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Empty the pidfile and drop the lock (a clean exit; a crash just drops the lock)."""
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.close()  # drops the lock
        self._fh = None

    def __enter__(self) -> MonitorLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def stop(home: Path, repo: str | None, *, timeout: float = 10.0) -> MonitorStatus:
    """Ask the running monitor to end (SIGTERM) and wait until its lock is free.

    Returns the status before stopping (``running`` False: there was nothing to stop). The pid
    is signalled only while its lock is held, so a stale pidfile never gets some unrelated
    process (one that reused the pid) killed.
    """
    before = status(home, repo)
    if not before.running or before.pid is None:
        return before
    try:
        os.kill(before.pid, signal.SIGTERM)
    except ProcessLookupError:
        return before
    deadline = time.monotonic() + timeout
    while _held(Path(before.pidfile)):
        if time.monotonic() > deadline:
            raise SandboxrunError(
                f"the monitor (pid {before.pid}) did not stop within {timeout:.0f}s",
                f"End it with `kill -9 {before.pid}`; its lock goes with it.",
            )
        time.sleep(0.05)
    return before
