"""`sandboxrun rules`, `messages`, `presence` through the real CLI entry point."""

from __future__ import annotations

import pytest
from sbr_testlib import CLI, run_hook


@pytest.fixture
def sbr(proj) -> CLI:
    return CLI(proj)


def test_rules_install_idempotent_refuses_edits_force_keeps_backup(sbr, proj):
    out = sbr("rules", "install")
    assert out.returncode == 0 and "created" in out.stdout
    path = proj / ".claude" / "rules" / "sandboxrun-coordination.md"
    text = path.read_text()
    assert "check your messages" in text.lower() and "5 minutes" in text
    assert "$" not in text.replace("`$", "")  # every placeholder filled
    assert "unchanged" in sbr("rules", "install").stdout
    path.write_text(text + "\nmy own note\n")
    out = sbr("rules", "install")
    assert out.returncode == 1 and "--force" in out.stderr
    assert path.read_text().endswith("my own note\n")
    out = sbr("rules", "install", "--force")
    assert out.returncode == 0 and path.read_text() == text
    assert (path.parent / "sandboxrun-coordination.md.bak").read_text().endswith("my own note\n")


def test_rules_follow_config_and_templates_render(sbr, proj, tmp_path):
    (proj / ".sandboxrun.toml").write_text('pm_role = "lead"\nstale_after = "2m"\n')
    sbr("rules", "install")
    text = (proj / ".claude" / "rules" / "sandboxrun-coordination.md").read_text()
    assert "`lead`" in text and "`pm`" not in text and "2 minutes" in text
    for name in ("coordination", "child", "pm"):
        out = sbr("rules", "show", name)
        assert out.returncode == 0 and "sandboxrun" in out.stdout
    out = sbr("rules", "show", "nope")
    assert out.returncode == 2 and "unknown template" in out.stderr
    out = sbr("rules", "install", cwd=tmp_path)
    assert out.returncode == 1 and "not inside a git repository" in out.stderr


def test_messages_send_list_unread_mark_read(sbr, proj):
    out = sbr("messages", "send", "STATUS_UPDATE", "--from", "pm", "--to", "api", "--text", "hi")
    assert out.returncode == 0, out.stderr
    sbr("messages", "send", "STATUS_UPDATE", "--from", "pm", "--text", "all")
    unread = sbr.json("messages", "list", "--for", "api", "--unread", "--mark-read")
    assert [m["body"]["text"] for m in unread] == ["hi"]
    assert sbr.json("messages", "list", "--for", "api", "--unread") == []
    mine = sbr.json("messages", "list", "--for", "api")  # addressed to api, and broadcasts
    assert [m["body"]["text"] for m in mine] == ["hi", "all"]
    # The role comes from the environment when not given.
    out = sbr("messages", "list", "--unread", env={"CLAUDE_INSTANCE_ID": "api"})
    assert out.returncode == 0 and "No messages" in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # with a text: a message without one is refused first (tests/test_qa3_messages.py)
        (["messages", "send", "lowercase", "--text", "x"], "invalid message type"),
        (["messages", "send", "STATUS_UPDATE", "--to", "a b", "--text", "x"], "invalid role name"),
        (["messages", "send", "STATUS_UPDATE", "--from", "../x", "--text", "x"], "invalid role"),
        (["messages", "list", "--unread"], "need a role"),
        (["messages", "list", "--for", ""], "role name is required"),
        (["messages", "send"], "Missing argument"),
    ],
)
def test_messages_bad_input(sbr, args, needle):
    out = sbr(*args)
    assert out.returncode == 2 and needle in out.stderr, out.stderr


def test_presence_lists_roles(sbr, proj):
    assert sbr.json("presence") == []
    assert "Nobody has registered" in sbr("presence").stdout
    sbr("worktree", "setup", "api")
    wt = proj / ".worktrees" / "api"
    run_hook(
        "SessionStart", {"session_id": "c1", "cwd": str(wt), "hook_event_name": "SessionStart"}
    )
    (p,) = sbr.json("presence")
    assert (p["role"], p["state"], p["worktree"]) == ("api", "active", str(wt))
    assert "api" in sbr("presence", "--all").stdout
    out = sbr("presence", cwd=proj.parent)
    assert out.returncode == 1 and "not inside a git repository" in out.stderr
