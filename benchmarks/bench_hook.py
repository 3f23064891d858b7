"""Benchmark the hook entry point (`sandboxrun-hook EVENT`) against `python3 -c pass`.

    .venv/bin/python benchmarks/bench_hook.py               # 200 calls per case
    .venv/bin/python benchmarks/bench_hook.py --calls 50     # quick run

Claude Code runs the hook on every tool call of every agent, so its cost is a whole process
start. Cases, each timed as a real process with the payload on stdin (wall time per call):

- ``python -c pass`` with the same interpreter as the hook, venv and all (the baseline), and
  the base ``python3`` outside the venv (for reference: what the venv's site-packages cost);
- ``PreToolUse`` on a bound session (the hot path: a heartbeat, an event, the activity);
- ``SessionStart`` (identity, config, presence, messages: once per session).

The database lives in a temporary ``SANDBOXRUN_HOME`` and already holds a migrated schema and
one session; the repository is a temporary git repo with an agent worktree. Target: the median
of the hot path at most 2x the baseline's median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 2.0


def hook_script() -> list[str]:
    """The installed console script, or ``python -m sandboxrun.hook`` without one."""
    script = Path(sys.executable).parent / "sandboxrun-hook"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sandboxrun.hook"]


def time_calls(argv: list[str], stdin: bytes, env: dict[str, str], calls: int) -> list[float]:
    """Wall time (ms) of ``calls`` runs of ``argv``."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        subprocess.run(argv, input=stdin, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
        "min_ms": round(ordered[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hook-"))
    try:
        repo = tmp / "repo"
        repo.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "SANDBOX"))}
        env.update({"SANDBOXRUN_HOME": str(tmp / "home"), "GIT_CONFIG_NOSYSTEM": "1"})
        # An installed package has its bytecode cached (pip compiles it); without the cache
        # every call would compile hook.py again. The first call below writes it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b"]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
        subprocess.run(
            [sys.executable, "-m", "sandboxrun", "worktree", "setup", "bench", "--repo", str(repo)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        worktree = repo / ".worktrees" / "bench"
        base = {"session_id": "bench-claude", "cwd": str(worktree), "transcript_path": "/t.jsonl"}
        start = json.dumps({**base, "hook_event_name": "SessionStart", "source": "startup"})
        pre = json.dumps(
            {**base, "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {}}
        )
        hook = hook_script()
        # Bind the session once (creates the database and the row), then measure.
        subprocess.run([*hook, "SessionStart"], input=start.encode(), env=env, check=True)
        calls = args.calls
        base_py = getattr(sys, "_base_executable", sys.executable)
        cases: dict[str, tuple[list[str], bytes]] = {
            "python -c pass (same interpreter)": ([sys.executable, "-c", "pass"], b""),
            "python3 -c pass (base, no venv)": ([base_py, "-c", "pass"], b""),
            "sandboxrun-hook PreToolUse": ([*hook, "PreToolUse"], pre.encode()),
            "sandboxrun-hook SessionStart": ([*hook, "SessionStart"], start.encode()),
        }
        # Round-robin, one call of each case at a time: a shared machine's load then weighs
        # on every case alike instead of on whichever ran during a busy spell.
        timings: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(calls):
            for name, (argv, stdin) in cases.items():
                timings[name] += time_calls(argv, stdin, env, 1)
        results = {name: summary(times) for name, times in timings.items()}
        base_median = results["python -c pass (same interpreter)"]["median_ms"]
        ratio = results["sandboxrun-hook PreToolUse"]["median_ms"] / base_median
        log = Path(env["SANDBOXRUN_HOME"]) / "logs" / "hook.log"
        errors = log.read_text().count("\n") if log.exists() else 0
        if args.json:
            print(json.dumps({"results": results, "ratio": ratio, "hook_errors": errors}))
        else:
            print(f"{'case':<36} {'median':>9} {'p95':>9} {'min':>9}  (ms, {calls} calls)")
            for name, r in results.items():
                print(f"{name:<36} {r['median_ms']:>9} {r['p95_ms']:>9} {r['min_ms']:>9}")
            verdict = "meets" if ratio <= TARGET else "MISSES"
            print(f"hot path / baseline median: {ratio:.2f}x ({verdict} the {TARGET:g}x target)")
            print(f"hook.log lines: {errors}")
        return 0 if ratio <= TARGET and errors == 0 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
