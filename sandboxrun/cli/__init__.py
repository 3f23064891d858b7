"""Command-line interface (typer). Thin: parse flags, call services, print results.

Each command group lives in its own module: commands are top-level functions, added to the
app by the module's ``register(app)`` (one line each below); what they print is in ``render``
and ``reporters``. Errors from the core (:class:`~sandboxrun.errors.SandboxrunError`) are
turned into ``Error: ...`` plus a hint and exit code 1 (2 for usage errors) here, at the edge,
and nowhere else.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

from sandboxrun.cli import common
from sandboxrun.errors import SandboxrunError
from sandboxrun.faults import disk_fault
from sandboxrun.logs import configure_logging

try:  # typer >= 0.22 carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors  # type: ignore[no-redef]

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
    """Console-script entry point: run the app and translate errors into exit codes.

    Every error a person meets is one ``Error:`` line and, where there is one, a ``Hint:``
    naming what works, on stderr: our :class:`SandboxrunError` (exit 1, or 2 for usage), and
    click's own usage errors (unknown option, missing argument, a bad value: exit 2), which
    click would otherwise draw as a boxed panel. With ``--json`` the same error is also one
    JSON object on stdout (``error``, ``hint``, ``exit_code``), so a script reading stdout
    always gets JSON. Ctrl-C outside a run exits 130.
    """
    configure_logging()
    try:
        rv = app(standalone_mode=False)
    except SandboxrunError as exc:
        _fail(exc.message, exc.hint, exc.exit_code)
    except click_errors.NoArgsIsHelpError as exc:
        help_text = exc.ctx.get_help()  # rich prints the help itself and returns ""
        if help_text:
            typer.echo(help_text)
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        _fail(*usage_error_text(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", None, 130)
    except OSError as exc:
        # A disk that refused a write (full, read-only, a size limit) outside the database
        # (an upload tarball, artifacts): one line with the next step, not a traceback.
        fault = disk_fault(exc) or file_fault(exc)
        if fault is None or os.environ.get("SANDBOXRUN_DEBUG"):
            raise
        _fail(fault.message, fault.hint, fault.exit_code)
    # standalone_mode=False returns typer.Exit's code (Ctrl-C: 130); commands return None.
    sys.exit(rv if isinstance(rv, int) else 0)


def usage_error_text(exc: click_errors.ClickException) -> tuple[str, str | None]:
    """The ``Error:`` message and ``Hint:`` of one of click's own errors (pure).

    The hint names the help of the command that was being parsed (``sandboxrun logs -h``),
    where click knows it.
    """
    ctx = getattr(exc, "ctx", None)
    hint = None
    if ctx is not None:
        what = (
            "commands and options" if isinstance(ctx.command, typer.core.TyperGroup) else "options"
        )
        hint = f"See `{ctx.command_path} -h` for its {what}."
    return exc.format_message(), hint


def file_fault(exc: OSError) -> SandboxrunError | None:
    """A file-system error no command turned into its own message (a path that is a file, a
    directory that cannot be made, a permission), as one line naming the path (pure).

    A last resort so a person never meets a traceback; ``SANDBOXRUN_DEBUG=1`` shows it.
    """
    kinds = (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
    if not isinstance(exc, (*kinds, PermissionError)):
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return SandboxrunError(
        f"{exc.strerror or exc}{where}",
        "Check the path and its permissions (SANDBOXRUN_DEBUG=1 shows where it happened).",
    )


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    """Print ``Error:``/``Hint:`` (and the JSON error under ``--json``), then exit ``code``."""
    common.print_error(SandboxrunError(message, hint))
    if _json_requested(sys.argv[1:]):
        common.print_json_line({"error": message, "hint": hint, "exit_code": code})
    sys.exit(code)


def _json_requested(argv: list[str]) -> bool:
    """Whether the command line asked for ``--json`` (before a ``--`` separator)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return False
        if arg == "--json" or arg == "--format=json" or argv[i - 1 : i + 1] == ["--format", "json"]:
            return True
    return False
