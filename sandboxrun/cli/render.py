"""How the CLI shows sessions and events: the JSON shape, tables, summaries, log lines.

Shared by the command modules (run, attach, status, logs...), so they never import each other.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sandboxrun.cli.common import console
from sandboxrun.config import format_duration
from sandboxrun.store import TERMINAL_STATUSES, Session, SessionStore, owner_alive

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
)


def session_json(s: Session) -> dict[str, Any]:
    """The public JSON shape of a session (`status --json`)."""
    data = {k: s.row.get(k) for k in STATUS_FIELDS}
    data["prompt_file"] = s.row.get("prompt_file")
    data["driver_alive"] = owner_alive(s)
    data["time_left_s"] = (
        max(0.0, s.deadline - time.time()) if s.deadline and not s.is_terminal else None
    )
    if s.options.get("quota_resets_at"):
        data["quota_resets_at"] = s.options["quota_resets_at"]
    return data


def format_when(ts: float | None) -> str:
    """A timestamp as local date and time, or "-"."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def status_style(status: str) -> str:
    """The rich style a status is shown in."""
    return {
        "completed": "green",
        "completed_no_changes": "green",
        "running": "cyan",
        "failed": "red",
        "lost": "red",
        "killed": "yellow",
        "timeout": "yellow",
        "waiting_quota": "yellow",
    }.get(status, "")


def print_one(s: Session) -> None:
    """Everything about one session, a field per line (`status SESSION`)."""
    d = session_json(s)
    console.print(f"[bold]{s.name}[/bold] ({s.id})  [{status_style(s.status)}]{s.status}[/]")
    rows = [
        (
            "backend",
            f"{s.mode}/{s.backend}" + (f"  sandbox {s.sandbox_id}" if s.sandbox_id else ""),
        ),
        ("branch", s.branch),
        ("worktree", s.worktree),
        ("base", f"{s.base_ref} ({(s.base_commit or '')[:12]})"),
        ("created", format_when(s.created_at)),
        ("started", format_when(s.started_at)),
        ("ended", format_when(s.ended_at)),
        ("time left", format_duration(d["time_left_s"]) if d["time_left_s"] is not None else "-"),
        (
            "driver",
            f"pid {s.owner_pid} ({'alive' if d['driver_alive'] else 'not running'})"
            if s.owner_pid
            else "-",
        ),
        ("agent session", s.agent_session_id or "-"),
        ("turns", s.num_turns if s.num_turns is not None else "-"),
        ("cost", f"${s.cost_usd:.4f}" if s.cost_usd is not None else "-"),
        ("commits", len(s.result_commits or [])),
        ("files changed", s.files_changed if s.files_changed is not None else "-"),
    ]
    if s.error:
        rows.append(("reason", s.error))
    for key, value in rows:
        console.print(f"  {key:<14} {value}", highlight=False)
    if not s.is_terminal and not d["driver_alive"] and s.agent_pgid:
        console.print(
            f"  [yellow]No process is following this session: "
            f"`sandboxrun attach {s.name}` carries it on.[/yellow]"
        )


def print_status_table(sessions: list[Session]) -> None:
    """One line per session (`status` without a SESSION)."""
    width = max(len(s.name) for s in sessions)
    console.print(
        f"[bold]{'ID':<12}  {'NAME':<{width}}  {'STATUS':<20}  {'BACKEND':<7}  "
        f"{'STARTED':<11}  {'TURNS':>5}  {'COST':>8}[/bold]",
        soft_wrap=True,
    )
    for s in sessions:
        started = datetime.fromtimestamp(s.started_at or s.created_at).strftime("%m-%d %H:%M")
        turns = str(s.num_turns) if s.num_turns is not None else "-"
        cost = f"${s.cost_usd:.4f}" if s.cost_usd is not None else "-"
        console.print(
            f"{s.id:<12}  {s.name:<{width}}  [{status_style(s.status)}]{s.status:<20}[/]  "
            f"{s.backend:<7}  {started:<11}  {turns:>5}  {cost:>8}",
            highlight=False,
            soft_wrap=True,
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
        if p.get("status") not in TERMINAL_STATUSES and p.get("status") != "created":
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


def print_summary(session: Session) -> None:
    """The end-of-run summary a person can act on."""
    s = session
    ok = s.status in ("completed", "completed_no_changes")
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
            f"    git -C {s.repo} log --stat {s.base_commit[:12]}..{s.branch}", highlight=False
        )
        console.print(
            f"    git -C {s.repo} diff {s.base_commit[:12]}...{s.branch}", highlight=False
        )
        console.print(f"    git -C {s.repo} merge {s.branch}", highlight=False)
    console.print(f"  Logs:     sandboxrun logs {s.name}", highlight=False)


def print_dry_run(store: SessionStore, session: Session) -> None:
    """The dry run's report: files verified, sizes, and per-phase times."""
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
