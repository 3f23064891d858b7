"""File-claim tools: claim files before editing them, check for conflicts, release, list.

An ``exclusive`` claim makes the hook's PreToolUse gate deny other live sessions' edits of the
file; an ``advisory`` one lets them through with a warning in their context. Claims lapse when
they expire or their session ends or goes stale.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from fastmcp import FastMCP

from sandboxrun.config import parse_duration
from sandboxrun.coord import claims
from sandboxrun.errors import UsageError
from sandboxrun.mcp.common import Coord, tool
from sandboxrun.store import Session


def _paths(coord: Coord, holder: Session | None, paths: list[str], repo: str) -> list[str]:
    if not paths:
        raise UsageError("the list of paths is empty", "Pass paths=['src/app.py', ...].")
    top = Path(holder.worktree) if holder and holder.worktree else None
    if top is None or not top.exists():
        top = coord.checkout.top if coord.checkout else Path(repo)
    return [claims.normalize_path(p, top, repo) for p in paths]


def register(mcp: FastMCP, coord: Coord) -> None:
    """Add the file-claim tools to ``mcp``."""
    stale = coord.settings.stale_after

    @tool(mcp)
    def claim_files(
        paths: list[str],
        mode: Literal["advisory", "exclusive"] = "exclusive",
        expires_in: str | None = None,
        note: str | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Claim files (or directories, ending in '/') before editing them, for your session.

        exclusive: other live sessions' Edit/Write on them are denied until you release them;
        advisory: they are warned. All paths are claimed or none: when another session holds
        a conflicting claim nothing is claimed and the tool fails naming the holder.
        expires_in like '30m' ends the claim by itself. Paths are relative to your worktree.
        """
        claims.validate_mode(mode)
        holder = coord.session(session)
        if not holder.is_active:
            raise UsageError(
                f"session {holder.name} already ended ({holder.status})",
                "Only a live session can hold claims.",
            )
        repo = holder.repo or coord.repo(None)
        rels = _paths(coord, holder, paths, repo)
        expires = time.time() + parse_duration(expires_in) if expires_in else None
        with coord.store.transaction() as conn:
            result = claims.claim(
                conn,
                repo,
                rels,
                mode,
                holder.id,
                role=holder.role,
                expires_at=expires,
                note=note,
                stale_after=stale,
            )
        if not result.claimed:
            held = "; ".join(f"{c.path} ({c.mode}) by {c.holder}" for c in result.conflicts)
            raise UsageError(
                f"nothing claimed: already claimed: {held}",
                "Ask the holder to release them (send_message), claim other files, or use "
                "mode='advisory' if they only hold advisory claims.",
            )
        return result.to_dict()

    @tool(mcp, read_only=True, idempotent=True)
    def check_conflicts(paths: list[str], session: str | None = None) -> dict[str, Any]:
        """Which of these files other live sessions have claimed (and how), before you edit
        them. Empty conflicts: free to edit."""
        holder = coord.session(session) if session or coord.me() else None
        repo = holder.repo if holder and holder.repo else coord.repo(None)
        rels = _paths(coord, holder, paths, repo)
        found = claims.conflicts(
            coord.store.conn, repo, rels, holder.id if holder else None, stale_after=stale
        )
        return {
            "paths": rels,
            "conflicts": [c.to_dict() for c in found],
            "blocked": sorted({c.path for c in found if c.mode == claims.EXCLUSIVE}),
        }

    @tool(mcp, idempotent=True)
    def release_files(paths: list[str] | None = None, session: str | None = None) -> dict[str, Any]:
        """Release your claims on these files, or all your claims when paths is omitted."""
        holder = coord.session(session)
        repo = holder.repo or coord.repo(None)
        rels = None if paths is None else _paths(coord, holder, paths, repo)
        with coord.store.transaction() as conn:
            count = claims.release(conn, repo, holder.id, rels)
        if rels and not count:
            raise UsageError(
                f"session {holder.name} holds no claim on {', '.join(rels)}",
                "See your claims with list_claims(mine=true).",
            )
        return {"released": count, "session": holder.id}

    @tool(mcp, read_only=True, idempotent=True)
    def list_claims(
        repo: str | None = None, mine: bool = False, include_ended: bool = False
    ) -> dict[str, Any]:
        """The live file claims in a repository (default: this one), or only yours
        (mine=true); include_ended adds released, expired and lapsed ones."""
        root = coord.repo(repo)
        sid = coord.session(None).id if mine else None
        found = claims.list_claims(
            coord.store.conn, root, session_id=sid, include_ended=include_ended, stale_after=stale
        )
        return {"repo": root, "claims": [c.to_dict() for c in found]}
