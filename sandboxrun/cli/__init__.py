"""Command-line interface (typer). Thin: parse flags, call services, print results.

Each command group lives in its own module with a ``register(app)`` function. Errors from the
core (:class:`~sandboxrun.errors.SandboxrunError`) are turned into ``Error: ...`` plus a hint
and exit code 1 (2 for usage errors) here, at the edge, and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from sandboxrun.cli import common
from sandboxrun.errors import SandboxrunError

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


def _register_all() -> None:
    # Imported here so that `import sandboxrun.cli` stays cheap and each module registers itself.
    import importlib

    for module in common.COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"sandboxrun.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sandboxrun.cli.{module}":
                continue  # a command group not built yet
            raise
        mod.register(app)


_register_all()


def main() -> None:
    """Console-script entry point: run the app and translate our errors into exit codes."""
    if os.environ.get("SANDBOXRUN_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        rc = app(standalone_mode=False)
    except SandboxrunError as exc:
        common.print_error(exc)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        common.err_console.print("Aborted.")
        sys.exit(1)
    except KeyboardInterrupt:
        common.err_console.print("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    # Without standalone mode click returns (not raises) the code of a `typer.Exit`.
    sys.exit(rc if isinstance(rc, int) else 0)
