"""The state → next-command table (sandboxrun/sandbox/nextstep.py)."""

from __future__ import annotations

import itertools

import pytest

from sandboxrun.sandbox.nextstep import SessionFacts, next_commands, next_step_hint
from sandboxrun.store import ACTIVE, TERMINAL

ALL = sorted(str(s) for s in ACTIVE | TERMINAL)


def facts(status, **kw):
    base = dict(name="s1", status=status, driver_alive=False, agent_started=True,
                has_commits=False, has_patches=False, branch="sandboxrun/s1", repo="/r")  # fmt: skip
    return SessionFacts(**{**base, **kw})


@pytest.mark.parametrize(
    ("status", "driver", "started", "commits", "patches", "first"),
    [
        ("running", True, True, False, False, "sandboxrun logs s1 --follow"),
        ("running", False, True, False, False, "sandboxrun attach s1"),
        ("running", False, False, False, False, "sandboxrun kill s1"),
        ("provisioning", True, False, False, False, "sandboxrun logs s1 --follow"),
        ("provisioning", False, False, False, False, "sandboxrun kill s1"),
        ("collecting", True, True, False, False, "sandboxrun logs s1 --follow"),
        ("collecting", False, True, False, False, "sandboxrun attach s1"),
        ("completed", False, True, True, False, "git -C /r log --stat sandboxrun/s1"),
        ("lost", False, True, False, True, "sandboxrun download s1"),
        ("lost", False, True, False, False, "sandboxrun logs s1"),
        ("failed", False, True, False, False, "sandboxrun logs s1"),
    ],
)
def test_table(status, driver, started, commits, patches, first):
    f = facts(status, driver_alive=driver, agent_started=started, has_commits=commits,
              has_patches=patches)  # fmt: skip
    assert next_commands(f)[0] == first


def test_a_lost_session_with_a_checkpoint_not_landed_points_at_attach():
    """`status` never lands a lost run's checkpoint: it names `attach`, which does."""
    f = facts("lost", has_patches=True, checkpoint_pending=True)
    assert next_commands(f)[0] == "sandboxrun attach s1"
    assert next_commands(facts("lost", has_patches=True))[0] == "sandboxrun download s1"


@pytest.mark.parametrize(
    ("status", "driver", "started", "commits", "patches", "pending"),
    [(*p, pending) for p in itertools.product(ALL, (False, True), (False, True), (False, True),
                                               (False, True))
     for pending in ((False, True) if p[0] == "lost" and p[4] else (False,))],
)  # fmt: skip
def test_every_state_names_only_commands_that_work_there(status, driver, started, commits,
                                                         patches, pending):  # fmt: skip
    f = facts(status, driver_alive=driver, agent_started=started, has_commits=commits,
              has_patches=patches, checkpoint_pending=pending)  # fmt: skip
    commands = next_commands(f)
    assert commands, f
    ended = status in TERMINAL
    for c in commands:
        verb = c.split()[1] if c.startswith("sandboxrun ") else "git"
        # attach: an agent that started, not ended, with nobody driving it; or a lost
        # session whose kept checkpoint is not landed yet
        if verb == "attach":
            assert (started and not driver and not ended) or pending
        # kill and extend: only active sessions; extend only while the agent runs
        if verb == "kill":
            assert not ended
        if verb == "extend":
            assert status == "running" and driver
        # download: a live sandbox, or saved patches
        if verb == "download":
            assert (not ended and started) or patches
        # the branch is named only when commits were put on it
        if verb == "git":
            assert commits
    assert next_step_hint(f).startswith("Next: `")
