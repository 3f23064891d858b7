"""Helpers shared by the CLI command modules: consoles, error printing, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from sandboxrun.errors import SandboxrunError

#: command modules under sandboxrun/cli, each with a ``register(app)`` function
COMMAND_MODULES = ("run_cmd", "session_cmd", "pack_cmd", "e2b_cmd", "hidden_cmd")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


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
