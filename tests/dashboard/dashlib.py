"""Helpers of the dashboard tests: real hook processes, real session rows, a real group."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sbr_testlib import CLI

from sandboxrun.fanout import groups
from sandboxrun.fanout.tasks import TaskGraph, TaskSpec
from sandboxrun.store import SessionStore, Status


def hook(event: str, cwd: Path, claude_id: str = "claude-1", **extra) -> None:
    """Run the real ``sandboxrun-hook EVENT`` (what Claude Code runs) in ``cwd``."""
    payload = {
        "session_id": claude_id,
        "transcript_path": f"/t/{claude_id}.jsonl",
        "cwd": str(cwd),
        "hook_event_name": event,
        **extra,
    }
    script = Path(sys.executable).parent / "sandboxrun-hook"
    proc = subprocess.run(
        [str(script), event],
        input=json.dumps(payload).encode(),
        env=dict(os.environ),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def local_child(proj: Path, role: str, claude_id: str) -> Path:
    """A local agent worktree whose Claude session has started (SessionStart hook)."""
    out = CLI(proj)("worktree", "setup", role)
    assert out.returncode == 0, out.stderr
    wt = proj / ".worktrees" / role
    hook("SessionStart", wt, claude_id, source="startup")
    return wt


def sandbox_session(store: SessionStore, name: str, repo: Path, **fields) -> str:
    """A sandbox-mode session row as ``prepare_run`` leaves it, then ``running``."""
    s = store.create_session(
        name=name,
        mode="sandbox",
        backend="local",
        repo=str(repo),
        branch=f"sandboxrun/{name}",
        started_at=time.time(),
        **fields,
    )
    store.set_status(s.id, Status.RUNNING)
    return s.id


def make_group(store: SessionStore, repo: Path, name: str = "feat") -> str:
    """A fan-out group of three tasks: api, ui (after api), docs (after api and ui)."""
    graph = TaskGraph(
        (
            TaskSpec("api", "build the api"),
            TaskSpec("ui", "build the ui", depends_on=("api",)),
            TaskSpec("docs", "write docs", depends_on=("api", "ui")),
        )
    )
    g = groups.create_group(
        store, graph, name=name, repo=str(repo), backend="local", base_commit="0" * 40, options={}
    )
    return g.id


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``sandboxrun mcp --http`` (or ``serve``) as a real process in ``cwd``."""

    def __init__(self, cwd: Path, *args: str) -> None:
        argv = [sys.executable, "-m", "sandboxrun", *(args or ("mcp", "--http"))]
        for _attempt in range(5):
            # free_port's port is free when asked, not necessarily when the server binds it
            # (another process can take it between): a port in use is tried again elsewhere
            why = self._start(cwd, argv)
            if why is None:
                break
            if "already in use" not in why:
                raise AssertionError(why)
        else:
            raise AssertionError(why)
        self.token = (Path(os.environ["SANDBOXRUN_HOME"]) / "http.token").read_text().strip()

    def _start(self, cwd: Path, argv: list[str]) -> str | None:
        """Start the server on a free port and wait for /health; None, or why it exited."""
        import httpx

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                why = self.proc.stderr.read().decode()
                self.proc.stderr.close()
                return why
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("server did not come up")
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


async def until(pilot, condition, what: str, limit: float = 120.0):
    """Let the app run until ``condition()`` holds (polling, not a fixed sleep)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not reached: {what}")


def run_app(app, script) -> None:
    async def main():
        async with app.run_test(size=(170, 45)) as pilot:
            await script(pilot)

    asyncio.run(main())
