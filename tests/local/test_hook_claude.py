"""The hook driven by the real Claude Code CLI (``-p --settings``) against the fake API.

The settings file is exactly what ``sandboxrun hooks install`` merges (``hook_settings()``), so
this is what a person's own Claude Code session runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from sbr_testlib import CLI, db_rows, hook_log, retry_until

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandboxrun.coord import messages  # noqa: E402
from sandboxrun.local.hooks_install import hook_settings  # noqa: E402
from sandboxrun.store import SessionStore  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, rate_limited, text, tool  # noqa: E402
from tests.fake_anthropic.cli import claude_env, installed_claude, run_claude  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def claude_run(tmp_path):
    """Run ``claude -p`` with our hooks (``--settings``) against a fresh fake API."""
    settings = tmp_path / "hooks.json"
    settings.write_text(json.dumps(hook_settings()))
    claude = installed_claude()

    def run(cwd: Path, *replies, gateway: bool = False, env: dict | None = None, prompt="go"):
        with FakeAnthropic() as api:
            api.script(*replies)
            full = claude_env(api.url, tmp_path / "agent-home", gateway=gateway)
            full["SANDBOXRUN_HOME"] = os.environ["SANDBOXRUN_HOME"]
            full.update(env or {})
            result = run_claude(
                claude, prompt, cwd=cwd, env=full, args=["--settings", str(settings)], timeout=90
            )
            return result, api

    return run


@pytest.fixture
def agent_wt(proj: Path) -> Path:
    out = CLI(proj)("worktree", "setup", "api")
    assert out.returncode == 0, out.stderr
    return proj / ".worktrees" / "api"


def hook_events(session_id: str) -> list[dict]:
    rows = db_rows(
        "SELECT e.payload FROM events e JOIN sessions s ON s.id = e.session_id "
        "WHERE s.id = ? AND e.kind = 'hook' ORDER BY e.id",
        (session_id,),
    )
    return [json.loads(r["payload"]) for r in rows]


def test_real_session_events_heartbeat_activity_identity(claude_run, agent_wt, proj):
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    messages.send(store.conn, str(proj), "STATUS_UPDATE", sender="pm", recipient="api")
    started = time.time()
    result, api = claude_run(agent_wt, tool("Bash", command="echo hi"), text("done"))
    assert result.returncode == 0, result.stderr
    claude_id = result.init["session_id"]
    (row,) = db_rows("SELECT * FROM sessions WHERE agent_session_id = ?", (claude_id,))
    assert (row["mode"], row["role"], row["worktree"]) == ("local", "api", str(agent_wt))
    assert row["branch"] == "agent/api/active"
    assert row["transcript_path"].endswith(f"{claude_id}.jsonl")
    assert row["last_heartbeat"] >= started
    assert (row["activity"], row["status"]) == ("exited", "completed")
    names = [(e["event"], e.get("tool")) for e in hook_events(row["id"])]
    assert names == [
        ("SessionStart", None),
        ("UserPromptSubmit", None),
        ("PreToolUse", "Bash"),
        ("PostToolUse", "Bash"),
        ("Stop", None),
        ("SessionEnd", None),
    ]
    (pres,) = db_rows("SELECT * FROM presence WHERE role = 'api'")
    assert pres["status"] == "inactive" and pres["claude_session_id"] == claude_id
    assert pres["last_heartbeat"] >= started
    kinds = [m["type"] for m in db_rows("SELECT type FROM messages WHERE sender = 'api'")]
    assert kinds == ["SESSION_START", "SESSION_END"]
    # The pending message reached the model as context at SessionStart.
    sent = json.dumps([r.body for r in api.main_requests])
    assert "1 pending message for role 'api': STATUS_UPDATE (1)" in sent
    assert hook_log() == ""


def test_real_session_usage_limit_and_instance_id(claude_run, proj):
    resets = int(time.time()) + 3 * 3600
    result, api = claude_run(
        proj, rate_limited(resets), gateway=True, env={"CLAUDE_INSTANCE_ID": "backend"}
    )
    claude_id = result.init["session_id"] if result.of_type("system", "init") else None
    rows = db_rows("SELECT * FROM sessions WHERE role = 'backend'")
    assert len(rows) == 1
    row = rows[0]
    if claude_id:
        assert row["agent_session_id"] == claude_id

    def stop_failure():
        # The StopFailure hook runs detached (Claude Code -p exits right after firing it).
        return [e for e in hook_events(row["id"]) if e["event"] == "StopFailure"]

    try:
        (limited,) = retry_until(stop_failure)
    except AssertionError:
        events = [e["event"] for e in hook_events(row["id"])]
        raise AssertionError((events, hook_log(), result.stdout[-1500:])) from None
    assert limited["error"] == "rate_limit"
    row = db_rows("SELECT * FROM sessions WHERE id = ?", (row["id"],))[0]
    # The message names a clock time ("resets 7pm"): to the minute, the next such time.
    assert row["resets_at"] is not None and abs(row["resets_at"] - resets) < 120
    # backend in the main checkout: warned at SessionStart (context for the model).
    sent = json.dumps([r.body for r in api.main_requests])
    assert "should work in its own worktree" in sent
    assert hook_log() == ""
