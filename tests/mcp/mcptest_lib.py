"""Helpers for the MCP tests: a repository with agent worktrees, sessions started through the
real hook entry (a process), and a synchronous way to call tools through fastmcp's client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastmcp import Client
from fastmcp.exceptions import ToolError

from sandboxrun.config import load_settings
from sandboxrun.local.worktrees import setup
from sandboxrun.mcp.common import Coord
from sandboxrun.mcp.server import build_server

HOOK = Path(sys.executable).parent / "sandboxrun-hook"


def add_worktree(repo: Path, role: str) -> Path:
    """The role's agent worktree (``.worktrees/ROLE``), created by the real library."""
    return setup(repo, role, load_settings(repo)).path


def hook(event: str, cwd: Path, claude_id: str, role: str | None = None, **extra: Any) -> dict:
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
            result = await client.call_tool(name, args)
            return result.structured_content

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
