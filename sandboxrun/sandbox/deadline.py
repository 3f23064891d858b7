"""The clock of a sandbox run, as pure functions: when to stop the agent, how long the sandbox
must live for the collection, when to send which stop signal, how long to back off.

Three times matter. The run's *deadline* (``--timeout`` after the agent started, moved by
``extend``) is when the agent must be stopped. The *sandbox's end* is when E2B kills the
sandbox, whatever we are doing then. The *lifetime cap* is the latest end the plan allows
(creation + the plan's maximum lifetime: 1 h on Hobby, 24 h on Pro). Stopping the agent and
bringing its work back must happen before the sandbox's end, so before stopping we push that
end to "now + what the collection needs" — sized from how many bytes are to come back — and
when the cap does not allow that, we stop earlier. Nothing extends the sandbox while
collecting: the time is secured first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the slowest download rate we plan for, bytes/s (E2B from a laptop on a poor uplink)
COLLECT_RATE = 2 * 1024 * 1024
#: fixed cost of a collection: producing the patches in the sandbox, a few round trips, apply
COLLECT_FIXED = 30.0
#: time from the first stop signal to giving up on the agent (INT, TERM, KILL inside it)
STOP_BUDGET = 20.0
#: when each signal goes out, as fractions of the stop budget
SIGNAL_STEPS = (("INT", 0.0), ("TERM", 0.5), ("KILL", 0.8))


def collection_seconds(
    nbytes: int,
    *,
    rate: float = COLLECT_RATE,
    fixed: float = COLLECT_FIXED,
    stop_budget: float = STOP_BUDGET,
    minimum: float = 0.0,
) -> float:
    """Seconds the sandbox must still live when we start stopping the agent.

    The stop budget, the fixed cost, and the transfer of ``nbytes`` twice over (producing the
    files in the sandbox reads them once, retries after a network drop may resend them);
    never less than ``minimum`` (the ``grace`` setting).
    """
    return max(minimum, stop_budget + fixed + 2 * max(0, nbytes) / rate)


@dataclass(frozen=True)
class StopPlan:
    """When to stop the agent and what end the sandbox needs by then."""

    stop_at: float  # wall-clock time at which the agent is stopped (at the latest)
    sandbox_end: float  # the end to secure for the sandbox before stopping
    shortened: bool  # True when the lifetime cap moved the stop before the deadline


def plan_stop(*, deadline: float, needed: float, cap: float = math.inf) -> StopPlan:
    """Stop at the deadline, or earlier if the cap leaves less than ``needed`` after it.

    >>> plan_stop(deadline=100, needed=30, cap=200)
    StopPlan(stop_at=100, sandbox_end=130, shortened=False)
    >>> plan_stop(deadline=100, needed=30, cap=110)
    StopPlan(stop_at=80, sandbox_end=110, shortened=True)
    """
    latest = cap - needed
    stop_at = min(deadline, latest)
    return StopPlan(stop_at, min(cap, stop_at + needed), latest < deadline)


def extension_target(
    *, now: float, needed: float, current_end: float | None, cap: float = math.inf
) -> float | None:
    """The sandbox end to ask E2B for before a collection, or None if the current one will do.

    ``current_end`` None means the end is not known: ask. The target never passes the cap.
    """
    want = min(cap, now + needed)
    if current_end is not None and current_end >= want:
        return None
    return want


def stop_schedule(start: float, budget: float = STOP_BUDGET) -> list[tuple[str, float]]:
    """``(signal, at)`` for INT, TERM and KILL within ``budget`` seconds from ``start``.

    The times are fixed against the budget, not waits after each step: an agent that ignores
    SIGINT costs half the budget, never the collection's time.
    """
    return [(sig, start + frac * budget) for sig, frac in SIGNAL_STEPS]


def backoff(attempt: int, *, base: float = 0.5, cap: float = 8.0) -> float:
    """Delay before retry number ``attempt`` (0-based): 0.5, 1, 2, 4, 8, 8 ... seconds."""
    return min(cap, base * 2.0**attempt)
