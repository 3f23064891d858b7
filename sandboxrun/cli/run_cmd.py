"""`sandboxrun run`: one agent, one branch, from plan to commits."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sandboxrun import gitops, process
from sandboxrun.agent import AgentEvent, AgentProgress
from sandboxrun.cli.common import console, err_console, open_store, print_json_line, settings_for
from sandboxrun.cli.session_cmd import session_json
from sandboxrun.config import Settings, format_duration, parse_duration, parse_durations
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.sandbox.prepare import RunRequest, prepare_run
from sandboxrun.sandbox.reporting import Reporter
from sandboxrun.sandbox.runner import RunDriver
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


class LiveReporter:
    """Draws elapsed/remaining time, turns, tools, cost and the latest lines."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.phase_name = "starting"
        self.progress = AgentProgress()
        self.elapsed = 0.0
        self.remaining: float | None = None
        self.live = Live(self._render(), console=err_console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveReporter:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def _render(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        head = Text.assemble(
            (f"{self.session.name}", "bold"),
            f"  {self.phase_name}  ",
            f"elapsed {format_duration(self.elapsed)}",
            f"  left {format_duration(self.remaining)}" if self.remaining is not None else "",
            f"  turns {self.progress.turns}",
            f"  cost ${self.progress.cost_usd:.4f}" if self.progress.cost_usd is not None else "",
        )
        grid.add_row(head)
        if self.progress.tools:
            tools = ", ".join(f"{k}×{v}" for k, v in sorted(self.progress.tools.items()))
            grid.add_row(Text(f"tools: {tools}", style="dim"))
        for line in self.progress.last_lines:
            grid.add_row(Text(f"  {line}", overflow="ellipsis", no_wrap=True))
        return grid

    def phase(self, name: str, detail: str = "") -> None:
        self.phase_name = name
        self.live.console.print(f"[cyan]→ {name}[/cyan] {detail}", highlight=False)
        self.live.update(self._render())

    def agent_event(self, event: AgentEvent) -> None:
        self.progress.feed(event)
        if event.type in ("tool_use", "tool_error", "result", "rate_limit"):
            self.live.console.print(Text(f"  {event.summary}", style="dim"))
        self.live.update(self._render())

    def warning(self, message: str) -> None:
        self.live.console.print(f"[yellow]! {message}[/yellow]", highlight=False)

    def tick(self, progress: AgentProgress, elapsed: float, remaining: float | None) -> None:
        self.elapsed, self.remaining = elapsed, remaining
        self.live.update(self._render())


class JsonReporter:
    """Prints every event as one JSON line on stdout (`--json`)."""

    def __init__(self, session: Session) -> None:
        self.sid = session.id

    def phase(self, name: str, detail: str = "") -> None:
        print_json_line({"session": self.sid, "kind": "phase", "phase": name, "detail": detail})

    def agent_event(self, event: AgentEvent) -> None:
        print_json_line({"session": self.sid, "kind": "agent", **event.to_dict()})

    def warning(self, message: str) -> None:
        print_json_line({"session": self.sid, "kind": "warning", "message": message})

    def tick(self, progress: AgentProgress, elapsed: float, remaining: float | None) -> None:
        pass


def print_summary(session: Session) -> None:
    """The end-of-run summary a person can act on."""
    s = session
    ok = s.status in SUCCESS
    colour = "green" if ok else "red"
    console.print(f"\n[bold {colour}]{s.status}[/bold {colour}]  {s.name} ({s.id})")
    if s.error:
        console.print(f"  reason:   {s.error}", highlight=False)
    commits = s.result_commits or []
    duration = (s.ended_at or time.time()) - (s.started_at or s.created_at)
    console.print(f"  branch:   {s.branch}", highlight=False)
    console.print(f"  worktree: {s.worktree}", highlight=False)
    console.print(
        f"  commits:  {len(commits)}   files changed: {s.files_changed or 0} "
        f"(+{s.insertions or 0} -{s.deletions or 0})",
        highlight=False,
    )
    cost = f"${s.cost_usd:.4f}" if s.cost_usd is not None else "n/a"
    console.print(
        f"  cost:     {cost}   turns: {s.num_turns if s.num_turns is not None else 'n/a'}"
        f"   duration: {format_duration(duration)}",
        highlight=False,
    )
    if commits:
        console.print("\n  Review and merge:", highlight=False)
        console.print(
            f"    git -C {s.repo} log --stat {(s.base_commit or '')[:12]}..{s.branch}",
            highlight=False,
        )
        console.print(
            f"    git -C {s.repo} diff {(s.base_commit or '')[:12]}...{s.branch}", highlight=False
        )
        console.print(f"    git -C {s.repo} merge {s.branch}", highlight=False)
    timings = _timings(s)
    if timings:
        console.print(
            "  phases:   "
            + "  ".join(f"{k} {format_duration_fine(v)}" for k, v in timings.items()),
            highlight=False,
        )
    console.print(f"  Logs:     sandboxrun logs {s.name}", highlight=False)


def _timings(session: Session) -> dict[str, float]:
    """The per-phase times the run recorded (its last ``timings`` event)."""
    try:
        events = open_store(settings_for(None)).events(session.id, kinds=("timings",))
    except SandboxrunError:
        return {}
    return dict(events[-1]["payload"]) if events else {}


def format_duration_fine(seconds: float) -> str:
    """``0.42s`` under ten seconds, else as format_duration."""
    return f"{seconds:.2f}s" if seconds < 10 else format_duration(seconds)


def _changes_left_out(repo: Path) -> list[str]:
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


def spawn_detached(session: Session) -> int:
    """Start ``sandboxrun _drive SESSION`` in its own session; returns its pid."""
    from sandboxrun.config import load_settings

    settings = load_settings(Path(session.repo) if session.repo else None)
    log_dir = settings.session_artifacts(session.id)
    log_dir.mkdir(parents=True, exist_ok=True)
    return process.spawn_detached(
        [sys.executable, "-m", "sandboxrun", "_drive", session.id], output=log_dir / "driver.log"
    )


def register(app: typer.Typer) -> None:
    @app.command("run", help=RUN_HELP)
    def run(
        prompt: str | None = typer.Option(None, "--prompt", "-p", help="The task, as text."),
        prompt_file: Path | None = typer.Option(
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
            None, "--warn-at", help="Comma-separated warning marks. Default 30m,50m."
        ),
        model: str = typer.Option(None, "--model", help="Claude model for the agent."),
        max_turns: int = typer.Option(None, "--max-turns", help="Stop the agent after N turns."),
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
            help="Start from your uncommitted and untracked "
            "changes (committed first on the branch).",
        ),
        allow_sensitive: bool = typer.Option(
            False,
            "--allow-sensitive",
            help="Accept agent changes to .claude/, .mcp.json, "
            "CI workflows and other sensitive paths.",
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
        if prompt_file is not None and prompt is not None:
            raise UsageError("give --prompt or --prompt-file, not both")
        flags = {
            "timeout": parse_duration(timeout) if timeout else None,
            "warn_at": tuple(parse_durations(warn_at)) if warn_at else None,
            "model": model,
            "max_turns": max_turns,
            "template": template,
            "compression": compression,
        }
        settings = settings_for(repo, **flags)
        store = open_store(settings)
        req = RunRequest(
            repo=repo,
            prompt=prompt,
            prompt_file=prompt_file,
            name=name,
            base=base,
            backend=backend,
            keep=keep,
            dry_run=dry_run,
            allow_sensitive=allow_sensitive,
            with_changes=with_changes,
            extra_options={
                "install_claude": install_claude,
                "update_claude": update_claude,
                "no_isolation": no_isolation,
            },
        )
        session = prepare_run(settings, store, req)
        if session.options.get("isolation_warning"):
            err_console.print(f"[yellow]! {session.options['isolation_warning']}[/yellow]")
        if not with_changes and base == "HEAD" and _changes_left_out(Path(session.repo or repo)):
            err_console.print(
                "[yellow]! the agent starts from your last commit; uncommitted changes in "
                f"{session.repo} are not included (--with-changes includes them)[/yellow]"
            )
        if session.options.get("secrets_not_carried"):
            err_console.print(
                "[yellow]! not carried into the branch (secrets deny-list): "
                + ", ".join(session.options["secrets_not_carried"])
                + "[/yellow]"
            )
        if detach:
            pid = spawn_detached(session)
            store.update(session.id, owner_pid=pid, owner_host=os.uname().nodename)
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
                _print_dry_run(store, final)
            print_summary(final)
        if final.status not in SUCCESS:
            raise typer.Exit(1)


def _drive(
    settings: Settings, store: SessionStore, session: Session, reporter: Reporter
) -> Session:
    return RunDriver(settings, store, session, reporter).execute()


def _print_dry_run(store: SessionStore, session: Session) -> None:
    reports = store.events(session.id, kinds=("dry_run",))
    if not reports:
        return
    r = reports[-1]["payload"]
    console.print(
        f"\nDry run: {r['verified']}/{r['files']} files verified intact; "
        f"{r['bytes_in']:,} bytes packed to {r['bytes_out']:,} ({r['compression']}); "
        f"collected {r['collected_bytes']} bytes of changes.",
        highlight=False,
    )
    for phase, secs in r["phases"].items():
        console.print(f"  {phase:<10} {secs:8.3f}s", highlight=False)
