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


def edit(wt: Path, claude_id: str, role: str, tool: str, path: str) -> dict:
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    return hook(
        "PreToolUse", wt, claude_id, role, tool_name=tool, tool_input={key: path}, tool_use_id="t1"
    )


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
