"""An empty or blank message is refused, naming how to pass the text: `messages send` stored
a message with no text (the MCP `send_message` tool, `message_workers`, the HTTP send route and
`sandboxrun send` already refused one). Real processes, real git and SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sbr_testlib import CLI, edge_error, git_project


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return git_project(tmp_path / "proj", {"app.txt": "hello\n"})


@pytest.mark.parametrize("text", [None, "", "   \n\t"])
def test_messages_send_refuses_empty_text(proj, text):
    cli = CLI(proj)
    args = ["messages", "send", "STATUS_UPDATE", "--from", "api"]
    proc = cli(*args, *([] if text is None else ["--text", text]))
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "empty" in message and hint and "--text" in hint
    listed = cli("messages", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []  # nothing was stored


def test_messages_send_with_text_is_stored(proj):
    cli = CLI(proj)
    proc = cli("messages", "send", "STATUS_UPDATE", "--from", "api", "--text", "api done")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(cli("messages", "list", "--json").stdout)
    assert [m["body"] for m in listed] == [{"text": "api done"}]
