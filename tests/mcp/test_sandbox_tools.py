"""Sandbox-run tools over a real detached driver (local backend, the test's fake claude)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcptest_lib import Tools, coord_for
from sbr_testlib import GATE_WAIT, branch_files, git, retry_until

pytestmark = pytest.mark.slow


def test_run_follow_extend_download_and_kill(repo: Path):
    tools = Tools(coord_for(repo))
    started = tools(
        "run_in_sandbox",
        prompt=f"@write made.txt made by the agent\n@commit add made\n{GATE_WAIT}",  # until killed
        backend="local",
        name="mcp-run",
        timeout="10m",
    )
    assert started["name"] == "mcp-run" and started["mode"] == "sandbox"
    assert started["branch"] == "sandboxrun/mcp-run" and started["driver_pid"] > 0

    def agent_running():
        logs = tools("sandbox_logs", session="mcp-run", kinds=["agent"])
        return logs if logs["events"] else None

    logs = retry_until(agent_running, timeout=120)
    assert logs["status"] == "running"
    more = tools("sandbox_logs", session="mcp-run", after_id=logs["last_id"])
    assert all(e["id"] > logs["last_id"] for e in more["events"])

    def committed(result=None):
        got = tools("download_sandbox", session="mcp-run")
        diff = Path(got["directory"]) / "changes.diff"  # every change, committed or not
        return (
            got
            if got["live"] and diff.exists() and "made by the agent" in diff.read_text()
            else None
        )

    got = retry_until(committed, timeout=120)
    assert got["agent_commits"] == 1

    before = tools("examine_session", session="mcp-run")["deadline"]
    extended = tools("extend_sandbox", session="mcp-run", by="15m")
    assert extended["deadline"] == pytest.approx(before + 900, abs=1)

    final = tools("kill_sandbox", session="mcp-run", wait=120)
    assert final["status"] == "killed"
    assert "made.txt" in branch_files(repo, "sandboxrun/mcp-run")
    again = tools.error("kill_sandbox", session="mcp-run")
    assert "already ended" in again and "Fix:" in again
    assert "already ended" in tools.error("extend_sandbox", session="mcp-run", by="5m")


def test_dry_run_round_trip(repo: Path):
    tools = Tools(coord_for(repo))
    tools("run_in_sandbox", prompt="x", backend="local", name="dry", dry_run=True)

    def ended():
        s = tools("list_sessions", mode="sandbox", state="ended")["sessions"]
        return s if s else None

    (s,) = retry_until(ended, timeout=120)
    assert s["name"] == "dry" and s["status"] in ("completed", "completed_no_changes"), s
    kinds = {e["kind"] for e in tools("sandbox_logs", session="dry", limit=1000)["events"]}
    assert {"status", "phase"} <= kinds


def test_run_in_sandbox_holds_back_claimed_files_unless_allowed(repo: Path):
    from mcptest_lib import claim_as

    git(repo, "config", "user.name", "Human")
    git(repo, "config", "user.email", "human@example.com")
    claim_as(repo, "api", ["README.md"])
    tools = Tools(coord_for(repo))
    plan = "@append README.md from the sandbox\n@write free.txt free"
    tools("run_in_sandbox", prompt=plan, backend="local", name="held")
    tools("run_in_sandbox", prompt=plan, backend="local", name="allowed", allow_claimed=True)

    def ended(name):
        s = tools("examine_session", session=name, events=0)
        return s if s["status"] not in ("created", "preparing", "packing", "provisioning",
                                         "running", "collecting") else None  # fmt: skip

    held = retry_until(lambda: ended("held"), timeout=180)
    assert held["status"] == "completed_with_refusals", held["error"]
    assert "README.md" in held["error"] and "--allow-claimed" in held["error"]
    assert git(repo, "show", "sandboxrun/held:README.md") == "# project\n"
    assert "free.txt" in branch_files(repo, "sandboxrun/held")
    allowed = retry_until(lambda: ended("allowed"), timeout=180)
    assert allowed["status"] == "completed", allowed["error"]
    assert "from the sandbox" in git(repo, "show", "sandboxrun/allowed:README.md")
