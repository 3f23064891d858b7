"""`kill GROUP` waits a bounded time for the group's driver to end the group, then says so
with the next step. A real process holds the group as its driver and never ends it."""

from __future__ import annotations

import os
import subprocess

import pytest

from sandboxrun.cli.fanout_cmd import kill_group
from sandboxrun.config import load_settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.fanout import groups as G
from sandboxrun.fanout.scheduler import group_driver_alive
from sandboxrun.fanout.tasks import TaskGraph, TaskSpec
from sandboxrun.store import SessionStore


def test_kill_group_errors_with_a_hint_when_the_driver_never_ends_it(repo):
    settings = load_settings(repo)
    store = SessionStore(settings.db_path)
    graph = TaskGraph((TaskSpec("api", "build the api"),))
    g = G.create_group(store, graph, name="feat", repo=str(repo), backend="local",
                       base_commit="0" * 40, options={})  # fmt: skip
    # a live process that holds the group and never schedules or ends it
    driver = subprocess.Popen(["sleep", "300"])
    try:
        assert G.claim_group(store, g.id, driver.pid, os.uname().nodename, alive=lambda _: False)
        g = G.get_group(store, g.id)
        assert group_driver_alive(g)
        with pytest.raises(SandboxrunError) as err:
            kill_group(settings, store, g, json_out=False, wait=0.5)
        assert err.value.message == (
            f"group feat was asked to stop, but its driver (pid {driver.pid}) has not ended it "
            "within 0.5s (still running)"
        )
        assert err.value.hint == (
            "Follow it with `sandboxrun logs feat`; run `sandboxrun kill feat` again to wait more."
        )
        after = G.get_group(store, g.id)
        assert after.kill_requested == 1 and after.status == "running"  # asked, left to it
        assert [t.state for t in G.tasks(store, g.id)] == ["pending"]  # nothing stopped here
    finally:
        driver.kill()
        driver.wait()
        store.close()
