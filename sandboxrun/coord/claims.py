"""File claims: which session means to edit which files, so two agents do not collide.

A library over the ``claims`` table (``store.py`` migration m005), standard library only: the
hook's PreToolUse gate imports it on every Edit/Write. A claim is ``advisory`` (others are
warned) or ``exclusive`` (others' edits are denied by the gate). Paths are relative to the work
tree, ``/``-separated, so a claim made in one agent worktree covers the same file in every
worktree of the repository; a path ending in ``/`` claims everything under that directory.

A claim is **live** while it is not released, not expired, and its holder is live: a sandbox
run whose status is still active, or a local session that is running and sent a heartbeat
within ``stale_after`` seconds. Claims of stale or ended sessions lapse without anyone cleaning
up (they stay in the table, reported as ``lapsed``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun.coord.gate import (
    EDIT_TOOLS,
    STALE_AFTER,
    covering,
    holder_live,
    holder_name,
    relative_path,
)
from sandboxrun.errors import UsageError

__all__ = ["EDIT_TOOLS", "STALE_AFTER", "covering", "holder_live", "relative_path"]

ADVISORY = "advisory"
EXCLUSIVE = "exclusive"
MODES = (ADVISORY, EXCLUSIVE)


@dataclass(frozen=True)
class Claim:
    """One claim and whether it still holds."""

    id: int
    repo: str
    path: str
    mode: str
    session_id: str
    session_name: str | None
    role: str | None
    claimed_at: float
    expires_at: float | None
    released_at: float | None
    note: str | None
    state: str  # live | released | expired | lapsed (its session ended or went stale)

    @property
    def holder(self) -> str:
        """How to name the holder to a person: the role, else the session name."""
        return holder_name(self.session_name or self.session_id, self.role)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClaimResult:
    """What :func:`claim` did: all the paths claimed, or none and the conflicts."""

    claimed: list[Claim] = field(default_factory=list)
    conflicts: list[Claim] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claimed": [c.to_dict() for c in self.claimed],
            "conflicts": [c.to_dict() for c in self.conflicts],
        }


def validate_mode(mode: str) -> str:
    """``advisory`` or ``exclusive``; UsageError naming both otherwise."""
    if mode not in MODES:
        raise UsageError(f"unknown claim mode {mode!r}", "Use 'advisory' or 'exclusive'.")
    return mode


def normalize_path(path: str, top: Path | str, repo: Path | str | None = None) -> str:
    """``path`` relative to its work tree (:func:`~sandboxrun.coord.gate.relative_path`);
    a UsageError naming the fix when it is empty or outside the repository."""
    text = str(path).strip()
    if not text:
        raise UsageError(
            "an empty path cannot be claimed", "Name files relative to the repository."
        )
    rel = relative_path(text, str(top), str(repo) if repo is not None else None)
    if rel is None:
        raise UsageError(
            f"path {text!r} is outside the repository",
            f"Name files inside {top} (relative paths are taken from there).",
        )
    return rel


_SELECT = (
    "SELECT c.id, c.repo, c.path, c.mode, c.session_id, s.name, c.role, c.claimed_at, "
    "c.expires_at, c.released_at, c.note, s.status, s.mode, s.last_heartbeat "
    "FROM claims c LEFT JOIN sessions s ON s.id = c.session_id"
)


def _claim(row: tuple, now: float, stale_after: float) -> Claim:
    (cid, repo, path, mode, sid, name, role, at, expires, released, note, status, smode, hb) = row
    if released is not None:
        state = "released"
    elif expires is not None and expires <= now:
        state = "expired"
    elif not holder_live(status, smode, hb, now, stale_after):
        state = "lapsed"
    else:
        state = "live"
    return Claim(cid, repo, path, mode, sid, name, role, at, expires, released, note, state)


def conflicts(
    conn: sqlite3.Connection,
    repo: str,
    paths: list[str],
    session_id: str | None,
    *,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> list[Claim]:
    """Live claims of *other* sessions on ``paths`` (or on directories above them)."""
    now = time.time() if now is None else now
    wanted = sorted({c for p in paths for c in covering(p)})
    if not wanted:
        return []
    found: list[Claim] = []
    for p in paths:
        if p.endswith("/"):  # a directory claim also meets claims of files under it
            wanted_prefix = p
            rows = conn.execute(
                f"{_SELECT} WHERE c.repo = ? AND c.released_at IS NULL AND substr(c.path, 1, ?) = ?",
                (repo, len(wanted_prefix), wanted_prefix),
            ).fetchall()
            found += [_claim(r, now, stale_after) for r in rows]
    marks = ", ".join("?" for _ in wanted)
    rows = conn.execute(
        f"{_SELECT} WHERE c.repo = ? AND c.released_at IS NULL AND c.path IN ({marks})",
        (repo, *wanted),
    ).fetchall()
    found += [_claim(r, now, stale_after) for r in rows]
    seen: set[int] = set()
    out = []
    for c in found:
        if c.state == "live" and c.session_id != session_id and c.id not in seen:
            seen.add(c.id)
            out.append(c)
    return out


def claim(
    conn: sqlite3.Connection,
    repo: str,
    paths: list[str],
    mode: str,
    session_id: str,
    *,
    role: str | None = None,
    expires_at: float | None = None,
    note: str | None = None,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> ClaimResult:
    """Claim normalized ``paths`` for ``session_id``: all of them, or none when another live
    session holds an exclusive claim on one (or any claim, when asking for exclusive).

    Run it inside a transaction (``BEGIN IMMEDIATE``) so the check and the insert are atomic.
    Claiming a path again replaces the session's own earlier claim on it.
    """
    validate_mode(mode)
    if not paths:
        raise UsageError("no paths to claim", "Pass at least one file path.")
    now = time.time() if now is None else now
    if expires_at is not None and expires_at <= now:
        raise UsageError(
            "the claim would already be expired",
            "Give a positive duration such as 30m, or none for a claim until you release it.",
        )
    others = conflicts(conn, repo, paths, session_id, now=now, stale_after=stale_after)
    blocking = [c for c in others if mode == EXCLUSIVE or c.mode == EXCLUSIVE]
    if blocking:
        return ClaimResult(conflicts=blocking)
    ids = []
    for p in dict.fromkeys(paths):
        conn.execute(
            "UPDATE claims SET released_at = ? WHERE repo = ? AND path = ? AND session_id = ? "
            "AND released_at IS NULL",
            (now, repo, p, session_id),
        )
        cur = conn.execute(
            "INSERT INTO claims (repo, path, mode, session_id, role, claimed_at, expires_at, "
            "note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (repo, p, mode, session_id, role, now, expires_at, note),
        )
        ids.append(int(cur.lastrowid or 0))
    marks = ", ".join("?" for _ in ids)
    rows = conn.execute(f"{_SELECT} WHERE c.id IN ({marks}) ORDER BY c.id", ids).fetchall()
    # advisory claims of others on the same files are reported, not refused
    return ClaimResult(claimed=[_claim(r, now, stale_after) for r in rows], conflicts=others)


def release(
    conn: sqlite3.Connection,
    repo: str,
    session_id: str,
    paths: list[str] | None = None,
    *,
    now: float | None = None,
) -> int:
    """Release the session's claims (on ``paths``, or all of them); how many were held."""
    now = time.time() if now is None else now
    sql = "UPDATE claims SET released_at = ? WHERE repo = ? AND session_id = ? AND released_at IS NULL"
    args: list[Any] = [now, repo, session_id]
    if paths is not None:
        if not paths:
            return 0
        sql += f" AND path IN ({', '.join('?' for _ in paths)})"
        args += paths
    return conn.execute(sql, args).rowcount


def list_claims(
    conn: sqlite3.Connection,
    repo: str | None = None,
    *,
    session_id: str | None = None,
    include_ended: bool = False,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> list[Claim]:
    """Claims (of one repo / one session), oldest first; only live ones unless ``include_ended``."""
    now = time.time() if now is None else now
    where, args = ["1 = 1"], []
    if repo is not None:
        where.append("c.repo = ?")
        args.append(repo)
    if session_id is not None:
        where.append("c.session_id = ?")
        args.append(session_id)
    if not include_ended:
        where.append("c.released_at IS NULL")
    rows = conn.execute(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY c.id", args).fetchall()
    found = [_claim(r, now, stale_after) for r in rows]
    return found if include_ended else [c for c in found if c.state == "live"]


# -- sandbox results vs. claims ------------------------------------------------------------

#: how a refusal for a claimed path starts (``sandboxrun apply --allow-claimed`` lets it through)
CLAIMED_REASON = "claimed by another session"


def held_back(
    touched: Iterable[str],
    live: Iterable[Claim],
    *,
    own_session: str | None,
    allow_claimed: bool = False,
) -> dict[str, str]:
    """Which ``touched`` paths a sandbox result must hold back, with why (pure).

    A path is held back when a live **exclusive** claim of another session covers it (the file
    itself or a directory claim above it): landing the sandbox's version would overwrite work
    that session announced it owns. Advisory claims, the run's own claims and claims that
    ended, expired or lapsed hold nothing back; ``allow_claimed`` holds nothing back at all.
    """
    if allow_claimed:
        return {}
    by_path: dict[str, Claim] = {}
    for c in live:
        if c.mode == EXCLUSIVE and c.state == "live" and c.session_id != own_session:
            by_path.setdefault(c.path, c)
    if not by_path:
        return {}
    out: dict[str, str] = {}
    for path in touched:
        holder = next((by_path[p] for p in covering(path) if p in by_path), None)
        if holder is not None:
            what = "" if holder.path == path else f" (as part of {holder.path})"
            out[path] = (
                f"{CLAIMED_REASON}: {holder.holder} holds an exclusive claim{what}; "
                "applied only with --allow-claimed"
            )
    return out


def hold_back_check(
    conn: sqlite3.Connection,
    repo: str | None,
    session_id: str,
    *,
    allow_claimed: bool = False,
    stale_after: float,
    now: float | None = None,
) -> Callable[[Iterable[str]], dict[str, str]] | None:
    """The claims check a sandbox run's apply calls with the paths its result touches: the
    live claims of ``repo`` are read once, now. None when nothing can be held back.

    ``stale_after`` (the configured ``Settings.stale_after``, no default: a holder silent for
    longer no longer holds anything) must be the same as everywhere else claims are judged."""
    if allow_claimed or not repo:
        return None
    live = [
        c
        for c in list_claims(conn, repo, now=now, stale_after=stale_after)
        if c.mode == EXCLUSIVE and c.session_id != session_id
    ]
    if not live:
        return None
    return lambda touched: held_back(touched, live, own_session=session_id)


def allow_flags(reasons: Iterable[str]) -> list[str]:
    """The ``sandboxrun apply`` flags that let these kept-back refusals through (pure)."""
    from sandboxrun.sync.patchcheck import SENSITIVE_REASON

    found = list(reasons)
    flags = []
    if any(r.startswith(SENSITIVE_REASON) for r in found):
        flags.append("--allow-sensitive")
    if any(r.startswith(CLAIMED_REASON) for r in found):
        flags.append("--allow-claimed")
    return flags
