"""One monitor per $SANDBOXRUN_HOME and repository: the locked pidfile, stale pidfiles,
``monitor --status/--stop``, and a second start refused clearly (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sbr_testlib import CLI, edge_error, retry_until

from sandboxrun.local import monitor_pid
from sandboxrun.local.monitor_pid import MonitorLock, MonitorRunningError


def test_second_lock_in_the_same_home_and_repo_is_refused(tmp_path):
    home = tmp_path / "home"
    with MonitorLock(home, "/r/one"):
        assert monitor_pid.status(home, "/r/one").running
        assert monitor_pid.status(home, "/r/one").pid == os.getpid()
        with pytest.raises(MonitorRunningError) as exc:
            MonitorLock(home, "/r/one").acquire()
        assert f"pid {os.getpid()}" in exc.value.message and "--stop" in (exc.value.hint or "")
        # another repository, and the all-repositories monitor, have their own pidfiles
        with MonitorLock(home, "/r/two"), MonitorLock(home, None):
            pass
    after = monitor_pid.status(home, "/r/one")
    assert not after.running and not after.stale  # a clean exit empties the pidfile


def test_a_killed_monitors_pidfile_is_stale_and_taken_over(tmp_path):
    home = tmp_path / "home"
    code = (
        "import sys, time; from pathlib import Path\n"
        "from sandboxrun.local.monitor_pid import MonitorLock\n"
        f"lock = MonitorLock(Path({str(home)!r}), '/r').acquire(); print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert monitor_pid.status(home, "/r").running
        with pytest.raises(MonitorRunningError):
            MonitorLock(home, "/r").acquire()
    finally:
        proc.kill()
        proc.wait()
    stale = monitor_pid.status(home, "/r")
    assert not stale.running and stale.stale and stale.pid == proc.pid
    # stop() never signals a pid its lock does not vouch for
    assert monitor_pid.stop(home, "/r").running is False
    with MonitorLock(home, "/r"):
        assert monitor_pid.status(home, "/r").pid == os.getpid()


def test_cli_second_start_says_one_runs_then_status_and_stop(tmux_server, proj):
    cli = CLI(proj)
    first = cli.popen("monitor", "--repo", str(proj), "--interval", "0.2")
    try:
        status = retry_until(
            lambda: (
                (r := cli("monitor", "--repo", str(proj), "--status", "--json")).returncode == 0
                and r
            )
        )
        info = json.loads(status.stdout)
        assert info["running"] and info["pid"] == first.pid and info["repo"] == str(proj)

        second = cli("monitor", "--repo", str(proj), "--interval", "0.2", timeout=60)
        assert second.returncode == 1
        message, hint = edge_error(second.stderr)
        assert f"a monitor is already running for {proj} (pid {first.pid})" in message
        assert "--stop" in (hint or "")
        daemon = cli("monitor", "--repo", str(proj), "--daemon", timeout=60)
        assert daemon.returncode == 1 and "already running" in daemon.stderr

        stopped = cli("monitor", "--repo", str(proj), "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"monitor stopped (pid {first.pid}" in stopped.stdout
        assert first.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        cli.reap()
    gone = cli("monitor", "--repo", str(proj), "--status")
    assert gone.returncode == 1 and "no monitor running" in gone.stdout
    log = (Path(os.environ["SANDBOXRUN_HOME"]) / "logs" / "monitor.log").read_text()
    assert f"monitor started pid={first.pid}" in log and f"monitor stopped pid={first.pid}" in log


def test_cli_daemon_then_sigkill_leaves_a_stale_pidfile_a_new_daemon_takes(tmux_server, proj):
    cli = CLI(proj)
    started = cli("monitor", "--repo", str(proj), "--daemon", "--interval", "0.2", timeout=60)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split("pid ")[1].split(")")[0])
    try:
        os.kill(pid, signal.SIGKILL)
        retry_until(lambda: not monitor_pid.status(_home(), str(proj)).running)
        stale = cli("monitor", "--repo", str(proj), "--status")
        assert stale.returncode == 1 and f"stale pidfile of pid {pid}" in stale.stdout
        again = cli("monitor", "--repo", str(proj), "--daemon", "--interval", "0.2", timeout=60)
        assert again.returncode == 0, again.stderr
        pid = int(again.stdout.split("pid ")[1].split(")")[0])
        assert monitor_pid.status(_home(), str(proj)).pid == pid
    finally:
        assert cli("monitor", "--repo", str(proj), "--stop").returncode == 0
    assert not monitor_pid.status(_home(), str(proj)).running


def test_cli_refuses_two_modes_at_once(proj):
    out = CLI(proj)("monitor", "--once", "--status")
    assert out.returncode == 2 and "at most one of" in out.stderr


def _home() -> Path:
    return Path(os.environ["SANDBOXRUN_HOME"])
