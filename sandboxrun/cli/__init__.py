"""Command-line interface (typer). Thin: parse flags, call services, print results.

Each command group lives in its own module: commands are top-level functions, added to the
app by the module's ``register(app)`` (one line each below); what they print is in ``render``
and ``reporters``. Errors from the core (:class:`~sandboxrun.errors.SandboxrunError`) are
turned into ``Error: ...`` plus a hint and exit code 1 (2 for usage errors) here, at the edge,
and nowhere else.
"""

from __future__ import annotations

import sys

import typer

from sandboxrun.cli import common
from sandboxrun.errors import SandboxrunError
from sandboxrun.faults import disk_fault
from sandboxrun.logs import configure_logging

app = typer.Typer(
    name="sandboxrun",
    help=(
        "Run Claude Code agents in parallel, each on its own git branch, in E2B cloud "
        "sandboxes (or a local directory), and get their work back as commits.\n\n"
        "Start with: sandboxrun run --backend local --dry-run --prompt 'hello'"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from sandboxrun import __version__

        typer.echo(f"sandboxrun {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run Claude Code agents in parallel, each on its own git branch."""


# One line per command module; each module defines its commands as top-level functions and
# adds them in ``register(app)``. Imported here, after ``app`` exists, on purpose.
from sandboxrun.cli import (  # noqa: E402
    apply_cmd,
    coord_cmd,
    dashboard_cmd,
    e2b_cmd,
    fanout_cmd,
    helptext,
    hidden_cmd,
    hooks_cmd,
    install_cmd,
    local_cmd,
    mcp_cmd,
    pack_cmd,
    run_cmd,
    session_cmd,
    warm_cmd,
    worktree_cmd,
)

run_cmd.register(app)
session_cmd.register(app)
pack_cmd.register(app)
e2b_cmd.register(app)
hidden_cmd.register(app)
apply_cmd.register(app)
fanout_cmd.register(app)
warm_cmd.register(app)  # issue 12: warm starts from a snapshot
# local mode
worktree_cmd.register(app)
hooks_cmd.register(app)
install_cmd.register(app)
coord_cmd.register(app)
local_cmd.register(app)  # issue 10: tmux children (spawn, send, wait, ...)
# coordination over MCP and HTTP (issue 11)
mcp_cmd.register(app)
dashboard_cmd.register(app)  # issue 13: the live view of every session
helptext.apply(app)  # every --help reflowed to the terminal's width, markup escaped


def main() -> None:
    """Console-script entry point: run the app and translate our errors into exit codes.

    Click's standalone mode handles its own usage errors (exit 2), ``typer.Exit`` and Ctrl-C
    outside a run; our :class:`SandboxrunError` becomes ``Error: ...`` + hint, exit 1 or 2.
    """
    configure_logging()
    try:
        app()
    except SandboxrunError as exc:
        common.print_error(exc)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A disk that refused a write (full, read-only, a size limit) outside the database
        # (an upload tarball, artifacts): one line with the next step, not a traceback.
        fault = disk_fault(exc)
        if fault is None:
            raise
        common.print_error(fault)
        sys.exit(fault.exit_code)
