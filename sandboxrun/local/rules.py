"""Prompt templates and the coordination rules agents follow (package data under templates/).

``coordination.md`` is installed into the repository's ``.claude/rules/`` (Claude Code loads
the rules files there into every session); ``child.md`` and ``pm.md`` are the first prompts the
tmux mode will give a role. Placeholders use ``string.Template`` (``$role``), so markdown braces
need no escaping; unknown placeholders are left as they are.
"""

from __future__ import annotations

import shutil
import string
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sandboxrun.config import Settings
from sandboxrun.errors import ConfigError, UsageError

TEMPLATES = ("coordination", "child", "pm")
#: the rules file's name inside ``.claude/rules/``
RULES_FILE = "sandboxrun-coordination.md"


def template_text(name: str) -> str:
    """The raw text of a shipped template."""
    if name not in TEMPLATES:
        raise UsageError(f"unknown template {name!r}", f"Known: {', '.join(TEMPLATES)}.")
    return (resources.files("sandboxrun.local") / "templates" / f"{name}.md").read_text()


def render(name: str, settings: Settings, **values: Any) -> str:
    """A template with ``$pm_role``, ``$stale_minutes`` and the given values filled in."""
    defaults = {
        "pm_role": settings.pm_role,
        "stale_minutes": f"{settings.stale_after / 60:g}",
    }
    return string.Template(template_text(name)).safe_substitute({**defaults, **values})


@dataclass
class RulesResult:
    path: str
    action: str  # created | updated | unchanged
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def install_rules(repo: Path, settings: Settings, *, force: bool = False) -> RulesResult:
    """Write the coordination rules into ``repo/.claude/rules/``.

    An existing file with other content (edited by someone) is kept unless ``force``; with
    ``force`` the old one is kept as ``*.bak``.
    """
    path = repo / ".claude" / "rules" / RULES_FILE
    text = render("coordination", settings)
    if path.exists():
        try:
            current = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        if current == text:
            return RulesResult(str(path), "unchanged")
        if not force:
            raise ConfigError(
                f"{path} exists and differs from sandboxrun's rules; it was left as it is",
                "Pass --force to replace it (the old file is kept as .bak).",
            )
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
        path.write_text(text)
        return RulesResult(str(path), "updated", str(backup))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return RulesResult(str(path), "created")
