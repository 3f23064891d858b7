"""How the CLI shows sessions and events: the JSON shape, tables, summaries, log lines.

Shared by the command modules (run, attach, status, logs...), so they never import each other.
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime
from typing import Any

from sandboxrun.cli.common import Part, console, open_store, say, settings_for, styled
from sandboxrun.config import format_duration
from sandboxrun.coord.local_sessions import local_fields
from sandboxrun.errors import SandboxrunError
from sandboxrun.sandbox.interrupted import describe as describe_interrupted
from sandboxrun.sandbox.interrupted import interrupted
from sandboxrun.store import SUCCESS, TERMINAL, Session, SessionStore, Status, owner_alive

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
    data["isolated"] = isolation_label(s) == "yes"
    # active on paper, but its start died before the agent ran (sandbox.interrupted)
    data["interrupted"] = interrupted(s)
    if s.options.get("quota_resets_at"):
        data["quota_resets_at"] = s.options["quota_resets_at"]
    if s.mode == "local":  # hook-maintained: role, activity, heartbeat, presence
        data.update(local_fields(s.to_dict()))
    return data


def display_status(s: Session) -> str:
    """The status people see: the stored one, or ``interrupted`` for a start that died."""
    return "interrupted" if interrupted(s) else str(s.status)


def format_when(ts: float | None) -> str:
    """A timestamp as local date and time, or "-"."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def status_style(status: str) -> str:
    """The rich style a status is shown in."""
    styles: dict[str, str] = {
        Status.COMPLETED: "green",
        Status.COMPLETED_NO_CHANGES: "green",
        Status.COMPLETED_WITH_REFUSALS: "yellow",
        Status.RUNNING: "cyan",
        Status.FAILED: "red",
        Status.LOST: "red",
        Status.KILLED: "yellow",
        Status.TIMEOUT: "yellow",
        Status.WAITING_QUOTA: "yellow",
        "interrupted": "red",
    }
    return styles.get(status, "")


def print_one(s: Session) -> None:
    """Everything about one session, a field per line (`status SESSION`)."""
    d = session_json(s)
    shown = display_status(s)
    say((s.name, "bold"), f" ({s.id})  ", (shown, status_style(shown)))
    rows = [
        (
            "backend",
            f"{s.mode}/{s.backend}" + (f"  sandbox {s.sandbox_id}" if s.sandbox_id else ""),
        ),
        (
            "isolated",
            "yes" if isolation_label(s) == "yes" else "NO (the agent ran unconfined, as you)",
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
        ("cost", money(s.cost_usd)),
        ("commits", len(s.result_commits or [])),
        ("files changed", s.files_changed if s.files_changed is not None else "-"),
    ]
    if s.error:
        rows.append(("reason", s.error))
    elif d["interrupted"]:
        rows.append(("reason", describe_interrupted(s)))
    for key, value in rows:
        console.print(f"  {key:<14} {value}", highlight=False)
    if not s.is_terminal and not d["driver_alive"] and s.agent_pgid:
        say(("  No process is following this session.", "yellow"))


def money(value: Any) -> str:
    """``$0.1234``, or ``-`` (a row written before agent output was validated may hold anything)."""
    return f"${value:.4f}" if isinstance(value, int | float) else "-"


def format_age(seconds: float) -> str:
    """A coarse age: ``45s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def isolation_label(s: Session) -> str:
    """How the agent is confined: ``e2b`` sandboxes are; a local run is if bubblewrap ran it."""
    if s.backend == "e2b":
        return "yes"
    isolated = getattr(s, "isolated", None)  # a column of newer databases
    if isolated is not None:
        return "yes" if isolated else "no"
    return "no"  # a local directory or a tmux session: the agent runs as you


def print_status_table(sessions: list[Session], *, show_repo: bool = False) -> None:
    """One line per session (`status` without a SESSION), columns aligned to their content."""
    now = time.time()
    columns: list[tuple[str, list[str], str]] = [
        ("ID", [s.id for s in sessions], "<"),
        ("NAME", [s.name for s in sessions], "<"),
        # local sessions show what their hooks last said, e.g. running/idle
        (
            "STATUS",
            [
                f"{s.status}/{s.activity}" if s.mode == "local" else display_status(s)
                for s in sessions
            ],  # fmt: skip
            "<",
        ),
        ("BRANCH", [s.branch or "-" for s in sessions], "<"),
        ("AGE", [format_age(now - s.created_at) for s in sessions], ">"),
        ("LEFT", [_time_left(s, now) for s in sessions], ">"),
        ("BACKEND", [s.backend for s in sessions], "<"),
        ("ISOLATED", [isolation_label(s) for s in sessions], "<"),
        ("TURNS", [str(s.num_turns) if s.num_turns is not None else "-" for s in sessions], ">"),
        ("COST", [money(s.cost_usd) for s in sessions], ">"),
    ]
    if show_repo:
        columns.append(("REPO", [s.repo or "-" for s in sessions], "<"))
    widths = [max(len(head), *(len(v) for v in values)) for head, values, _ in columns]

    def cell(text: str, width: int, align: str) -> str:
        return f"{text:{align}{width}}"

    header = "  ".join(cell(h, w, al) for (h, _, al), w in zip(columns, widths, strict=True))
    say((header.rstrip(), "bold"))
    for i, s in enumerate(sessions):
        parts: list[Part] = []
        for col, ((_, values, al), w) in enumerate(zip(columns, widths, strict=True)):
            text = cell(values[i], w, al)
            parts.append((text, status_style(display_status(s))) if col == 2 else text)
            parts.append("  ")
        line = styled(*parts[:-1])
        line.rstrip()
        console.print(line)


def _time_left(s: Session, now: float) -> str:
    if s.is_terminal or not s.deadline:
        return "-"
    return format_duration(max(0.0, s.deadline - now))


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


def print_summary(session: Session) -> None:
    """The end-of-run summary a person can act on."""
    s = session
    ok = s.status in SUCCESS
    colour = "green" if ok else "red"
    console.print()
    say((s.status, f"bold {colour}"), f"  {s.name} ({s.id})")
    if s.error:
        console.print(f"  reason:   {s.error}", highlight=False)
    for note in s.options.get("collect_notes") or []:  # mode changes, refusals, fallbacks
        console.print(f"  note:     {note}", highlight=False)
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
        # Quoted for the shell: a repo path with spaces must still paste as one command.
        repo, branch = shlex.quote(s.repo or "."), shlex.quote(s.branch or "HEAD")
        base = shlex.quote((s.base_commit or "")[:12])
        console.print("\n  Review and merge:", highlight=False)
        console.print(f"    git -C {repo} log --stat {base}..{branch}", highlight=False)
        console.print(f"    git -C {repo} diff {base}...{branch}", highlight=False)
        console.print(f"    git -C {repo} merge {branch}", highlight=False)
    timings = _timings(s)
    if timings:
        console.print(
            "  phases:   "
            + "  ".join(f"{k} {format_duration_fine(v)}" for k, v in timings.items()),
        )
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
