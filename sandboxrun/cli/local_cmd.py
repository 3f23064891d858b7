"""Local children: ``spawn``, ``send``, ``wait``, ``read``, ``open``, ``close``, ``monitor``.

A child is an interactive Claude Code in its own worktree and tmux session
(``{prefix}_child_{name}``); its hooks keep the database current.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from sandboxrun import gitops
from sandboxrun.cli.common import console, err_console, open_store, print_json, settings_for
from sandboxrun.config import parse_duration
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.local import adopt as adopt_mod
from sandboxrun.local import close as close_mod
from sandboxrun.local import master as master_mod
from sandboxrun.local import monitor as monitor_mod
from sandboxrun.local import monitor_pid, transcript
from sandboxrun.local import send as send_mod
from sandboxrun.local import spawn as spawn_mod
from sandboxrun.local import wait as wait_mod
from sandboxrun.local.observe import state_of
from sandboxrun.sandbox.prepare import read_task
from sandboxrun.store import Session, SessionStore
from sandboxrun.tmux import Tmux

REPO_OPTION = typer.Option(Path("."), "--repo", help="The git repository (default: here).")
#: ``sandboxrun wait`` exit codes by the state that ended the wait
WAIT_CODES = {"idle": 0, "needs_permission": 10, "exited": 11}
WAIT_TIMEOUT_CODE = 124


def _root(repo: Path) -> Path:
    return gitops.main_worktree(gitops.repo_root(repo))


def _child(store: SessionStore, name: str) -> Session:
    session = store.resolve(name)
    if session.backend != "tmux":
        raise UsageError(
            f"{name!r} is not a local tmux child ({session.mode}/{session.backend})",
            "These commands talk to children started with `sandboxrun spawn`; for this "
            f"session use `sandboxrun logs {session.name}`, `status` or `kill`.",
        )
    return session


def spawn_cmd(
    name: str = typer.Argument(..., help="The child's name (also its role and worktree)."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="The first task."),
    prompt_file: Path | None = typer.Option(
        None, "--prompt-file", help="Read the first task here."
    ),
    role: str = typer.Option(None, "--role", help="The role (default: the name)."),
    base: str = typer.Option(None, "--base", help="Branch the worktree from this ref."),
    model: str = typer.Option(None, "--model", help="Claude model for the child."),
    skip_permissions: bool = typer.Option(
        False, "--skip-permissions", help="Run claude with --dangerously-skip-permissions."
    ),
    permission_mode: str = typer.Option(
        None, "--permission-mode", help="claude --permission-mode (default, acceptEdits, plan)."
    ),
    no_worktree: bool = typer.Option(
        False, "--no-worktree", help="Work in the main checkout instead of a worktree."
    ),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the session as JSON."),
) -> None:
    """Start an interactive Claude Code child in its own worktree and tmux session.

    The first task is its command-line prompt (wrapped by .sandboxrun/child.txt when present:
    {task} {name} {role} {branch} {worktree} {base}). Returns once the child has taken it.

    Example: sandboxrun spawn api --prompt "add a /health endpoint" --skip-permissions
    """
    task = read_task(prompt, prompt_file)
    root = _root(repo)
    settings = settings_for(root)
    store = open_store(settings)
    req = spawn_mod.SpawnRequest(
        name=name,
        task=task,
        role=role,
        base=base,
        model=model,
        skip_permissions=skip_permissions,
        permission_mode=permission_mode,
        worktree=not no_worktree,
    )
    session = spawn_mod.spawn(root, req, settings, store, Tmux())
    if json_out:
        print_json(session.to_dict())
        return
    console.print(f"{session.name}: started in {session.worktree} (branch {session.branch})")
    console.print(f"  tmux session {session.tmux_session}; watch: sandboxrun open {session.name}")


def send_cmd(
    names: list[str] = typer.Argument(
        ..., help="Children to send to; the last word is the text unless --file is given."
    ),
    file: Path | None = typer.Option(None, "--file", "-f", help="Send this file's text."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Send a message to children, confirmed by their UserPromptSubmit hook.

    Reports per child: delivered, queued (it was busy; Claude Code runs it next) or failed.
    Exit 1 when any failed. Example: sandboxrun send api web "rebase on main, then run tests"
    """
    if file is not None:
        text = _message_file(file)
    elif len(names) >= 2:
        names, text = names[:-1], names[-1]
    else:
        raise UsageError(
            "give the children's names and then the text (or --file FILE)",
            'e.g. sandboxrun send api "run the tests", or sandboxrun send api --file msg.md',
        )
    if not text.strip():
        raise UsageError("the message is empty", "Say what the children should do.")
    settings = settings_for(Path("."))
    store = open_store(settings)
    tmux = Tmux()
    # every name is resolved before anything is typed: a typo in the last name must not leave
    # the message delivered to the first ones only
    targets = [_child(store, name) for name in names]
    results = [send_mod.send(store, tmux, t, text, home=settings.home) for t in targets]
    if json_out:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            if r.outcome != send_mod.FAILED:
                console.print(f"{r.name}: {r.outcome} ({r.detail})")
                continue
            err_console.print(f"{r.name}: failed ({r.detail})", markup=False)
            if r.hint:
                err_console.print(f"  Hint: {r.hint}", markup=False)
    if any(r.outcome == send_mod.FAILED for r in results):
        raise typer.Exit(1)


def wait_cmd(
    names: list[str] = typer.Argument(..., help="Children to wait for."),
    any_: bool = typer.Option(False, "--any", help="Return when the first one is done."),
    all_: bool = typer.Option(False, "--all", help="Return when all are done (the default)."),
    timeout: str = typer.Option(None, "--timeout", help="Give up after this long (30s, 5m)."),
    json_out: bool = typer.Option(False, "--json", help="Print the states as JSON."),
) -> None:
    """Wait until children are idle, need a permission answer, or have exited.

    Exit code: 0 idle, 10 needs_permission, 11 exited (the highest among them with --all),
    124 timeout.
    """
    if any_ and all_:
        raise UsageError(
            "--any and --all exclude each other",
            "--any returns when one child is ready, --all (the default) when every one is.",
        )
    limit = parse_duration(timeout) if timeout else None
    settings = settings_for(Path("."))
    store = open_store(settings)
    tmux = Tmux()
    sessions = [_child(store, n) for n in names]
    result = wait_mod.wait_for(store, tmux, sessions, any_=any_, timeout=limit)
    states, done, finished = result.states, result.done, result.finished
    if json_out:
        print_json({n: st.to_dict() for n, st in states.items()})
    else:
        for n, st in states.items():
            console.print(f"{n}: {st.name} ({st.reason})")
    if not finished:
        raise typer.Exit(WAIT_TIMEOUT_CODE)
    raise typer.Exit(max(WAIT_CODES[st.name] for st in done.values()))


def _message_file(path: Path) -> str:
    """The text of ``send --file``: a missing file or a directory is a usage error naming it."""
    if path.is_dir():
        raise UsageError(f"message file {path} is a directory", "Give the file with the message.")
    if not path.is_file():
        raise UsageError(f"message file {path} does not exist", "Check the path.")
    from sandboxrun.textfiles import read_text_file

    return read_text_file(path, "message file")


def read_cmd(
    name: str = typer.Argument(..., help="The child."),
    last: int = typer.Option(None, "--last", "-n", min=1, help="Only the last N messages."),
    json_out: bool = typer.Option(False, "--json", help="Print the messages as JSON."),
) -> None:
    """The child's conversation (user and assistant messages, tool uses), across /clear."""
    settings = settings_for(Path("."))
    store = open_store(settings)
    session = _child(store, name)
    entries = transcript.conversation(transcript.transcript_paths(store, session))
    if last:
        entries = entries[-last:]
    if json_out:
        print_json(entries)
        return
    for e in entries:
        console.print(f"[bold]{e['role']}[/bold]: {e['text']}", markup=True)
        for t in e["tool_uses"]:
            console.print(f"  [dim]tool[/dim] {t['name']} {t['input']}", markup=True)


def open_cmd(name: str = typer.Argument(..., help="The child.")) -> None:
    """Show the child's tmux session: this terminal attaches to it (detach: prefix + d).

    Inside a tmux client of sandboxrun's own tmux server, this client switches to the child;
    inside another tmux (your own), a new window of it attaches to the child. The child's
    tmux server is the one it was spawned on.
    """
    from sandboxrun.dashboard.actions import open_pane, plan_open

    settings = settings_for(Path("."))
    plan = plan_open(_child(open_store(settings), name))
    if plan.how != "attach":
        console.print(open_pane(plan))
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"`open` needs a terminal to attach to {plan.name}",
            f"From a terminal: {plan.attach}",
        )
    sys.stdout.flush()
    os.execvp(plan.argv[0], plan.argv)


def close_cmd(
    names: list[str] = typer.Argument(..., help="Children to close."),
    force: bool = typer.Option(
        False, "--force", help="Close even when busy or not answering (/exit, then kill)."
    ),
    remove_worktree: bool = typer.Option(
        False,
        "--remove-worktree",
        help="Also remove the worktree (refused when it has uncommitted changes; branch kept).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Ask children's Claude to exit, then end their tmux sessions; worktrees and branches stay.

    A busy child (or one waiting for a permission answer) is refused without --force: its
    turn would be lost. --remove-worktree removes the worktree too, refused when it has
    uncommitted changes; the branch (every commit) always stays.
    """
    settings = settings_for(Path("."))
    store = open_store(settings)
    tmux = Tmux()
    results, failed = [], False
    for name in names:
        try:
            results.append(
                close_mod.close(
                    store,
                    tmux,
                    _child(store, name),
                    force=force,
                    remove_worktree=settings_for(_root(Path("."))) if remove_worktree else None,
                )
            )
        except SandboxrunError as exc:
            failed = True
            results.append({"name": name, "closed": False, "error": exc.message, "hint": exc.hint})
    _print_closed(results, json_out)
    if failed:
        raise typer.Exit(1)


def _print_closed(results: list[dict[str, Any]], json_out: bool) -> None:
    """Per child: closed (how, where its worktree stays) or not closed, with a hint."""
    if json_out:
        print_json(results)
        return
    for r in results:
        if r.get("closed"):
            where = r.get("worktree")
            if r.get("worktree_removed"):
                kept = f"; worktree {where} removed (its branch and commits stay)"
            else:
                kept = f"; worktree kept at {where}" if where else ""
            console.print(f"{r['name']}: closed ({r.get('how', 'ended')}){kept}")
        else:
            err_console.print(f"{r['name']}: not closed: {r['error']}")
            if r.get("hint"):
                err_console.print(f"  Hint: {r['hint']}")


def monitor_cmd(
    repo: Path = typer.Option(None, "--repo", help="Only this repository's children."),
    interval: str = typer.Option("5s", "--interval", help="Time between passes."),
    once: bool = typer.Option(False, "--once", help="One pass, print the states, exit."),
    daemon: bool = typer.Option(False, "--daemon", help="Run in the background."),
    merge_interval: str = typer.Option(
        "30s", "--merge-interval", help="Time between checks for merged children's branches."
    ),
    show_status: bool = typer.Option(
        False, "--status", help="Say whether a monitor runs (exit 0) or not (exit 1)."
    ),
    stop: bool = typer.Option(False, "--stop", help="Stop the running monitor."),
    json_out: bool = typer.Option(False, "--json", help="With --status/--stop: print JSON."),
) -> None:
    """Watch children: states, exits, stale turns; continue them after a usage limit resets;
    tell a child and the master (MERGED message) when its branch is merged into its base.

    One monitor per repository (--repo) or for every repository (no --repo), held by a
    locked pidfile under $SANDBOXRUN_HOME/monitor/: a second start says which one runs and
    exits 1. Logs to $SANDBOXRUN_HOME/logs/monitor.log (rotated). Safe to restart: state lives
    in the database and tmux.

    Example: sandboxrun monitor --repo . --daemon; sandboxrun monitor --repo . --status
    """
    if sum((once, daemon, show_status, stop)) > 1:
        raise UsageError(
            "give at most one of --once, --daemon, --status, --stop",
            "e.g. sandboxrun monitor --daemon, then sandboxrun monitor --status",
        )
    root = _root(repo) if repo else None
    settings = settings_for(root or Path("."))
    key = str(root) if root else None
    if show_status or stop:
        info = (monitor_pid.stop if stop else monitor_pid.status)(settings.home, key)
        if json_out:
            print_json({**info.to_dict(), "stopped": stop and info.running})
        elif info.running:
            verb = "stopped" if stop else "running"
            console.print(f"monitor {verb} (pid {info.pid}, {_watching(info.repo)})")
        else:
            stale = f"; stale pidfile of pid {info.pid}" if info.stale else ""
            console.print(f"no monitor running ({_watching(key)}){stale}")
        if show_status and not info.running:
            raise typer.Exit(1)
        return
    if daemon:
        from sandboxrun import process

        running = monitor_pid.status(settings.home, key)
        if running.running:
            raise monitor_pid.MonitorRunningError(
                f"a monitor is already running for {key or 'every repository'} (pid {running.pid})",
                "See it with `sandboxrun monitor --status`; stop it with "
                "`sandboxrun monitor --stop`.",
            )
        argv = [sys.executable, "-m", "sandboxrun", "monitor", "--interval", interval,
                "--merge-interval", merge_interval]  # fmt: skip
        if root:
            argv += ["--repo", str(root)]
        (settings.home / "logs").mkdir(parents=True, exist_ok=True)
        pid = process.spawn_detached(argv, output=settings.home / "logs" / "monitor.out")
        _await_monitor(settings.home, key, pid)
        console.print(f"monitor running in the background (pid {pid})")
        return
    store = open_store(settings)
    monitor_mod.setup_logging(settings.home)
    mon = monitor_mod.Monitor(
        store,
        Tmux(),
        settings,
        repo=key,
        merge_interval=parse_duration(merge_interval),
    )
    if once:
        states = mon.tick()
        print_json({n: st.to_dict() for n, st in states.items()})
        return
    with monitor_pid.MonitorLock(settings.home, key):
        mon.run(parse_duration(interval))


def _watching(key: str | None) -> str:
    """Which monitor: the one of a repository, or the one started without --repo."""
    return f"repository {key}" if key else "the one for all repositories, started without --repo"


def _await_monitor(home: Path, key: str | None, pid: int, timeout: float = 30.0) -> None:
    """Until the detached monitor ``pid`` holds its pidfile (it may lose a start race)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = monitor_pid.status(home, key)
        if info.running and info.pid == pid:
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    raise SandboxrunError(
        f"the background monitor (pid {pid}) did not start",
        f"See {home / 'logs' / 'monitor.out'} and `sandboxrun monitor --status`.",
    )


def discover_cmd(
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list)."),
) -> None:
    """Children running in tmux ({prefix}_child_*) that the database does not know."""
    root = _root(repo)
    settings = settings_for(root)
    found = adopt_mod.discover(open_store(settings), Tmux(), spawn_mod.prefix_for(root, settings))
    if json_out:
        print_json([o.to_dict() for o in found])
        return
    if not found:
        console.print("no unknown children")
    for o in found:
        console.print(f"{o.name}: tmux {o.tmux_session}, pid {o.pid}, in {o.worktree}")
    if found:
        console.print("take them over: sandboxrun adopt --all")


def adopt_cmd(
    names: list[str] = typer.Argument(None, help="Children to adopt (by name)."),
    all_: bool = typer.Option(False, "--all", help="Adopt every child `discover` finds."),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the sessions as JSON."),
) -> None:
    """Take over children the database lost: their rows come back (same session id)."""
    if bool(names) == all_:
        raise UsageError(
            "name the children to adopt, or pass --all (not both)",
            "See them with `sandboxrun discover`.",
        )
    root = _root(repo)
    settings = settings_for(root)
    store = open_store(settings)
    tmux = Tmux()
    found = adopt_mod.discover(store, tmux, spawn_mod.prefix_for(root, settings))
    chosen = found if all_ else [o for o in found if o.name in names]
    missing = set(names or ()) - {o.name for o in chosen}
    if missing:
        raise UsageError(
            f"no unknown child named {', '.join(sorted(missing))}",
            "See them with `sandboxrun discover`.",
        )
    sessions = [adopt_mod.adopt(store, tmux, o) for o in chosen]
    if json_out:
        print_json([s.to_dict() for s in sessions])
        return
    for s in sessions:
        console.print(f"{s.name}: adopted (session {s.id}, {s.activity or 'state unknown'})")
    if not sessions:
        console.print("no unknown children to adopt (`sandboxrun discover` lists them)")


def shutdown_cmd(
    all_: bool = typer.Option(False, "--all", help="Every repository's children, not just here."),
    wait: str = typer.Option("60s", "--wait", help="How long busy children get to finish."),
    force: bool = typer.Option(False, "--force", help="Then end children still busy."),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Close every child gracefully (/exit, then end its tmux session); worktrees kept."""
    root = None if all_ else _root(repo)
    settings = settings_for(root or Path("."))
    store = open_store(settings)
    tmux = Tmux()
    live = [
        s for s in monitor_mod.children(store, str(root) if root else None) if not s.is_terminal
    ]
    deadline = time.monotonic() + parse_duration(wait)
    if not live:
        if json_out:
            print_json([])
            return
        where = "any repository" if root is None else str(root)
        console.print(f"no running children in {where}: nothing to close")
        return
    while time.monotonic() < deadline:
        states = [state_of(tmux, store.get(s.id)).name for s in live]
        if not any(st in ("busy", "starting") for st in states):
            break
        time.sleep(0.5)
    results: list[dict[str, Any]] = []
    for s in live:
        try:
            results.append(close_mod.close(store, tmux, store.get(s.id), force=force))
        except SandboxrunError as exc:
            results.append(
                {"name": s.name, "closed": False, "error": exc.message, "hint": exc.hint}
            )
    _print_closed(results, json_out)
    if any(not r.get("closed") for r in results):
        raise typer.Exit(1)


master_app = typer.Typer(
    help=(
        "The master: an interactive Claude Code in the main checkout (tmux session "
        "{prefix}_master, role pm) with the monitor in its second window. "
        ".sandboxrun/master.txt is its first prompt, once per repository."
    ),
    no_args_is_help=True,
)


@master_app.command("start")
def master_start_cmd(
    model: str = typer.Option(None, "--model", help="Claude model for the master."),
    skip_permissions: bool = typer.Option(
        False, "--skip-permissions", help="Run claude with --dangerously-skip-permissions."
    ),
    no_monitor: bool = typer.Option(False, "--no-monitor", help="Do not start the monitor."),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the session as JSON."),
) -> None:
    """Start the master session (and the monitor); binds .sandboxrun/session_id.txt once."""
    root = _root(repo)
    settings = settings_for(root)
    req = spawn_mod.SpawnRequest(
        name="master", task="", model=model, skip_permissions=skip_permissions
    )
    session = master_mod.start(
        root, settings, open_store(settings), Tmux(), req=req, monitor=not no_monitor
    )
    if json_out:
        print_json(session.to_dict())
        return
    console.print(f"master: started (tmux session {session.tmux_session}, session {session.id})")


@master_app.command("stop")
def master_stop_cmd(
    force: bool = typer.Option(False, "--force", help="Stop it even when busy."),
    repo: Path = REPO_OPTION,
) -> None:
    """Ask the master's Claude to exit and end its tmux session (the monitor with it)."""
    root = _root(repo)
    settings = settings_for(root)
    store = open_store(settings)
    tmux = Tmux()
    info = master_mod.status(root, settings, store, tmux)
    if info["session"] is None or not tmux.has_session(info["tmux_session"]):
        console.print("master: not running")
        return
    close_mod.close(store, tmux, store.get(info["session"]), force=force)
    console.print("master: stopped")


@master_app.command("status")
def master_status_cmd(
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Whether the master and its monitor run; its Claude session id; push URL, base branch."""
    root = _root(repo)
    settings = settings_for(root)
    info = master_mod.status(root, settings, open_store(settings), Tmux())
    if json_out:
        print_json(info)
        return
    for key, value in info.items():
        console.print(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    """Add the local-children commands to the CLI."""
    for name, fn in (
        ("spawn", spawn_cmd),
        ("send", send_cmd),
        ("wait", wait_cmd),
        ("read", read_cmd),
        ("open", open_cmd),
        ("close", close_cmd),
        ("monitor", monitor_cmd),
        ("discover", discover_cmd),
        ("adopt", adopt_cmd),
        ("shutdown", shutdown_cmd),
    ):
        app.command(name)(fn)
    app.add_typer(master_app, name="master")
