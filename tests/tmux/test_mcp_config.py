"""The children's --mcp-config file: our server with the child's identity, merged with the
repository's .mcp.json (the worktree's copy first), refused when that file is broken."""

from __future__ import annotations

import json
import stat
import sys

import pytest

from sandboxrun.errors import ConfigError
from sandboxrun.local.mcp_config import merged_config, repo_servers, write_mcp_config
from sandboxrun.local.spawn import SpawnRequest, claude_argv, write_settings


def test_merged_file_holds_the_repos_servers_and_ours_with_the_childs_identity(tmp_path):
    wt, root, home = tmp_path / "wt", tmp_path / "root", tmp_path / "home"
    wt.mkdir(), root.mkdir()
    team = {"mcpServers": {"db": {"command": "db-mcp"}, "sandboxrun": {"command": "old"}}}
    (wt / ".mcp.json").write_text(json.dumps(team))
    (root / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}}))
    env = {"SANDBOXRUN_SESSION": "abc", "SANDBOXRUN_HOME": str(home), "SECRET_TOKEN": "s3cr3t"}
    path = write_mcp_config(home, "abc", worktree=wt, root=root, env=env)
    data = json.loads(path.read_text())
    assert set(data["mcpServers"]) == {"db", "sandboxrun"}  # the worktree's copy wins
    ours = data["mcpServers"]["sandboxrun"]
    assert ours["command"] == sys.executable and ours["args"] == ["-m", "sandboxrun", "mcp"]
    assert ours["env"] == {"SANDBOXRUN_SESSION": "abc", "SANDBOXRUN_HOME": str(home)}
    assert "s3cr3t" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_untracked_mcp_json_in_the_main_checkout_is_used_and_none_is_fine(tmp_path):
    wt, root = tmp_path / "wt", tmp_path / "root"
    wt.mkdir(), root.mkdir()
    assert repo_servers(wt, root) == {}
    (root / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}}))
    assert repo_servers(wt, root) == {"other": {"command": "x"}}
    assert merged_config({}, {"command": "c"}) == {"mcpServers": {"sandboxrun": {"command": "c"}}}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"mcpServers": []}'])
def test_a_broken_mcp_json_is_a_clear_error(tmp_path, content):
    (tmp_path / ".mcp.json").write_text(content)
    with pytest.raises(ConfigError) as exc:
        repo_servers(tmp_path, tmp_path)
    assert ".mcp.json" in exc.value.message and exc.value.hint


def test_argv_and_settings_carry_the_config_and_turn_off_project_approval(tmp_path):
    settings = write_settings(tmp_path, "s1", project_servers=["db", "api"])
    data = json.loads(settings.read_text())
    assert data["disabledMcpjsonServers"] == ["api", "db"]
    assert "disabledMcpjsonServers" not in json.loads(write_settings(tmp_path, "s2").read_text())
    argv = claude_argv(
        "claude", settings, SpawnRequest(name="n", task="t"), "-t", mcp_config=tmp_path / "m.json"
    )
    assert argv == [
        "claude",
        "--settings",
        str(settings),
        "--mcp-config",
        str(tmp_path / "m.json"),
        "--",
        "-t",
    ]
