"""The real Claude Code CLI (``-p --mcp-config``, our hooks via ``--settings``) against the fake
Anthropic API: the model (scripted) calls our MCP tools, and the claim gate stops a second
session's Write."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from mcptest_lib import add_worktree

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandboxrun.local.hooks_install import hook_settings  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, text, tool  # noqa: E402
from tests.fake_anthropic.cli import claude_env, installed_claude, run_claude  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def claude_as(tmp_path: Path):
    """Run ``claude -p`` in ``cwd`` as ``role`` with our hooks and our MCP server."""
    settings = tmp_path / "hooks.json"
    settings.write_text(json.dumps(hook_settings()))
    mcp_config = tmp_path / "mcp.json"
    mcp_config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "sandboxrun": {"command": sys.executable, "args": ["-m", "sandboxrun", "mcp"]}
                }
            }
        )
    )
    claude = installed_claude()

    def run(cwd: Path, role: str, *replies):
        with FakeAnthropic() as api:
            api.script(*replies)
            env = claude_env(api.url, tmp_path / f"home-{role}")
            env["SANDBOXRUN_HOME"] = os.environ["SANDBOXRUN_HOME"]
            env["CLAUDE_INSTANCE_ID"] = role
            env["ENABLE_TOOL_SEARCH"] = "false"  # offer MCP tools directly, not deferred
            args = [
                "--settings",
                str(settings),
                "--mcp-config",
                str(mcp_config),
                "--strict-mcp-config",
            ]
            result = run_claude(claude, "go", cwd=cwd, env=env, args=args, timeout=120)
            return result, api.main_requests

    return run


def _result_text(requests, index: int) -> tuple[str, bool]:
    (block,) = requests[index].tool_results()
    content = block["content"]
    if isinstance(content, list):
        content = "".join(c.get("text", "") for c in content)
    return content, bool(block.get("is_error"))


def test_claude_calls_our_tools_and_the_gate_stops_another_session(proj: Path, claude_as):
    api_wt, web_wt = add_worktree(proj, "api"), add_worktree(proj, "web")
    run, requests = claude_as(
        api_wt,
        "api",
        tool("mcp__sandboxrun__get_my_session"),
        tool("mcp__sandboxrun__claim_files", paths=["src/api.py"], mode="exclusive"),
        text("claimed"),
    )
    assert run.returncode == 0, run.stderr
    assert "mcp__sandboxrun__list_sessions" in requests[0].tool_names
    me, is_error = _result_text(requests, 1)
    assert not is_error and json.loads(me)["role"] == "api" and json.loads(me)["tracked"] is True
    claimed, is_error = _result_text(requests, 2)
    assert not is_error and json.loads(claimed)["claimed"][0]["path"] == "src/api.py"

    # The claim outlives the turn only while the session lives: a -p run ends its session
    # (SessionEnd), so the claim has lapsed by now. Keep the api session alive, as a running
    # interactive session would be, for the second agent to hit its claim.
    import sqlite3

    db = sqlite3.connect(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    with db:
        db.execute(
            "UPDATE sessions SET status = 'running', last_heartbeat = strftime('%s','now') WHERE role = 'api'"
        )
    db.close()

    target = web_wt / "src" / "api.py"
    run, requests = claude_as(
        web_wt,
        "web",
        tool("Write", file_path=str(target), content="API = 2\n"),
        tool("mcp__sandboxrun__list_sessions", state="active"),
        text("done"),
    )
    assert run.returncode == 0, run.stderr
    denied, is_error = _result_text(requests, 1)
    assert is_error and "exclusively claimed by session 'api@proj' (role api)" in denied
    assert target.read_text() == "API = 1\n"  # the Write never happened
    listed, _ = _result_text(requests, 2)
    assert {s["role"] for s in json.loads(listed)["sessions"]} >= {"api", "web"}


def test_messages_and_advisory_warnings_reach_the_real_agents_context(proj: Path, claude_as):
    from mcptest_lib import Tools, coord_for, hook

    api_wt, web_wt = add_worktree(proj, "api"), add_worktree(proj, "web")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    api = Tools(coord_for(api_wt, "api"))
    api("claim_files", paths=["README.md"], mode="advisory")
    api("register_presence", role="web")  # web is about to start; address it by role
    api("send_message", to="web", body="the schema changed, re-read src/api.py")
    run, requests = claude_as(
        web_wt,
        "web",
        tool("Write", file_path=str(web_wt / "README.md"), content="# proj, edited\n"),
        text("done"),
    )
    assert run.returncode == 0, run.stderr
    first = "\n".join(requests[0].texts(("user", "system")))
    assert "Session 'api' says: the schema changed, re-read src/api.py" in first
    assert (web_wt / "README.md").read_text() == "# proj, edited\n"  # advisory: allowed
    after = json.dumps(requests[1].messages)
    assert "advisory claim by session 'api@proj' (role api)" in after
