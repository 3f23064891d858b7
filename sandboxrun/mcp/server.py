"""Build the sandboxrun MCP server (fastmcp) and run it over stdio or streamable HTTP.

Each domain module has a ``register(mcp, coord)``; this module only assembles them. The
lifespan checks that git is installed, since almost every tool needs it, so a missing git is
one clear error at start-up rather than a failure inside a tool call.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastmcp import FastMCP

from sandboxrun.errors import ProgramNotFoundError, SandboxrunError, UsageError
from sandboxrun.mcp import claims, merges, messages, presence, sandbox, sessions, workers
from sandboxrun.mcp.common import Coord

NAME = "sandboxrun"
INSTRUCTIONS = """\
sandboxrun tracks every Claude Code session working on a repository, local and in cloud
sandboxes. Start with get_my_session (who am I, who else is working). Before editing files
another session may touch, claim_files them; check_conflicts tells who holds what. Talk to
other sessions with send_message; read yours with check_messages. Start background work in a
sandbox with run_in_sandbox and follow it with sandbox_logs. Run a team of local Claude Code
workers with spawn_workers, message_workers, wait_idle_workers and read_worker_logs."""

DOMAINS = (sessions, presence, messages, claims, sandbox, merges, workers)


#: the HTTP port when neither --port nor (for the master) WEB_PORT says otherwise
DEFAULT_PORT = 8765


def http_port(flag: int | None, web_port: str | None, is_master: bool) -> int:
    """The port ``mcp --http`` binds (pure): ``--port``; else ``WEB_PORT`` when this is the
    master session (the one web service of a project: children inherit the variable and must
    not take its port); else :data:`DEFAULT_PORT`."""
    if flag is not None:
        return flag
    if is_master and web_port and web_port.strip().isdigit():
        return int(web_port)
    return DEFAULT_PORT


def caller_is_master(coord: Coord) -> bool:
    """Whether the session running this server is a master (``sandboxrun master start``)."""
    me = coord.me()
    return bool(me is not None and me.options.get("master"))


def check_git() -> None:
    """Raise ProgramNotFoundError (with the fix) when git is not installed."""
    if shutil.which("git") is None:
        raise ProgramNotFoundError(
            "git is not installed (or not on PATH)",
            "Install git (e.g. `apt-get install git`) and start the server again.",
        )


@asynccontextmanager
async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
    """Refuse to start without git; nothing to tear down (connections die with threads)."""
    check_git()
    yield {}


def build_server(coord: Coord | None = None) -> FastMCP:
    """The server with every domain's tools and resources registered."""
    coord = coord or Coord()
    mcp = FastMCP(NAME, instructions=INSTRUCTIONS, lifespan=lifespan)
    for domain in DOMAINS:
        domain.register(mcp, coord)
    mcp.coord = coord  # type: ignore[attr-defined]  # for the HTTP routes and tests
    return mcp


def serve_stdio(coord: Coord | None = None) -> None:
    """Run the server on stdin/stdout (how Claude Code starts MCP servers)."""
    import sys

    if sys.stdin.isatty():
        # a person who typed `sandboxrun mcp` would otherwise look at a silent terminal
        sys.stderr.write(STDIO_NOTE + "\n")
        sys.stderr.flush()
    build_server(coord).run("stdio", show_banner=False)


STDIO_NOTE = (
    "sandboxrun MCP server on stdio: waiting for an MCP client. Claude Code starts this itself "
    "(`sandboxrun mcp install` adds it); Ctrl-C stops it; `sandboxrun mcp --http` serves HTTP."
)


def stdio_main() -> None:
    """``python -m sandboxrun mcp``, exactly (what Claude Code starts for every local child and
    the master): the stdio server, without loading the CLI and every command's modules (typer,
    rich, the run pipeline). The same edge as the CLI: log lines to the log file, our errors as
    ``Error:`` and ``Hint:`` lines on stderr with their exit code, never a traceback."""
    import sys

    from sandboxrun.errors import SandboxrunError
    from sandboxrun.faults import disk_fault
    from sandboxrun.logs import configure_logging

    configure_logging()
    try:
        check_git()
        serve_stdio()
    except (SandboxrunError, OSError) as exc:
        err = exc if isinstance(exc, SandboxrunError) else disk_fault(exc)
        if err is None:
            raise
        sys.stderr.write(f"Error: {err.message}\n" + (f"Hint: {err.hint}\n" if err.hint else ""))
        sys.exit(err.exit_code)


def serve_http(
    host: str = "127.0.0.1",
    port: int = 8765,
    coord: Coord | None = None,
    token_path: Path | None = None,
) -> None:
    """Run the server over streamable HTTP at ``/mcp``, with the control plane beside it.

    Everything but ``GET /health`` needs ``Authorization: Bearer <token>`` (the token in
    ``$SANDBOXRUN_HOME/http.token``, created on first use with mode 600).
    """
    import uvicorn

    from sandboxrun.web.control import build_app

    check_address(host, port)
    server = build_server(coord)
    app = build_app(server, token_path=token_path)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


def check_address(host: str, port: int) -> None:
    """Refuse, as one error with the next step, an address the server could not listen on (a
    port in use, a host that does not resolve or is not this machine's), before the server
    starts: uvicorn would log it in its own format and exit 3."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(
            f"cannot listen on {host}: the host does not resolve",
            "Pass --host 127.0.0.1 (this machine only) or an address of this machine.",
        ) from exc
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SandboxrunError(
                    f"port {port} on {host} is already in use",
                    f"Pass another --port, or see what holds it: ss -ltnp 'sport = :{port}'.",
                ) from exc
            raise SandboxrunError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                "Pass --host 127.0.0.1 and a --port above 1023 (lower ones need root).",
            ) from exc
