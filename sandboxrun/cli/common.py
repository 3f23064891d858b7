"""Helpers shared by the CLI command modules: consoles, error printing, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from sandboxrun.config import Settings, load_settings
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.gitops import main_worktree, repo_root
from sandboxrun.store import SessionStore

# markup=False: what we print is full of user- and agent-controlled text (paths such as
# `pages/[id]/.env`, branch names, agent messages) that rich would otherwise read as markup,
# losing parts or crashing. Styles are applied with `styled()` parts, never with [tags].
# soft_wrap: never break long lines (paths, commands) so they stay copy-pastable.
console = Console(highlight=False, soft_wrap=True, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

#: one part of a printed line: plain text, or (text, rich style)
Part = str | tuple[str, str]


def styled(*parts: Part) -> Text:
    """A line from plain and ``(text, style)`` parts; the text is never read as markup."""
    return Text.assemble(*parts)


def say(*parts: Part, err: bool = False) -> None:
    """Print one line made of plain and ``(text, style)`` parts (stdout, or stderr)."""
    (err_console if err else console).print(styled(*parts))


def print_error(exc: SandboxrunError) -> None:
    """Print ``Error: message`` and the hint (if any) to stderr."""
    say(("Error:", "bold red"), " ", exc.message, err=True)
    if exc.hint:
        say(("Hint:", "dim"), " ", exc.hint, err=True)


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


def repo_scope(all_repos: bool, repo: Path | None) -> Path | None:
    """The main checkout whose sessions a command works on; None for every repository.

    ``--all`` wins; ``--repo PATH`` must be a repository; otherwise the repository of the
    current directory, or every repository when it is not in one.
    """
    if all_repos:
        if repo is not None:
            raise UsageError(
                "give --all or --repo, not both",
                "--all: every repository; --repo PATH: that one.",
            )
        return None
    if repo is not None:
        return main_worktree(repo_root(repo))
    try:
        return main_worktree(repo_root(Path.cwd()))
    except SandboxrunError:
        return None
