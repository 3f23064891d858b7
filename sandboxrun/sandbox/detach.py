"""Starting one of our own drivers in the background: the one detached start behind
``run --detach`` (``sandboxrun _drive``), each fan-out task (``sandboxrun.fanout.taskmain``) and
``fanout --detach`` (``sandboxrun _fanout_drive``).

The driver runs this very Python, in its own session (it outlives the caller and a Ctrl-C in
its terminal), with ``SANDBOXRUN_HOME`` pinned to the caller's home so it opens the same
database, stdin at ``/dev/null`` and its output appended to a log file. A log that cannot be
made and a Python that cannot start are errors with the next step, never a traceback. With
``recorded``, the caller waits until the driver has recorded itself (its claim in the
database), and a driver that dies before that is an error quoting the end of its log. Core: no
typer, rich or fastmcp.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sandboxrun import process
from sandboxrun.errors import BackendError, ProgramNotFoundError
from sandboxrun.faults import disk_fault

#: how long a caller waits, at most, for a driver to record itself (Python's start on a busy
#: two-core machine takes a second or two; a driver that is merely slow is not an error)
RECORD_TIMEOUT = 60.0


class DriverStartError(BackendError):
    """A background driver could not be started, or died before it recorded itself."""


def start_driver_process(
    args: Sequence[str],
    *,
    log: Path,
    home: Path,
    module: str = "sandboxrun",
    recorded: Callable[[int], bool] | None = None,
    timeout: float = RECORD_TIMEOUT,
) -> int:
    """Start ``python -m MODULE ARGS`` detached, its output appended to ``log``; its pid.

    ``home`` becomes the driver's ``SANDBOXRUN_HOME``. With ``recorded`` (given the pid: true
    once that driver has claimed what it drives), wait for it: a driver that exits first raises
    :class:`DriverStartError` with the end of its log; one still starting after ``timeout``
    is left to carry on.
    """
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (disk_fault(exc, log.parent) or _log_error(log, exc)) from exc
    env = dict(os.environ)
    env["SANDBOXRUN_HOME"] = str(home)
    argv = [sys.executable, "-m", module, *args]
    start = _size(log)
    try:
        pid = process.spawn_detached(argv, env=env, output=log)
    except ProgramNotFoundError as exc:
        raise DriverStartError(
            f"cannot start a background driver: {sys.executable} is gone",
            "Reinstall sandboxrun (its Python environment was removed or moved).",
        ) from exc
    except OSError as exc:  # the log file itself (permissions, a full disk)
        raise (disk_fault(exc, log) or _log_error(log, exc)) from exc
    if recorded is not None:
        _wait_recorded(pid, recorded, log, start, timeout)
    return pid


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_error(log: Path, exc: OSError) -> DriverStartError:
    return DriverStartError(
        f"cannot write the driver's log {log}: {exc.strerror or exc}",
        f"Check that {log.parent} is a writable directory (SANDBOXRUN_HOME).",
    )


def _wait_recorded(
    pid: int, recorded: Callable[[int], bool], log: Path, start: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if recorded(pid):
            return
        if process_exited(pid):
            if recorded(pid):  # it recorded itself, did its work and ended in between
                return
            tail = _log_tail(log, start)
            raise DriverStartError(
                f"the background driver (pid {pid}) exited before it started"
                + (f": {tail}" if tail else ""),
                f"Its whole output is in {log}.",
            )
        time.sleep(delay)
        delay = min(0.2, delay * 1.5)


def process_exited(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (ended, not yet reaped by our reaper thread)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): alive as far as kill(0) can tell
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def _log_tail(log: Path, start: int, limit: int = 600) -> str:
    """The last lines the driver wrote (after ``start``), on one line, at most ``limit``."""
    try:
        with open(log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-limit:]
