"""Benchmark the monitor's CPU with idle children: a real ``sandboxrun monitor`` process.

    .venv/bin/python benchmarks/bench_monitor.py                    # 20 idle stand-ins, 60 s
    .venv/bin/python benchmarks/bench_monitor.py --children 20 --seconds 120 --interval 5s
    .venv/bin/python benchmarks/bench_monitor.py --real --children 5   # real Claude Code

A private tmux server holds ``--children`` panes, each a child row in a temporary
``SANDBOXRUN_HOME``. By default each pane runs an idle stand-in: a process that draws what an
idle Claude Code shows (the ``✻ Worked for`` line, the ``❯`` composer, the ``✳`` window title)
and then blocks, so the figure is the monitor's own cost and not 20 Claude Code processes'
(``--real`` spawns real interactive Claude Code children against the fake Anthropic API
instead, to check the stand-in is representative). Then ``sandboxrun monitor`` runs as its
own process at ``--interval``; once its first pass has recorded every child's state, its CPU
(user + system, itself and the tmux clients it ran: ``/proc/PID/stat`` utime, stime, cutime,
cstime) and the tmux server's are read over ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tmux_bench import Workspace, claude_child_env, workspace

#: what an idle Claude Code 2.1.330 shows (title ✳ = done), then wait for ever
STAND_IN = r"""
import sys, time
sys.stdout.write("\033]2;\u2733 Claude Code\007")
sys.stdout.write("\u273b Worked for 3s\n\n" + "\u2500" * 80 + "\n\u276f \n" + "\u2500" * 80 + "\n")
sys.stdout.write("  \u23f5\u23f5 bypass permissions on (shift+tab to cycle)\n")
sys.stdout.flush()
while True:
    time.sleep(3600)
"""


def _cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (itself and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # fields 14-17 of stat(5), after pid and comm
    return ticks / os.sysconf("SC_CLK_TCK")


def _states_recorded(db: Path, n: int) -> bool:
    conn = sqlite3.connect(db)
    try:
        got = conn.execute(
            "SELECT COUNT(DISTINCT session_id) FROM events WHERE kind = 'state'"
        ).fetchone()[0]
    finally:
        conn.close()
    return int(got) >= n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", default="5s", help="the monitor's --interval")
    parser.add_argument("--real", action="store_true", help="real Claude Code children")
    args = parser.parse_args()

    ws = workspace("sbr-bench-mon-")
    tmp, repo, tmux = ws.tmp, ws.repo, ws.tmux
    from sandboxrun.config import load_settings
    from sandboxrun.store import SessionStore, Status

    settings = load_settings(repo)
    store = SessionStore(settings.db_path)
    api = None
    monitor: subprocess.Popen[bytes] | None = None
    try:
        if args.real:
            api = _spawn_real(ws, store, args.children)
        else:
            for i in range(args.children):
                name = f"t_child_c{i}"
                tmux.new_session(name, [sys.executable, "-c", STAND_IN], cwd=repo)
                store.create_session(
                    name=f"c{i}",
                    mode="local",
                    backend="tmux",
                    status=Status.RUNNING,
                    repo=str(repo),
                    tmux_session=name,
                    started_at=time.time(),
                    activity="idle",
                    activity_at=time.time(),
                )
        monitor = subprocess.Popen(
            [sys.executable, "-m", "sandboxrun", "monitor", "--repo", str(repo)]
            + ["--interval", args.interval],
            cwd=repo,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not _states_recorded(settings.db_path, args.children):
            if monitor.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the monitor did not make its first pass (exit {monitor.poll()})")
            time.sleep(0.2)
        server_pid = int(tmux.cmd("display-message", "-p", "#{pid}")[0])
        mon0, srv0, wall0 = _cpu_seconds(monitor.pid), _cpu_seconds(server_pid), time.monotonic()
        time.sleep(args.seconds)  # the measurement window itself, not a wait for a condition
        mon1, srv1, wall1 = _cpu_seconds(monitor.pid), _cpu_seconds(server_pid), time.monotonic()
    finally:
        if monitor is not None:
            monitor.terminate()
            monitor.wait(timeout=30)
        tmux.kill_server()
        if api is not None:
            api.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)

    minutes = (wall1 - wall0) / 60
    mon_min = (mon1 - mon0) / minutes
    srv_min = (srv1 - srv0) / minutes
    kind = "real Claude Code" if args.real else "idle stand-in"
    print(
        f"monitor (interval {args.interval}) with {args.children} {kind} children over "
        f"{wall1 - wall0:.0f} s: {mon_min:.2f} CPU s per minute ({mon_min / 60 * 100:.1f} % of "
        f"a core) in the monitor and its tmux clients, {srv_min:.2f} CPU s per minute in the "
        f"tmux server"
    )
    return 0


def _spawn_real(ws: Workspace, store, n: int):  # type: ignore[no-untyped-def]
    """``n`` real interactive Claude Code children (idle after one short turn)."""
    from sandboxrun.config import load_settings
    from sandboxrun.local.spawn import SpawnRequest, spawn
    from tests.fake_anthropic import FakeAnthropic
    from tests.fake_anthropic.cli import installed_claude

    api = FakeAnthropic().__enter__()
    env = claude_child_env(api.url, ws)
    settings = load_settings(ws.repo, env=env).with_overrides(claude_bin=str(installed_claude()))
    for i in range(n):
        req = SpawnRequest(name=f"c{i}", task=f"hello {i}", skip_permissions=True)
        spawn(ws.repo, req, settings, store, ws.tmux, env=env, ready_timeout=180)
    return api


if __name__ == "__main__":
    sys.exit(main())
