"""Local-worker tools (spawn_workers, message_workers, wait_idle_workers, read_worker_logs,
close_workers, discover_workers, adopt_worker) on a real tmux server of the test's own, with
the real Claude Code CLI against the fake Anthropic API where a worker must really run."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcptest_lib import Tools, reply
from sbr_testlib import retry_until

from sandboxrun.mcp.common import Coord
from sandboxrun.store import SessionStore
from tests.fake_anthropic import text


def _tools(proj: Path, env: dict[str, str]) -> Tools:
    return Tools(Coord(env=env, cwd=proj))


def _echo(req):
    """The fake model's answer to every prompt: 'ack: <the prompt>' (so logs can be checked)."""
    prompts = [t for t in req.user_texts() if not t.startswith("<")]
    return text(f"ack: {prompts[-1].strip()[:60] if prompts else '?'}")


def test_worker_tools_refuse_bad_input_with_the_fix(proj: Path, tmux_server):
    env = {**os.environ, "PROJECT_PREFIX": "t"}
    tools = _tools(proj, env)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    store.create_session(name="cloudy", mode="sandbox", backend="e2b", repo=str(proj))
    cases = [
        ("spawn_workers", {"workers": []}, "no workers to start"),
        (
            "spawn_workers",
            {"workers": [{"name": "a", "task": "x"}, {"name": "a", "task": "y"}]},
            "given twice",
        ),
        ("spawn_workers", {"workers": [{"name": "a", "task": "  "}]}, "empty task"),
        (
            "spawn_workers",
            {
                "workers": [{"name": "a", "task": "x"}],
                "skip_permissions": True,
                "permission_mode": "plan",
            },
            "exclude each other",
        ),  # fmt: skip
        ("spawn_workers", {"workers": [{"name": "bad name!", "task": "x"}]}, "no worker started"),
        ("message_workers", {"names": [], "message": "hi"}, "no workers named"),
        ("message_workers", {"names": ["ghost"], "message": "hi"}, "list_sessions"),
        ("message_workers", {"names": ["cloudy"], "message": "hi"}, "not a local worker"),
        ("message_workers", {"names": ["ghost"], "message": " "}, "message is empty"),
        ("message_workers", {"names": [""], "message": "hi"}, "empty worker name"),
        ("wait_idle_workers", {"names": ["ghost"], "timeout": 0}, "timeout must be"),
        ("wait_idle_workers", {"names": []}, "no workers named"),
        ("read_worker_logs", {"name": "ghost"}, "no session matches"),
        ("read_worker_logs", {"name": "cloudy", "last": 0}, "last must be"),
        ("close_workers", {"names": []}, "no workers named"),
        ("adopt_worker", {}, "all_found=true"),
        ("adopt_worker", {"names": ["nobody"]}, "discover_workers"),
    ]
    wrong = []
    for name, args, needle in cases:
        msg = tools.error(name, **args)
        if needle not in msg or "Fix:" not in msg:
            wrong.append((name, args, msg))
    assert wrong == []
    # the failed spawn left nothing behind: no row, no tmux session, no worktree
    assert (
        store.conn.execute("SELECT COUNT(*) FROM sessions WHERE mode = 'local'").fetchone()[0] == 0
    )
    assert tmux_server.sessions("t_") == []
    store.close()


def test_discover_adopt_wait_read_and_close_a_worker_the_database_lost(proj: Path, tmux_server):
    """A child's tmux session without a row (here a plain process stands in for claude)."""
    env = {**os.environ, "PROJECT_PREFIX": "t"}
    tools = _tools(proj, env)
    tmux_server.new_session(
        "t_child_lost",
        [sys.executable, "-c", "import time; print('still here', flush=True); time.sleep(600)"],
        cwd=proj,
        env={"SANDBOXRUN_SESSION": "0123456789abcdef", "CLAUDE_INSTANCE_ID": "lost"},
    )
    tmux_server.new_session("other_child_x", ["sleep", "600"], cwd=proj)  # not our prefix
    found = tools("discover_workers")
    assert found["prefix"] == "t"
    assert [(w["name"], w["session_id"]) for w in found["workers"]] == [
        ("lost", "0123456789abcdef")
    ]
    adopted = tools("adopt_worker", names=["lost"])["adopted"]
    assert [(s["id"], s["name"], s["role"]) for s in adopted] == [
        ("0123456789abcdef", "lost", "lost")
    ]
    assert tools("discover_workers")["workers"] == []  # known now
    assert tools("adopt_worker", all_found=True)["adopted"] == []
    logs = retry_until(lambda: (r := tools("read_worker_logs", name="lost", screen=True))
                       and "still here" in (r["screen"] or "") and r)  # fmt: skip
    assert logs["total"] == 0 and logs["messages"] == []
    # a worker that is not idle is not woken by a message (its hook delivers it later)
    sent = tools("send_message", to="lost", body="hello there", wake=True)
    assert sent["to"] == ["lost"]
    assert sent["woken"] == [{"name": "lost", "woken": False, "state": "starting"}]
    assert "hello there" not in tmux_server.capture("t_child_lost")
    # no hook ever ran: not done, so the wait ends by its timeout and says so
    waited = tools("wait_idle_workers", names=["lost"], timeout=0.5)
    assert waited["timed_out"] is True and waited["states"]["lost"]["state"] == "starting"
    refused = tools("close_workers", names=["lost"])
    assert refused["closed"] == 0
    assert "lose its current turn" in refused["results"][0]["error"]
    assert "--force" in refused["results"][0]["hint"]
    assert tmux_server.has_session("t_child_lost")
    closed = tools("close_workers", names=["lost"], force=True)
    assert closed["closed"] == 1 and closed["results"][0]["how"] == "killed"
    assert not tmux_server.has_session("t_child_lost")
    assert tmux_server.has_session("other_child_x")
    again = tools("close_workers", names=["lost"])  # idempotent: already closed
    assert again["closed"] == 1 and again["results"][0]["how"] == "already exited"
    waited = tools("wait_idle_workers", names=["lost"], timeout=60)
    assert waited["finished"] is True and waited["states"]["lost"]["state"] == "exited"


@pytest.mark.slow
@pytest.mark.e2e
def test_spawn_message_wait_read_close_two_real_workers(proj: Path, worker_env, fake_api):
    fake_api.default = _echo
    tools = _tools(proj, worker_env)
    spawned = tools(
        "spawn_workers",
        workers=[{"name": "api", "task": "first task for api"},
                 {"name": "web", "task": "first task for web"}],
        skip_permissions=True,
    )  # fmt: skip
    assert spawned["failed"] == []
    assert sorted((s["name"], s["branch"], s["tmux_session"]) for s in spawned["started"]) == [
        ("api", "agent/api/active", "t_child_api"),
        ("web", "agent/web/active", "t_child_web"),
    ]
    assert (proj / ".worktrees" / "api").is_dir() and (proj / ".worktrees" / "web").is_dir()
    first = tools("wait_idle_workers", names=["api", "web"], timeout=120)
    assert first["finished"] and {s["state"] for s in first["states"].values()} == {"idle"}

    # a name already running is refused with the fix, the other worker still starts
    mixed = tools(
        "spawn_workers",
        workers=[{"name": "api", "task": "again"}, {"name": "docs", "task": "task for docs"}],
        skip_permissions=True,
    )
    assert [s["name"] for s in mixed["started"]] == ["docs"]
    assert mixed["failed"][0]["name"] == "api" and "already running" in mixed["failed"][0]["error"]

    sent = tools("message_workers", names=["api", "web"], message="now run the tests", wait="all")
    assert [r["outcome"] for r in sent["results"]] == ["delivered", "delivered"]
    assert sent["wait"]["finished"] is True
    assert {s["state"] for s in sent["wait"]["states"].values()} == {"idle"}
    # exactly once: one request per worker carries the message
    carrying = [r for r in fake_api.main_requests if "now run the tests" in r.user_texts()[-1]]
    assert len(carrying) == 2

    logs = tools("read_worker_logs", name="api", last=2)
    assert [m["role"] for m in logs["messages"]] == ["user", "assistant"]
    assert logs["messages"][0]["text"] == "now run the tests"
    assert logs["messages"][1]["text"] == "ack: now run the tests"
    assert logs["total"] == 4  # first task, its answer, the message, its answer

    # a message with wake=true: the idle worker is woken and reads it in that very prompt
    manager = _tools(proj, {**worker_env, "CLAUDE_INSTANCE_ID": "pm"})
    woke = manager("send_message", to="web", body="please rebase on main", wake=True)
    assert [(w["name"], w["woken"], w["outcome"]) for w in woke["woken"]] == [
        ("web", True, "delivered")
    ]
    assert tools("wait_idle_workers", names=["web"], timeout=120)["finished"]
    woken = [r for r in fake_api.main_requests if "New message from session 'pm'" in
             r.user_texts()[-1]]  # fmt: skip
    assert len(woken) == 1
    assert "Session 'pm' says: please rebase on main" in "\n".join(
        woken[0].texts(("user", "system"))
    )

    closed = tools("close_workers", names=["api", "web", "docs"])
    assert closed["closed"] == 3, closed
    assert all(r["how"] == "exited on /exit" for r in closed["results"])
    listed = tools("list_sessions", mode="local", state="active")
    assert listed["total"] == 0


@pytest.mark.slow
@pytest.mark.e2e
def test_a_real_stdio_server_spawns_messages_and_closes_a_worker(
    proj: Path, worker_env, fake_api, tmux_server
):
    fake_api.default = _echo
    transport = StdioTransport(
        sys.executable, ["-m", "sandboxrun", "mcp"], env=worker_env, cwd=str(proj)
    )

    async def go():
        async with Client(transport) as client:

            async def call(tool_name, /, **args):
                return reply(await client.call_tool(tool_name, args))

            spawned = await call(
                "spawn_workers",
                workers=[{"name": "solo", "task": "say hello"}],
                skip_permissions=True,
            )
            waited = await call("wait_idle_workers", names=["solo"], timeout=120)
            sent = await call("message_workers", names=["solo"], message="and goodbye",
                              wait="any", timeout=120)  # fmt: skip
            logs = await call("read_worker_logs", name="solo")
            closed = await call("close_workers", names=["solo"])
            return spawned, waited, sent, logs, closed

    spawned, waited, sent, logs, closed = asyncio.run(go())
    assert spawned["started"][0]["tmux_session"] == "t_child_solo"
    assert waited["finished"] and waited["states"]["solo"]["state"] == "idle"
    assert sent["results"][0]["outcome"] == "delivered" and sent["wait"]["finished"]
    assert [m["text"] for m in logs["messages"]] == [
        "say hello", "ack: say hello", "and goodbye", "ack: and goodbye",
    ]  # fmt: skip
    assert closed["closed"] == 1
    assert not tmux_server.has_session("t_child_solo")
