"""What every MCP tool module shares: the server's context and the tool decorator.

:class:`Coord` is the context: settings, one database connection per worker thread (fastmcp runs
synchronous tools in threads), and who the caller is. The MCP server runs as a child of the
Claude Code session that uses it (stdio), so the caller's identity is the server's own: its
environment (``SANDBOXRUN_SESSION``, ``CLAUDE_INSTANCE_ID``) and working directory, resolved the
way the hook resolves them. Over HTTP there is no such caller; tools that act "as me" take an
explicit ``session`` then.

:func:`tool` registers a function with its annotations and turns every
:class:`~sandboxrun.errors.SandboxrunError` into a ``ToolError`` whose text says what happened
and how to fix it: the MCP edge, as ``cli/__init__.py`` is the CLI's.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import ToolResult
from mcp.types import TextContent, ToolAnnotations

from sandboxrun.config import Settings, load_settings
from sandboxrun.errors import SandboxrunError, SessionNotFoundError, UsageError
from sandboxrun.faults import disk_fault
from sandboxrun.local.identity import Checkout, find_checkout, resolve_identity
from sandboxrun.store import Session, SessionStore

F = TypeVar("F", bound=Callable[..., Any])


def json_text(data: Any) -> ToolResult:
    """A reply as compact JSON text only, without the structured copy fastmcp adds for a
    ``dict``: for large replies (a list of 1,000 sessions) the copy doubles what crosses the
    wire and what both ends serialize and validate (2.3x slower over stdio). Claude Code
    gives the model the text either way; programmatic clients ``json.loads`` it."""
    return ToolResult(
        content=[
            TextContent(type="text", text=json.dumps(data, separators=(",", ":"), default=str))
        ]
    )


def tool_error(exc: SandboxrunError) -> ToolError:
    """The agent-facing form of one of our errors: ``message. Fix: hint``."""
    text = exc.message.rstrip(".") + "."
    if exc.hint:
        text += f" Fix: {exc.hint}"
    return ToolError(text)


def translate(fn: F) -> F:
    """Wrap ``fn`` so our errors reach the agent as ToolErrors naming the fix."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SandboxrunError as exc:
            raise tool_error(exc) from exc
        except OSError as exc:  # a full or read-only disk: the same words as the CLI's
            fault = disk_fault(exc)
            if fault is None:
                raise
            raise tool_error(fault) from exc

    return wrapper  # type: ignore[return-value]


def tool(
    mcp: FastMCP,
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
    name: str | None = None,
    text_only: bool = False,
) -> Callable[[F], F]:
    """Register a tool with its annotations (every tool states all three hints).

    ``text_only``: the tool returns :func:`json_text` (its reply as JSON text, no structured
    copy); for replies that can be large, see :func:`json_text`.
    """

    def decorate(fn: F) -> F:
        annotations = ToolAnnotations(
            read_only_hint=read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent,
            open_world_hint=open_world,
        )
        extra: dict[str, Any] = {"output_schema": None} if text_only else {}
        mcp.tool(name=name or fn.__name__, annotations=annotations, **extra)(translate(fn))
        return fn

    return decorate


class Coord:
    """The server's context: settings, per-thread stores, the caller's identity."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.cwd = Path(cwd or os.getcwd())
        self.checkout: Checkout | None = find_checkout(self.cwd)
        if settings is None:
            settings = load_settings(self.checkout.main if self.checkout else None, env=self.env)
        self.settings = settings
        self._local = threading.local()

    @property
    def store(self) -> SessionStore:
        """This thread's connection to the database (opened on first use)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = SessionStore(self.settings.db_path)
        return store

    # -- who is asking -------------------------------------------------------------------

    def role(self) -> str | None:
        """The caller's role (``CLAUDE_INSTANCE_ID``, then the worktree's identity)."""
        return resolve_identity(self.env, self.checkout, self.settings.identities).role

    def repo(self, repo: str | None = None) -> str:
        """The repository (main checkout) a tool works on: ``repo`` or the caller's."""
        if repo:
            found = find_checkout(repo)
            if found is None:
                raise UsageError(
                    f"{repo} is not inside a git repository",
                    "Pass the path of a git checkout as repo.",
                )
            return str(found.main)
        if self.checkout is None:
            raise UsageError(
                f"the server runs outside a git repository ({self.cwd})",
                "Pass repo='/path/to/repo', or start the server inside the repository.",
            )
        return str(self.checkout.main)

    def repo_settings(self, root: Path) -> Settings:
        """The repository's own settings (as the CLI reads them there: its config file, this
        server's environment), in this server's home (the database every tool reads)."""
        return replace(load_settings(root, env=self.env), home=self.settings.home)

    def me(self) -> Session | None:
        """The sandboxrun session the caller is (None when it is not one we track)."""
        store = self.store
        explicit = self.env.get("SANDBOXRUN_SESSION")
        if explicit:
            try:
                return store.get(explicit)
            except SessionNotFoundError:
                pass
        if self.checkout is None:
            return None
        role = self.role()
        if role:
            row = store.conn.execute(
                "SELECT * FROM sessions WHERE mode = 'local' AND repo = ? AND role = ? "
                "ORDER BY created_at DESC LIMIT 1",
                (str(self.checkout.main), role),
            ).fetchone()
        else:
            row = store.conn.execute(
                "SELECT * FROM sessions WHERE mode = 'local' AND worktree = ? AND role IS NULL "
                "ORDER BY created_at DESC LIMIT 1",
                (str(self.checkout.top),),
            ).fetchone()
        return Session.from_row(row) if row else None

    def session(self, ref: str | None) -> Session:
        """The session ``ref`` names (id, id prefix or name), or the caller's own."""
        if ref:
            try:
                return self.store.resolve(ref)
            except SessionNotFoundError as exc:
                raise SessionNotFoundError(
                    f"no session matches {ref!r}",
                    "Call list_sessions and pass an id, id prefix or name from it.",
                ) from exc
        me = self.me()
        if me is None:
            raise UsageError(
                "this server does not know which session you are",
                "Pass session='<id or name>' (see list_sessions), or run Claude Code with "
                "sandboxrun's hooks installed (`sandboxrun hooks install`) so your session "
                "is tracked.",
            )
        return me


#: the columns of a session's short form (lists read only these: no prompt, no JSON)
COMPACT_FIELDS = (
    "id",
    "name",
    "mode",
    "backend",
    "status",
    "role",
    "activity",
    "repo",
    "branch",
    "worktree",
    "created_at",
    "ended_at",
    "last_heartbeat",
    "error",
)


def compact(s: Session) -> dict[str, Any]:
    """The short form of a session for lists."""
    data = {k: getattr(s, k) for k in COMPACT_FIELDS}
    data["status"] = str(s.status)
    return data
