"""Operations on existing sandbox sessions, from any terminal: kill, download, extend, attach,
cleanup. Each works from what the store and the sandbox hold, so it also works after a crash.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.errors import SandboxLostError, SandboxrunError, UsageError
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.collect import Patches, collect_patches, save_artifacts
from sandboxrun.sandbox.reporting import Reporter
from sandboxrun.store import Session, SessionStore, owner_alive

log = logging.getLogger(__name__)


def kill_session(
    settings: Settings,
    store: SessionStore,
    session: Session,
    *,
    discard: bool = False,
    wait: float = 120.0,
) -> Session:
    """Stop a session's agent, collect its work (unless ``discard``) and tear it down.

    When another process drives the session we ask it to stop (through the store) and wait for
    it; when none does (it crashed), we do the whole job here.
    """
    from sandboxrun.sandbox.runner import RunDriver

    if session.is_terminal:
        raise UsageError(
            f"session {session.name} already ended ({session.status})",
            f"See it with `sandboxrun status {session.name}`.",
        )
    store.request_kill(session.id, discard=discard)
    if owner_alive(session):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            current = store.get(session.id)
            if current.is_terminal:
                return current
            time.sleep(0.2)
        if owner_alive(store.get(session.id)):
            raise SandboxrunError(
                f"session {session.name} did not stop within {wait:g}s",
                "Its driver may be busy collecting; check `sandboxrun status` again shortly.",
            )
    # Nobody drives it: take over and finish it ourselves.
    current = store.get(session.id)
    if current.is_terminal:
        return current
    return RunDriver(settings, store, current).finish_orphan_kill()


def attach_session(
    settings: Settings, store: SessionStore, session: Session, reporter: Reporter | None = None
) -> Session:
    """Take over a session whose driving process died, and carry it to its end."""
    from sandboxrun.sandbox.runner import RunDriver

    if session.is_terminal:
        raise UsageError(
            f"session {session.name} already ended ({session.status})",
            f"Its work is on branch {session.branch}; see `sandboxrun status`.",
        )
    if owner_alive(session):
        raise UsageError(
            f"session {session.name} is still driven by process {session.owner_pid}",
            f"Follow it with `sandboxrun logs {session.name} --follow` instead.",
        )
    return RunDriver(settings, store, session, reporter).resume()


@dataclass
class Download:
    """Where ``download`` wrote a session's patches."""

    directory: Path
    files: list[Path]
    live: bool  # True when taken from the running sandbox, False from saved artifacts
    agent_commits: int | None = None


def download_session(
    settings: Settings, store: SessionStore, session: Session, output: Path
) -> Download:
    """Write the session's current patches to ``output`` without stopping it."""
    output.mkdir(parents=True, exist_ok=True)
    patches: Patches | None = None
    # A live sandbox (running, or kept after the end) has the freshest work.
    if session.sandbox_id and session.sandbox_base:
        backend = get_backend(session.backend, settings)
        try:
            sandbox = backend.connect(session.sandbox_id)
            patches = collect_patches(sandbox, session)
        except SandboxLostError:
            patches = None
    if patches is not None:
        save_artifacts(output, patches)
        files = [output / "commits.mbox", output / "changes.diff"]
        return Download(output, files, live=True, agent_commits=patches.agent_commits)
    artifacts = settings.session_artifacts(session.id)
    names = ("commits.mbox", "changes.diff", "agent.log", "agent.stderr", "summary.json")
    files = []
    for name in names:
        src = artifacts / name
        if src.exists():
            shutil.copyfile(src, output / name)
            files.append(output / name)
    if not files:
        raise SandboxrunError(
            f"no patches exist yet for session {session.name}",
            "The agent has not started, or its sandbox is gone before anything was collected.",
        )
    return Download(output, files, live=False)


def extend_session(
    settings: Settings, store: SessionStore, session: Session, seconds: float
) -> Session:
    """Push the session's time limit (ours and the sandbox's) by ``seconds``."""
    if session.is_terminal:
        raise UsageError(f"session {session.name} already ended ({session.status})")
    now = time.time()
    base = session.deadline or now
    deadline = base + seconds
    started = session.started_at or now
    store.update(session.id, deadline=deadline, timeout_s=deadline - started)
    store.add_event(session.id, "phase", {"phase": "extended", "detail": f"+{seconds:g}s"})
    if session.sandbox_id:
        try:
            sandbox = get_backend(session.backend, settings).connect(session.sandbox_id)
            sandbox.set_timeout(deadline - now)
        except SandboxLostError as exc:
            raise SandboxrunError(f"the sandbox of {session.name} is gone: {exc.message}") from exc
    return store.get(session.id)


@dataclass
class CleanupReport:
    """What ``cleanup`` did (or would do with ``dry_run``)."""

    sandboxes_removed: list[str] = field(default_factory=list)
    worktrees_removed: list[str] = field(default_factory=list)
    kept_dirty: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


def cleanup(
    settings: Settings,
    store: SessionStore,
    *,
    worktrees: bool = False,
    forget: bool = False,
    dry_run: bool = False,
) -> CleanupReport:
    """Tear down leftovers of ended sessions. Never deletes branches or uncommitted work.

    Always: sandboxes (local directories, E2B sandboxes) of ended sessions that still exist
    (kept with --keep, or left by a crash). With ``worktrees``: the worktrees of ended sessions
    whose tree is clean (the branch stays). With ``forget``: ended sessions' rows and events.
    Sessions whose driver died while active are listed as orphans (``sandboxrun attach``).
    """
    report = CleanupReport()
    for s in store.list():
        if not s.is_terminal:
            if not owner_alive(s):
                report.orphans.append(s.name)
            continue
        if s.sandbox_id:
            try:
                sandbox = get_backend(s.backend, settings).connect(s.sandbox_id)
                if not dry_run:
                    sandbox.destroy()
                report.sandboxes_removed.append(s.name)
            except SandboxrunError:
                pass  # already gone
        if worktrees and s.repo and s.worktree and Path(s.worktree).exists():
            if gitops.is_clean(Path(s.worktree)):
                if not dry_run:
                    gitops.remove_worktree(Path(s.repo), Path(s.worktree))
                report.worktrees_removed.append(s.worktree)
            else:
                report.kept_dirty.append(s.worktree)
        if forget:
            if not dry_run:
                store.delete(s.id)
            report.forgotten.append(s.name)
    return report
