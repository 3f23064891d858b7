"""`sandboxrun run`: one agent, one branch, from plan to commits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sandboxrun.cli.common import (
    console,
    err_console,
    open_store,
    print_json_line,
    say,
    settings_for,
)
from sandboxrun.cli.render import print_dry_run, print_summary, session_json
from sandboxrun.cli.reporters import JsonReporter, LiveReporter
from sandboxrun.config import Settings
from sandboxrun.errors import UsageError
from sandboxrun.sandbox.reporting import Reporter
from sandboxrun.sandbox.request import run_request
from sandboxrun.sandbox.runner import RunDriver
from sandboxrun.sandbox.start import start_run
from sandboxrun.store import SUCCESS, Session, SessionStore

RUN_HELP = """Run Claude Code on a prompt in a sandbox and commit its work on a new branch.

Creates worktree .worktrees/NAME on branch sandboxrun/NAME (from --base), packs it (honouring
.gitignore and .sandboxrunignore, never uploading secrets such as .env or keys), runs
`claude -p --dangerously-skip-permissions` in the sandbox, streams its progress, warns at the
--warn-at marks, stops it shortly before --timeout, and commits what it did on the branch.

Exits 0 only when the agent finished and its work was brought back.

\b
Examples:
  sandboxrun run --backend local --dry-run --prompt "hello"   # no API keys needed
  sandboxrun run --prompt-file plans/add-tests.md --timeout 45m
  sandboxrun run --prompt "fix the flaky test" --detach && sandboxrun logs NAME --follow
"""


def _one(flag: str, values: list) -> Any:
    """The single value given for ``flag``, None if absent; two or more is a usage error."""
    if len(values) > 1:
        shown = ", ".join(str(v) for v in values)
        raise UsageError(
            f"{flag} was given {len(values)} times ({shown}); a run has one task",
            "Put the whole task in one file (or one text), or start one run per task.",
        )
    return values[0] if values else None


def run(
    # Lists, so that a second --prompt/--prompt-file is an error instead of silently winning.
    prompts: list[str] = typer.Option(None, "--prompt", "-p", help="The task, as text."),
    prompt_files: list[Path] = typer.Option(
        None, "--prompt-file", "-f", help="A file with the task (e.g. PLAN.md)."
    ),
    repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: here)."),
    name: str = typer.Option(
        None,
        "--name",
        "-n",
        help="Session name; also the branch sandboxrun/NAME. "
        "Default: the prompt file's stem plus a short suffix.",
    ),
    base: str = typer.Option("HEAD", "--base", help="Branch, tag or commit to start from."),
    backend: str = typer.Option(
        None,
        "--backend",
        "-b",
        help="e2b (default when E2B_API_KEY is set) or local "
        "(a directory on this machine, confined with bubblewrap on Linux).",
    ),
    timeout: str = typer.Option(
        None, "--timeout", help="Hard time limit: 90s, 20m, 1h. Default 60m."
    ),
    warn_at: str = typer.Option(
        None,
        "--warn-at",
        help="Comma-separated warning marks before --timeout. Default 30m,50m "
        "(those past a shorter --timeout are dropped); none: no warnings.",
    ),
    model: str = typer.Option(None, "--model", help="Claude model for the agent."),
    max_turns: int = typer.Option(
        None, "--max-turns", min=1, help="Stop the agent after N turns (1 or more)."
    ),
    template: str = typer.Option(None, "--template", help="E2B template name."),
    compression: str = typer.Option(
        None, "--compression", help="Upload compression: gzip (default) or zstd."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the sandbox after the run."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="The whole round trip without the agent: pack, "
        "upload, unpack, verify, collect. No API key needed.",
    ),
    detach: bool = typer.Option(
        False,
        "--detach",
        "-d",
        help="Continue in the background; follow with `sandboxrun logs NAME --follow`.",
    ),
    with_changes: bool = typer.Option(
        False,
        "--with-changes",
        help="Start from your uncommitted and untracked changes (committed first on the branch).",
    ),
    include_submodules: bool = typer.Option(
        False,
        "--include-submodules",
        help="Upload the submodules' files too, at the commits the base records (config: "
        "include_submodules). Changes inside them come back as a patch per submodule, "
        "not applied to the branch.",
    ),
    allow_sensitive: bool = typer.Option(
        False,
        "--allow-sensitive",
        help="Accept agent changes to .claude/, .mcp.json, CI workflows and other sensitive paths.",
    ),
    allow_claimed: bool = typer.Option(
        False,
        "--allow-claimed",
        help="Apply agent changes to files another live session holds an exclusive claim on "
        "(held back by default, kept in refused.diff).",
    ),
    install_claude: bool = typer.Option(
        False,
        "--install-claude",
        help="If the E2B template has no Claude Code, install the pinned release with npm "
        "in the sandbox (slower than a template that has it: `sandboxrun template build`).",
    ),
    update_claude: bool = typer.Option(
        False, "--update-claude", help="Run `claude update` in the sandbox first."
    ),
    no_isolation: bool = typer.Option(
        False,
        "--no-isolation",
        help="--backend local only: run the agent WITHOUT bubblewrap, as you, able to write "
        "anywhere you can (recorded on the session). Only for machines without bwrap.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print events as JSON lines."),
) -> None:
    prompt = _one("--prompt", prompts or [])
    prompt_file = _one("--prompt-file", prompt_files or [])
    if prompt_file is not None and prompt is not None:
        raise UsageError(
            "give --prompt or --prompt-file, not both",
            'e.g. --prompt-file PLAN.md, or --prompt "fix the failing test"',
        )
    settings, req = run_request(
        settings_for(repo),
        repo,
        prompt=prompt,
        prompt_file=prompt_file,
        name=name,
        base=base,
        backend=backend,
        timeout=timeout,
        warn_at=warn_at,
        model=model,
        max_turns=max_turns,
        template=template,
        compression=compression,
        include_submodules=True if include_submodules else None,  # else: the config's
        keep=keep,
        dry_run=dry_run,
        allow_sensitive=allow_sensitive,
        with_changes=with_changes,
        allow_claimed=allow_claimed,
        install_claude=install_claude,
        update_claude=update_claude,
        no_isolation=no_isolation,
    )
    store = open_store(settings)
    started = start_run(settings, store, req, detach=detach)
    session = started.session
    for note in started.notes:
        say((f"! {note}", "yellow"), err=True)
    if started.driver_pid is not None:
        pid = started.driver_pid
        if json_out:
            print_json_line(
                {
                    "session": session.id,
                    "name": session.name,
                    "branch": session.branch,
                    "detached_pid": pid,
                }
            )
        else:
            console.print(
                f"Started {session.name} ({session.id}) in the background "
                f"on branch {session.branch}.",
                highlight=False,
            )
            console.print(
                f"  Follow: sandboxrun logs {session.name} --follow\n"
                f"  Status: sandboxrun status {session.name}\n"
                f"  Stop:   sandboxrun kill {session.name}",
                highlight=False,
            )
        return
    if json_out:
        final = _drive(settings, store, session, JsonReporter(session))
        print_json_line({"session": final.id, "kind": "end", **session_json(final)})
    else:
        err_console.print(
            f"Session {session.name} ({session.id}) on branch {session.branch}", highlight=False
        )
        with LiveReporter(session) as reporter:
            final = _drive(settings, store, session, reporter)
        if final.options.get("dry_run"):
            print_dry_run(store, final)
        print_summary(final)
    if final.status not in SUCCESS:
        raise typer.Exit(1)


def _drive(
    settings: Settings, store: SessionStore, session: Session, reporter: Reporter
) -> Session:
    return RunDriver(settings, store, session, reporter).execute()


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command("run", help=RUN_HELP)(run)
