"""The ``--mcp-config`` file of a child (or the master): sandboxrun's MCP server plus the
repository's own ``.mcp.json`` servers.

Claude Code does not load a project's ``.mcp.json`` in a git worktree by itself (and a
project server would wait for a per-user approval first), so each child gets one explicit file:
the repository's servers as they are, and ours as ``sandboxrun`` (replacing an entry of that
name), started as ``python -m sandboxrun mcp`` by the same Python that spawned the child, with
the child's identity in its environment so that its tools know who is calling.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandboxrun.errors import ConfigError

#: our server's name in the file (tools appear to the model as ``mcp__sandboxrun__<tool>``)
SERVER = "sandboxrun"
#: the variables our server needs to know the caller and find the database and tmux
PASSED_ENV = (
    "SANDBOXRUN_SESSION",
    "SANDBOXRUN_HOME",
    "CLAUDE_INSTANCE_ID",
    "SANDBOXRUN_TMUX_SOCKET",
    "PYTHONPATH",
)


def read_json(path: Path, hint: str) -> Any:
    """The JSON in the file at ``path`` (an empty file reads as ``{}``); a ConfigError naming
    the file, with ``hint``, when it is not JSON. For the MCP configuration files we read
    (``.mcp.json``, ``~/.claude.json``): one message for a broken one wherever it is met."""
    try:
        return json.loads(path.read_text() or "{}")
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})", hint) from exc


def repo_servers(worktree: Path, root: Path) -> dict[str, Any]:
    """The ``mcpServers`` of the repository's ``.mcp.json``: the worktree's copy (its branch's
    version), else the main checkout's (an untracked file is only there). ``{}`` without one;
    a file that is not a JSON object with an object ``mcpServers`` is a ConfigError."""
    for base in (worktree, root):
        path = base / ".mcp.json"
        if not path.is_file():
            continue
        data = read_json(path, "Fix it (Claude Code would not load it either), then spawn again.")
        servers = data.get("mcpServers", {}) if isinstance(data, dict) else None
        if not isinstance(servers, dict):
            raise ConfigError(
                f"{path} has no JSON object under mcpServers",
                'Write it as {"mcpServers": {"name": {"command": ...}}}.',
            )
        return dict(servers)
    return {}


def our_server(env: Mapping[str, str]) -> dict[str, Any]:
    """How Claude Code starts our MCP server for the session whose environment is ``env``."""
    passed = {k: env[k] for k in PASSED_ENV if env.get(k)}
    return {
        "type": "stdio",
        "command": sys.executable,
        "args": ["-m", "sandboxrun", "mcp"],
        "env": passed,
    }


def merged_config(repo: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """``{"mcpServers": ...}``: the repository's servers and ours (ours wins its name). Pure."""
    return {"mcpServers": {**repo, SERVER: dict(ours)}}


def write_mcp_config(
    home: Path, session_id: str, *, worktree: Path, root: Path, env: Mapping[str, str]
) -> Path:
    """Write the child's ``--mcp-config`` file (mode 600) and return its path."""
    path = home / "local" / session_id / "mcp.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = merged_config(repo_servers(worktree, root), our_server(env))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    return path
