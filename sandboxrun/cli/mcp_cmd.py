"""``sandboxrun mcp``: the MCP server (stdio, or streamable HTTP with the control plane) and
``sandboxrun mcp install``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from sandboxrun import gitops
from sandboxrun.cli.common import console, print_json
from sandboxrun.errors import SandboxrunError, UsageError

mcp_app = typer.Typer(
    help=(
        "Serve sandboxrun's tools (sessions, presence, messages, file claims, sandbox runs) to "
        "Claude Code over MCP.\n\n"
        "stdio (what Claude Code starts): sandboxrun mcp\n\n"
        "HTTP at http://127.0.0.1:PORT/mcp plus /health and /msg/*: sandboxrun mcp --http\n\n"
        "Add it to Claude Code: sandboxrun mcp install --local  (or: claude mcp add sandboxrun "
        "-- sandboxrun mcp)"
    ),
    invoke_without_command=True,
)


@mcp_app.callback()
def serve(
    ctx: typer.Context,
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP instead of stdio."),
    port: int | None = typer.Option(
        None,
        "--port",
        help="HTTP port (with --http). Default 8765; the master session binds $WEB_PORT "
        "when set (only the master: its children inherit the variable).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="HTTP address (with --http). Loopback by default; anything else is reachable "
        "from other machines (the bearer token still applies).",
    ),
) -> None:
    """Run the MCP server (stdio by default)."""
    if ctx.invoked_subcommand is not None:
        return
    from sandboxrun.mcp.server import (
        caller_is_master,
        check_address,
        check_git,
        http_port,
        serve_http,
        serve_stdio,
    )

    if not http and (port is not None or host != "127.0.0.1"):
        given = "--port" if port is not None else "--host"
        raise UsageError(
            f"{given} applies to the HTTP server only",
            f"Add --http: sandboxrun mcp --http {given} ... (plain `sandboxrun mcp` is stdio).",
        )
    check_git()
    if http:
        from sandboxrun.mcp.common import Coord

        coord = Coord()
        port = http_port(port, os.environ.get("WEB_PORT"), caller_is_master(coord))
        if not 0 < port < 65536:
            raise UsageError(f"invalid port {port}", "Pass --port between 1 and 65535.")
        home = coord.settings.home
        check_address(host, port)  # before the banner: an address in use is the only line
        typer.echo(
            f"sandboxrun MCP at http://{host}:{port}/mcp (token: {home / 'http.token'})", err=True
        )
        serve_http(host=host, port=port, coord=coord)
    else:
        serve_stdio()


@mcp_app.command("install")
def install_cmd(
    local: bool = typer.Option(False, "--local", help="The repository's .mcp.json (default)."),
    global_: bool = typer.Option(False, "--global", help="Your ~/.claude.json (every project)."),
    uninstall: bool = typer.Option(False, "--uninstall", help="Remove our entry again."),
    repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: here)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Add the sandboxrun MCP server to Claude Code's config (merged; run again: no change)."""
    from sandboxrun.mcp import install as inst

    if local and global_:
        raise UsageError(
            "give --local or --global, not both",
            "--local: this repository's .mcp.json; --global: your ~/.claude.json.",
        )
    scope = "global" if global_ else "local"
    root = None
    if scope == "local":
        try:
            root = gitops.repo_root(repo)
        except SandboxrunError as exc:
            raise UsageError(exc.message, "Run inside a repository, or use --global.") from exc
    path = inst.config_path(scope, root, os.environ)
    result = inst.uninstall(path) if uninstall else inst.install(path)
    if json_out:
        print_json(result.to_dict())
        return
    console.print(f"{result.action}: sandboxrun in {result.path}")
    if result.action in ("added", "updated"):
        console.print("  Restart Claude Code (or run /mcp) to load it.")


merges_app = typer.Typer(
    help="Merge notifications: detect session branches merged into their base.",
    no_args_is_help=True,
)


@merges_app.command("watch")
def merges_watch(
    interval: float = typer.Option(30.0, "--interval", help="Seconds between checks."),
    once: bool = typer.Option(False, "--once", help="Check once and exit."),
    json_out: bool = typer.Option(False, "--json", help="Print each merge as a JSON line."),
) -> None:
    """Check for merges every --interval seconds: the branches of active local children
    (their role and the master are told) and every notify_when_merged subscription; each
    merge is recorded and its subscribers get a MERGED message. `sandboxrun monitor` does
    the same beside its other work; this is for repositories without one."""
    import time

    from sandboxrun.cli.common import open_store, print_json_line
    from sandboxrun.config import load_settings
    from sandboxrun.coord import merges

    if interval <= 0:
        raise UsageError("--interval must be positive", "Pass --interval 30, for example.")
    settings = load_settings()
    store = open_store(settings)
    while True:
        found = merges.monitor_pass(store.conn, None, pm_role=settings.pm_role)
        for event in found:
            if json_out:
                print_json_line(event.to_dict())
            else:
                console.print(f"merged: {event.branch} into {event.base} ({event.repo})")
        if once:
            if not found and not json_out:  # (--json: one line per merge, so none)
                console.print("no new merges")
            return
        time.sleep(interval)


def register(app: typer.Typer) -> None:
    app.add_typer(mcp_app, name="mcp")
    app.add_typer(merges_app, name="merges")
