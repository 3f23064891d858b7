"""Commands on existing sessions: status, logs, kill, download, attach, extend, cleanup."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from sandboxrun.cli.common import (
    console,
    open_store,
    print_json,
    print_json_line,
    settings_for,
)
from sandboxrun.config import format_duration, parse_duration
from sandboxrun.coord.local_sessions import local_fields
from sandboxrun.redact import Redactor
from sandboxrun.store import SUCCESS, TERMINAL, Session, Status, owner_alive

STATUS_FIELDS = (
    "id",
    "name",
    "mode",
    "backend",
    "status",
    "branch",
    "worktree",
    "repo",
    "base_commit",
    "cost_usd",
    "num_turns",
    "duration_ms",
    "agent_session_id",
    "sandbox_id",
    "result_subtype",
    "result_commits",
    "files_changed",
    "insertions",
    "deletions",
    "error",
    "created_at",
    "started_at",
    "ended_at",
    "deadline",
    "timeout_s",
    "model",
    "max_turns",
    "exit_code",
    "isolated",
)


def session_json(s: Session) -> dict[str, Any]:
    """The public JSON shape of a session (`status --json`)."""
    row = s.to_dict()
    data = {k: row[k] for k in STATUS_FIELDS}
    data["prompt_file"] = s.prompt_file
    data["driver_alive"] = owner_alive(s)
    data["time_left_s"] = (
        max(0.0, s.deadline - time.time()) if s.deadline and not s.is_terminal else None
    )
    if s.options.get("quota_resets_at"):
        data["quota_resets_at"] = s.options["quota_resets_at"]
    if s.mode == "local":  # hook-maintained: role, activity, heartbeat, presence
        data.update(local_fields(s.to_dict()))
    return data


def _money(value: Any) -> str:
    # a row written before agent output was validated may hold anything
    return f"${value:.4f}" if isinstance(value, int | float) else "-"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _status_style(status: str) -> str:
    styles: dict[str, str] = {
        Status.COMPLETED: "green",
        Status.COMPLETED_NO_CHANGES: "green",
        Status.RUNNING: "cyan",
        Status.FAILED: "red",
        Status.LOST: "red",
        Status.KILLED: "yellow",
        Status.TIMEOUT: "yellow",
        Status.WAITING_QUOTA: "yellow",
    }
    return styles.get(status, "")


def _isolated(s: Session) -> str:
    """``yes``/``NO ...``/``-`` for the status page (NULL: recorded before the column)."""
    if s.isolated is None:
        return "-"
    return "yes" if s.isolated else "NO (the agent ran unconfined, as you)"


def _print_one(s: Session) -> None:
    d = session_json(s)
    console.print(f"[bold]{s.name}[/bold] ({s.id})  [{_status_style(s.status)}]{s.status}[/]")
    rows = [
        (
            "backend",
            f"{s.mode}/{s.backend}" + (f"  sandbox {s.sandbox_id}" if s.sandbox_id else ""),
        ),
        ("isolated", _isolated(s)),
        ("branch", s.branch),
        ("worktree", s.worktree),
        ("base", f"{s.base_ref} ({(s.base_commit or '')[:12]})"),
        ("created", _when(s.created_at)),
        ("started", _when(s.started_at)),
        ("ended", _when(s.ended_at)),
        ("time left", format_duration(d["time_left_s"]) if d["time_left_s"] is not None else "-"),
        (
            "driver",
            f"pid {s.owner_pid} ({'alive' if d['driver_alive'] else 'not running'})"
            if s.owner_pid
            else "-",
        ),
        ("agent session", s.agent_session_id or "-"),
        ("turns", s.num_turns if s.num_turns is not None else "-"),
        ("cost", _money(s.cost_usd)),
        ("commits", len(s.result_commits or [])),
        ("files changed", s.files_changed if s.files_changed is not None else "-"),
    ]
    if s.error:
        rows.append(("reason", s.error))
    for key, value in rows:
        console.print(f"  {key:<14} {value}", highlight=False)
    if not s.is_terminal and not d["driver_alive"] and s.agent_pgid:
        console.print("  [yellow]No process is following this session.[/yellow]")


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        session: str = typer.Argument(None, help="Session id, id prefix or name (default: all)."),
        active: bool = typer.Option(False, "--active", help="Only sessions still running."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
    ) -> None:
        """Show sessions: status, branch, cost, turns, time left."""
        from sandboxrun.sandbox.sessions import next_commands_for, reconcile

        settings = settings_for(None)
        store = open_store(settings)
        sessions = [store.resolve(session)] if session else store.list(active_only=active)
        # A sandbox gone with nobody following it shows as lost, not as running.
        sessions = [reconcile(settings, store, s, probe=True) for s in sessions]
        if active:
            sessions = [s for s in sessions if not s.is_terminal]
        if json_out:
            print_json(
                [{**session_json(s), "next": next_commands_for(settings, s)} for s in sessions]
            )
            return
        if session:
            _print_one(sessions[0])
            for command in next_commands_for(settings, sessions[0]):
                console.print(f"  next: {command}", highlight=False)
            return
        if not sessions:
            console.print("No sessions yet. Start one with `sandboxrun run --prompt-file PLAN.md`.")
            return
        width = max(len(s.name) for s in sessions)
        console.print(
            f"[bold]{'ID':<12}  {'NAME':<{width}}  {'STATUS':<20}  {'BACKEND':<7}  "
            f"{'STARTED':<11}  {'TURNS':>5}  {'COST':>8}[/bold]",
            soft_wrap=True,
        )
        for s in sessions:
            started = datetime.fromtimestamp(s.started_at or s.created_at).strftime("%m-%d %H:%M")
            turns = str(s.num_turns) if s.num_turns is not None else "-"
            cost = _money(s.cost_usd)
            shown = f"{s.status}/{s.activity}" if s.mode == "local" else s.status
            console.print(
                f"{s.id:<12}  {s.name:<{width}}  [{_status_style(s.status)}]{shown:<20}[/]  "
                f"{s.backend:<7}  {started:<11}  {turns:>5}  {cost:>8}",
                highlight=False,
                soft_wrap=True,
            )

    @app.command("logs")
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
        from sandboxrun.sandbox.sessions import reconcile

        settings = settings_for(None)
        store = open_store(settings)
        s = store.resolve(session)
        last = 0
        # stored events are redacted when written; this also covers credentials of this shell
        redact = Redactor.from_env(os.environ)
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
            if current.is_terminal:
                # one last pass for events written with the final status
                if not store.events(s.id, after_id=last, limit=1):
                    if current.status in ("failed", "lost"):
                        raise typer.Exit(1)  # a script following a run learns how it ended
                    return
                continue
            time.sleep(0.3)

    @app.command("kill")
    def kill(
        session: str = typer.Argument(..., help="Session id, id prefix or name."),
        discard: bool = typer.Option(
            False, "--discard", help="Throw the agent's work away instead of collecting it."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the final session as JSON."),
    ) -> None:
        """Stop a running session's agent, collect its work (unless --discard), tear down."""
        from sandboxrun.sandbox.sessions import kill_session

        settings = settings_for(None)
        store = open_store(settings)
        s = kill_session(settings, store, store.resolve(session), discard=discard)
        if json_out:
            print_json(session_json(s))
        else:
            console.print(f"{s.name}: {s.status}. {s.error or ''}", highlight=False)
            if s.result_commits:
                console.print(f"  {len(s.result_commits)} commit(s) on {s.branch}", highlight=False)

    @app.command("download")
    def download(
        session: str = typer.Argument(..., help="Session id, id prefix or name."),
        output: Path = typer.Option(
            None, "--output", "-o", help="Directory to write into (default ./sandboxrun-NAME)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Write a session's current patches (commits.mbox, changes.diff) without stopping it."""
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
            f"Apply elsewhere with: git am {result.directory}/commits.mbox && "
            f"git apply {result.directory}/changes.diff",
            highlight=False,
        )

    @app.command("attach")
    def attach(
        session: str = typer.Argument(..., help="Session id, id prefix or name."),
        json_out: bool = typer.Option(False, "--json", help="Print events as JSON lines."),
    ) -> None:
        """Reconnect to a run whose `run` process died and carry on following and collecting."""
        from sandboxrun.cli.run_cmd import JsonReporter, LiveReporter, print_summary
        from sandboxrun.sandbox.sessions import attach_session

        settings = settings_for(None)
        store = open_store(settings)
        s = store.resolve(session)
        if json_out:
            final = attach_session(settings, store, s, JsonReporter(s))
            print_json_line({"session": final.id, "kind": "end", **session_json(final)})
        else:
            with LiveReporter(s) as reporter:
                final = attach_session(settings, store, s, reporter)
            print_summary(final)
        if final.status not in SUCCESS:
            raise typer.Exit(1)

    @app.command("extend")
    def extend(
        session: str = typer.Argument(..., help="Session id, id prefix or name."),
        duration: str = typer.Argument(..., help="How much longer: 90s, 20m, 1h."),
    ) -> None:
        """Push a running session's time limit (and its sandbox's) back by DURATION."""
        from sandboxrun.sandbox.sessions import extend_session

        settings = settings_for(None)
        store = open_store(settings)
        s = extend_session(settings, store, store.resolve(session), parse_duration(duration))
        console.print(
            f"{s.name}: limit now {_when(s.deadline)} "
            f"({format_duration((s.deadline or time.time()) - time.time())} from now).",
            highlight=False,
        )

    @app.command("cleanup")
    def cleanup_cmd(
        worktrees: bool = typer.Option(
            False,
            "--worktrees",
            help="Also remove clean worktrees of ended sessions (branches are kept).",
        ),
        forget: bool = typer.Option(
            False, "--forget", help="Also delete ended sessions from the database."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be done."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Tear down sandboxes left by ended sessions. Never deletes branches or dirty worktrees."""
        from dataclasses import asdict

        from sandboxrun.sandbox.sessions import cleanup

        settings = settings_for(None)
        store = open_store(settings)
        report = cleanup(settings, store, worktrees=worktrees, forget=forget, dry_run=dry_run)
        if json_out:
            print_json(asdict(report))
            return
        verb = "Would remove" if dry_run else "Removed"
        console.print(
            f"{verb} {len(report.sandboxes_removed)} sandbox(es), "
            f"{len(report.worktrees_removed)} worktree(s); "
            f"forgot {len(report.forgotten)} session(s).",
            highlight=False,
        )
        for path in report.kept_dirty:
            console.print(f"  kept {path}: it has uncommitted changes", highlight=False)
        for name in report.orphans:
            console.print(
                f"  {name} is active but nothing follows it: "
                f"`sandboxrun attach {name}` or `sandboxrun kill {name}`",
                highlight=False,
            )


def format_event(ev: dict[str, Any]) -> str | None:
    """One human line for a stored event, or None for events `logs` hides by default."""
    ts = datetime.fromtimestamp(ev["ts"]).strftime("%H:%M:%S")
    kind, p = ev["kind"], ev["payload"]
    if kind == "stdout":
        return None
    if kind == "agent":
        from sandboxrun.agent import AgentEvent

        data = dict(p)
        etype = data.pop("type", "unknown")
        if etype in ("tool_result", "system", "unknown"):
            return None
        return f"{ts} agent   {AgentEvent(etype, data).summary}"
    if kind == "status":
        if p.get("status") not in TERMINAL and p.get("status") != Status.CREATED:
            return None  # the matching phase event says it with more detail
        extra = f" — {p['error']}" if p.get("error") else ""
        return f"{ts} status  {p.get('status')}{extra}"
    if kind == "phase":
        return f"{ts} phase   {p.get('phase')} {p.get('detail', '')}".rstrip()
    if kind == "warning":
        return f"{ts} WARNING {p.get('message')}"
    if kind == "pack":
        secrets = p.get("excluded_secrets") or []
        note = f"; kept out: {', '.join(secrets)}" if secrets else ""
        return f"{ts} pack    {p.get('files')} files, {p.get('bytes_out'):,} bytes{note}"
    if kind == "summary":
        return (
            f"{ts} summary {p.get('status')}: {len(p.get('commits') or [])} commit(s), "
            f"{len(p.get('files_changed') or [])} file(s) changed on {p.get('branch')}"
        )
    if kind == "stderr":
        return f"{ts} stderr  {p.get('line')}"
    return f"{ts} {kind:<7} {p}"
