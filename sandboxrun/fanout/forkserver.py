"""Task drivers forked from one warm process: ``python -m sandboxrun.fanout.forkserver``.

Each fan-out task is driven by its own process (``fanout/taskmain.py``), as ``run --detach``
drives a run. Started as a new Python, a driver spends ~80 ms of CPU starting the interpreter
and importing the run pipeline before it does anything, ten of them at once on a two-core
machine. While it schedules, a group keeps one server process that has imported the pipeline
once and forks a driver per task: the child is the same driver (its own session, stdin at
``/dev/null``, output appended to the task's ``driver.log``, then ``taskmain.main``), ready at
once. The server never opens the database and never starts a thread, so a fork copies no
connection and no lock; it ignores ``SIGCHLD``, so the kernel reaps the drivers it forked, and it
exits when the scheduler closes its stdin (the drivers carry on, as detached ones do).

Whatever goes wrong with the server (it failed to start, died, answered late or garbled), the
scheduler starts the driver the ordinary way (:func:`~sandboxrun.fanout.scheduler
.spawn_task_driver`) and stops using the server: a slower start, never a lost task.

Protocol: one JSON object per line on the server's stdin (``{"args": [...], "log": PATH}``),
one line back on its stdout (the child's pid).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from sandboxrun.config import Settings

#: how long the scheduler waits for the server's answer before starting the driver itself
ANSWER_TIMEOUT = 10.0


# -- the server ------------------------------------------------------------------------------------


def serve() -> int:
    """Fork a task driver for each request line on stdin until stdin closes."""
    # The whole pipeline, imported once here rather than in every driver.
    import sandboxrun.sandbox.backends.local  # noqa: F401
    import sandboxrun.sandbox.runner  # noqa: F401
    import sandboxrun.sync.unpack  # noqa: F401
    from sandboxrun.fanout import taskmain

    _prewarm()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked drivers are reaped by the kernel
    for line in _lines(0):
        try:
            request = json.loads(line)
            args = [str(a) for a in request["args"]]
            log = str(request["log"])
        except (ValueError, KeyError, TypeError):
            return 2  # not our scheduler talking: stop (it falls back to ordinary starts)
        if threading.active_count() != 1:
            return 3  # a fork must not copy another thread's locks
        pid = os.fork()
        if pid == 0:
            raise SystemExit(_child(taskmain.main, args, log))
        os.write(1, f"{pid}\n".encode())
    return 0


def _prewarm() -> None:
    """Build once what every driver would build for itself: the secrets check's Hyperscan
    database (compiled, ~30 ms of CPU, or loaded from the home's cache: ten drivers of a
    group's first pack each compiled it at once) and the bwrap probe. Best effort: a driver
    builds whatever is missing."""
    try:
        from sandboxrun.config import load_settings
        from sandboxrun.sandbox.backends.local import probe_tools
        from sandboxrun.sync import secrets_hs

        secrets_hs.load_engine(load_settings().home / "cache")
        probe_tools()
    except Exception:  # noqa: BLE001 - an optimisation: the drivers do it themselves
        pass


def _lines(fd: int) -> Iterator[str]:
    """Lines read straight from ``fd`` (no buffered reader a fork would copy half-read)."""
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line.decode()


def _child(run: Callable[[list[str]], int], args: list[str], log: str) -> int:
    """In the forked driver: detach, take the task's log as stdout/stderr, run the task."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its own children are waited for
    os.setsid()
    try:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        out = os.open(os.devnull, os.O_WRONLY)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)
    return int(run(args))


# -- the scheduler's side --------------------------------------------------------------------------


class DriverServer:
    """A scheduler's handle on its fork server; :meth:`spawn` falls back to an ordinary start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.broken = False

    def start(self) -> None:
        """Start the server (it imports the pipeline while the scheduler prepares the tasks)."""
        log = self.settings.home / "logs" / "forkserver.log"
        env = dict(os.environ)
        env["SANDBOXRUN_HOME"] = str(self.settings.home)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "sandboxrun.fanout.forkserver"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                    start_new_session=True,  # a Ctrl-C of the scheduler's terminal is not its
                )
        except OSError:
            self.broken = True

    def spawn(self, session_id: str, attach: bool, log: Path) -> int | None:
        """The pid of a driver forked for ``session_id``, or None (start it another way)."""
        proc = self.proc
        if proc is None or self.broken or proc.stdin is None or proc.stdout is None:
            return None
        request = {"args": [session_id, "--attach"] if attach else [session_id], "log": str(log)}
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            fd = proc.stdout.fileno()
            ready, _, _ = select.select([fd], [], [], ANSWER_TIMEOUT)
            answer = os.read(fd, 64) if ready else b""
            pid = int(answer.decode().strip())
        except (OSError, ValueError):
            pid = 0
        if pid <= 0:
            self.close()
            self.broken = True
            return None
        return pid

    def close(self) -> None:
        """Stop the server (the drivers it forked carry on)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    sys.exit(serve())
