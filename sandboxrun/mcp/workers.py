"""Local-children tools: spawn workers, message them, wait for them, read them, close them,
and find (and adopt) the ones the database lost.

A worker is an interactive Claude Code in its own worktree and tmux session, exactly what
``sandboxrun spawn`` starts: every tool here calls the same functions as the CLI commands
(``local/spawn.py``, ``send.py``, ``wait.py``, ``transcript.py``, ``close.py``, ``adopt.py``),
so the two cannot drift apart. The tmux server is the one the CLI would use: the worker's
recorded socket, else ``SANDBOXRUN_TMUX_SOCKET`` in the server's environment, else the
user's default server.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastmcp import FastMCP
from pydantic import BaseModel, Field

from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.mcp.common import Coord, compact, tool
from sandboxrun.store import Session, SessionStore

if TYPE_CHECKING:
    from sandboxrun.local.spawn import SpawnRequest
    from sandboxrun.tmux import Tmux

# sandboxrun.local.* and sandboxrun.tmux (libtmux) are imported inside the tools that use them:
# every local child starts its own MCP server, and most calls never touch a worker.

#: spawn at most this many workers at the same time (each waits for its first prompt)
MAX_PARALLEL_SPAWNS = 8
#: the longest a tool may wait for workers (MCP clients time out long calls)
MAX_WAIT = 3600.0


class WorkerSpec(BaseModel):
    """One worker to start."""

    name: str = Field(description="The worker's name: its role, worktree and branch by default.")
    task: str = Field(description="Its first task (the first prompt).")
    role: str | None = Field(None, description="Its role when not the name.")
    base: str | None = Field(None, description="Branch its worktree from this ref.")
    model: str | None = Field(None, description="Claude model for this worker.")
    worktree: bool = Field(True, description="False: work in the main checkout instead.")


def tmux_for(coord: Coord, session: Session | None = None) -> Tmux:
    """The tmux server of ``session`` (its recorded socket), else the server's default."""
    from sandboxrun.tmux import SOCKET_ENV, Tmux

    socket = (session.options.get("socket") if session else None) or coord.env.get(SOCKET_ENV)
    return Tmux(socket_path=socket or None)


def worker(coord: Coord, ref: str) -> Session:
    """The tmux child ``ref`` names; a UsageError naming the fix for anything else."""
    if not ref.strip():
        raise UsageError("an empty worker name", "Pass names as list_sessions(mode='local') shows.")
    s = coord.session(ref)
    if s.backend != "tmux":
        raise UsageError(
            f"{s.name!r} is not a local worker ({s.mode}/{s.backend})",
            "These tools work on workers started with spawn_workers (or `sandboxrun spawn`); "
            "list them with list_sessions(mode='local').",
        )
    return s


def workers(coord: Coord, names: list[str]) -> list[Session]:
    """The workers ``names`` name, each once, in order; UsageError for an empty list."""
    if not names:
        raise UsageError(
            "no workers named", "Pass names=['api', ...] (see list_sessions(mode='local'))."
        )
    found: dict[str, Session] = {}
    for n in names:
        s = worker(coord, n)
        found.setdefault(s.id, s)
    return list(found.values())


def _wait_limit(timeout: float) -> float:
    if not 0 < timeout <= MAX_WAIT:
        raise UsageError(
            f"timeout must be between 0 and {MAX_WAIT:.0f} seconds",
            "Pass timeout=600, for example; call again to keep waiting.",
        )
    return timeout


def _error(name: str, exc: SandboxrunError) -> dict[str, Any]:
    return {"name": name, "error": exc.message, "hint": exc.hint}


def spawn_all(
    coord: Coord,
    root: Path,
    requests: list[SpawnRequest],
    *,
    ready_timeout: float = 60.0,
) -> tuple[list[Session], list[dict[str, Any]]]:
    """Start the workers at the same time (each in its own thread and connection); the
    sessions started and the failures (name, error, hint)."""
    from sandboxrun.local import spawn as spawn_mod

    settings = coord.repo_settings(root)

    def one(req: SpawnRequest) -> Session | dict[str, Any]:
        store = SessionStore(settings.db_path)
        try:
            session: Session = spawn_mod.spawn(
                root,
                req,
                settings,
                store,
                tmux_for(coord),
                env=coord.env,
                ready_timeout=ready_timeout,
            )
            return session
        except SandboxrunError as exc:
            return _error(req.name, exc)
        finally:
            store.close()

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SPAWNS, len(requests))) as pool:
        results = list(pool.map(one, requests))
    started = [r for r in results if isinstance(r, Session)]
    failed = [r for r in results if isinstance(r, dict)]
    return started, failed


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the local-children tools to ``mcp``."""

    @tool(mcp, open_world=True)
    def spawn_workers(
        workers: list[WorkerSpec],
        skip_permissions: bool = False,
        permission_mode: Literal["default", "acceptEdits", "plan"] | None = None,
        repo: str | None = None,
        ready_timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Start several local workers at once: each an interactive Claude Code in its own git
        worktree (branch agent/<name>/active) and tmux session, given its first task.

        Returns once every worker has taken its task (or failed: those are listed with the
        reason and the fix). skip_permissions runs them with --dangerously-skip-permissions;
        otherwise they may stop at permission prompts (see wait_idle_workers). Follow them
        with wait_idle_workers and read_worker_logs; talk to them with message_workers.
        """
        if not workers:
            raise UsageError(
                "no workers to start", "Pass workers=[{'name': 'api', 'task': '...'}]."
            )
        names = [w.name for w in workers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(
                f"worker name(s) given twice: {', '.join(twice)}", "Give each worker its own name."
            )
        if skip_permissions and permission_mode:
            raise UsageError(
                "skip_permissions and permission_mode exclude each other", "Pass only one."
            )
        for w in workers:
            if not w.task.strip():
                raise UsageError(f"worker {w.name!r} has an empty task", "Say what it should do.")
        if not 0 < ready_timeout <= 600:
            raise UsageError(
                "ready_timeout must be between 0 and 600 seconds", "Pass 60, for example."
            )
        from sandboxrun.local.spawn import SpawnRequest

        root = Path(coord.repo(repo))
        requests = [
            SpawnRequest(
                name=w.name,
                task=w.task,
                role=w.role,
                base=w.base,
                model=w.model,
                skip_permissions=skip_permissions,
                permission_mode=permission_mode,
                worktree=w.worktree,
            )
            for w in workers
        ]
        started, failed = spawn_all(coord, root, requests, ready_timeout=ready_timeout)
        if not started:
            why = "; ".join(f"{f['name']}: {f['error']}" for f in failed)
            hints = " ".join(dict.fromkeys(f["hint"] for f in failed if f["hint"]))
            raise UsageError(f"no worker started: {why}", hints or None)
        return {
            "started": [{**compact(s), "tmux_session": s.tmux_session} for s in started],
            "failed": failed,
        }

    @tool(mcp, open_world=True)
    def message_workers(
        names: list[str],
        message: str,
        wait: Literal["none", "any", "all"] = "none",
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """Type a message into workers' Claude Code (as if you typed it), exactly once each.

        Per worker: delivered (its prompt hook saw it), queued (it was busy; Claude Code runs
        it after the current turn) or failed (with why). wait='any' or 'all' then waits, up to
        `timeout` seconds, until one or all of them are done (idle, needing a permission
        answer, or exited).
        """
        from sandboxrun.local import send as send_mod
        from sandboxrun.local import wait as wait_mod

        if not message.strip():
            raise UsageError("the message is empty", "Pass the text to type as message.")
        targets = workers(coord, names)
        if wait != "none":
            _wait_limit(timeout)
        store = coord.store
        results = [
            send_mod.send(store, tmux_for(coord, s), s, message, home=coord.settings.home)
            for s in targets
        ]
        out: dict[str, Any] = {"results": [r.to_dict() for r in results]}
        sent = [s for s, r in zip(targets, results, strict=True) if r.outcome != send_mod.FAILED]
        if wait != "none" and sent:
            waited = wait_mod.wait_for(
                store, tmux_for(coord, sent[0]), sent, any_=wait == "any", timeout=timeout
            )
            out["wait"] = waited.to_dict()
        return out

    @tool(mcp, read_only=True, idempotent=True)
    def wait_idle_workers(
        names: list[str], mode: Literal["any", "all"] = "all", timeout: float = 600.0
    ) -> dict[str, Any]:
        """Wait until workers are done with their turn: idle, needing a permission answer, or
        exited; mode='any' returns when the first is. Returns each worker's state and whether
        the wait ended by timeout (then call again to keep waiting)."""
        from sandboxrun.local import wait as wait_mod

        limit = _wait_limit(timeout)
        targets = workers(coord, names)
        result = wait_mod.wait_for(
            coord.store, tmux_for(coord, targets[0]), targets, any_=mode == "any", timeout=limit
        )
        return result.to_dict()

    @tool(mcp, read_only=True, idempotent=True)
    def read_worker_logs(name: str, last: int = 20, screen: bool = False) -> dict[str, Any]:
        """A worker's conversation (its prompts, Claude's answers and tool calls), the last
        `last` messages, across /clear; screen=true adds what its terminal shows now."""
        from sandboxrun.local import transcript

        if last < 1:
            raise UsageError("last must be at least 1", "Pass last=20, for example.")
        s = worker(coord, name)
        entries = transcript.conversation(transcript.transcript_paths(coord.store, s))
        out: dict[str, Any] = {
            "name": s.name,
            "total": len(entries),
            "messages": entries[-last:],
        }
        if screen:
            tmux = tmux_for(coord, s)
            live = bool(s.tmux_session) and tmux.pane(s.tmux_session or "") is not None
            out["screen"] = tmux.capture(s.tmux_session or "") if live else None
        return out

    @tool(mcp, destructive=True, idempotent=True)
    def close_workers(
        names: list[str], force: bool = False, remove_worktree: bool = False
    ) -> dict[str, Any]:
        """Close workers: ask their Claude Code to exit, then end their tmux sessions. Their
        worktrees and branches stay. A busy worker is refused (its turn would be lost) unless
        force; remove_worktree also removes a worktree without uncommitted changes (the
        branch, and every commit, always stays)."""
        from sandboxrun.local import close as close_mod

        targets = workers(coord, names)
        results = []
        for s in targets:
            try:
                settings = coord.repo_settings(Path(s.repo)) if remove_worktree and s.repo else None
                if remove_worktree and settings is None:
                    raise close_mod.CloseRefusedError(f"{s.name} has no repository recorded")
                results.append(
                    close_mod.close(
                        coord.store,
                        tmux_for(coord, s),
                        coord.store.get(s.id),
                        force=force,
                        remove_worktree=settings,
                    )
                )
            except SandboxrunError as exc:
                results.append({**_error(s.name, exc), "closed": False})
        return {"results": results, "closed": sum(1 for r in results if r.get("closed"))}

    @tool(mcp, read_only=True, idempotent=True)
    def discover_workers(repo: str | None = None) -> dict[str, Any]:
        """Workers alive in tmux that the database does not know (after a lost database):
        their names, tmux sessions and worktrees. Take them over with adopt_worker."""
        from sandboxrun.local import adopt as adopt_mod
        from sandboxrun.local import spawn as spawn_mod

        root = Path(coord.repo(repo))
        prefix = spawn_mod.prefix_for(root, coord.repo_settings(root), coord.env)
        found = adopt_mod.discover(coord.store, tmux_for(coord), prefix)
        return {"prefix": prefix, "workers": [o.to_dict() for o in found]}

    @tool(mcp, idempotent=True)
    def adopt_worker(
        names: list[str] | None = None, all_found: bool = False, repo: str | None = None
    ) -> dict[str, Any]:
        """Take over workers discover_workers found (by name, or all_found=true): their
        sessions come back under the same id, and their hooks report to them again."""
        from sandboxrun.local import adopt as adopt_mod
        from sandboxrun.local import spawn as spawn_mod

        if bool(names) == all_found:
            raise UsageError(
                "name the workers to adopt, or pass all_found=true (not both)",
                "See them with discover_workers.",
            )
        root = Path(coord.repo(repo))
        prefix = spawn_mod.prefix_for(root, coord.repo_settings(root), coord.env)
        tmux = tmux_for(coord)
        found = adopt_mod.discover(coord.store, tmux, prefix)
        chosen = found if all_found else [o for o in found if o.name in (names or [])]
        missing = sorted(set(names or ()) - {o.name for o in chosen})
        if missing:
            raise UsageError(
                f"no unknown worker named {', '.join(missing)}",
                "See the ones there are with discover_workers.",
            )
        adopted = [adopt_mod.adopt(coord.store, tmux, o) for o in chosen]
        return {"adopted": [compact(s) for s in adopted]}


#: what is typed into an idle worker to wake it for a message (the hook adds the message
#: itself to the context of that very prompt, so the text is only the nudge)
WAKE_TEXT = "New message from {sender}: it is in your context now. Read it and act on it."


def wake(coord: Coord, root: str, role: str, sender: str | None) -> list[dict[str, Any]]:
    """Wake the idle workers of ``role`` in ``root`` by typing a short prompt into their pane,
    so a message sent to them is read now rather than at their next turn. Busy workers are
    left alone: their hook delivers the message at their next tool call."""
    from sandboxrun.local import send as send_mod
    from sandboxrun.local.observe import state_of

    rows = coord.store.conn.execute(
        "SELECT id FROM sessions WHERE repo = ? AND role = ? AND backend = 'tmux' "
        "AND tmux_session IS NOT NULL AND mode = 'local' AND status = 'running'",
        (root, role),
    ).fetchall()
    out = []
    for (sid,) in rows:
        s = coord.store.get(sid)
        tmux = tmux_for(coord, s)
        state = state_of(tmux, s)
        if state.name != "idle":
            out.append({"name": s.name, "woken": False, "state": state.name})
            continue
        text = WAKE_TEXT.format(sender=f"session '{sender}'" if sender else "sandboxrun")
        result = send_mod.send(coord.store, tmux, s, text, home=coord.settings.home)
        out.append({"name": s.name, "woken": result.outcome != send_mod.FAILED,
                    "state": state.name, **result.to_dict()})  # fmt: skip
    return out
