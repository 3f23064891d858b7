"""Benchmark the MCP server and the claim gate.

    .venv/bin/python benchmarks/bench_mcp.py                 # 50 list calls, 200 hook calls
    .venv/bin/python benchmarks/bench_mcp.py --calls 20 --hook-calls 50

1. ``list_sessions`` over MCP with 1,000 sessions in the database: through a real
   ``sandboxrun mcp`` process over stdio (the way Claude Code calls it; one connection, then
   timed calls) and through fastmcp's in-memory client (the server's own cost), with the
   default page (200) and all 1,000. Target: median <= 100 ms. Also ``heartbeat`` over
   stdio (target < 100 ms).
2. The PreToolUse gate's added cost: ``sandboxrun-hook PreToolUse`` for an ``Edit`` (gated:
   the claims are read, 200 live claims of another session in the table) against the same
   hook for a ``Bash`` call (not gated), both real processes, round-robin. Target: <= 1.2x.
"""

from __future__ import annotations

import argparse
import asyncio
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

LIST_TARGET_MS = 100.0
GATE_TARGET = 1.2


def med(times: list[float]) -> float:
    return round(statistics.median(times), 2)


def p95(times: list[float]) -> float:
    ordered = sorted(times)
    return round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2)


def fill(db: Path, repo: Path, n: int) -> None:
    """``n`` sessions (a mix of modes and statuses) in one transaction."""
    from sandboxrun.store import SessionStore

    store = SessionStore(db)
    now = time.time()
    statuses = ("running", "completed", "failed", "killed")
    with store.transaction() as conn:
        for i in range(n):
            local = i % 3 == 0
            conn.execute(
                "INSERT INTO sessions (id, name, mode, backend, status, repo, worktree, branch, "
                "role, prompt, created_at, last_heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?)",
                (
                    f"{i:012x}",
                    f"bench-{i}",
                    "local" if local else "sandbox",
                    "interactive" if local else "e2b",
                    statuses[i % 4],
                    str(repo),
                    str(repo / ".worktrees" / f"w{i}"),
                    f"sandboxrun/bench-{i}",
                    f"r{i}" if local else None,
                    "a prompt of a typical length " * 20,
                    now - i,
                    now,
                ),
            )
    store.close()


def bench_list(repo: Path, env: dict[str, str], calls: int) -> dict[str, dict[str, float]]:
    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport

    from sandboxrun.mcp.common import Coord
    from sandboxrun.mcp.server import build_server

    async def timed(client, args: dict, tool: str = "list_sessions") -> list[float]:
        await client.call_tool(tool, args)  # warm: first call opens the database
        out = []
        for _ in range(calls):
            start = time.perf_counter()
            result = await client.call_tool(tool, args)
            out.append((time.perf_counter() - start) * 1000)
        if tool == "list_sessions":
            assert json.loads(result.content[0].text)["total"] == 1000  # JSON text, no copy
        return out

    async def run() -> dict[str, dict[str, float]]:
        results = {}
        transport = StdioTransport(
            sys.executable, ["-m", "sandboxrun", "mcp"], env=env, cwd=str(repo)
        )
        async with Client(transport) as client:
            for label, args in (("200 (default page)", {}), ("all 1000", {"limit": 1000})):
                t = await timed(client, args)
                results[f"stdio process, {label}"] = {"median_ms": med(t), "p95_ms": p95(t)}
            await client.call_tool("register_presence", {"role": "bench"})
            t = await timed(client, {"role": "bench"}, "heartbeat")
            results["stdio process, heartbeat"] = {"median_ms": med(t), "p95_ms": p95(t)}
        server = build_server(Coord(env=env, cwd=repo))
        async with Client(server) as client:
            for label, args in (("200 (default page)", {}), ("all 1000", {"limit": 1000})):
                t = await timed(client, args)
                results[f"in-memory, {label}"] = {"median_ms": med(t), "p95_ms": p95(t)}
        return results

    old = dict(os.environ)
    os.environ.update(env)
    try:
        return asyncio.run(run())
    finally:
        os.environ.clear()
        os.environ.update(old)


def bench_gate(tmp: Path, env: dict[str, str], calls: int) -> dict[str, dict[str, float]]:
    """Round-robin: the hook on an Edit (gated) and on a Bash call (not gated)."""
    repo = tmp / "gate-repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    for role in ("bench", "holder"):
        subprocess.run(
            [sys.executable, "-m", "sandboxrun", "worktree", "setup", role, "--repo", str(repo)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    hook = [str(Path(sys.executable).parent / "sandboxrun-hook")]
    sessions = {}
    for role in ("bench", "holder"):
        wt = repo / ".worktrees" / role
        base = {"session_id": f"c-{role}", "cwd": str(wt), "transcript_path": "/t.jsonl"}
        sessions[role] = base
        start = json.dumps({**base, "hook_event_name": "SessionStart", "source": "startup"})
        subprocess.run([*hook, "SessionStart"], input=start.encode(), env=env, check=True)
    # 200 live exclusive claims of the other session (none on the edited file)
    from sandboxrun.coord import claims
    from sandboxrun.store import SessionStore

    store = SessionStore(Path(env["SANDBOXRUN_HOME"]) / "state.db")
    holder = store.conn.execute("SELECT id FROM sessions WHERE role = 'holder'").fetchone()[0]
    with store.transaction() as conn:
        claims.claim(conn, str(repo), [f"src/f{i}.py" for i in range(200)], "exclusive", holder)
    store.close()
    wt = repo / ".worktrees" / "bench"
    base = sessions["bench"]
    edit = {**base, "hook_event_name": "PreToolUse", "tool_name": "Edit",
            "tool_input": {"file_path": str(wt / "src" / "mine.py")}}  # fmt: skip
    bash = {**base, "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {}}
    cases = {"PreToolUse Bash (plain hook)": bash, "PreToolUse Edit (gated)": edit}
    timings: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(calls):
        for name, payload in cases.items():
            start = time.perf_counter()
            out = subprocess.run(
                [*hook, "PreToolUse"], input=json.dumps(payload).encode(), env=env,
                capture_output=True, check=True,
            )  # fmt: skip
            timings[name].append((time.perf_counter() - start) * 1000)
            assert out.stdout == b"", out.stdout  # not denied: the file is free
    return {k: {"median_ms": med(t), "p95_ms": p95(t)} for k, t in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="list_sessions calls per case")
    parser.add_argument("--hook-calls", type=int, default=200, help="hook calls per case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "SANDBOX"))}
        env.update({"SANDBOXRUN_HOME": str(tmp / "home"), "GIT_CONFIG_NOSYSTEM": "1"})
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        repo = tmp / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        (tmp / "home").mkdir()
        fill(tmp / "home" / "state.db", repo, 1000)
        listing = bench_list(repo, env, args.calls)
        gate = bench_gate(tmp, env, args.hook_calls)
        ratio = (
            gate["PreToolUse Edit (gated)"]["median_ms"]
            / gate["PreToolUse Bash (plain hook)"]["median_ms"]
        )
        worst = max(r["median_ms"] for r in listing.values())
        if args.json:
            print(json.dumps({"list_sessions": listing, "gate": gate, "gate_ratio": ratio}))
        else:
            print(f"list_sessions, 1,000 sessions in the database ({args.calls} calls)")
            for name, r in listing.items():
                print(f"  {name:<34} median {r['median_ms']:>7} ms  p95 {r['p95_ms']:>7} ms")
            print(f"PreToolUse gate ({args.hook_calls} calls each, 200 claims in the table)")
            for name, r in gate.items():
                print(f"  {name:<34} median {r['median_ms']:>7} ms  p95 {r['p95_ms']:>7} ms")
            print(
                f"slowest list median {worst} ms (target {LIST_TARGET_MS:g}); gate/plain "
                f"{ratio:.2f}x (target {GATE_TARGET:g}x)"
            )
        return 0 if worst <= LIST_TARGET_MS and ratio <= GATE_TARGET else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
