"""Time for a collection: the sandbox's end pushed far enough before stopping the agent.

Before a collection, :func:`secure_collection` pushes the sandbox's end far enough for it
(sized from what is to come back, see ``sandbox.deadline``); the collection itself never
extends anything. :func:`extend_sandbox` believes only an end read back from the backend, so
an answer lost on the way cannot make us count on time E2B never granted.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxrun.config import format_duration
from sandboxrun.errors import BackendError, SandboxLostError, SandboxrunError
from sandboxrun.sandbox.deadline import (
    StopPlan,
    collection_seconds,
    extension_target,
    plan_stop,
)

if TYPE_CHECKING:
    from sandboxrun.config import Settings
    from sandboxrun.sandbox.backends.base import Sandbox
    from sandboxrun.sandbox.journal import Journal
    from sandboxrun.store import Session, SessionStore

# "$1" repo, "$2" baseline: bytes a collection would bring back now (changed and new files,
# plus the objects of the agent's commits). Reads only; cheap.
SIZE_SCRIPT = r"""
cd "$1" || exit 1
a=$(git ls-files -z -m -o --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s+=$1} END {print s+0}')
b=$(git rev-list --objects "$2"..HEAD 2>/dev/null | cut -d' ' -f1 | git cat-file --batch-check='%(objectsize)' 2>/dev/null | awk '{s+=$1} END {print s+0}')
echo $((a + b))
"""


#: the most time trying to push the sandbox's end may take before a stop or collection: it
#: comes out of the time the collection has if E2B does not answer (a hung call is retried
#: for minutes by the backend, longer than a collection's room)
EXTEND_BUDGET = 30.0


#: how long `sandboxrun extend` (the dashboard's `e`, MCP `extend_sandbox`) waits for E2B to
#: accept and confirm a new end before saying it did not extend (nothing changed); the SDK's
#: own retries of a hung call would take minutes. SANDBOXRUN_E2B_EXTEND_TIMEOUT overrides it.
EXTEND_WAIT = 45.0

#: a provisioning command (unpack, checkout, baseline) of an upload of N bytes may run
#: COMMAND_FLOOR + N / COMMAND_RATE seconds before it counts as hung: on E2B these run at
#: 50-100 MB/s of upload, so the bound is 10-25 times the expected time, and a hung one
#: fails in 30 s for a small repository (2 min 35 s for 500 MB) instead of 15 minutes
COMMAND_FLOOR = 30.0
COMMAND_RATE = 4 * 1024 * 1024


def command_bound(nbytes: int) -> float:
    """Seconds a provisioning command over an upload of ``nbytes`` may take. Pure."""
    return COMMAND_FLOOR + max(0, nbytes) / COMMAND_RATE


def extend_wait() -> float:
    """How long an asked-for extension waits for E2B (``EXTEND_WAIT``, or the environment's)."""
    from sandboxrun.sandbox.backends.e2b_watch import env_seconds

    return env_seconds("SANDBOXRUN_E2B_EXTEND_TIMEOUT", EXTEND_WAIT) or EXTEND_WAIT


def extend_budget(sandbox_end: float | None, now: float) -> float:
    """How long to keep trying to extend: a quarter of the time left, 5 to 30 s. Pure."""
    if sandbox_end is None:
        return EXTEND_BUDGET
    return max(5.0, min(EXTEND_BUDGET, (sandbox_end - now) / 4))


def within(seconds: float, fn: Callable[[], float | None]) -> float | None:
    """``fn()``, or BackendError once it has not returned after ``seconds``.

    A call that hangs is left to finish on its own (a daemon thread; an extension granted
    late only gives more time, and we do not count on it).
    """
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="extending the sandbox", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise BackendError(f"E2B did not answer within {seconds:g}s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")  # type: ignore[return-value]


def alive_within(sandbox: Sandbox, seconds: float = EXTEND_BUDGET) -> bool:
    """``sandbox.is_alive()``, but "alive" (unknown) once asking took ``seconds``: a hung
    check must not hold up a watch whose deadline is running (its retries take minutes)."""
    try:
        return bool(within(seconds, sandbox.is_alive))
    except SandboxLostError:
        return False
    except SandboxrunError:
        return True


@dataclass(frozen=True)
class Run:
    """What collecting and checkpointing need of a run: its record, sandbox and places."""

    journal: Journal
    sandbox: Sandbox
    settings: Settings
    artifacts: Path

    def session(self) -> Session:
        return self.journal.session()

    @property
    def store(self) -> SessionStore:
        return self.journal.store


def measure(sandbox: Sandbox, session: Session) -> int | None:
    """Bytes a collection would bring back now (None when the sandbox cannot say)."""
    if not session.sandbox_base:
        return 0
    try:
        res = sandbox.exec(
            ["sh", "-c", SIZE_SCRIPT, "sh", sandbox.repo_dir, session.sandbox_base], timeout=120
        )
        return int(res.text().strip().splitlines()[-1]) if res.ok else None
    except (SandboxrunError, ValueError, IndexError):
        return None


def lifetime_cap(run: Run, session: Session) -> float:
    """The latest end the plan allows this sandbox (inf where sandboxes have no end)."""
    if session.sandbox_end is None or session.sandbox_created_at is None:
        return math.inf
    return session.sandbox_created_at + run.settings.max_lifetime


def extend_sandbox(sandbox: Sandbox, end: float) -> float | None:
    """Ask for the sandbox to live until ``end``; returns the end the backend confirms.

    The confirmed end is read back from the backend, so an answer lost on the way (or an
    SDK that swallowed an error) cannot make us believe in an end E2B never accepted.
    Raises BackendError when the end is not accepted; None: this backend has no end.
    """
    sandbox.set_timeout(max(1.0, end - time.time()))
    left = sandbox.time_left()
    if left is None:
        return None
    confirmed = time.time() + left
    if confirmed < end - 5:
        raise BackendError(
            f"E2B did not keep the sandbox until {time.strftime('%H:%M:%S', time.localtime(end))}"
            f" (it ends in {format_duration(left)})"
        )
    return confirmed


def secure_collection(run: Run, nbytes: int | None = None) -> bool:
    """Make the sandbox live long enough to stop the agent and bring ``nbytes`` back.

    ``nbytes`` None: measured in the sandbox now. Returns False (after saying so) when the
    end could not be pushed: the collection then has whatever time is left.
    """
    s = run.session()
    sb = run.sandbox
    if sb is None or s.sandbox_end is None:
        return True  # no end to worry about (local), or the agent never started
    if nbytes is None:
        nbytes = measure(sb, s) or 0
    now = time.time()
    needed = collection_seconds(nbytes, minimum=run.settings.grace)
    target = extension_target(
        now=now, needed=needed, current_end=s.sandbox_end, cap=lifetime_cap(run, s)
    )
    if target is None:
        return True
    try:
        budget = extend_budget(s.sandbox_end, now)
        confirmed = within(budget, lambda: extend_sandbox(sb, target))
    except SandboxLostError:
        raise
    except SandboxrunError as exc:
        msg = (f"could not extend the sandbox for the collection ({exc.message}); it has "
               f"{format_duration(max(0.0, s.sandbox_end - now))} left")  # fmt: skip
        run.store.add_event(s.id, "warning", {"mark": "extend", "message": msg})
        run.journal.reporter.warning(msg)
        return False
    if confirmed is not None:
        run.store.update(s.id, sandbox_end=confirmed)
        run.store.add_event(
            s.id, "phase",
            {"phase": "extended", "detail": f"sandbox kept {format_duration(confirmed - now)} "
             f"for collecting {nbytes:,} bytes", "sandbox_end": confirmed},
        )  # fmt: skip
    return True


def start_clock(run: Run, timeout: float) -> None:
    """Set a fresh agent's sandbox end: its limit plus room to collect, within the cap.

    The end is recorded only as the backend confirms it. If E2B does not take it, the run goes
    on with the end the sandbox has (and says so); the stop is then planned inside that.
    """
    s, sb = run.session(), run.sandbox
    now = time.time()
    cap = (s.sandbox_created_at or now) + run.settings.max_lifetime
    end = min(cap, now + timeout + collection_seconds(0, minimum=run.settings.grace))
    try:
        # the agent's clock runs already: a hung call must not eat its time
        confirmed = within(EXTEND_BUDGET, lambda: extend_sandbox(sb, end))
    except SandboxLostError:
        raise
    except SandboxrunError as exc:
        msg = f"could not set the sandbox's lifetime ({exc.message}); keeping its current end"
        run.store.add_event(s.id, "warning", {"mark": "extend", "message": msg})
        run.journal.reporter.warning(msg)
        left = None
        with contextlib.suppress(SandboxrunError):
            left = within(EXTEND_BUDGET, sb.time_left)
        confirmed = None if left is None else time.time() + left
    if confirmed is not None:
        run.store.update(s.id, sandbox_end=confirmed)


def stop_plan(run: Run, session: Session, known_bytes: int) -> StopPlan:
    """When to stop the agent, given its deadline, the sandbox's cap and the work's size."""
    now = time.time()
    deadline = session.deadline or now + (session.timeout_s or run.settings.timeout)
    needed = collection_seconds(known_bytes, minimum=run.settings.grace)
    return plan_stop(deadline=deadline, needed=needed, cap=lifetime_cap(run, session))


def begin_stop(run: Run, reason: str) -> None:
    """Before stopping the agent: remember why, and secure the sandbox's time to collect."""
    run.store.update(run.journal.session_id, stop_reason=reason)
    secure_collection(run)
