"""The PreToolUse claim gate: two real sessions (hook processes), one holding a claim."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcptest_lib import Tools, add_worktree, coord_for, hook


@pytest.fixture
def pair(proj: Path):
    api_wt, web_wt = add_worktree(proj, "api"), add_worktree(proj, "web")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    hook("SessionStart", web_wt, "claude-web", "web", source="startup")
    return api_wt, web_wt, Tools(coord_for(api_wt, "api"))


def edit(wt: Path, claude_id: str, role: str, tool: str, path: str, **env: str) -> dict:
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    return hook(
        "PreToolUse", wt, claude_id, role, env, tool_name=tool, tool_input={key: path},
        tool_use_id="t1",
    )  # fmt: skip


@pytest.mark.parametrize("tool", ["Edit", "Write", "MultiEdit", "NotebookEdit"])
def test_exclusive_claim_denies_other_sessions_edit(pair, tool):
    api_wt, web_wt, api = pair
    api("claim_files", paths=["src/api.py"], mode="exclusive")
    reply = edit(web_wt, "claude-web", "web", tool, str(web_wt / "src" / "api.py"))
    out = reply["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse" and out["permissionDecision"] == "deny"
    reason = out["permissionDecisionReason"]
    assert "src/api.py is exclusively claimed by session 'api@proj' (role api)" in reason
    assert "send_message to 'api'" in reason
    # the holder itself edits freely, and other files are free for everyone
    assert edit(api_wt, "claude-api", "api", tool, str(api_wt / "src" / "api.py")) == {}
    assert edit(web_wt, "claude-web", "web", tool, str(web_wt / "src" / "web.py")) == {}


def test_relative_paths_directories_advisory_release_and_end(pair):
    api_wt, web_wt, api = pair
    api("claim_files", paths=["src/"], mode="exclusive")
    denied = edit(web_wt, "claude-web", "web", "Write", "src/new_module.py")  # relative to cwd
    assert denied["hookSpecificOutput"]["permissionDecision"] == "deny"
    api("release_files")
    assert edit(web_wt, "claude-web", "web", "Write", "src/new_module.py") == {}
    api("claim_files", paths=["README.md"], mode="advisory")
    warned = edit(web_wt, "claude-web", "web", "Edit", str(web_wt / "README.md"))[
        "hookSpecificOutput"
    ]
    assert "permissionDecision" not in warned
    assert "advisory claim by session 'api@proj'" in warned["additionalContext"]
    # other tools and paths outside the repository are never gated
    assert hook("PreToolUse", web_wt, "claude-web", "web", tool_name="Read",
                tool_input={"file_path": str(web_wt / "README.md")}) == {}  # fmt: skip
    assert edit(web_wt, "claude-web", "web", "Write", "/tmp/elsewhere.txt") == {}
    api("claim_files", paths=["src/web.py"])
    hook("SessionEnd", api_wt, "claude-api", "api", reason="exit")  # the holder ends: lapses
    assert edit(web_wt, "claude-web", "web", "Edit", str(web_wt / "src" / "web.py")) == {}


def test_the_gate_judges_a_silent_holder_by_the_configured_stale_after(pair, proj):
    """A holder silent for 2 minutes: live under the 5-minute default, stale (its claim lapsed)
    when the repository says ``stale_after = "1m"``, which spawn passes to every child's hooks
    as SANDBOXRUN_STALE_AFTER."""
    from sandboxrun.config import load_settings
    from sandboxrun.store import SessionStore

    api_wt, web_wt, api = pair
    api("claim_files", paths=["src/api.py"], mode="exclusive")
    store = SessionStore(load_settings().db_path)
    try:
        store.conn.execute(
            "UPDATE sessions SET last_heartbeat = last_heartbeat - 120 WHERE role = 'api'"
        )
        store.conn.commit()
    finally:
        store.close()
    target = str(web_wt / "src" / "api.py")
    denied = edit(web_wt, "claude-web", "web", "Edit", target)
    assert denied["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert edit(web_wt, "claude-web", "web", "Edit", target, SANDBOXRUN_STALE_AFTER="1m") == {}
    # a value that is not a duration: the default, never a broken edit
    again = edit(web_wt, "claude-web", "web", "Edit", target, SANDBOXRUN_STALE_AFTER="soon")
    assert again["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_spawn_gives_children_the_repositorys_stale_after(proj):
    from sandboxrun.config import load_settings
    from sandboxrun.local.spawn import claude_env
    from sandboxrun.store import SessionStore

    (proj / ".sandboxrun.toml").write_text('stale_after = "90s"\n')
    settings = load_settings(proj)
    store = SessionStore(settings.db_path)
    try:
        row = store.create_session(name="w", mode="local", backend="tmux", role="w")
        env = claude_env({}, row, settings, proj)
    finally:
        store.close()
    assert env["SANDBOXRUN_STALE_AFTER"] == "90"
