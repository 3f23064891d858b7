"""One fan-out task's driver: ``python -m sandboxrun.fanout.taskmain SESSION [--attach]``.

The scheduler starts one per task, often ten at once; this entry point imports only the run
pipeline, not the command-line app (typer, rich and every command module), which is most of a
driver's start-up CPU on a small machine. ``sandboxrun _fanout_task`` does the same through the
CLI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sandboxrun.config import load_settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.store import Session, SessionStore, Status, owner_alive


def claim_session(store: SessionStore, session_id: str, pid: int, *, attach: bool) -> bool:
    """Make ``pid`` the driver of a task's session unless another live process drives it.

    Atomic (``BEGIN IMMEDIATE``): of two drivers started for the same session, one runs it.
    Without ``attach`` only a session that has not started yet is claimed. (Here rather than
    in the scheduler, so a task's driver does not import the scheduler to claim its task.)
    """
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        s = Session.from_row(row)
        if s.owner_pid not in (None, pid) and owner_alive(s):
            return False
        if not attach and s.status != Status.CREATED:
            return False
        if s.is_terminal:
            return False
        conn.execute(
            "UPDATE sessions SET owner_pid = ?, owner_host = ? WHERE id = ?",
            (pid, os.uname().nodename, session_id),
        )
    return True


def run_task(session_id: str, *, attach: bool) -> None:
    """Drive the task's session to its end, unless another live process already drives it."""
    from sandboxrun.sandbox.runner import RunDriver

    store = SessionStore(load_settings().db_path)
    try:
        if not claim_session(store, session_id, os.getpid(), attach=attach):
            return
        s = store.get(session_id)
        settings = load_settings(Path(s.repo) if s.repo else None)
        driver = RunDriver(settings, store, s)
        driver.resume() if attach else driver.execute()
    finally:
        store.close()


def _log_to_file() -> None:
    """Log lines go to ``<home>/sandboxrun.log``, as the CLI's do (``SANDBOXRUN_DEBUG``: stderr,
    which the scheduler points at the task's ``driver.log``)."""
    import logging
    from logging.handlers import RotatingFileHandler

    if os.environ.get("SANDBOXRUN_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
        return
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("sandboxrun").setLevel(logging.INFO)
    try:
        home = load_settings().home
        home.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = RotatingFileHandler(
            home / "sandboxrun.log", maxBytes=5 << 20, backupCount=1
        )
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s")
        )
    except (OSError, SandboxrunError):
        handler = logging.NullHandler()
    logging.getLogger().addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the task ran (whatever its outcome: it is in the store), 1 on an error."""
    _log_to_file()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        sys.stderr.write("usage: python -m sandboxrun.fanout.taskmain SESSION [--attach]\n")
        return 2
    try:
        run_task(args[0], attach="--attach" in args[1:])
    except SandboxrunError as exc:
        sys.stderr.write(f"Error: {exc.message}\n" + (f"Hint: {exc.hint}\n" if exc.hint else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
