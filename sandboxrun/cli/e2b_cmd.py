"""`sandboxrun template build`: the E2B template sandboxrun runs in."""

from __future__ import annotations

from typing import Annotated

import typer

from sandboxrun.cli.common import console, err_console, print_json
from sandboxrun.config import CLAUDE_CODE_VERSION, DEFAULT_TEMPLATE

TEMPLATE_HELP = "Manage the E2B sandbox template (Node, git, zstd and a pinned Claude Code)."

# Paragraphs are single lines (the help renderer wraps them); \b blocks keep their layout.
BUILD_HELP = (
    "Build the E2B template that `sandboxrun run --backend e2b` starts sandboxes from.\n\n"
    "It is node:22 (Debian bookworm) with git, zstd and procps, and Claude Code "
    "{version} installed globally, so `claude` is on PATH for the sandbox user `user`. Build "
    "it once per E2B team; it takes a few minutes. Needs E2B_API_KEY.\n\n"
    "The default name is the default `template` setting ({default}); with another --name, set "
    '`template = "NAME"` in .sandboxrun.toml (or SANDBOXRUN_TEMPLATE=NAME) to use it.\n\n'
    "\b\n"
    "Examples:\n"
    "  sandboxrun template build\n"
    "  sandboxrun template build --name my-team-claude --memory-mb 4096\n"
    "  sandboxrun template build --dockerfile   # show what would be built\n"
)


def build(
    name: Annotated[
        str, typer.Option("--name", "-n", help="Template name on E2B.")
    ] = DEFAULT_TEMPLATE,
    cpu: Annotated[int, typer.Option("--cpu", min=1, help="vCPUs per sandbox.")] = 2,
    memory_mb: Annotated[
        int, typer.Option("--memory-mb", min=512, help="Memory per sandbox, in MB.")
    ] = 2048,
    dockerfile: Annotated[
        bool,
        typer.Option("--dockerfile", help="Print the template as a Dockerfile; build nothing."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    from e2b import Template

    from sandboxrun.cli.common import settings_for
    from sandboxrun.sandbox.backends.e2b import (
        E2BBackend,
        build_template,
        claude_template,
        require_key,
    )

    if dockerfile:
        typer.echo(Template.to_dockerfile(claude_template()), nl=False)
        return
    require_key("or use `sandboxrun run --backend local`, which needs no template")
    E2BBackend(settings_for()).check_ready(dry_run=False)
    err_console.print(f"Building E2B template {name!r} (this takes a few minutes)...")
    template_id = build_template(
        name,
        cpu_count=cpu,
        memory_mb=memory_mb,
        on_log=lambda line: err_console.print(line, markup=False, highlight=False),
    )
    if as_json:
        print_json({"name": name, "template_id": template_id, "claude_code": CLAUDE_CODE_VERSION})
        return
    console.print(
        f"Built template {name!r} ({template_id}) with Claude Code {CLAUDE_CODE_VERSION}."
    )
    if name != DEFAULT_TEMPLATE:
        console.print(
            f'Use it with SANDBOXRUN_TEMPLATE={name} or template = "{name}" in .sandboxrun.toml.'
        )


def register(app: typer.Typer) -> None:
    """Add the ``template`` command group to ``app``."""
    template_app = typer.Typer(help=TEMPLATE_HELP, no_args_is_help=True)
    template_app.command(
        "build", help=BUILD_HELP.format(version=CLAUDE_CODE_VERSION, default=DEFAULT_TEMPLATE)
    )(build)
    app.add_typer(template_app, name="template")
