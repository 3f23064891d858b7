"""The claim gate's hot path: is this edit allowed? Standard library only, and lean.

The hook runs it on every Edit/Write/MultiEdit/NotebookEdit of every agent, so it imports
nothing beyond ``os``, ``time`` and ``sqlite3`` (no ``typing``, no ``dataclasses``: each costs
milliseconds per process). :mod:`sandboxrun.coord.claims` builds its library on the same
rules (:func:`covering`, :func:`holder_live`, :func:`relative_path`).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # not `from typing import ...`: typing costs milliseconds per process
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Mapping
    from typing import Any

#: the tools the gate checks, and the input key naming the file
EDIT_TOOLS = {
    "Edit": "file_path",
    "Write": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
}
#: session statuses in which a holder may still be working (``store.ACTIVE`` as strings)
ACTIVE_STATUSES = frozenset(
    {"created", "preparing", "packing", "provisioning", "running", "collecting"}
)
STALE_AFTER = 300.0


def relative_path(path: str, top: str, repo: str | None = None) -> str | None:
    """``path`` relative to its work tree, ``/``-separated; None when outside the repository.

    Relative paths are taken from ``top``; an absolute one may lie in ``top`` or in the
    repository's main checkout, including another agent's worktree under ``.worktrees/`` (the
    same file there is the same claim). A trailing ``/`` (or an existing directory) keeps a
    trailing ``/``.
    """
    text = path.strip()
    if not text:
        return None
    is_dir = text.endswith("/")
    real_top = os.path.realpath(top)
    full = os.path.realpath(text if os.path.isabs(text) else os.path.join(real_top, text))
    bases = [real_top] + ([os.path.realpath(repo)] if repo else [])
    for base in bases:
        if full != base and not full.startswith(base.rstrip("/") + "/"):
            continue
        rel = os.path.relpath(full, base).replace(os.sep, "/")
        if base != real_top and rel.startswith(".worktrees/"):
            rel = "/".join(rel.split("/")[2:])
        if not rel or rel == "." or rel == ".git" or rel.startswith(".git/"):
            return None
        return rel + "/" if is_dir or os.path.isdir(full) else rel
    return None


def covering(rel: str) -> list[str]:
    """The claim paths that cover ``rel`` (pure): itself and each parent directory + ``/``."""
    parts = [p for p in rel.rstrip("/").split("/") if p]
    return [rel] + ["/".join(parts[:n]) + "/" for n in range(1, len(parts))]


def holder_live(
    status: str | None, mode: str | None, heartbeat: float | None, now: float, stale_after: float
) -> bool:
    """Whether a claim's holder still counts (pure): an active sandbox run, or a running local
    session with a heartbeat within ``stale_after`` seconds."""
    if status not in ACTIVE_STATUSES:
        return False
    if mode == "local":
        return heartbeat is not None and now - heartbeat <= stale_after
    return True


def stale_after_for(settings: Any, env: Mapping[str, str]) -> float:
    """The configured ``stale_after`` for a hook: from ``settings`` when the hook loaded them,
    else ``SANDBOXRUN_STALE_AFTER``, which ``spawn`` sets from the repository's config (so the
    gate reads no config file on every edit); the default when neither says (or says nonsense:
    an edit is never broken by a bad value)."""
    if settings is not None:
        return float(settings.stale_after)
    value = env.get("SANDBOXRUN_STALE_AFTER")
    if value:
        from sandboxrun.config import parse_duration
        from sandboxrun.errors import SandboxrunError

        try:
            return parse_duration(value)
        except SandboxrunError:
            pass
    return STALE_AFTER


def check(
    conn: sqlite3.Connection,
    repo: str,
    rel: str,
    session_id: str,
    now: float,
    stale_after: float = STALE_AFTER,
) -> tuple[str, str, list[int]] | None:
    """``(verdict, text, claim_ids)`` for ``session_id`` editing ``rel``, or None when free.

    ``deny`` when another live session holds an exclusive claim on the file (or a directory
    above it), ``warn`` when only advisory claims do.
    """
    wanted = covering(rel)
    rows = conn.execute(
        "SELECT c.id, c.mode, c.role, c.expires_at, s.name, s.status, s.mode, s.last_heartbeat "
        "FROM claims c LEFT JOIN sessions s ON s.id = c.session_id WHERE c.repo = ? AND "
        f"c.released_at IS NULL AND c.session_id != ? AND c.path IN ({', '.join('?' * len(wanted))})",
        (repo, session_id, *wanted),
    ).fetchall()
    live = [
        r
        for r in rows
        if (r[3] is None or r[3] > now) and holder_live(r[5], r[6], r[7], now, stale_after)
    ]
    if not live:
        return None
    ids = [r[0] for r in live]
    exclusive = [r for r in live if r[1] == "exclusive"]
    if exclusive:
        _cid, _mode, role, expires, name, *_ = exclusive[0]
        until = f" until {time.strftime('%H:%M UTC', time.gmtime(expires))}" if expires else ""
        return (
            "deny",
            f"sandboxrun: {rel} is exclusively claimed by {holder_name(name, role)}{until}. Do "
            f"not edit it: ask them to release it (send_message to {role or name!r}), work on "
            "other files meanwhile, or check again later with check_conflicts.",
            ids,
        )
    names = ", ".join(holder_name(r[4], r[2]) for r in live)
    return (
        "warn",
        f"sandboxrun: {rel} has an advisory claim by {names}; your edit is allowed, but "
        "coordinate with them (send_message) to avoid conflicting changes.",
        ids,
    )


def holder_name(name: str | None, role: str | None) -> str:
    """How to name a claim's holder to a person."""
    return f"session {name!r} (role {role})" if role else f"session {name!r}"
