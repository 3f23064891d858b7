"""Helpers for the MCP tests: a repository with agent worktrees, sessions started through the
real hook entry (a process), and a synchronous way to call tools through fastmcp's client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client
from fastmcp.exceptions import ToolError

from sandboxrun.config import load_settings
from sandboxrun.local.worktrees import setup
from sandboxrun.mcp.common import Coord
from sandboxrun.mcp.server import build_server

HOOK = Path(sys.executable).parent / "sandboxrun-hook"


def reply(result: Any) -> Any:
    """A tool's reply: its structured content, else its JSON text (``list_sessions``)."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


def add_worktree(repo: Path, role: str) -> Path:
    """The role's agent worktree (``.worktrees/ROLE``), created by the real library."""
    return setup(repo, role, load_settings(repo)).path


def hook(
    event: str,
    cwd: Path,
    claude_id: str,
    role: str | None = None,
    env_extra: dict[str, str] | None = None,
    **extra: Any,
) -> dict:
    """Run ``sandboxrun-hook EVENT`` as a real process; its JSON reply ({} when none)."""
    payload = {
        "session_id": claude_id,
        "transcript_path": f"/t/{claude_id}.jsonl",
        "cwd": str(cwd),
        "hook_event_name": event,
        **extra,
    }
    env = dict(os.environ)
    env.pop("CLAUDE_INSTANCE_ID", None)
    if role:
        env["CLAUDE_INSTANCE_ID"] = role
    env.update(env_extra or {})
    proc = subprocess.run(
        [str(HOOK), event],
        input=json.dumps(payload).encode(),
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode().strip()
    return json.loads(out) if out else {}


def claim_as(repo: Path, role: str, paths: list[str], mode: str = "exclusive", **kw: Any) -> str:
    """A live Claude Code session of ``role`` (its worktree made, its SessionStart hook run)
    claiming ``paths`` in ``repo``; its session id. ``kw``: :func:`claims.claim`'s options."""
    from sandboxrun.coord import claims
    from sandboxrun.store import SessionStore

    hook("SessionStart", add_worktree(repo, role), f"claude-{role}", role, source="startup")
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    try:
        sid = store.conn.execute("SELECT id FROM sessions WHERE role = ?", (role,)).fetchone()[0]
        with store.transaction() as conn:
            claims.claim(conn, str(repo), paths, mode, sid, role=role, **kw)
    finally:
        store.close()
    return str(sid)


def coord_for(cwd: Path, role: str | None = None) -> Coord:
    """The server context of a Claude Code session running in ``cwd`` as ``role``."""
    env = dict(os.environ)
    env.pop("CLAUDE_INSTANCE_ID", None)
    if role:
        env["CLAUDE_INSTANCE_ID"] = role
    return Coord(env=env, cwd=cwd)


class Tools:
    """Calls tools of one server through the in-memory fastmcp client, synchronously."""

    def __init__(self, coord: Coord) -> None:
        self.coord = coord
        self.server = build_server(coord)

    async def _call(self, name: str, args: dict[str, Any]) -> Any:
        async with Client(self.server) as client:
            return reply(await client.call_tool(name, args))

    def __call__(self, tool_name: str, /, **args: Any) -> Any:
        return asyncio.run(self._call(tool_name, args))

    def error(self, tool_name: str, /, **args: Any) -> str:
        """Call a tool that must fail; the ToolError's text."""
        try:
            self(tool_name, **args)
        except ToolError as exc:
            return str(exc)
        raise AssertionError(f"{tool_name}({args}) did not fail")

    def run(self, fn) -> Any:
        """Run ``async fn(client)`` against this server."""

        async def go() -> Any:
            async with Client(self.server) as client:
                return await fn(client)

        return asyncio.run(go())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_http(cwd: Path, env: Mapping[str, str] | None) -> tuple[subprocess.Popen, str]:
    """``sandboxrun mcp --http`` on a free loopback port, once ``/health`` answers.

    The port is free when asked, not necessarily when the server binds it (another process
    can take it between): a server that exits because its port is in use is started again on
    another one."""
    why = ""
    for _attempt in range(5):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxrun", "mcp", "--http", "--port", str(port)],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                _reap(proc)
                raise AssertionError("server did not come up")
            time.sleep(0.1)
        why = proc.communicate()[1].decode()
        if "already in use" not in why:
            raise AssertionError(why)
    raise AssertionError(why)


def _reap(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def http_server_process(
    cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """``sandboxrun mcp --http`` as a process in ``cwd`` on a free loopback port; yields
    (base url, bearer token) once ``/health`` answers, and reaps the process after."""
    proc, base = _start_http(cwd, env)
    try:
        home = (env or os.environ)["SANDBOXRUN_HOME"]
        token_file = Path(home) / "http.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        yield base, token_file.read_text().strip()
    finally:
        _reap(proc)
