"""`sandboxrun fanout`, `report`, `integrate`, and GROUP in `status`/`logs`/`kill`/`attach`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from sandboxrun import gitops
from sandboxrun.cli.common import (
    console,
    err_console,
    open_store,
    print_json,
    say,
    settings_for,
)
from sandboxrun.config import load_settings
from sandboxrun.errors import Interrupted, SandboxrunError, UsageError
from sandboxrun.fanout import groups as G
from sandboxrun.fanout.report import build_report, render
from sandboxrun.fanout.scheduler import (
    DEFAULT_START_RATE,
    E2B_PRICE_PER_SECOND,
    GroupScheduler,
    Step,
    group_driver_alive,
)
from sandboxrun.fanout.tasks import load_tasks, validate_group_name
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.detach import DriverStartError, start_driver_process
from sandboxrun.sandbox.prepare import choose_backend
from sandboxrun.store import SessionStore

FANOUT_HELP = """Run many tasks, each an agent on its own branch, in dependency order.

TASKS is a TOML file of [[task]] tables (name, prompt or prompt_file, depends_on, and optional
base, model, timeout, max_turns) or a directory of plan files (independent tasks). It is
checked completely before anything starts. A task whose dependencies all completed starts from
their merged branches; a failed dependency skips its dependents (unless --keep-going).

\b
Examples:
  sandboxrun fanout tasks.toml --backend local --max-parallel 3
  sandboxrun fanout plans/ --budget-usd 20 --detach && sandboxrun logs plans
  sandboxrun report tasks --format html -o report.html
  sandboxrun integrate tasks
"""


def _group_or_fail(store: SessionStore, ref: str) -> G.Group:
    g = G.find_group(store, ref)
    if g is None:
        raise G.GroupNotFoundError(
            f"no group named {ref!r}", "List groups with `sandboxrun groups`."
        )
    return g


def _task_line(row: dict[str, Any]) -> str:
    cost = f"${row['cost_usd']:.4f}" if row.get("cost_usd") is not None else "-"
    reason = f"  ({row['reason']})" if row.get("reason") else ""
    return f"  {row['task']:<20} {row['status']:<22} {row.get('branch') or '-':<36} {cost}{reason}"


def print_group(store: SessionStore, g: G.Group, json_out: bool) -> None:
    """`status GROUP`: the group and one line per task."""
    rep = build_report(store, g)
    if json_out:
        print_json([rep])
        return
    alive = group_driver_alive(g)
    say((g.name, "bold"), f" ({g.id})  group  {g.status}")
    console.print(
        f"  spent ${rep['cost_usd']:.4f}   tasks {len(rep['tasks'])}   driver "
        + (f"pid {g.owner_pid} ({'alive' if alive else 'not running'})" if g.owner_pid else "-"),
        highlight=False,
    )
    if g.error:
        console.print(f"  reason: {g.error}", highlight=False)
    for row in rep["tasks"]:
        console.print(_task_line(row), highlight=False)
    if not g.is_terminal and not alive:
        console.print(f"  No process schedules this group: `sandboxrun attach {g.name}`.")


def group_logs(
    store: SessionStore,
    g: G.Group,
    follow: bool,
    format_event: Callable[[dict[str, Any]], str | None],
    json_out: bool = False,
) -> None:
    """`logs GROUP`: the scheduler's and every task's events, interleaved by time.

    ``format_event`` renders one session event as `logs SESSION` does.
    """
    from sandboxrun.redact import Redactor

    redact = Redactor.from_env(os.environ)
    seen_group = 0
    seen: dict[str, int] = {}
    while True:
        lines: list[tuple[float, str]] = []
        for ev in G.events(store, g.id, seen_group):
            seen_group = ev["id"]
            if json_out:
                lines.append((ev["ts"], json.dumps({"task": None, **ev}, default=str)))
            else:
                lines.append((ev["ts"], f"[{g.name}] {format_group_event(ev)}"))
        for t in G.tasks(store, g.id):
            if not t.session_id:
                continue
            for ev in store.events(t.session_id, after_id=seen.get(t.session_id, 0)):
                seen[t.session_id] = ev["id"]
                if json_out:
                    lines.append((ev["ts"], json.dumps({"task": t.name, **ev}, default=str)))
                    continue
                line = format_event(ev)
                if line is not None:
                    lines.append((ev["ts"], f"[{t.name}] {line}"))
        for _, line in sorted(lines, key=lambda x: x[0]):
            typer.echo(redact.text(line))
        if not follow or (not lines and G.get_group(store, g.id).is_terminal):
            return
        time.sleep(0.3)


def format_group_event(ev: dict[str, Any]) -> str:
    """One human line for a scheduler decision."""
    ts = datetime.fromtimestamp(ev["ts"]).strftime("%H:%M:%S")
    kind, p = ev["kind"], ev["payload"]
    if kind == "created":
        text = f"{p.get('tasks')} task(s)"
    elif kind == "task":
        why = f": {p['reason']}" if p.get("reason") else ""
        base = f" from {str(p['base_commit'])[:12]}" if p.get("base_commit") else ""
        text = f"{p.get('task')} {p.get('state')}{base}{why}"
    elif kind == "spawn":
        text = f"driver pid {p.get('pid')} for {p.get('session')}" + (
            " (attach)" if p.get("attach") else ""
        )
    elif kind == "driver":
        text = f"scheduled by pid {p.get('pid')}"
    elif kind == "stop":
        text = f"stopping {p.get('session')}: {p.get('reason')}"
    elif kind == "status":
        text = str(p.get("status")) + (f" — {p['error']}" if p.get("error") else "")
    else:
        text = json.dumps(p, default=str)
    return f"{ts} {kind:<7} {text}"


def kill_group(
    settings: Any, store: SessionStore, g: G.Group, json_out: bool, *, wait: float = 180.0
) -> None:
    """`kill GROUP`: no new tasks; running ones stopped with their work collected.

    Waits up to ``wait`` seconds for the group's driver to end it, then errors with a hint.
    """
    from sandboxrun.sandbox.sessions import kill_session

    if g.is_terminal:
        raise UsageError(
            f"group {g.name} already ended ({g.status})",
            f"See what it did with `sandboxrun report {g.name}`.",
        )
    G.update_group(store, g.id, kill_requested=1)
    if not group_driver_alive(g):
        # nobody schedules it: stop its tasks here, then settle the group ourselves
        for s in G.sessions(store, g.id).values():
            if s.is_active:
                kill_session(settings, store, s)
        GroupScheduler(settings, store, g.id).step()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not G.get_group(store, g.id).is_terminal:
        time.sleep(0.3)
    final = G.get_group(store, g.id)
    if not final.is_terminal:
        raise SandboxrunError(
            f"group {final.name} was asked to stop, but its driver (pid {final.owner_pid}) has "
            f"not ended it within {wait:g}s (still {final.status})",
            f"Follow it with `sandboxrun logs {final.name}`; run `sandboxrun kill {final.name}` "
            "again to wait more.",
        )
    if json_out:
        print_json(build_report(store, final))
    else:
        console.print(f"{final.name}: {final.status}", highlight=False)


def _progress(step: Step) -> None:
    """One line per task started or ended, with what the group has spent so far."""
    spent = f"spent ${step.spent_usd:.4f}"
    for name, how in step.ended:
        err_console.print(f"  {name}: {how}  [{spent}]", highlight=False)
    for name in step.started:
        err_console.print(f"→ started {name} ({step.running} running; {spent})", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("fanout", help=FANOUT_HELP)
    def fanout(
        tasks_path: Path = typer.Argument(..., metavar="TASKS", help="TOML file or directory."),
        name: str | None = typer.Option(
            None, "--name", "-n", help="Group name (default: TASKS stem)."
        ),
        repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: here)."),
        max_parallel: int = typer.Option(4, "--max-parallel", "-j", help="Runs at once."),
        backend: str | None = typer.Option(None, "--backend", "-b", help="e2b or local."),
        budget_usd: float | None = typer.Option(
            None, "--budget-usd", help="No new task once the group spent this (agent + sandbox)."
        ),
        budget_minutes: float | None = typer.Option(
            None, "--budget-minutes", help="No new task after this many minutes."
        ),
        hard_factor: float = typer.Option(
            1.25,
            "--hard-factor",
            help="Running tasks are stopped (work collected) at this multiple of a budget.",
        ),
        start_rate: float | None = typer.Option(
            None,
            "--start-rate",
            help="E2B sandbox creations per second, kept around every create (Hobby 1, Pro 5).",
        ),
        warm: str = typer.Option(
            "auto",
            "--warm",
            help="Start from a warm snapshot (`sandboxrun warm`): auto (use one, or make one "
            "for 3+ tasks), on, off.",
        ),
        setup: str | None = typer.Option(
            None, "--setup", help="Setup command of the warm snapshot (e.g. 'npm ci')."
        ),
        price_per_second: float | None = typer.Option(
            None,
            "--price-per-second",
            help=f"Sandbox price in USD per second (e2b default {E2B_PRICE_PER_SECOND:.7f}).",
        ),
        keep_going: bool = typer.Option(
            False, "--keep-going", help="Run dependents of failed tasks anyway."
        ),
        detach: bool = typer.Option(False, "--detach", "-d", help="Schedule in the background."),
        json_out: bool = typer.Option(False, "--json", help="Print the final report as JSON."),
    ) -> None:
        graph = load_tasks(tasks_path)
        group_name = validate_group_name(name or graph.default_group)
        if max_parallel < 1:
            raise UsageError("--max-parallel must be at least 1", "e.g. --max-parallel 5")
        for label, value in (("--budget-usd", budget_usd), ("--budget-minutes", budget_minutes)):
            if value is not None and not value > 0:  # also NaN
                raise UsageError(f"{label} must be positive", f"e.g. {label} 20")
        if not hard_factor >= 1:
            raise UsageError(
                f"--hard-factor must be at least 1, got {hard_factor}",
                "Running tasks are stopped at this multiple of the budget: e.g. --hard-factor 1.25.",
            )
        settings = settings_for(repo)
        store = open_store(settings)
        root = gitops.main_worktree(gitops.repo_root(repo))
        backend_name = choose_backend(settings, backend)
        if backend_name not in DEFAULT_START_RATE:
            raise UsageError(f"unknown backend {backend_name!r}", "Use e2b or local.")
        if warm not in ("auto", "on", "off"):
            raise UsageError(f"unknown --warm {warm!r}", "Use auto, on or off.")
        if warm == "on" and backend_name != "e2b":
            raise UsageError("--warm on needs --backend e2b", "Local runs upload nothing.")
        if start_rate is not None and not start_rate > 0:
            raise UsageError("--start-rate must be positive", "e.g. --start-rate 1 (per second)")
        # the backend is ready (E2B key, Claude Code, bubblewrap...) before any task exists
        get_backend(backend_name, settings).check_ready(dry_run=False)
        base_commit = gitops.resolve_commit(root, "HEAD")
        for t in graph.tasks:
            if t.base:
                gitops.resolve_commit(root, t.base)
        if G.find_group(store, group_name):
            raise UsageError(f"a group named {group_name!r} already exists", "Pick another --name.")
        names = {s.name for s in store.list()}
        if group_name in names:
            raise UsageError(
                f"a session is named {group_name!r}; a group of that name would hide it",
                "Pick another --name for the group.",
            )
        taken = names & {f"{group_name}-{t.name}" for t in graph.tasks}
        if taken:
            raise UsageError(
                f"session name(s) already in use: {', '.join(sorted(taken))}",
                "Pick another --name for the group.",
            )
        price = price_per_second
        if price is None:
            price = E2B_PRICE_PER_SECOND if backend_name == "e2b" else 0.0
        options = {
            "max_parallel": max_parallel,
            "budget_usd": budget_usd,
            "budget_minutes": budget_minutes,
            "hard_factor": hard_factor,
            "start_rate": start_rate or DEFAULT_START_RATE[backend_name],
            "price_per_second": price,
            "keep_going": keep_going,
            "warm_key": _warm_key(settings, root, backend_name, warm, setup, len(graph.tasks)),
        }
        g = G.create_group(
            store,
            graph,
            name=group_name,
            repo=str(root),
            backend=backend_name,
            base_commit=base_commit,
            options=options,
        )
        if detach:
            pid = spawn_group_driver(settings, store, g)
            if json_out:
                print_json({"group": g.id, "name": g.name, "detached_pid": pid})
            else:
                console.print(
                    f"Started group {g.name} ({len(graph.tasks)} tasks) in the background.\n"
                    f"  Status: sandboxrun status {g.name}\n"
                    f"  Logs:   sandboxrun logs {g.name}\n"
                    f"  Stop:   sandboxrun kill {g.name}",
                    highlight=False,
                )
            return
        _drive_and_print(settings, store, g, json_out)

    @app.command("groups")
    def groups_cmd(
        json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
    ) -> None:
        """List fan-out groups of every repository: status, tasks, spent cost, repository."""
        store = open_store(settings_for(None))
        reports = [build_report(store, g) for g in G.list_groups(store)]
        if json_out:
            print_json(reports)
            return
        if not reports:
            console.print("No groups yet. Start one with `sandboxrun fanout tasks.toml`.")
            return
        for rep in reports:
            done = sum(1 for r in rep["tasks"] if r["outcome"] == "success")
            console.print(
                f"{rep['group']:<24} {rep['status']:<10} {done}/{len(rep['tasks'])} completed  "
                f"${rep['cost_usd']:.4f}  {rep['repo']}",
                highlight=False,
            )

    @app.command("report")
    def report(
        group: str = typer.Argument(..., help="Group name or id."),
        fmt: str = typer.Option("md", "--format", help="md, json or html."),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="Write to FILE (an existing one only with --force)."
        ),
        force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
        json_out: bool = typer.Option(False, "--json", help="The same as --format json."),
    ) -> None:
        """Per task status, branch, commits, files, cost, turns, duration; the critical path.

        Example: sandboxrun report tasks --format html -o report.html (--force to replace it)
        """
        if json_out:
            if fmt not in ("md", "json"):
                raise UsageError(
                    f"--json and --format {fmt} ask for two formats",
                    "Pass one: --json (the same as --format json) or --format html.",
                )
            fmt = "json"
        if fmt not in ("md", "json", "html"):
            raise UsageError(f"unknown --format {fmt!r}", "Use md, json or html.")
        if output is not None and (output.is_dir() or not output.parent.is_dir()):
            where = "is a directory" if output.is_dir() else "is in a directory that does not exist"
            raise UsageError(f"--output {output} {where}", "Pass a file name, e.g. -o report.html.")
        if output is not None and output.exists() and not force:
            raise UsageError(f"{output} already exists", "Pass --force to replace it.")
        store = open_store(settings_for(None))
        text = render(build_report(store, _group_or_fail(store, group)), fmt)
        if output:
            output.write_text(text, encoding="utf-8")
            err_console.print(f"Wrote {output}", highlight=False)
        else:
            sys.stdout.write(text)

    @app.command("integrate")
    def integrate(
        group: str = typer.Argument(..., help="Group name or id."),
        into: str | None = typer.Option(
            None, "--into", help="Branch to merge into (default sandboxrun/GROUP/integration)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Merge completed task branches, in dependency order, into one branch.

        It acts in the group's own repository (named in the output), wherever it is run.
        Your checkout is never touched; a conflict stops with the files named and the branch
        left at the last clean merge.
        """
        from sandboxrun.fanout.report import integrate_group

        store = open_store(settings_for(None))
        g = _group_or_fail(store, group)
        res, branch, left_out = integrate_group(store, g, into)
        data = {
            "repo": g.repo,
            "branch": branch,
            "commit": res.commit,
            "merged": res.merged,
            "conflict_with": res.conflict_with,
            "conflicts": res.conflicts,
            "left_out": left_out,
        }
        if json_out:
            print_json(data)
        else:
            left = ", ".join(f"{n} ({o})" for n, o in left_out.items())
            console.print(
                f"{branch} at {res.commit[:12]} in {g.repo}: merged {len(res.merged)} branch(es)"
                + (f"; left out: {left}" if left else ""),
                highlight=False,
            )
        if not res.ok:
            raise _conflict_error(res.conflict_with or "", res.conflicts, branch, res.commit)

    plan_app = typer.Typer(help="Plans and tasks: `plan split` cuts a plan into a TASKS file.")
    app.add_typer(plan_app, name="plan")

    @plan_app.command("split")
    def plan_split(
        plan: Path = typer.Argument(..., help="The plan (markdown or text)."),
        output: Path = typer.Option(..., "--output", "-o", help="The TASKS file to write."),
        model: str | None = typer.Option(None, "--model", help="Claude model to ask."),
        force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
        json_out: bool = typer.Option(False, "--json", help="Print the tasks as JSON."),
    ) -> None:
        """Ask Claude (`claude -p` with a JSON schema, no tools) to cut PLAN into tasks with
        dependencies; the answer is checked like a hand-written TASKS file before it is written.
        """
        from sandboxrun.fanout.plan import split_plan

        settings = settings_for(plan.parent)
        graph = split_plan(
            plan, output, claude_bin=settings.claude_bin, model=model or settings.model, force=force
        )
        if json_out:
            print_json([t.to_dict() for t in graph.tasks])
            return
        console.print(f"Wrote {len(graph.tasks)} task(s) to {output}:", highlight=False)
        for t in graph.tasks:
            after = f"  (after {', '.join(t.depends_on)})" if t.depends_on else ""
            console.print(f"  {t.name}{after}", highlight=False)
        console.print(f"Check it, then: sandboxrun fanout {output}", highlight=False)

    @app.command("_fanout_drive", hidden=True)
    def fanout_drive(group_id: str) -> None:
        """Schedule a detached group to its end (started by `fanout --detach`/`attach`)."""
        store = open_store(load_settings())
        g = G.get_group(store, group_id)
        final = GroupScheduler(load_settings(Path(g.repo)), store, g.id).run()
        if final.status != "completed":
            raise typer.Exit(1)

    @app.command("_fanout_task", hidden=True)
    def fanout_task(session_id: str, attach: bool = typer.Option(False, "--attach")) -> None:
        """Drive one task's session, unless another process already does."""
        from sandboxrun.fanout.taskmain import run_task

        run_task(session_id, attach=attach)


def _warm_key(
    settings: Any, root: Path, backend: str, mode: str, setup: str | None, n_tasks: int
) -> str | None:
    """The warm snapshot the group's tasks start from (made now if it pays off), or None."""
    from sandboxrun.sandbox.warm import WarmCache, stale_at, warm_plan
    from sandboxrun.sandbox.warm_build import build_snapshot

    cache = WarmCache(settings.home)
    entry = cache.find(root, settings.template, setup)
    plan = warm_plan(mode, backend, n_tasks, entry is not None)
    manifest = cache.manifest(entry.key) if entry is not None else None
    if plan == "use" and entry is not None and manifest is not None:
        commit = gitops.resolve_commit(root, "HEAD")
        if (why := stale_at(root, entry, manifest, commit)) is not None:
            err_console.print(f"warm: {why}; making a new one", highlight=False)
            plan = "build"
    if plan == "build":
        err_console.print(
            f"warm: one upload for {n_tasks} tasks (`--warm off` uploads to each)", highlight=False
        )
        entry = build_snapshot(
            settings, root, setup=setup,
            say=lambda text: err_console.print(f"warm: {text}", highlight=False),
        )  # fmt: skip
    return entry.key if entry is not None and plan != "cold" else None


def _conflict_error(name: str, files: list[str], branch: str, commit: str) -> Exception:
    return SandboxrunError(
        f"merging {name} conflicts in: {', '.join(files)}",
        f"{branch} stays at the last clean merge ({commit[:12]}); merge {name} by hand.",
    )


def spawn_group_driver(settings: Any, store: SessionStore, g: G.Group) -> int:
    """Start ``sandboxrun _fanout_drive GROUP`` detached and wait until it has claimed the
    group (a driver that dies first is an error quoting its log); returns its pid."""

    def claimed(pid: int) -> bool:
        now = G.get_group(store, g.id)
        return now.owner_pid == pid or now.is_terminal

    try:
        return start_driver_process(
            ["_fanout_drive", g.id],
            log=settings.home / "groups" / f"{g.id}.log",
            home=settings.home,
            recorded=claimed,
        )
    except DriverStartError as exc:
        raise DriverStartError(
            exc.message,
            f"{exc.hint} The group exists and nothing of it has started: `sandboxrun attach "
            f"{g.name}` schedules it from this terminal.",
        ) from exc


def _drive_and_print(settings: Any, store: SessionStore, g: G.Group, json_out: bool) -> None:
    try:
        final = GroupScheduler(settings, store, g.id).run(None if json_out else _progress)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the tasks of group {g.name} that already started keep running",
            f"Resume scheduling with `sandboxrun attach {g.name}`, or stop them all (their "
            f"work collected) with `sandboxrun kill {g.name}`.",
        ) from None
    if json_out:
        print_json(build_report(store, final))
    else:
        print_group(store, final, False)
    if final.status != "completed":
        raise typer.Exit(1)


def attach_group(settings: Any, store: SessionStore, g: G.Group, json_out: bool) -> None:
    """`attach GROUP`: resume scheduling a group whose driver died."""
    if g.is_terminal:
        raise UsageError(
            f"group {g.name} already ended ({g.status})",
            f"See what it did with `sandboxrun report {g.name}`.",
        )
    if group_driver_alive(g):
        raise UsageError(
            f"group {g.name} is still driven by process {g.owner_pid}",
            f"Follow it with `sandboxrun logs {g.name}`.",
        )
    _drive_and_print(load_settings(Path(g.repo)), store, g, json_out)
