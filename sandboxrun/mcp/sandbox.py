"""Sandbox-run tools: start a run in the background, read its log, kill, download, extend.

The same services the CLI uses: ``start_run`` (what ``run --detach`` calls) makes the worktree,
branch and session, then its detached driver (``sandboxrun _drive SESSION``) carries the run to
its end, so the tool returns at once and the run outlives the MCP server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastmcp import FastMCP

from sandboxrun.config import parse_duration
from sandboxrun.errors import UsageError
from sandboxrun.mcp.common import Coord, compact, tool

if TYPE_CHECKING:
    from sandboxrun.store import Session

# The run machinery (sandbox.start, .request, .sessions: the backends, packing, git plumbing)
# is imported inside the tools that use it: every local child starts its own MCP server, and
# most never start a sandbox run.


def _sandbox_session(coord: Coord, ref: str) -> Session:
    s = coord.session(ref)
    if s.mode != "sandbox":
        raise UsageError(
            f"session {s.name} is a local session, not a sandbox run",
            "Sandbox tools work on sessions started with run_in_sandbox or `sandboxrun run`.",
        )
    return s


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the sandbox-run tools to ``mcp``."""

    @tool(mcp, open_world=True)
    def run_in_sandbox(
        prompt: str | None = None,
        plan_file: str | None = None,
        backend: str | None = None,
        timeout: str | None = None,
        name: str | None = None,
        base: str = "HEAD",
        repo: str | None = None,
        dry_run: bool = False,
        include_submodules: bool | None = None,
        allow_claimed: bool = False,
    ) -> dict[str, Any]:
        """Start a Claude Code agent in a sandbox on its own branch, in the background.

        Give the task as `prompt` text or a `plan_file` path (exactly one). backend: 'e2b'
        (default when E2B_API_KEY is set) or 'local'; timeout like '20m' or '1h'; base: the
        branch or commit to start from. Returns the session at once, with `notes` (what the run
        leaves out: uncommitted changes, secrets, submodules); follow it with
        sandbox_logs, stop it with kill_sandbox. dry_run makes the whole round trip without
        the agent (no API key needed). include_submodules uploads the submodules' files
        too (default: the repository's config); changes inside them come back as patches.
        Changes to files another live session claimed exclusively are held back (kept for
        `sandboxrun apply --allow-claimed`) unless allow_claimed.
        """
        from sandboxrun.sandbox.request import run_request
        from sandboxrun.sandbox.start import start_run

        root = Path(coord.repo(repo))
        # The repository's own config applies (as for `sandboxrun run --repo`), in this
        # server's home (the database every tool reads).
        settings, req = run_request(
            coord.repo_settings(root),
            root,
            prompt=prompt,
            prompt_file=Path(plan_file) if plan_file else None,
            cwd=coord.cwd,
            name=name,
            base=base,
            backend=backend,
            timeout=timeout,
            include_submodules=include_submodules,
            dry_run=dry_run,
            allow_claimed=allow_claimed,
        )
        store = coord.store
        started = start_run(settings, store, req, detach=True)
        return {
            **compact(store.get(started.session.id)),
            "driver_pid": started.driver_pid,
            "notes": started.notes,
        }

    @tool(mcp, read_only=True, idempotent=True)
    def sandbox_logs(
        session: str, after_id: int = 0, limit: int = 200, kinds: list[str] | None = None
    ) -> dict[str, Any]:
        """A sandbox run's events (phases, agent output, warnings, status) after event id
        `after_id`, oldest first, with its current status. Pass the returned last_id to read
        on; kinds filters, e.g. ['agent', 'status']."""
        if after_id < 0 or limit < 1:
            raise UsageError("after_id must be >= 0 and limit >= 1", "Pass after_id=0, limit=200.")
        s = _sandbox_session(coord, session)
        events = coord.store.events(
            s.id, after_id=after_id, kinds=tuple(kinds) if kinds else None, limit=limit
        )
        return {
            "session": s.id,
            "status": str(s.status),
            "events": events,
            "last_id": events[-1]["id"] if events else after_id,
        }

    @tool(mcp, destructive=True, idempotent=False, open_world=True)
    def kill_sandbox(session: str, discard: bool = False, wait: float = 120.0) -> dict[str, Any]:
        """Stop a sandbox run. Its work so far is collected onto its branch unless discard is
        true (then it is thrown away). Waits up to `wait` seconds for the run to end."""
        from sandboxrun.sandbox.sessions import kill_session

        s = _sandbox_session(coord, session)
        final = kill_session(coord.settings, coord.store, s, discard=discard, wait=wait)
        return compact(final)

    @tool(mcp, idempotent=True, open_world=True)
    def download_sandbox(session: str, output: str | None = None) -> dict[str, Any]:
        """Write a sandbox run's current work to a directory without stopping it: the collection
        itself (the agent's commits, for `sandboxrun apply --from DIR`), changes.diff (every
        accepted change as one diff), commits.txt, and refused.diff when a check kept something
        back. Default directory: the session's artifacts/download."""
        from sandboxrun.sandbox.sessions import download_session

        s = _sandbox_session(coord, session)
        out = Path(output) if output else coord.settings.session_artifacts(s.id) / "download"
        if not out.is_absolute():
            out = (coord.cwd / out).resolve()
        result = download_session(coord.settings, coord.store, s, out)
        return {
            "directory": str(result.directory),
            "files": [str(f) for f in result.files],
            "live": result.live,
            "agent_commits": result.agent_commits,
        }

    @tool(mcp, idempotent=False, open_world=True)
    def extend_sandbox(session: str, by: str) -> dict[str, Any]:
        """Give a running sandbox run more time: `by` is a duration such as '15m' or '1h'."""
        seconds = parse_duration(by)
        if seconds <= 0:
            raise UsageError("the extension must be positive", "Pass by='15m', for example.")
        from sandboxrun.sandbox.sessions import extend_session

        s = _sandbox_session(coord, session)
        updated = extend_session(coord.settings, coord.store, s, seconds)
        return {**compact(updated), "deadline": updated.deadline, "timeout_s": updated.timeout_s}
