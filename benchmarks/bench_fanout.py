"""Benchmark the fan-out scheduler on the local backend with the stand-in agent.

    .venv/bin/python benchmarks/bench_fanout.py              # 10 tasks of 5 s, --max-parallel 10
    .venv/bin/python benchmarks/bench_fanout.py --tasks 4 --seconds 2 --json

The issue's target: ten independent tasks that each take 5 s, run with ``--max-parallel 10``,
finish in <= 1.3x the time of one such task (the driver's own overhead), and the scheduler's
CPU per task. One task is run as a group of one first, then the ten, each in a fresh
``SANDBOXRUN_HOME`` on a fresh repository. The scheduler runs in this process (``process_time``
is its CPU alone: every task is driven by its own detached process, as in ``fanout``); those
task drivers, their sandboxes and agents are separate processes sharing this machine's cores,
so on a loaded machine the ratio says as much about the machine as about the driver; the
output gives the machine's core count and load next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAKE_CLAUDE = ROOT / "tests" / "fake_claude.py"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=B", "-c", "user.email=b@example.com", *args],
        check=True,
        capture_output=True,
    )


def run_group(n: int, seconds: float, parallel: int) -> dict[str, float]:
    """Run ``n`` independent tasks of ``seconds`` each; wall time and scheduler CPU."""
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        root = Path(tmp)
        os.environ["SANDBOXRUN_HOME"] = str(root / "home")
        os.environ["SANDBOXRUN_CLAUDE_BIN"] = str(FAKE_CLAUDE)
        os.environ.setdefault("SANDBOXRUN_POLL_INTERVAL", "0.1")
        repo = root / "repo"
        repo.mkdir()
        _git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("bench\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "init")

        from sandboxrun import gitops
        from sandboxrun.config import load_settings
        from sandboxrun.fanout.groups import create_group, tasks
        from sandboxrun.fanout.report import build_report
        from sandboxrun.fanout.scheduler import GroupScheduler
        from sandboxrun.fanout.tasks import parse_tasks
        from sandboxrun.store import SessionStore

        graph = parse_tasks(
            {
                "task": [
                    {"name": f"t{i}", "prompt": f"@write f{i}.txt {i}\n@sleep {seconds}"}
                    for i in range(n)
                ]
            },
            base_dir=root,
        )
        settings = load_settings(repo)
        store = SessionStore(settings.db_path)
        g = create_group(
            store,
            graph,
            name=f"bench{n}",
            repo=str(repo),
            backend="local",
            base_commit=gitops.resolve_commit(repo, "HEAD"),
            options={"max_parallel": parallel, "start_rate": 100.0, "price_per_second": 0.0},
        )
        cpu0, t0 = time.process_time(), time.perf_counter()
        final = GroupScheduler(settings, store, g.id).run()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        rep = build_report(store, final)
        if final.status != "completed":
            raise SystemExit(f"group ended {final.status}: {rep['tasks']}")
        assert len(tasks(store, g.id)) == n
        store.close()
        return {
            "tasks": n,
            "wall_s": round(wall, 3),
            "scheduler_cpu_s": round(cpu, 3),
            "scheduler_cpu_per_task_ms": round(1000 * cpu / n, 1),
            "agent_wall_s": rep["wall_s"],
            "sum_task_s": rep["sum_task_s"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    one = run_group(1, args.seconds, 1)
    many = run_group(args.tasks, args.seconds, args.tasks)
    result = {
        "one": one,
        "many": many,
        "ratio": round(many["wall_s"] / one["wall_s"], 2),
        "target_ratio": 1.3,
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"one task of {args.seconds:g}s: {one['wall_s']:.2f}s wall")
    print(
        f"{args.tasks} tasks, --max-parallel {args.tasks}: {many['wall_s']:.2f}s wall "
        f"({result['ratio']}x one task; target <= 1.3x)"
    )
    print(
        f"scheduler CPU: {many['scheduler_cpu_s']:.3f}s in all, "
        f"{many['scheduler_cpu_per_task_ms']} ms per task"
    )
    print(f"machine: {result['cores']} cores, load {result['load_avg']}")


if __name__ == "__main__":
    main()
