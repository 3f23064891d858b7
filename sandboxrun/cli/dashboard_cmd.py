"""``sandboxrun dashboard``: every session and group of the repository, live, in the terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sandboxrun.cli.common import print_json, repo_scope, settings_for
from sandboxrun.errors import UsageError


def dashboard(
    all_repos: bool = typer.Option(False, "--all", help="Sessions of every repository."),
    repo: Path = typer.Option(None, "--repo", help="Another repository's sessions."),
    json_out: bool = typer.Option(
        False, "--json", help="Print one snapshot as JSON and exit (no screen)."
    ),
    poll: float = typer.Option(
        0.2, "--poll", help="Seconds between checks for new events (a cheap SQLite pragma)."
    ),
) -> None:
    """A live full-screen view of every session (both modes) and fan-out group.

    Per session: name, mode, state and for how long, branch, turns, cost,
    time left, presence, last action (tool and file). It reads the database
    the hooks and runs write (never an agent's screen) and updates within a
    second of an event. Outside a repository: every repository's sessions.

    Keys on the selected session (arrows, PgUp/PgDn, Home/End or a click
    select): o open its tmux pane (inside tmux: switch to it, or a new window
    when its tmux is another server; outside: attach until you detach), s send
    a message, r read its conversation, l follow its log, K kill, e extend,
    m merge its finished branch, a approve / x refuse the permission it waits
    on, g fan-out groups, q quit.

    Not a terminal: nothing is drawn; use --json for a snapshot.

    Examples:
      sandboxrun dashboard
      sandboxrun dashboard --all
      sandboxrun dashboard --json | jq '.sessions[] | {name, state}'
    """
    from sandboxrun.dashboard.model import snapshot
    from sandboxrun.store import SessionStore

    if not 0.05 <= poll <= 60:
        raise UsageError(f"invalid --poll {poll}", "Pass seconds between 0.05 and 60.")
    scope = repo_scope(all_repos, repo)
    settings = settings_for(scope or Path("."))
    where = str(scope) if scope is not None else None
    if json_out:
        store = SessionStore(settings.db_path)
        try:
            print_json(snapshot(store.conn, where).to_dict())
        finally:
            store.close()
        return
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise UsageError(
            "the dashboard needs a terminal (stdin and stdout are not one)",
            "Use `sandboxrun dashboard --json` for a snapshot.",
        )
    from sandboxrun.dashboard.app import DashboardApp

    DashboardApp(settings, where, poll=poll).run()


def serve(
    port: int = typer.Option(8765, "--port", help="HTTP port."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. Loopback by default; anything else is reachable from other "
        "machines (the token still applies).",
    ),
) -> None:
    """Serve the dashboard page at http://HOST:PORT/ (the same server as `sandboxrun mcp --http`).

    Open the address, paste the token from $SANDBOXRUN_HOME/http.token into the login form
    (it is never put in a URL): the page shows this repository's sessions live (tick "every
    repository" for all), a session's log, fan-out groups with their dependency graph and
    timeline, and cost totals. The MCP endpoint /mcp and the /msg/* API are served beside it.
    """
    from sandboxrun.config import load_settings
    from sandboxrun.mcp.server import check_address, check_git, serve_http

    if not 0 < port < 65536:
        raise UsageError(f"invalid port {port}", "Pass --port between 1 and 65535.")
    check_git()
    check_address(host, port)  # before the banner: an address in use is the only line
    home = load_settings().home
    typer.echo(
        f"sandboxrun dashboard at http://{host}:{port}/ (token: {home / 'http.token'})", err=True
    )
    serve_http(host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
    app.command("serve")(serve)
