"""Helpers shared by the CLI command modules: consoles, error printing, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from sandboxrun.config import Settings, load_settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.gitops import repo_root
from sandboxrun.store import SessionStore

#: command modules under sandboxrun/cli, each with a ``register(app)`` function
COMMAND_MODULES = ("run_cmd", "session_cmd", "pack_cmd", "e2b_cmd", "hidden_cmd", "apply_cmd")

# soft_wrap: never break long lines (paths, commands) so they stay copy-pastable.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(exc: SandboxrunError) -> None:
    """Print ``Error: message`` and the hint (if any) to stderr."""
    err_console.print(f"[bold red]Error:[/bold red] {exc.message}", markup=True, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]Hint:[/dim] {exc.hint}", markup=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (no colour, stable keys)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """Write one compact JSON line to stdout and flush (for streams of events)."""
    sys.stdout.write(json.dumps(data, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def settings_for(repo: Path | None = None, **flags: Any) -> Settings:
    """Settings for a command run against ``repo``: defaults < repo file < env < flags."""
    root = None
    if repo is not None:
        try:
            root = repo_root(repo)
        except SandboxrunError:
            root = None  # not a repo: the command itself reports that where it matters
    return load_settings(root).with_overrides(**flags)


def open_store(settings: Settings) -> SessionStore:
    """Open the state database named by ``settings``."""
    return SessionStore(settings.db_path)
