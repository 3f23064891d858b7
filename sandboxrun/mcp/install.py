"""Add sandboxrun's MCP server to Claude Code's configuration, or take it out again.

``--local``: the repository's ``.mcp.json`` (shared with the team through git); ``--global``:
the user's ``~/.claude.json`` (``$CLAUDE_CONFIG_DIR/.claude.json`` when set), top-level
``mcpServers``. The merge is pure (:func:`merge_server`, :func:`remove_server`), idempotent,
touches only our ``sandboxrun`` entry, refuses a file that is not valid JSON, and writes
through a temporary file renamed into place (keeping the file's mode).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sandboxrun.errors import ConfigError
from sandboxrun.local.mcp_config import read_json

KEY = "sandboxrun"


def server_entry() -> dict[str, Any]:
    """How Claude Code starts our server: the installed ``sandboxrun`` or this Python."""
    exe = shutil.which("sandboxrun")
    if exe:
        return {"type": "stdio", "command": exe, "args": ["mcp"]}
    return {"type": "stdio", "command": sys.executable, "args": ["-m", "sandboxrun", "mcp"]}


def merge_server(config: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with ``mcpServers.sandboxrun`` set to ``entry`` (pure; other keys kept)."""
    out = dict(config)
    servers = dict(out.get("mcpServers") or {})
    servers[KEY] = dict(entry)
    out["mcpServers"] = servers
    return out


def remove_server(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without our entry (pure); an emptied ``mcpServers`` is dropped."""
    out = dict(config)
    servers = dict(out.get("mcpServers") or {})
    servers.pop(KEY, None)
    if servers:
        out["mcpServers"] = servers
    else:
        out.pop("mcpServers", None)
    return out


def config_path(scope: str, repo: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The file ``scope`` (``local`` or ``global``) means."""
    env = os.environ if env is None else env
    if scope == "local":
        if repo is None:
            raise ConfigError("--local needs a git repository", "Run it inside the repository.")
        return repo / ".mcp.json"
    base = env.get("CLAUDE_CONFIG_DIR")
    return Path(base).expanduser() / ".claude.json" if base else Path.home() / ".claude.json"


@dataclass
class InstallResult:
    """What happened to which file."""

    path: Path
    action: str  # added | updated | unchanged | removed | absent

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = read_json(
        path, "Fix the file by hand first; sandboxrun never overwrites a file it cannot read."
    )
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object", "Fix the file by hand first.")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".sandboxrun-tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def install(path: Path, entry: Mapping[str, Any] | None = None) -> InstallResult:
    """Add (or update) our server in the config file at ``path``."""
    entry = dict(entry or server_entry())
    data = _read(path)
    current = (data.get("mcpServers") or {}).get(KEY)
    if current == entry:
        return InstallResult(path, "unchanged")
    _write(path, merge_server(data, entry))
    return InstallResult(path, "updated" if current is not None else "added")


def uninstall(path: Path) -> InstallResult:
    """Remove our server from the config file at ``path`` (other servers untouched)."""
    data = _read(path)
    if KEY not in (data.get("mcpServers") or {}):
        return InstallResult(path, "absent")
    _write(path, remove_server(data))
    return InstallResult(path, "removed")


def installed(path: Path) -> bool | None:
    """Whether the config file at ``path`` names our server (None: the file is unreadable).

    Read-only, for ``sandboxrun install --status``: a broken file is reported, not raised.
    """
    try:
        data = _read(path)
    except ConfigError:
        return None
    return KEY in (data.get("mcpServers") or {})
