"""The fork server task drivers start from: a real server process, real forked drivers running
real (dry-run, local) sessions to their end, and the scheduler's fall-back when it is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from sbr_testlib import retry_until

from sandboxrun.config import load_settings
from sandboxrun.fanout.forkserver import DriverServer
from sandboxrun.sandbox.detach import process_exited
from sandboxrun.sandbox.prepare import RunRequest, prepare_run
from sandboxrun.store import TERMINAL, SessionStore


def _session(repo, name):
    settings = load_settings(repo)
    store = SessionStore(settings.db_path)
    req = RunRequest(repo=repo, prompt="x", name=name, backend="local", dry_run=True)
    return settings, store, prepare_run(settings, store, req)


def _finished(store, session_id):
    return retry_until(lambda: (s := store.get(session_id)).status in TERMINAL and s, timeout=120)


def _kill(pid):
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_forked_drivers_claim_and_finish_their_tasks_and_outlive_the_server(repo):
    settings, store, first = _session(repo, "fork-a")
    _, _, second = _session(repo, "fork-b")
    server = DriverServer(settings)
    server.start()
    pids = []
    try:
        for s in (first, second):
            pid = server.spawn(s.id, False, settings.session_artifacts(s.id) / "driver.log")
            assert pid is not None and pid != server.proc.pid
            pids.append(pid)
        server_pid = server.proc.pid
        server.close()  # the scheduler is done starting: the drivers carry on without it
        assert server.proc is None and process_exited(server_pid)
        for s, pid in zip((first, second), pids, strict=True):
            final = _finished(store, s.id)
            assert final.status == "completed_no_changes", final.error
            assert final.owner_pid == pid  # the forked driver claimed it under its own pid
            # its own session (not the server's), its log the task's driver.log
            assert (settings.session_artifacts(s.id) / "driver.log").exists()
            # ended and reaped (the server ignored SIGCHLD), never left as a zombie
            assert retry_until(lambda pid=pid: process_exited(pid), timeout=120)
    finally:
        server.close()
        for pid in pids:
            _kill(pid)


def test_a_dead_server_is_given_up_and_the_driver_started_the_ordinary_way(repo):
    from sandboxrun.fanout.scheduler import GroupScheduler

    settings, store, s = _session(repo, "fork-dead")
    server = DriverServer(settings)
    server.start()
    server.proc.kill()
    server.proc.wait()
    log = settings.session_artifacts(s.id) / "driver.log"
    assert server.spawn(s.id, False, log) is None
    assert server.broken and server.proc is None
    # the scheduler then starts the driver itself (spawn_task_driver): the task still runs
    sched = GroupScheduler(settings, store, "no-group")
    sched._server = server
    pid = sched._start_driver(s, False)
    try:
        final = _finished(store, s.id)
        assert final.status == "completed_no_changes", final.error
        assert final.owner_pid == pid
    finally:
        _kill(pid)


def test_the_server_stops_at_a_request_it_does_not_understand(tmp_path):
    env = {**os.environ, "SANDBOXRUN_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "sandboxrun.fanout.forkserver"],
        input=b"not json\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == b""
