"""Installing sandboxrun's hooks into Claude Code settings files, and taking them out again.

Merge, never overwrite: other keys and other hooks stay exactly as they were; installing twice
adds nothing; the previous file is kept as ``<file>.sandboxrun.bak``; a file that is not valid
JSON (or not a JSON object) is refused and left untouched; uninstalling removes exactly our
entries (a hook entry is ours when its command runs ``sandboxrun-hook``).

Scopes: ``global`` = ``~/.claude/settings.json`` (``$CLAUDE_CONFIG_DIR`` when set), ``local`` =
the repo's ``.claude/settings.local.json`` (Claude Code's untracked per-user file), ``shared`` =
the repo's ``.claude/settings.json`` (tracked, for a team).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun.errors import ConfigError, UsageError
from sandboxrun.local.states import EVENTS

SCOPES = ("global", "local", "shared")
HOOK_PROGRAM = "sandboxrun-hook"
#: events whose matcher is a tool name: ours matches every tool
_TOOL_EVENTS = {"PreToolUse", "PostToolUse"}
#: events fired as Claude Code exits, whose hook it terminates rather than waits for
_AT_EXIT_EVENTS = {"StopFailure"}
#: seconds Claude Code waits for our hook (it normally takes a few tens of ms; under heavy load
#: it may wait up to hook.DEFAULT_LOCK_TIMEOUT for the database, plus its own start)
HOOK_TIMEOUT = 30


def hook_executable() -> str:
    """The ``sandboxrun-hook`` to put in settings: the one beside this Python, else on PATH.

    An absolute path, because Claude Code may run hooks with a PATH that lacks the venv.
    """
    beside = Path(sys.executable).parent / HOOK_PROGRAM
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(HOOK_PROGRAM) or HOOK_PROGRAM


def hook_entry(event: str, executable: str | None = None) -> dict[str, Any]:
    """One ``{"type": "command", ...}`` hook running ``sandboxrun-hook EVENT``."""
    command = f"{shlex.quote(executable or hook_executable())} {event}"
    if event in _AT_EXIT_EVENTS:
        # Claude Code -p kills the hooks it fires as it exits before a Python process is even
        # started (checked with StopFailure in 2.1.330): run ours in the background, with the
        # payload on a duplicated stdin (a background job's stdin is /dev/null otherwise).
        # Its output is ignored by Claude Code anyway.
        # Detached as far as a shell can: own session when setsid exists, TERM/HUP ignored
        # (an ignored signal stays ignored across exec).
        command = (
            "exec 3<&0; (trap '' TERM HUP INT; "
            f"exec $(command -v setsid) {command} <&3 >/dev/null 2>&1) &"
        )
    return {"type": "command", "command": command, "timeout": HOOK_TIMEOUT}


def hook_settings(executable: str | None = None) -> dict[str, Any]:
    """A settings object with only our hooks (for ``claude --settings`` and for merging)."""
    hooks: dict[str, Any] = {}
    for event in EVENTS:
        group: dict[str, Any] = {"hooks": [hook_entry(event, executable)]}
        if event in _TOOL_EVENTS:
            group = {"matcher": "*", **group}
        hooks[event] = [group]
    return {"hooks": hooks}


def is_ours(entry: Any) -> bool:
    """Whether a hook entry runs ``sandboxrun-hook``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        return False
    try:
        words = shlex.split(entry["command"])
    except ValueError:
        return False
    return any(Path(word).name == HOOK_PROGRAM for word in words)


def _groups(settings: dict[str, Any], event: str) -> list[Any]:
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return []
    groups = hooks.get(event)
    return groups if isinstance(groups, list) else []


def installed_events(settings: dict[str, Any]) -> list[str]:
    """The events that have one of our hooks."""
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return []
    return [
        event
        for event in hooks
        if any(
            isinstance(g, dict) and any(is_ours(h) for h in g.get("hooks") or [])
            for g in _groups(settings, event)
        )
    ]


def merge_hooks(
    settings: dict[str, Any], executable: str | None = None
) -> tuple[dict[str, Any], bool]:
    """``settings`` with our hooks added (pure). Returns the new object and whether it changed.

    An event that already has our hook keeps it (its command is refreshed when the executable
    moved); other hooks and keys are not touched.
    """
    result = copy.deepcopy(settings)
    hooks = result.get("hooks")
    if hooks is None:
        hooks = result["hooks"] = {}
    if not isinstance(hooks, dict):
        raise ConfigError(
            '"hooks" in the settings file is not an object',
            "Fix the file by hand; sandboxrun does not rewrite what it does not understand.",
        )
    for event in EVENTS:
        wanted = hook_entry(event, executable)
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise ConfigError(f'"hooks.{event}" in the settings file is not a list')
        ours = [
            h for g in groups if isinstance(g, dict) for h in g.get("hooks") or [] if is_ours(h)
        ]
        if ours:
            for h in ours:
                h.update(wanted)
            continue
        group: dict[str, Any] = {"hooks": [wanted]}
        if event in _TOOL_EVENTS:
            group = {"matcher": "*", **group}
        groups.append(group)
    return result, result != settings


def remove_hooks(settings: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``settings`` without our hook entries (pure); returns it and how many were removed.

    Groups and events that held only our hooks go too; everything else stays as it was.
    """
    result = copy.deepcopy(settings)
    hooks = result.get("hooks")
    if not isinstance(hooks, dict):
        return result, 0
    removed = 0
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept_groups = []
        for group in groups:
            if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
                kept_groups.append(group)
                continue
            entries = [h for h in group["hooks"] if not is_ours(h)]
            removed += len(group["hooks"]) - len(entries)
            if entries or not group["hooks"]:
                kept_groups.append({**group, "hooks": entries})
        if kept_groups or not groups:
            hooks[event] = kept_groups
        else:
            del hooks[event]
    if not hooks and settings.get("hooks"):
        del result["hooks"]
    return result, removed


def settings_path(scope: str, repo: Path | None = None) -> Path:
    """The settings file of ``scope`` (``repo`` is needed for local and shared)."""
    if scope == "global":
        config = os.environ.get("CLAUDE_CONFIG_DIR")
        return (Path(config) if config else Path.home() / ".claude") / "settings.json"
    if scope not in SCOPES:
        raise UsageError(f"unknown scope {scope!r}", f"Use one of: {', '.join(SCOPES)}.")
    if repo is None:
        raise UsageError(f"--{scope} needs a git repository", "Run it inside one or pass --repo.")
    name = "settings.local.json" if scope == "local" else "settings.json"
    return repo / ".claude" / name


def read_settings(path: Path) -> dict[str, Any]:
    """A settings file as a dict ({} when missing); invalid JSON → ConfigError, nothing changed."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc}); nothing was changed",
            "Fix the file (or move it away) and run the command again.",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} does not hold a JSON object; nothing was changed",
            "Claude Code settings files are JSON objects: fix the file and run again.",
        )
    return data


def write_settings(path: Path, data: dict[str, Any]) -> Path | None:
    """Write ``data`` atomically, keeping the previous file as ``*.sandboxrun.bak``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if path.exists():
        backup = path.with_name(path.name + ".sandboxrun.bak")
        shutil.copy2(path, backup)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


@dataclass
class HooksResult:
    scope: str
    path: str
    changed: bool
    backup: str | None = None
    removed: int = 0
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def install(scope: str, repo: Path | None = None, executable: str | None = None) -> HooksResult:
    """Merge our hooks into the settings file of ``scope``."""
    path = settings_path(scope, repo)
    current = read_settings(path)
    merged, changed = merge_hooks(current, executable)
    backup = write_settings(path, merged) if changed else None
    if scope == "local" and repo is not None:
        from sandboxrun import gitops

        gitops.ensure_excluded(repo, "/.claude/settings.local.json")
        gitops.ensure_excluded(repo, "/.claude/settings.local.json.sandboxrun.bak")
    return HooksResult(
        scope, str(path), changed, str(backup) if backup else None, 0, installed_events(merged)
    )


def uninstall(scope: str, repo: Path | None = None) -> HooksResult:
    """Remove exactly our hooks from the settings file of ``scope``."""
    path = settings_path(scope, repo)
    current = read_settings(path)
    cleaned, removed = remove_hooks(current)
    backup = write_settings(path, cleaned) if removed else None
    return HooksResult(scope, str(path), bool(removed), str(backup) if backup else None, removed)


def status(repo: Path | None = None) -> list[dict[str, Any]]:
    """Where our hooks are installed: one entry per scope (repo scopes only with a repo)."""
    out = []
    for scope in SCOPES:
        if scope != "global" and repo is None:
            continue
        path = settings_path(scope, repo)
        entry: dict[str, Any] = {"scope": scope, "path": str(path), "exists": path.exists()}
        try:
            events = installed_events(read_settings(path))
            entry.update(events=events, installed=set(events) >= set(EVENTS), error=None)
        except ConfigError as exc:
            entry.update(events=[], installed=False, error=exc.message)
        out.append(entry)
    return out
