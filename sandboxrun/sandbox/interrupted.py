"""Runs interrupted before their agent started: seen as such, finished, and cleaned up.

A ``sandboxrun run`` killed (SIGKILL, a reboot, a full disk) while it creates the session,
packs the worktree or provisions the sandbox leaves a row in ``created``/``packing``/
``provisioning`` that nothing will ever move on. Such a session is *interrupted* when its agent
never started and neither a driver nor the process that created it (``starter_pid`` with its
start time, so a reused pid does not count) is alive. ``status`` shows it so; ``attach`` and
``kill`` finish it (:func:`finish_interrupted`); ``cleanup`` removes what it left half-made
(:func:`leftovers`: the upload tarball, whole or partial, which can be hundreds of MB).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.store import ACTIVE, Session, SessionStore, Status, owner_alive, starter_alive

log = logging.getLogger(__name__)

#: what a run writes before its agent starts and removes itself when it ends normally: the
#: upload tarball, and the temporary file it is written to (``sync.pack`` renames it when done);
#: or the upload as git objects and its temporary file (``sync.gitupload``)
LEFTOVER_GLOBS = ("upload.tar*", ".upload.tar*.tmp", "upload.pack", ".upload.pack.tmp")


@dataclass(frozen=True)
class StartFacts:
    """What decides whether a session's start was interrupted."""

    mode: str
    status: str
    agent_started: bool
    #: a driver has claimed the session (``owner_pid`` set): from then on only it starts it
    claimed: bool
    driver_alive: bool
    starter_alive: bool


def is_interrupted(f: StartFacts) -> bool:
    """A sandbox session still active on paper whose agent never started, with no live process
    left to start it: its driver, or before a driver claimed it, the process that created it
    (an MCP server or a fan-out scheduler lives on after handing a start to its driver). Pure.
    """
    responsible_alive = f.driver_alive if f.claimed else f.starter_alive
    return (
        f.mode == "sandbox" and f.status in ACTIVE and not f.agent_started and not responsible_alive
    )


def still_starting(session: Session) -> bool:
    """The process that created ``session`` is alive and no driver has claimed it yet."""
    return session.owner_pid is None and session.agent_pgid is None and starter_alive(session)


def start_facts(session: Session) -> StartFacts:
    """The facts of ``session`` as this machine sees them now (processes checked)."""
    return StartFacts(
        mode=session.mode,
        status=str(session.status),
        agent_started=session.agent_pgid is not None,
        claimed=session.owner_pid is not None,
        driver_alive=owner_alive(session),
        starter_alive=starter_alive(session),
    )


def interrupted(session: Session) -> bool:
    """Whether ``session``'s start was interrupted (see :func:`is_interrupted`)."""
    if session.mode != "sandbox" or session.is_terminal or session.agent_pgid is not None:
        return False  # the common cases, without looking at processes
    return is_interrupted(start_facts(session))


def leftovers(settings: Settings, session: Session) -> list[Path]:
    """Files a start left behind in the session's artifacts (whole or partial tarballs)."""
    art = settings.session_artifacts(session.id)
    if not art.is_dir():
        return []
    return sorted({p for pattern in LEFTOVER_GLOBS for p in art.glob(pattern) if p.is_file()})


def describe(session: Session) -> str:
    """One sentence: where the start stopped, for ``status`` and the session's error."""
    who = f"process {session.starter_pid}" if session.starter_pid else "its process"
    if session.owner_pid and session.owner_pid != session.starter_pid:
        who += f" (driver {session.owner_pid})"
    return f"interrupted while {session.status}: {who} is gone and the agent never started"


@dataclass
class Finished:
    """What :func:`finish_interrupted` did."""

    session: Session
    removed: list[str]
    kept: list[str]


def finish_interrupted(
    settings: Settings, store: SessionStore, session: Session, *, killed: bool
) -> Finished:
    """End an interrupted session (``killed`` by ``kill``, else ``failed`` by ``attach``) and
    tear down what its start made: its sandbox, its upload tarball, and its worktree and branch
    when they hold nothing but the base commit (sandboxrun made them; any change, commit or
    untracked file keeps them). Only the process that ends the session tears down.
    """
    why = describe(session)
    status = Status.KILLED if killed else Status.FAILED
    # kill_requested: a driver that was only slow to claim it (not gone) stops at its next check
    if not store.set_status(session.id, status, only_if_active=True, error=why, kill_requested=1):
        return Finished(store.get(session.id), [], [])  # someone else ended it first
    removed: list[str] = []
    kept: list[str] = []
    if session.sandbox_id:
        from sandboxrun.sandbox.backends import get_backend

        try:
            backend = get_backend(
                session.backend, settings, no_isolation=bool(session.options.get("no_isolation"))
            )
            backend.connect(session.sandbox_id).destroy()
            removed.append(f"sandbox {session.sandbox_id}")
        except SandboxrunError as exc:  # already gone, or unreachable: cleanup retries
            log.info("sandbox %s of %s not removed: %s", session.sandbox_id, session.name, exc)
    for path in leftovers(settings, session):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path))
    worktree = _remove_empty_worktree(session)
    if worktree:
        (removed if worktree.startswith("removed") else kept).append(worktree)
    store.add_event(session.id, "interrupted", {"removed": removed, "kept": kept})
    return Finished(store.get(session.id), removed, kept)


def _remove_empty_worktree(session: Session) -> str:
    """Remove the session's worktree and branch if they hold no work; say what happened."""
    if not (session.repo and session.worktree and session.branch and session.base_commit):
        return ""
    repo, worktree = Path(session.repo), Path(session.worktree)
    if not worktree.exists():
        return ""
    try:
        head = gitops.git(worktree, "rev-parse", "HEAD", check=False).stdout.strip()
        tip = gitops.git(repo, "rev-parse", "--verify", "--quiet",
                         f"refs/heads/{session.branch}", check=False).stdout.strip()  # fmt: skip
        if head != session.base_commit or tip != session.base_commit:
            return (f"worktree {worktree} kept: it is not at its base commit (commits beyond "
                    f"it on {session.branch}, or another checkout)")  # fmt: skip
        # ignored files too: a fresh worktree has none, so any was put there by someone
        files = gitops.git(worktree, "status", "--porcelain", "--ignored",
                           "--untracked-files=all").stdout.strip()  # fmt: skip
        if files:
            return f"worktree {worktree} kept: it has uncommitted, untracked or ignored files"
        gitops.remove_worktree(repo, worktree, session.branch, delete_branch=True)
    except SandboxrunError as exc:
        return f"worktree {worktree} kept: {exc.message}"
    return f"removed worktree {worktree} and branch {session.branch} (they held no work)"


def next_hint(session: Session) -> str:
    """What to do with an interrupted session."""
    n = shlex.quote(session.name)
    return (
        f"`sandboxrun kill {n}` ends it and removes what its start left (an empty worktree "
        f"and branch, the upload tarball); start the task again with `sandboxrun run`."
    )
