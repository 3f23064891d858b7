"""The clock of a sandbox run (sandboxrun/sandbox/deadline.py): pure functions, many cases."""

from __future__ import annotations

import math

import pytest

from sandboxrun.errors import ConfigError
from sandboxrun.sandbox.deadline import (
    COLLECT_FIXED,
    COLLECT_RATE,
    STOP_BUDGET,
    backoff,
    collection_seconds,
    extension_target,
    plan_stop,
    stop_schedule,
)


def test_collection_time_grows_with_the_bytes_to_bring_back():
    nothing = collection_seconds(0)
    assert nothing == STOP_BUDGET + COLLECT_FIXED
    big = collection_seconds(500 << 20)
    assert big == pytest.approx(nothing + 2 * (500 << 20) / COLLECT_RATE)
    assert collection_seconds(10 << 20) < collection_seconds(20 << 20) < big


def test_collection_time_is_never_below_the_grace_setting():
    assert collection_seconds(0, minimum=300) == 300
    assert collection_seconds(1 << 30, minimum=300) > 300
    assert collection_seconds(-5) == collection_seconds(0)  # a bogus measurement


@pytest.mark.parametrize(
    ("deadline", "needed", "cap", "stop_at", "end", "shortened"),
    [
        (1000, 60, math.inf, 1000, 1060, False),  # no cap (local backend)
        (1000, 60, 5000, 1000, 1060, False),  # plenty of room
        (1000, 60, 1060, 1000, 1060, False),  # exactly enough
        (1000, 60, 1030, 970, 1030, True),  # the cap takes 30 s off the agent
        (1000, 600, 1200, 600, 1200, True),  # a big result: stop 400 s early
        (1000, 60, 900, 840, 900, True),  # the cap is before the deadline itself
    ],
)
def test_plan_stop(deadline, needed, cap, stop_at, end, shortened):
    plan = plan_stop(deadline=deadline, needed=needed, cap=cap)
    assert (plan.stop_at, plan.sandbox_end, plan.shortened) == (stop_at, end, shortened)
    # whatever the inputs, the collection fits between the stop and the sandbox's end
    assert plan.sandbox_end - plan.stop_at >= min(needed, cap - plan.stop_at)
    assert plan.sandbox_end <= cap


@pytest.mark.parametrize(
    ("now", "needed", "current", "cap", "want"),
    [
        (100, 60, 200, math.inf, None),  # the current end leaves enough
        (100, 60, 160, math.inf, None),  # exactly enough
        (100, 60, 150, math.inf, 160),  # too short: ask for now + needed
        (100, 60, None, math.inf, 160),  # unknown end: ask
        (100, 600, 150, 400, 400),  # never past the cap
        (100, 60, 500, 400, None),  # an end already past what we need stays
    ],
)
def test_extension_target(now, needed, current, cap, want):
    assert extension_target(now=now, needed=needed, current_end=current, cap=cap) == want


def test_stop_signals_are_scheduled_against_one_deadline():
    steps = stop_schedule(100.0, 20.0)
    assert [s for s, _ in steps] == ["INT", "TERM", "KILL"]
    times = [t for _, t in steps]
    assert times == sorted(times) and times[0] == 100.0
    # an agent ignoring INT gets KILL inside the budget, whatever the budget is
    for budget in (1.0, 20.0, 300.0):
        kill_at = dict(stop_schedule(0.0, budget))["KILL"]
        assert 0 < kill_at < budget


def test_backoff_doubles_up_to_a_cap():
    assert [backoff(i) for i in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert backoff(3, base=1, cap=5) == 5


def test_extension_attempts_fit_in_the_time_the_sandbox_has():
    """Trying to push a sandbox's end gives up within a quarter of its time left (5 to 30 s):
    a hung call must never eat the room the collection needs."""
    from sandboxrun.sandbox.lifetime import EXTEND_BUDGET, extend_budget

    assert extend_budget(1000.0 + 60, 1000.0) == 15.0
    assert extend_budget(1000.0 + 10, 1000.0) == 5.0  # never less than one short try
    assert extend_budget(1000.0 + 3600, 1000.0) == EXTEND_BUDGET == 30.0
    assert extend_budget(None, 1000.0) == EXTEND_BUDGET


def test_provisioning_command_bound_grows_with_the_upload_from_a_floor():
    """A hung unpack/checkout/baseline fails within 30 s for a small repository, and a big
    upload gets time in proportion (1 s per 4 MiB), never less than the floor."""
    from sandboxrun.sandbox.lifetime import COMMAND_FLOOR, command_bound

    assert command_bound(0) == COMMAND_FLOOR == 30.0
    assert command_bound(-5) == COMMAND_FLOOR
    assert command_bound(4 * 1024 * 1024) == 31.0
    assert command_bound(500 * 1024 * 1024) == 155.0
    sizes = [0, 1, 1 << 20, 1 << 30]
    assert [command_bound(n) for n in sizes] == sorted(command_bound(n) for n in sizes)


def test_extend_waits_45_s_unless_told(monkeypatch):
    from sandboxrun.sandbox.lifetime import EXTEND_WAIT, extend_wait

    monkeypatch.delenv("SANDBOXRUN_E2B_EXTEND_TIMEOUT", raising=False)
    assert extend_wait() == EXTEND_WAIT == 45.0
    monkeypatch.setenv("SANDBOXRUN_E2B_EXTEND_TIMEOUT", "3")
    assert extend_wait() == 3.0
    for bad in ("nonsense", "0", "-3"):  # a bad value is an error naming it, not the default
        monkeypatch.setenv("SANDBOXRUN_E2B_EXTEND_TIMEOUT", bad)
        with pytest.raises(ConfigError, match=f"SANDBOXRUN_E2B_EXTEND_TIMEOUT: '{bad}'"):
            extend_wait()
