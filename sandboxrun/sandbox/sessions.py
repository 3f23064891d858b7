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
from sandboxrun.config import Settings, format_duration
from sandboxrun.errors import SandboxLostError, SandboxrunError, UsageError
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.nextstep import SessionFacts, next_step_hint
from sandboxrun.sandbox.reporting import Reporter
from sandboxrun.store import Session, SessionStore, owner_alive

log = logging.getLogger(__name__)

#: a sandbox whose end passed this long ago, with no driver, is taken as gone (E2B's clock
#: and ours may differ by a little)
EXPIRY_SLACK = 10.0


def session_facts(settings: Settings, session: Session) -> SessionFacts:
    """What the next-step table needs to know about ``session``."""
    art = settings.session_artifacts(session.id)
    return SessionFacts(
        name=session.name,
        status=session.status,
        driver_alive=owner_alive(session),
        agent_started=session.agent_pgid is not None and bool(session.sandbox_id),
        has_commits=bool(session.result_commits),
        has_patches=any((art / n).exists() for n in ("commits.mbox", "changes.diff")),
        branch=session.branch or "",
        repo=session.repo or "",
    )


def next_step(settings: Settings, session: Session) -> str:
    """The hint naming what works next for ``session`` (see ``sandbox.nextstep``)."""
    return next_step_hint(session_facts(settings, session))


def next_commands_for(settings: Settings, session: Session) -> list[str]:
    """The commands that work next for ``session`` (see ``sandbox.nextstep``)."""
    from sandboxrun.sandbox.nextstep import next_commands

    return next_commands(session_facts(settings, session))


def reconcile(
    settings: Settings, store: SessionStore, session: Session, *, probe: bool = False
) -> Session:
    """Make an active session's state true when nothing drives it any more.

    A session with no live driver whose sandbox is gone becomes ``lost`` (saying whether it
    expired, and what of the work was kept) instead of showing ``running`` with no time left.
    Without ``probe`` only the clock decides (the sandbox's end, as E2B last accepted it, has
    passed): no network call. With ``probe`` the backend is asked whether the sandbox exists.
    """
    from sandboxrun.sandbox.checkpoint import mark_lost

    if session.is_terminal or owner_alive(session) or not session.sandbox_id:
        return session
    now = time.time()
    expired = session.sandbox_end is not None and now >= session.sandbox_end + EXPIRY_SLACK
    gone = expired
    if not gone and probe and session.agent_pgid is not None:
        try:
            get_backend(session.backend, settings).connect(session.sandbox_id)
        except SandboxLostError:
            gone = True
        except SandboxrunError as exc:  # cannot tell (network, key): leave it as it is
            log.info("cannot check the sandbox of %s: %s", session.name, exc)
    if not gone:
        return session
    if session.sandbox_end is not None and now >= session.sandbox_end:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(session.sandbox_end))
        why = f"the sandbox expired at {when} while no sandboxrun process followed it"
    else:
        why = "the sandbox is gone (E2B no longer knows it) and no sandboxrun process followed it"
    mark_lost(store, session, settings.session_artifacts(session.id), why)
    return store.get(session.id)


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

    session = reconcile(settings, store, session)
    if session.is_terminal:
        raise UsageError(
            f"session {session.name} already ended ({session.status})",
            next_step(settings, session),
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

    session = reconcile(settings, store, session)
    if session.is_terminal:
        raise UsageError(
            f"session {session.name} already ended ({session.status})",
            next_step(settings, session),
        )
    if owner_alive(session):
        raise UsageError(
            f"session {session.name} is still driven by process {session.owner_pid}",
            next_step(settings, session),
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
    from sandboxrun.sandbox.checkpoint import download_live

    # A live sandbox (running, or kept after the end) has the freshest work; it is streamed
    # to the files, retried and resumed (sandbox.checkpoint).
    if session.sandbox_id and session.sandbox_base:
        backend = get_backend(session.backend, settings)
        try:
            sandbox = backend.connect(session.sandbox_id)
            manifest = download_live(sandbox, session, output)
        except SandboxLostError:
            manifest = None
        if manifest is not None:
            files = [output / "commits.mbox", output / "changes.diff"]
            return Download(output, files, live=True, agent_commits=manifest.commits)
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
            "The agent has not started, or its sandbox was gone before any checkpoint was "
            "saved. " + next_step(settings, session),
        )
    return Download(output, files, live=False)


def extend_session(
    settings: Settings, store: SessionStore, session: Session, seconds: float
) -> Session:
    """Push the session's time limit (ours and the sandbox's) by ``seconds``.

    The sandbox goes first: our deadline moves only once E2B has accepted (and we have read
    back) the sandbox's new end, which keeps the same room for collecting after the limit.
    If E2B refuses or cannot be reached, nothing changes and the error says so.
    """
    from sandboxrun.sandbox.checkpoint import extend_sandbox

    session = reconcile(settings, store, session)
    if session.is_terminal:
        raise UsageError(
            f"session {session.name} already ended ({session.status})",
            next_step(settings, session),
        )
    if session.status == "collecting" or session.stop_reason:
        raise UsageError(
            f"session {session.name} is already collecting its agent's work; its limit no "
            "longer matters",
            next_step(settings, session),
        )
    now = time.time()
    base = session.deadline or now
    deadline = base + seconds
    started = session.started_at or now
    fields: dict = {"deadline": deadline, "timeout_s": deadline - started}
    if session.sandbox_id and session.sandbox_end is not None:
        reserve = max(settings.grace, session.sandbox_end - base)
        end = deadline + reserve
        cap = (session.sandbox_created_at or now) + settings.max_lifetime
        unchanged = (f"the limit is unchanged ({time.strftime('%H:%M:%S', time.localtime(base))}"
                     ")")  # fmt: skip
        if end > cap:
            raise UsageError(
                f"cannot extend {session.name} by {format_duration(seconds)}: its sandbox would "
                f"outlive the plan's maximum lifetime (max_lifetime "
                f"{format_duration(settings.max_lifetime)}); {unchanged}",
                "E2B allows 1 h per sandbox on Hobby and 24 h on Pro; on Pro set "
                '`max_lifetime = "24h"` in .sandboxrun.toml (or SANDBOXRUN_MAX_LIFETIME).',
            )
        try:
            sandbox = get_backend(session.backend, settings).connect(session.sandbox_id)
            confirmed = extend_sandbox(sandbox, end)
        except SandboxLostError as exc:
            raise SandboxrunError(
                f"the sandbox of {session.name} is gone: {exc.message}",
                f"See `sandboxrun status {session.name}`: its last checkpoint is kept.",
            ) from exc
        except SandboxrunError as exc:
            raise SandboxrunError(
                f"E2B did not extend the sandbox of {session.name}: {exc.message}; {unchanged}",
                "Nothing was changed. Check E2B_API_KEY and the network, then try "
                f"`sandboxrun extend {session.name} {format_duration(seconds)}` again.",
            ) from exc
        if confirmed is not None:
            fields["sandbox_end"] = confirmed
    elif session.sandbox_id:
        try:
            sandbox = get_backend(session.backend, settings).connect(session.sandbox_id)
            sandbox.set_timeout(deadline - now)
        except SandboxLostError as exc:
            raise SandboxrunError(f"the sandbox of {session.name} is gone: {exc.message}") from exc
    store.update(session.id, **fields)
    store.add_event(session.id, "phase", {"phase": "extended", "detail": f"+{seconds:g}s"})
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
        if not dry_run:
            # an upload tarball left by a run killed mid-upload (SIGKILL skips our cleanup)
            for stale in settings.session_artifacts(s.id).glob("upload.tar*"):
                stale.unlink(missing_ok=True)
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
