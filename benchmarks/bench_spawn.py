"""Benchmark local children: spawn-to-ready, send-to-UserPromptSubmit, the monitor's CPU.

    .venv/bin/python benchmarks/bench_spawn.py                  # 5 spawns, 5 sends, 20 idle
    .venv/bin/python benchmarks/bench_spawn.py --spawns 3 --idle 5

Runs the real Claude Code CLI (``SANDBOXRUN_TEST_CLAUDE`` or the test cache) interactively in
a private tmux server against the fake Anthropic API from ``tests/fake_anthropic``, in a
temporary git repository and ``SANDBOXRUN_HOME``:

- spawn-to-ready: :func:`sandboxrun.local.spawn.spawn` from the call until the child's
  UserPromptSubmit hook shows its first prompt (worktree, tmux session, claude start, hook).
  Target: median at most 2 s.
- send: :func:`sandboxrun.local.send.send` to an idle child until its hook confirms delivery.
- monitor: CPU seconds (ours + the tmux processes it runs) that :meth:`Monitor.tick` costs per
  minute at its default 5 s interval, with ``--idle`` idle children.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import time

from tmux_bench import claude_child_env, workspace

TARGET_SPAWN_S = 2.0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=5)
    parser.add_argument("--sends", type=int, default=5)
    parser.add_argument("--idle", type=int, default=20, help="idle children for the monitor")
    parser.add_argument("--ticks", type=int, default=6, help="monitor passes to time")
    args = parser.parse_args()

    ws = workspace("sbr-bench-")
    tmp, repo, tmux = ws.tmp, ws.repo, ws.tmux
    from sandboxrun.config import load_settings
    from sandboxrun.local.monitor import Monitor
    from sandboxrun.local.send import DELIVERED, send
    from sandboxrun.local.spawn import SpawnRequest, spawn
    from sandboxrun.store import SessionStore
    from tests.fake_anthropic import FakeAnthropic
    from tests.fake_anthropic.cli import installed_claude

    try:
        with FakeAnthropic() as api:
            env = claude_child_env(api.url, ws)
            settings = load_settings(repo, env=env).with_overrides(
                claude_bin=str(installed_claude())
            )
            store = SessionStore(settings.db_path)
            spawn_times = []
            total = max(args.spawns, args.idle)
            for i in range(total):
                start = time.perf_counter()
                spawn(
                    repo,
                    SpawnRequest(name=f"c{i}", task=f"hello {i}", skip_permissions=True),
                    settings,
                    store,
                    tmux,
                    env=env,
                )
                if i < args.spawns:
                    spawn_times.append(time.perf_counter() - start)
            send_times = []
            for i in range(args.sends):
                session = store.resolve(f"c{i % total}")
                while store.get(session.id).activity != "idle":
                    time.sleep(0.05)
                start = time.perf_counter()
                result = send(
                    store, tmux, store.get(session.id), f"message {i}", home=settings.home
                )
                if result.outcome == DELIVERED:
                    send_times.append(time.perf_counter() - start)
            monitor = Monitor(store, tmux, settings)
            monitor.tick()  # the first pass records every state once
            cpu0, wall0 = _cpu(), time.perf_counter()
            for _ in range(args.ticks):
                monitor.tick()
            per_tick = (_cpu() - cpu0) / args.ticks
            tick_wall = (time.perf_counter() - wall0) / args.ticks
    finally:
        tmux.kill_server()
        shutil.rmtree(tmp, ignore_errors=True)

    spawn_med = statistics.median(spawn_times)
    print(
        f"spawn-to-ready: median {spawn_med:.2f} s over {len(spawn_times)} "
        f"(min {min(spawn_times):.2f}, max {max(spawn_times):.2f}); target <= {TARGET_SPAWN_S} s"
    )
    if send_times:
        print(
            f"send -> UserPromptSubmit: median {statistics.median(send_times):.2f} s over "
            f"{len(send_times)} delivered of {args.sends}"
        )
    print(
        f"monitor with {total} idle children: {per_tick * 1000:.0f} ms CPU per pass "
        f"({tick_wall * 1000:.0f} ms wall), {per_tick * 12:.2f} CPU s per minute at 5 s"
    )
    return 0 if spawn_med <= TARGET_SPAWN_S else 1


if __name__ == "__main__":
    sys.exit(main())
