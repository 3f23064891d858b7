"""Starting a sandbox run: the one path behind ``sandboxrun run`` and the MCP ``run_in_sandbox``.

:func:`start_run` prepares the run (:func:`~sandboxrun.sandbox.prepare.prepare_run`: checks,
worktree, branch, session), says what the person should know before the agent starts (the
notes: no isolation, uncommitted changes left out, secrets not carried, submodules), and when
detached starts the background driver (``sandboxrun _drive SESSION``, through
:func:`~sandboxrun.sandbox.detach.start_driver_process` as the fan-out drivers are) that
carries the run to its end and outlives the caller. Driving in the foreground stays with the
caller (the CLI's live view). Core: no typer, rich or fastmcp.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.sandbox import submodules
from sandboxrun.sandbox.detach import start_driver_process
from sandboxrun.sandbox.prepare import RunRequest, prepare_run
from sandboxrun.store import Session, SessionStore


@dataclass(frozen=True)
class StartedRun:
    """A prepared run: its session, the notes for the person, the driver's pid if detached."""

    session: Session
    notes: list[str] = field(default_factory=list)
    driver_pid: int | None = None


def start_run(
    settings: Settings, store: SessionStore, req: RunRequest, *, detach: bool
) -> StartedRun:
    """Prepare the run, collect its notes and, with ``detach``, start its background driver."""
    session = prepare_run(settings, store, req)
    notes = start_notes(session, req)
    pid = start_driver(settings, store, session) if detach else None
    return StartedRun(session, notes, pid)


def start_notes(session: Session, req: RunRequest) -> list[str]:
    """What a person should know before the agent starts, one sentence each."""
    options = session.options
    notes: list[str] = []
    if options.get("isolation_warning"):
        notes.append(str(options["isolation_warning"]))
    from_head = not req.with_changes and req.base == "HEAD"
    if from_head and changes_left_out(Path(session.repo or req.repo)):
        notes.append(
            "the agent starts from your last commit; uncommitted changes in "
            f"{session.repo} are not included (--with-changes includes them)"
        )
    if options.get("secrets_not_carried"):
        notes.append(
            "not carried into the branch (secrets deny-list): "
            + ", ".join(options["secrets_not_carried"])
        )
    if options.get("included_submodules"):
        notes.append(submodules.included_note(options["included_submodules"]))
    elif options.get("submodules"):
        notes.append(submodules.left_out_note(options["submodules"]))
    return notes


def changes_left_out(repo: Path) -> list[str]:
    """Uncommitted paths a run from HEAD leaves out; untracked secrets (never uploaded with
    or without --with-changes, per the deny-list) do not count."""
    from sandboxrun.sync.secrets import name_reason

    out = gitops.git(repo, "status", "--porcelain", "-z", "--untracked-files=all").stdout
    paths = []
    for entry in out.split("\0"):
        code, path = entry[:2], entry[3:]
        if not entry or (code == "??" and name_reason(path) is not None):
            continue
        paths.append(path)
    return paths


def start_driver(settings: Settings, store: SessionStore, session: Session) -> int:
    """Start ``sandboxrun _drive SESSION`` in its own session (recorded as the session's owner);
    its pid. It runs with this very ``SANDBOXRUN_HOME``, so it finds the same database."""
    pid = start_driver_process(
        ["_drive", session.id],
        log=settings.session_artifacts(session.id) / "driver.log",
        home=settings.home,
    )
    store.update(session.id, owner_pid=pid, owner_host=os.uname().nodename)
    return pid
