"""Commands on existing sessions: status, logs, kill, download, attach, extend, cleanup."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from sandboxrun.cli.common import (
    console,
    open_store,
    print_json,
    print_json_line,
    repo_scope,
    say,
    settings_for,
)
from sandboxrun.cli.render import (
    format_event,
    format_when,
    print_one,
    print_status_table,
    print_summary,
    session_json,
)
from sandboxrun.config import format_duration, parse_duration
from sandboxrun.errors import UsageError
from sandboxrun.redact import Redactor
from sandboxrun.store import SUCCESS


def status(
    session: str = typer.Argument(
        None, help="Session id, id prefix or name (default: this repository's sessions)."
    ),
    active: bool = typer.Option(False, "--active", help="Only sessions still running."),
    all_repos: bool = typer.Option(False, "--all", help="Sessions of every repository."),
    repo: Path = typer.Option(
        None, "--repo", help="Sessions of the repository at PATH (default: the one you are in)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
) -> None:
    """Show sessions: status, branch, age, time left, isolation, turns, cost.

    A run whose process died before its agent started shows as `interrupted`
    (`sandboxrun kill NAME` ends it).

    Without SESSION: the sessions of the repository you are in (all of them outside a
    repository); --all for every repository, --repo PATH for another one.
    """
    from sandboxrun.sandbox.sessions import next_commands_for, reconcile

    settings = settings_for(None)
    store = open_store(settings)
    if session and _group_command("status", store, session, json_out=json_out):
        return
    if session:
        # A sandbox gone with nobody following it shows as lost, not as running.
        one = reconcile(settings, store, store.resolve(session), probe=True)
        if json_out:
            print_json([{**session_json(one), "next": next_commands_for(settings, one)}])
        else:
            print_one(one)
            for command in next_commands_for(settings, one):
                console.print(f"  next: {command}")
        return
    scope = repo_scope(all_repos, repo)
    sessions = store.list(repo=str(scope) if scope else None, active_only=active)
    sessions = [reconcile(settings, store, s, probe=True) for s in sessions]
    if active:
        sessions = [s for s in sessions if not s.is_terminal]
    if json_out:
        print_json([{**session_json(s), "next": next_commands_for(settings, s)} for s in sessions])
        return
    if sessions:
        print_status_table(
            sessions, show_repo=scope is None and len({s.repo for s in sessions}) > 1
        )
        return
    where = f" for {scope}" if scope else ""
    elsewhere = len(store.list(active_only=active)) if scope else 0
    also = f" ({elsewhere} in other repositories: sandboxrun status --all)" if elsewhere else ""
    if active:
        console.print(f"No active sessions{where}.{also}")
    elif elsewhere:
        console.print(f"No sessions{where} yet.{also}")
    else:
        console.print(
            f"No sessions{where} yet. Start one with `sandboxrun run --prompt-file PLAN.md`."
        )


def logs(
    session: str = typer.Argument(..., help="Session id, id prefix or name."),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-F",
        help="Keep printing until the session ends; exit 1 if it ended failed or lost.",
    ),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="Print the agent's raw stream-json lines only (credential values redacted; "
        "lines over 64 KiB are cut: the agent.log artifact has them whole).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print stored events as JSON lines."),
) -> None:
    """Print a session's events (phases, agent actions, warnings), from any terminal."""
    from sandboxrun.sandbox.interrupted import describe as describe_interrupted
    from sandboxrun.sandbox.interrupted import interrupted, next_hint
    from sandboxrun.sandbox.sessions import reconcile

    settings = settings_for(None)
    store = open_store(settings)
    if _group_command("logs", store, session, follow=follow, json_out=json_out):
        return
    s = store.resolve(session)
    # stored events are redacted when written; this also covers credentials of this shell
    redact = Redactor.from_env(os.environ)
    last = 0
    while True:
        kinds = ("stdout",) if raw else None
        for ev in store.events(s.id, after_id=last, kinds=kinds):
            last = ev["id"]
            if json_out:
                print_json_line(redact.obj(ev))
            elif raw:
                payload = ev["payload"] if isinstance(ev["payload"], dict) else {}
                typer.echo(redact.text(str(payload.get("line", ""))))
            else:
                line = format_event(ev)
                if line is not None:
                    typer.echo(redact.text(line))
        if not follow:
            return
        current = reconcile(settings, store, store.get(s.id))
        if interrupted(current):  # its start died: nothing more will come
            say((f"{current.name}: {describe_interrupted(current)}. ", "yellow"),
                next_hint(current), err=True)  # fmt: skip
            raise typer.Exit(1)
        if current.is_terminal:
            # one last pass for events written with the final status
            if not store.events(s.id, after_id=last, limit=1):
                if current.status in ("failed", "lost"):
                    raise typer.Exit(1)  # a script following a run learns how it ended
                return
            continue
        time.sleep(0.3)


def kill(
    session: str = typer.Argument(..., help="Session id, id prefix or name."),
    discard: bool = typer.Option(
        False, "--discard", help="Throw the agent's work away instead of collecting it."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the final session as JSON."),
) -> None:
    """Stop a running session's agent, collect its work (unless --discard), tear down.

    A run interrupted before its agent started is ended, and what its start left is removed:
    its upload tarball, its sandbox, and its worktree and branch only if they hold no work.
    """
    from sandboxrun.sandbox.sessions import kill_session

    settings = settings_for(None)
    store = open_store(settings)
    if _group_command("kill", store, session, settings=settings, json_out=json_out):
        return
    s = kill_session(settings, store, store.resolve(session), discard=discard)
    if json_out:
        print_json(session_json(s))
    else:
        console.print(f"{s.name}: {s.status}. {s.error or ''}", highlight=False)
        if s.result_commits:
            console.print(f"  {len(s.result_commits)} commit(s) on {s.branch}", highlight=False)


def download(
    session: str = typer.Argument(..., help="Session id, id prefix or name."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Directory to write into (default ./sandboxrun-NAME)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a session's current work (changes.diff, commits.txt, the commits) without stopping it."""
    from sandboxrun.sandbox.sessions import download_session

    settings = settings_for(None)
    store = open_store(settings)
    s = store.resolve(session)
    out = output or Path(f"sandboxrun-{s.name}")
    result = download_session(settings, store, s, out)
    if json_out:
        print_json(
            {
                "directory": str(result.directory),
                "live": result.live,
                "files": [str(f) for f in result.files],
                "agent_commits": result.agent_commits,
                "commands": result.commands,
                "base": result.base,
            }
        )
        return
    source = "the running sandbox" if result.live else "the saved artifacts"
    console.print(
        f"Wrote {len(result.files)} file(s) from {source} to {result.directory}:",
        highlight=False,
    )
    for f in result.files:
        console.print(f"  {f} ({f.stat().st_size:,} bytes)", highlight=False)
    console.print(
        f"Apply on a branch at {result.base[:12]} (where this work starts) with either of:"
    )
    for command in result.commands:
        console.print(f"  {command}")


def attach(
    session: str = typer.Argument(..., help="Session id, id prefix or name."),
    allow_claimed: bool = typer.Option(
        False,
        "--allow-claimed",
        help="When its work is applied now: also to files another session claimed.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print events as JSON lines."),
) -> None:
    """Reconnect to a run whose `run` process died and carry on following and collecting.

    A run that died before its agent started has nothing to follow: attach ends it (failed)
    and removes what its start left, as `kill` does.
    For a run that ended `lost` (its sandbox gone while nobody followed it), lands its last
    checkpoint: on its branch, or on a side ref when the branch moved (`status` never does).
    """
    from sandboxrun.cli.reporters import JsonReporter, LiveReporter
    from sandboxrun.sandbox.sessions import attach_session

    settings = settings_for(None)
    store = open_store(settings)
    if _group_command("attach", store, session, settings=settings, json_out=json_out):
        return
    s = store.resolve(session)
    if allow_claimed and not s.options.get("allow_claimed"):
        store.update(s.id, options={**s.options, "allow_claimed": True})
        s = store.get(s.id)
    if json_out:
        final = attach_session(settings, store, s, JsonReporter(s))
        print_json_line({"session": final.id, "kind": "end", **session_json(final)})
    else:
        with LiveReporter(s) as reporter:
            final = attach_session(settings, store, s, reporter)
        print_summary(final)
    if final.status not in SUCCESS:
        raise typer.Exit(1)


def extend(
    session: str = typer.Argument(..., help="Session id, id prefix or name."),
    duration: str = typer.Argument(..., help="How much longer: 90s, 20m, 1h."),
    json_out: bool = typer.Option(False, "--json", help="Print the session as JSON."),
) -> None:
    """Push a running session's time limit (and its sandbox's) back by DURATION.

    On E2B the limit moves only once E2B has confirmed the sandbox's new end; if E2B refuses
    or does not answer within 45 s (SANDBOXRUN_E2B_EXTEND_TIMEOUT), nothing changes (exit 1).
    """
    from sandboxrun.sandbox.sessions import extend_session

    try:
        seconds = parse_duration(duration)
    except UsageError as exc:  # name the argument: DURATION, not some duration
        why = "" if exc.message.startswith("invalid") else f" ({exc.message})"
        raise UsageError(f"invalid DURATION {duration!r}{why}", exc.hint) from exc
    settings = settings_for(None)
    store = open_store(settings)
    s = extend_session(settings, store, store.resolve(session), seconds)
    if json_out:
        print_json(session_json(s))
        return
    console.print(
        f"{s.name}: limit now {format_when(s.deadline)} "
        f"({format_duration((s.deadline or time.time()) - time.time())} from now).",
        highlight=False,
    )


def cleanup(
    worktrees: bool = typer.Option(
        False,
        "--worktrees",
        help="Also remove clean worktrees of ended sessions (branches are kept).",
    ),
    branches: bool = typer.Option(
        False,
        "--branches",
        help="Also delete sandboxrun/* branches fully merged into their base (never one with "
        "unmerged commits, one checked out, or one a running session uses).",
    ),
    forget: bool = typer.Option(
        False,
        "--forget",
        help="Also delete ended sessions from the database (what they leave on disk is listed).",
    ),
    all_repos: bool = typer.Option(False, "--all", help="Sessions of every repository."),
    repo: Path = typer.Option(
        None, "--repo", help="Sessions of the repository at PATH (default: the one you are in)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be done."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Tear down sandboxes left by ended sessions of this repository (--all: every one).

    Also removes upload tarballs (whole or partial) left by ended runs and by runs interrupted
    before their agent started (those stay listed: `sandboxrun kill NAME` ends them).
    Never deletes a dirty worktree, an unmerged branch or uncommitted work.

    \b
    Examples:
      sandboxrun cleanup --dry-run                 # what would go
      sandboxrun cleanup --worktrees --branches    # clean worktrees, then merged branches
      sandboxrun cleanup --forget --all            # forget ended sessions of every repository
    """
    from dataclasses import asdict

    from sandboxrun.sandbox.sessions import cleanup as cleanup_sessions

    scope = repo_scope(all_repos, repo)
    if scope is None and not all_repos:
        raise UsageError(
            f"{Path.cwd()} is not inside a git repository",
            "Run cleanup from the repository, pass --repo PATH, or --all for every repository.",
        )
    settings = settings_for(None)
    store = open_store(settings)
    report = cleanup_sessions(
        settings,
        store,
        worktrees=worktrees,
        forget=forget,
        dry_run=dry_run,
        repo=str(scope) if scope else None,
        branches=branches,
    )
    if json_out:
        print_json(asdict(report))
        return
    would = dry_run
    counts = [
        f"{len(report.sandboxes_removed)} sandbox(es)",
        f"{len(report.worktrees_removed)} worktree(s)",
    ]
    if branches:
        counts.append(f"{len(report.branches_deleted)} branch(es)")
    console.print(
        f"{'Would remove' if would else 'Removed'} {', '.join(counts)}; "
        f"{'would forget' if would else 'forgot'} {len(report.forgotten)} session(s)."
    )
    for path in report.worktrees_removed:
        console.print(f"  {'would remove' if would else 'removed'} worktree {path}")
    for branch in report.branches_deleted:
        console.print(f"  {'would delete' if would else 'deleted'} branch {branch}")
    for kept in report.branches_kept:
        console.print(f"  kept branch {kept['branch']}: {kept['reason']}")
    for path in report.kept_dirty:
        console.print(f"  kept {path}: it has uncommitted changes")
    for left in report.left_behind:
        where = []
        if left["worktree"]:
            where.append(f"worktree {left['worktree']} (branch {left['branch']})")
        if left["artifacts"]:
            where.append(f"patches and logs in {left['artifacts']}")
        console.print(
            f"  {left['name']} {'would be' if would else 'is'} forgotten; still on disk: "
            + "; ".join(where)
        )
    for path in report.files_removed:
        console.print(f"  {'would remove' if would else 'removed'} {path}")
    for name in report.interrupted:
        console.print(
            f"  {name} was interrupted before its agent started: `sandboxrun kill {name}` "
            "ends it (and removes its worktree if it holds no work)"
        )
    for name in report.orphans:
        console.print(
            f"  {name} is active but nothing follows it: "
            f"`sandboxrun attach {name}` or `sandboxrun kill {name}`"
        )


def _group_command(command: str, store: Any, ref: str, **kw: Any) -> bool:
    """Run ``command`` on the fan-out group named ``ref``; False when no group has that name."""
    from sandboxrun.cli.fanout_cmd import attach_group, group_logs, kill_group, print_group
    from sandboxrun.fanout.groups import find_group

    group = find_group(store, ref)
    if group is None:
        return False
    if command == "status":
        print_group(store, group, kw["json_out"])
    elif command == "logs":
        group_logs(store, group, kw["follow"], format_event, kw["json_out"])
    elif command == "kill":
        kill_group(kw["settings"], store, group, kw["json_out"])
    else:
        attach_group(kw["settings"], store, group, kw["json_out"])
    return True


def register(app: typer.Typer) -> None:
    """Add the session commands to ``app``."""
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("kill")(kill)
    app.command("download")(download)
    app.command("attach")(attach)
    app.command("extend")(extend)
    app.command("cleanup")(cleanup)
