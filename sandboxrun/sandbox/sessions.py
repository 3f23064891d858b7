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
from sandboxrun.config import DRIVER_KEYS, Settings, format_duration
from sandboxrun.errors import SandboxLostError, SandboxrunError, UsageError
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.gitpack import Patches, collect_patches, save_artifacts
from sandboxrun.sandbox.interrupted import (
    finish_interrupted,
    interrupted,
    leftovers,
)
from sandboxrun.sandbox.reporting import Reporter
from sandboxrun.sandbox.statecheck import (  # noqa: F401  (next_step*: callers import them here)
    _hinted,
    check_state,
    next_commands_for,
    next_step,
    next_step_on_error,
    session_facts,
)
from sandboxrun.store import Session, SessionStore, owner_alive

log = logging.getLogger(__name__)

#: a sandbox whose end passed this long ago, with no driver, is taken as gone (E2B's clock
#: and ours may differ by a little)
EXPIRY_SLACK = 10.0


def reconcile(
    settings: Settings, store: SessionStore, session: Session, *, probe: bool = False
) -> Session:
    """Make an active session's state true when nothing drives it any more.

    A session with no live driver whose sandbox is gone becomes ``lost`` (saying whether it
    expired, and what of the work was kept) instead of showing ``running`` with no time left.
    Without ``probe`` only the clock decides (the sandbox's end, as E2B last accepted it, has
    passed): no network call. With ``probe`` the backend is asked whether the sandbox exists.
    """
    from sandboxrun.sandbox.apply import has_collection
    from sandboxrun.sandbox.checkpoint import mark_lost

    if session.is_terminal or owner_alive(session) or not session.sandbox_id:
        return session
    if interrupted(session):  # its agent never started: nothing was lost (sandbox.interrupted)
        return session
    if has_collection(settings.session_artifacts(session.id)):
        # The whole collection is verified in the artifacts (the sandbox may be torn down on
        # purpose): not lost; `attach` or `sandboxrun apply` lands it.
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


@_hinted
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
    check_state("kill", settings, session)
    if not owner_alive(session):
        settings.check(DRIVER_KEYS)  # we take the run over: before anything is stopped
    if interrupted(session):  # its start died: end it and remove what the start left
        return finish_interrupted(settings, store, session, killed=True).session
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


@_hinted
def attach_session(
    settings: Settings, store: SessionStore, session: Session, reporter: Reporter | None = None
) -> Session:
    """Take over a session whose driving process died, and carry it to its end.

    For a session that ended ``lost`` (found so by ``status``, say) with its last checkpoint
    not landed yet, carrying it to its end is landing that checkpoint (``status`` never writes
    to a branch).
    """
    from sandboxrun.sandbox.checkpoint import checkpoint_pending, land_checkpoint
    from sandboxrun.sandbox.runner import RunDriver

    session = reconcile(settings, store, session)
    artifacts = settings.session_artifacts(session.id)
    if session.status == "lost" and checkpoint_pending(artifacts):
        note = land_checkpoint(store, session, artifacts, stale_after=settings.stale_after)
        if reporter is not None:
            reporter.warning(note)
        return store.get(session.id)
    check_state("attach", settings, session)
    settings.check(DRIVER_KEYS)
    if interrupted(session):  # nothing to follow: end it and remove what the start left
        return finish_interrupted(settings, store, session, killed=False).session
    return RunDriver(settings, store, session, reporter).resume()


@dataclass
class Download:
    """Where ``download`` wrote a session's work, and how to apply it."""

    directory: Path
    files: list[Path]
    live: bool  # True when taken from the running sandbox, False from saved artifacts
    agent_commits: int | None = None
    commands: list[str] = field(default_factory=list)  # each applies the work on its own
    base: str = ""  # the commit a branch must be at for ``commands`` to apply


def _output_directory(output: Path) -> Path:
    """``output`` made (with its parents) and returned absolute; a path that is a file, or that
    cannot be made, is an error naming it (before anything is read or written)."""
    output = output.resolve()
    if output.exists() and not output.is_dir():
        raise UsageError(
            f"{output} is not a directory",
            "Pass --output with a directory to write into (made if missing).",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxrunError(
            f"cannot create {output}: {exc.strerror}",
            "Pass --output with a directory you can write to.",
        ) from exc
    return output


@_hinted
def download_session(
    settings: Settings, store: SessionStore, session: Session, output: Path
) -> Download:
    """Write the session's current work to ``output`` without stopping it.

    ``output`` gets the collection itself (``objects/``, ``collect.out``: what
    ``sandboxrun apply --from`` lands, with the agent's commits) and, built from it and checked
    like a run's own, ``changes.diff`` (every accepted change as one binary-safe diff, whether
    or not the agent committed), ``commits.txt`` and ``refused.diff`` when a check kept
    something back.
    """
    import shlex

    from sandboxrun.sandbox.apply import expected_commit, has_collection, load_state, save_state
    from sandboxrun.sandbox.checkpoint import checkpoint_dir
    from sandboxrun.sandbox.gitpack import known_blobs
    from sandboxrun.sync.replay import BASELINE_PACK, Quarantine, build_plan, hooks_path_pattern

    check_state("download", settings, session)  # before anything is made on disk
    output = _output_directory(Path(output))
    artifacts = settings.session_artifacts(session.id)
    patches: Patches | None = None
    # A live sandbox (running, or kept after the end) has the freshest work.
    if session.sandbox_id and session.sandbox_base and not session.is_terminal:
        backend = get_backend(session.backend, settings)
        try:
            sandbox = backend.connect(session.sandbox_id)
            patches = collect_patches(
                sandbox, session, known=known_blobs(artifacts), subdir="download"
            )
        except SandboxLostError:
            patches = None
    live = patches is not None
    # Saved work: the final collection, else the last checkpoint (a lost sandbox's), which is
    # a collection of the same format (sandbox.checkpoint).
    source = artifacts if live or has_collection(artifacts) else checkpoint_dir(artifacts)
    if patches is not None:
        save_artifacts(output, patches)
    elif has_collection(source) and output != source.resolve():
        (output / "objects" / "pack").mkdir(parents=True, exist_ok=True)
        for pack in (source / "objects" / "pack").glob("*.pack"):
            shutil.copyfile(pack, output / "objects" / "pack" / pack.name)
        shutil.copyfile(source / "collect.out", output / "collect.out")
    if not has_collection(output):
        raise SandboxrunError(
            f"no work has been collected yet for session {session.name}",
            "The agent has not started, or its sandbox was gone before any checkpoint was "
            "saved. " + next_step(settings, session),
        )
    baseline = artifacts / "objects" / "pack" / f"{BASELINE_PACK}.pack"
    if baseline.exists():
        shutil.copyfile(baseline, output / "objects" / "pack" / f"{BASELINE_PACK}.pack")
    files = []
    for name in ("agent.log", "agent.stderr", "summary.json"):
        if not live and (artifacts / name).exists():
            shutil.copyfile(artifacts / name, output / name)
            files.append(output / name)
    # The commit the branch was at when this work was taken: what `apply --from` expects.
    state = load_state(source)
    expected = expected_commit(session, source)
    if state.get("applied") and not live:
        # Already on the branch: the diff is against where the run started.
        expected = str(session.options.get("branch_head") or session.base_commit)
    save_state(output, {"expected": expected})
    worktree = Path(str(session.worktree))
    plan = build_plan(worktree, output, expected, extra_sensitive=hooks_path_pattern(worktree))
    q = Quarantine(worktree, output)
    diff = q.raw("diff", "--binary", "--full-index", "--no-ext-diff", "--no-textconv",
                 "--no-color", plan.old, plan.new)  # fmt: skip
    (output / "changes.diff").write_bytes(diff)
    log_text = ""
    if plan.commits:
        log_text = q.git("log", "--format=%H %an <%ae> %ad%n    %s", "--date=iso",
                         f"{plan.old}..{plan.new}").stdout  # fmt: skip
    (output / "commits.txt").write_text(log_text)
    files[:0] = [output / "changes.diff", output / "commits.txt"]
    if plan.kept_patch:
        files.append(plan.kept_patch)
    commands = [f"sandboxrun apply {shlex.quote(session.name)} --from {shlex.quote(str(output))}"]
    if diff:
        commands.append(
            f"git -C {shlex.quote(str(worktree))} apply --index "
            f"{shlex.quote(str(output / 'changes.diff'))}"
        )
    return Download(output, files, live=live, agent_commits=patches.agent_commits if patches
                    else None, commands=commands, base=expected)  # fmt: skip


@_hinted
def extend_session(
    settings: Settings, store: SessionStore, session: Session, seconds: float
) -> Session:
    """Push the session's time limit (ours and the sandbox's) by ``seconds``.

    The sandbox goes first: our deadline moves only once E2B has accepted (and we have read
    back) the sandbox's new end, which keeps the same room for collecting after the limit.
    If E2B refuses or cannot be reached, nothing changes and the error says so.
    """
    from sandboxrun.sandbox.lifetime import extend_sandbox, extend_wait, within

    session = reconcile(settings, store, session)
    check_state("extend", settings, session)
    settings.check(("grace", "max_lifetime"))
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
        backend, sandbox_id = get_backend(session.backend, settings), session.sandbox_id
        wait = extend_wait()  # (outside the try: a bad setting is its own error, not E2B's)
        try:
            # a person waits for the answer: bounded (a late success only gives more time,
            # and only an end read back is recorded, so nothing counts on it)
            confirmed = within(wait, lambda: extend_sandbox(backend.connect(sandbox_id), end))
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
            raise SandboxrunError(
                f"the sandbox of {session.name} is gone: {exc.message}",
                f"See `sandboxrun status {session.name}`: its last checkpoint is kept.",
            ) from exc
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
    #: what forgotten sessions leave on disk: {"name", "worktree", "branch", "artifacts"}
    left_behind: list[dict[str, str | None]] = field(default_factory=list)
    branches_deleted: list[str] = field(default_factory=list)
    #: {"branch", "repo", "reason"} for each sandboxrun branch kept
    branches_kept: list[dict[str, str]] = field(default_factory=list)
    #: active sessions whose start was interrupted (sandbox.interrupted): `kill` ends them
    interrupted: list[str] = field(default_factory=list)
    #: upload tarballs (whole or partial) removed
    files_removed: list[str] = field(default_factory=list)


#: a create E2B carried out after we gave up lives at most its provisioning margin (10 min):
#: failed E2B sessions without a sandbox are searched for one this long after they ended
LATE_CREATE_WINDOW = 1200.0


def _remove_sandbox(
    settings: Settings, s: Session, report: CleanupReport, dry_run: bool, store: SessionStore
) -> None:
    recent = time.time() - (s.ended_at or s.created_at) < LATE_CREATE_WINDOW
    if not s.sandbox_id and s.backend == "e2b" and s.status == "failed" and recent:
        # its create was never answered: E2B may have carried it out after all
        from sandboxrun.sandbox.backends.e2b_orphans import sweep

        found = sweep(get_backend(s.backend, settings), s.id, kill=not dry_run)  # type: ignore[arg-type]
        for sandbox_id in found:
            report.sandboxes_removed.append(s.name)
            if not dry_run:
                msg = f"killed sandbox {sandbox_id}: E2B started it after the run gave up"
                store.add_event(s.id, "warning", {"mark": "cleanup", "message": msg})
    if s.sandbox_id:
        backend = get_backend(s.backend, settings)  # a bad setting is an error, not "gone"
        try:
            sandbox = backend.connect(s.sandbox_id)
            if not dry_run:
                sandbox.destroy()
            report.sandboxes_removed.append(s.name)
        except SandboxrunError:
            pass  # already gone


def _remove(paths: list[Path], dry_run: bool) -> list[str]:
    """Delete ``paths`` (unless ``dry_run``); the ones deleted (or that would be)."""
    done = []
    for path in paths:
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
        done.append(str(path))
    return done


def cleanup(
    settings: Settings,
    store: SessionStore,
    *,
    worktrees: bool = False,
    forget: bool = False,
    dry_run: bool = False,
    repo: str | None = None,
    branches: bool = False,
) -> CleanupReport:
    """Tear down leftovers of ended sessions. Never deletes unmerged branches or uncommitted work.

    Works on the sessions of ``repo`` (a main checkout), or of every repository when None.
    Always: sandboxes (local directories, E2B sandboxes) of ended sessions that still exist
    (kept with --keep, or left by a crash). With ``worktrees``: the worktrees of ended sessions
    whose tree is clean (the branch stays). With ``forget``: ended sessions' rows and events;
    what they leave on disk (worktree, branch, artifacts) is reported in ``left_behind``. With
    ``branches``: ``sandboxrun/*`` branches fully merged into their base are deleted.
    Sessions whose driver died while active are listed as orphans (``sandboxrun attach``).
    """
    report = CleanupReport()
    sessions = store.list(repo=repo)
    for s in sessions:
        if not s.is_terminal:
            if interrupted(s):
                # its start died (sandbox.interrupted): the partial upload goes, the row stays
                # for `kill`/`attach` to end (they also remove an empty worktree)
                report.interrupted.append(s.name)
                report.files_removed.extend(_remove(leftovers(settings, s), dry_run))
                _remove_sandbox(settings, s, report, dry_run, store)
            elif not owner_alive(s):
                report.orphans.append(s.name)
            continue
        # an upload tarball, whole or partial, left by a run killed before it removed it
        report.files_removed.extend(_remove(leftovers(settings, s), dry_run))
        _remove_sandbox(settings, s, report, dry_run, store)
        worktree_stays = bool(s.worktree and Path(s.worktree).exists())
        if worktrees and worktree_stays and s.repo and s.worktree:
            if gitops.is_clean(Path(s.worktree)):
                if not dry_run:
                    gitops.remove_worktree(Path(s.repo), Path(s.worktree))
                report.worktrees_removed.append(s.worktree)
                worktree_stays = False
            else:
                report.kept_dirty.append(s.worktree)
        if forget:
            if not dry_run:
                store.delete(s.id)
            report.forgotten.append(s.name)
            artifacts = settings.session_artifacts(s.id)
            stays = {
                "worktree": s.worktree if worktree_stays else None,
                "artifacts": str(artifacts) if artifacts.exists() else None,
            }
            if any(stays.values()):
                report.left_behind.append({"name": s.name, "branch": s.branch, **stays})
    if branches:
        _cleanup_branches(settings, report, sessions, repo, dry_run)
    return report


def _cleanup_branches(
    settings: Settings,
    report: CleanupReport,
    sessions: list[Session],
    repo: str | None,
    dry_run: bool,
) -> None:
    from sandboxrun.sandbox.branches import delete_branch, review_branches

    repos = [repo] if repo else sorted({s.repo for s in sessions if s.repo})
    freed = frozenset(report.worktrees_removed)
    for r in repos:
        if not Path(r).is_dir():
            continue
        mine = [s for s in sessions if s.repo == r]
        for v in review_branches(Path(r), settings.branch_prefix, mine, freed_worktrees=freed):
            if v.delete and (dry_run or delete_branch(Path(r), v)):
                report.branches_deleted.append(v.branch)
            else:
                reason = v.reason if not v.delete else "it moved while cleaning up"
                report.branches_kept.append({"branch": v.branch, "repo": r, "reason": reason})
