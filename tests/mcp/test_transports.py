"""A real ``sandboxrun mcp`` process over stdio and over HTTP (with the control plane)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcptest_lib import add_worktree, hook, http_server_process, reply

pytestmark = pytest.mark.slow


def test_stdio_server_process(proj: Path):
    api_wt = add_worktree(proj, "api")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    env = {**os.environ, "CLAUDE_INSTANCE_ID": "api"}
    transport = StdioTransport(
        sys.executable, ["-m", "sandboxrun", "mcp"], env=env, cwd=str(api_wt)
    )

    async def go():
        async with Client(transport) as client:
            me = await client.call_tool("get_my_session", {})
            listed = await client.call_tool("list_sessions", {"mode": "local"})
            return reply(me), reply(listed)

    me, listed = asyncio.run(go())
    assert me["role"] == "api" and me["tracked"] and me["worktree"] == str(api_wt)
    assert [s["role"] for s in listed["sessions"]] == ["api"]


@pytest.fixture
def http_server(proj: Path):
    """``sandboxrun mcp --http`` as a process in ``proj``; yields (base url, token)."""
    with http_server_process(proj) as served:
        yield served


def test_http_needs_the_token_everywhere_but_health(http_server):
    base, token = http_server
    health = httpx.get(f"{base}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for method, path in [("POST", "/mcp"), ("GET", "/mcp"), ("POST", "/msg/send"),
                         ("POST", "/msg/health"), ("POST", "/msg/report")]:  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            r = httpx.request(method, f"{base}{path}", headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert "http.token" in r.json()["hint"]


def test_http_mcp_control_plane_and_twenty_concurrent_clients(http_server, proj: Path):
    base, token = http_server
    auth = {"Authorization": f"Bearer {token}"}
    web_wt = add_worktree(proj, "web")
    hook("SessionStart", web_wt, "claude-web", "web", source="startup")

    async def clients(n: int):
        async def one(i: int):
            async with Client(f"{base}/mcp", auth=token) as client:
                listed = await client.call_tool("list_sessions", {})
                await client.call_tool("register_presence", {"role": f"bot{i}"})
                beat = await client.call_tool("heartbeat", {"role": f"bot{i}"})
                return reply(listed)["total"], reply(beat)["role"]

        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    results = asyncio.run(clients(20))
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sorted(r[1] for r in results) == sorted(f"bot{i}" for i in range(20))

    # /msg/send queues a message for the session's role; the hook delivers it
    sent = httpx.post(
        f"{base}/msg/send", headers=auth, json={"message": "rebase please", "sessionId": "web@proj"}
    )
    assert sent.status_code == 202 and sent.json()["to"] == "web"
    hooked = hook("PostToolUse", web_wt, "claude-web", "web", tool_name="Bash")
    assert "Session 'http' says: rebase please" in hooked["hookSpecificOutput"]["additionalContext"]
    # /msg/health aggregates; /msg/report persists and is readable over MCP
    h = httpx.post(f"{base}/msg/health", headers=auth, json={"sessionId": "web@proj", "taskId": "t1",
                   "isExecuting": True, "isIdle": False, "hasUncommittedChanges": True, "tmuxPaneBusy": True})  # fmt: skip
    assert h.status_code == 200 and h.json()["executing"] == 1 and h.json()["uncommitted"] == 1
    rep = httpx.post(f"{base}/msg/report", headers=auth, json={"sessionId": "web@proj", "state": "blocked",
                     "notes": "waiting on api", "artifacts": ["out/report.html"]})  # fmt: skip
    assert rep.status_code == 201

    async def examine():
        async with Client(f"{base}/mcp", auth=token) as client:
            return (
                await client.call_tool("examine_session", {"session": "web@proj"})
            ).structured_content

    seen = asyncio.run(examine())
    assert seen["reports"][-1]["state"] == "blocked" and seen["reports"][-1]["artifacts"] == [
        "out/report.html"
    ]
    assert any(e["kind"] == "health" for e in seen["events"])
    # meaningful status codes for bad requests
    bad = [
        (httpx.post(f"{base}/msg/send", headers=auth, content=b"not json"), 400),
        (
            httpx.post(
                f"{base}/msg/send", headers=auth, json={"message": "x", "sessionId": "ghost"}
            ),
            404,
        ),
        (httpx.post(f"{base}/msg/send", headers=auth, json={"nothing": 1}), 400),
        (
            httpx.post(
                f"{base}/msg/report",
                headers=auth,
                json={"sessionId": "web@proj", "state": "napping"},
            ),
            400,
        ),
        (
            httpx.post(
                f"{base}/msg/report", headers=auth, json={"name": "not-ours", "state": "done"}
            ),
            403,
        ),
        (
            httpx.post(
                f"{base}/msg/health", headers=auth, json={"sessionId": "web@proj", "isIdle": "yes"}
            ),
            400,
        ),
        (httpx.post(f"{base}/msg/report", headers=auth, content=b"x" * 70000), 413),
    ]
    assert [(r.status_code, want) for r, want in bad if r.status_code != want] == []
    assert all("error" in json.loads(r.text) for r, _ in bad)
    codes = [
        httpx.post(
            f"{base}/msg/send", headers=auth, json={"message": f"m{i}", "sessionId": "web@proj"}
        ).status_code
        for i in range(12)
    ]
    assert codes.count(429) >= 2 and set(codes) == {202, 429}  # 10 per 10 s, one already sent


def test_stdio_entry_skips_the_cli_and_keeps_its_edge(tmp_path: Path):
    """`python -m sandboxrun mcp` (what a child's Claude Code starts) loads no CLI module, and
    a start-up error is still one Error:/Hint: pair and exit 1, never a traceback."""
    import subprocess

    probe = (
        "import runpy, sys; sys.argv = ['sandboxrun', 'mcp']\n"
        "import sandboxrun.mcp.server as s\n"
        "s.serve_stdio = lambda: print(sorted(m for m in sys.modules if m.startswith("
        "('sandboxrun.cli', 'typer', 'sandboxrun.sandbox.runner'))))\n"
        "runpy.run_module('sandboxrun', run_name='__main__')\n"
    )
    env = {**os.environ, "SANDBOXRUN_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "[]", out
    no_git = {**env, "PATH": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-m", "sandboxrun", "mcp"], env=no_git, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("Error: git is not installed") and "Hint: " in proc.stderr
    assert "Traceback" not in proc.stderr
