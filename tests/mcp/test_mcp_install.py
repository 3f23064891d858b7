"""``sandboxrun mcp install``: merged into .mcp.json / ~/.claude.json, idempotent, reversible."""

from __future__ import annotations

import json
from pathlib import Path

from sbr_testlib import CLI

from sandboxrun.mcp.install import merge_server, remove_server


def test_merge_and_remove_are_pure_and_keep_other_servers():
    config = {"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}
    entry = {"type": "stdio", "command": "sandboxrun", "args": ["mcp"]}
    merged = merge_server(config, entry)
    assert merged["mcpServers"] == {"other": {"command": "x"}, "sandboxrun": entry}
    assert config == {"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}  # untouched
    assert remove_server(merged) == config
    assert remove_server(merge_server({}, entry)) == {}


def test_install_local_and_global_merge_idempotent_and_uninstall(proj: Path, tmp_path: Path):
    cli = CLI(proj)
    (proj / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {"command": "o"}}}))
    first = cli("mcp", "install", "--local", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["action"] == "added"
    data = json.loads((proj / ".mcp.json").read_text())
    assert set(data["mcpServers"]) == {"other", "sandboxrun"}
    assert data["mcpServers"]["sandboxrun"]["args"][-1] == "mcp"
    assert json.loads(cli("mcp", "install", "--json").stdout)["action"] == "unchanged"
    assert json.loads(cli("mcp", "install", "--uninstall", "--json").stdout)["action"] == "removed"
    assert json.loads((proj / ".mcp.json").read_text()) == {
        "mcpServers": {"other": {"command": "o"}}
    }
    assert json.loads(cli("mcp", "install", "--uninstall", "--json").stdout)["action"] == "absent"

    config_dir = tmp_path / "claude-config"
    env = {"CLAUDE_CONFIG_DIR": str(config_dir)}
    config_dir.mkdir()
    (config_dir / ".claude.json").write_text(json.dumps({"numStartups": 3}))
    done = cli("mcp", "install", "--global", env=env)
    assert done.returncode == 0 and "added" in done.stdout
    glob = json.loads((config_dir / ".claude.json").read_text())
    assert glob["numStartups"] == 3 and "sandboxrun" in glob["mcpServers"]
    cli("mcp", "install", "--global", "--uninstall", env=env)
    assert json.loads((config_dir / ".claude.json").read_text()) == {"numStartups": 3}


def test_install_refuses_broken_json_and_bad_flags(proj: Path, tmp_path: Path):
    cli = CLI(proj)
    (proj / ".mcp.json").write_text("{not json")
    broken = cli("mcp", "install")
    assert broken.returncode == 1 and "not valid JSON" in broken.stderr and "Hint:" in broken.stderr
    assert (proj / ".mcp.json").read_text() == "{not json"
    assert cli("mcp", "install", "--local", "--global").returncode == 2
    outside = tmp_path / "nowhere"
    outside.mkdir()
    assert CLI(outside)("mcp", "install", "--local").returncode == 2
