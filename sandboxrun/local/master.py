"""``sandboxrun master start|stop|status``: the master session and its monitor.

The master is an interactive Claude Code in the main checkout, in tmux session
``{prefix}_master``, with our hooks; its role is the pm role (``pm`` by default), so it works
where part 1 expects the pm. ``.sandboxrun/master.txt`` is its first prompt, given once per
repository (a restarted master does not get it again). Its Claude session id is bound once:
in the database and in ``.sandboxrun/session_id.txt``, written only when that file is missing
or empty (children never write it). The repository's push URL and base branch are recorded on
the row. The monitor runs in the session's second window.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.errors import UsageError
from sandboxrun.local import monitor_pid
from sandboxrun.local.mcp_config import write_mcp_config
from sandboxrun.local.spawn import (
    SpawnError,
    SpawnRequest,
    by_hand,
    claude_argv,
    claude_env,
    failed_unless_up,
    prefix_for,
    root_refusal,
    tmux_row,
    wait_ready,
    write_settings,
)
from sandboxrun.local.worktrees import default_branch
from sandboxrun.store import SessionStore, Status
from sandboxrun.tmux import Tmux, child_env

MASTER_PROMPT = Path(".sandboxrun") / "master.txt"
SESSION_ID_FILE = Path(".sandboxrun") / "session_id.txt"
MONITOR_WINDOW = "monitor"


def master_session(prefix: str) -> str:
    """The master's tmux session (and row) name."""
    return f"{prefix}_master"


def _rows(store: SessionStore, name: str) -> list[Any]:
    return [s for s in store.list() if s.tmux_session == name and s.options.get("master")]


def _push_url(root: Path) -> str | None:
    res = gitops.git(root, "remote", "get-url", "--push", "origin", check=False)
    return res.stdout.strip() or None if res.ok else None


def bind_session_id(root: Path, claude_id: str) -> bool:
    """Write ``.sandboxrun/session_id.txt`` when it is missing or empty; whether it wrote."""
    path = root / SESSION_ID_FILE
    if path.is_file() and path.read_text().strip():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(claude_id + "\n")
    return True


def start(
    root: Path,
    settings: Settings,
    store: SessionStore,
    tmux: Tmux,
    *,
    env: Mapping[str, str] | None = None,
    req: SpawnRequest | None = None,
    monitor: bool = True,
    ready_timeout: float = 60.0,
) -> Any:
    """Start the master (refused when it runs); returns its session row."""
    request = req or SpawnRequest(name="master", task="")
    refusal = root_refusal(request, os.geteuid(), os.environ if env is None else env)
    if refusal is not None:
        raise SpawnError(*refusal)
    prefix = prefix_for(root, settings, env)
    name = master_session(prefix)
    if tmux.has_session(name):
        raise UsageError(
            f"the master is already running (tmux session {name})",
            "See it with `sandboxrun master status`, or stop it with `sandboxrun master stop`.",
        )
    earlier = _rows(store, name)
    prompt_file = root / MASTER_PROMPT
    send_prompt = prompt_file.is_file() and not any(
        s.options.get("master_prompt_sent") for s in earlier
    )
    prompt = prompt_file.read_text() if send_prompt else None
    for old in earlier:  # the name is unique: earlier masters keep their rows, renamed
        if not old.is_terminal:
            store.set_status(old.id, Status.COMPLETED, error="replaced by a new master")
        store.update(old.id, name=f"{name}~{old.id[:8]}")
    options = {"master": True, "push_url": _push_url(root), "master_prompt_sent": send_prompt}
    row = tmux_row(store, tmux, name=name, role=settings.pm_role, repo=root, worktree=root,
                   branch=_branch(root), base_ref=default_branch(root), tmux_session=name,
                   options=options)  # fmt: skip
    with failed_unless_up(store, tmux, row.id, name):
        full_env = claude_env(env, row, settings, root)
        mcp_file = write_mcp_config(settings.home, row.id, worktree=root, root=root, env=full_env)
        argv = claude_argv(
            settings.claude_bin,
            write_settings(settings.home, row.id),
            request,
            prompt,
            mcp_config=mcp_file,
        )
        tmux.new_session(name, argv, cwd=root, env=full_env)
        wait_ready(store, tmux, row.id, name, prompt, timeout=ready_timeout,
                   by_hand=by_hand(settings.claude_bin, request, root))  # fmt: skip
        while not store.get(row.id).agent_session_id:  # bound by SessionStart, just before
            time.sleep(0.05)
    claude_id = store.get(row.id).agent_session_id or ""
    bind_session_id(root, claude_id)
    if monitor and not monitor_pid.status(settings.home, str(root)).running:
        # (one monitor per repository: an already running one, e.g. --daemon, carries on)
        tmux.new_window(
            name,
            MONITOR_WINDOW,
            [sys.executable, "-m", "sandboxrun", "monitor", "--repo", str(root)],
            cwd=root,
            env=child_env(env, SANDBOXRUN_HOME=str(settings.home)),
        )
        # say "running" only once it is: the window's monitor takes its pidfile in a moment
        monitor_pid.wait_running(settings.home, str(root), timeout=30)
    return store.get(row.id)


def _branch(root: Path) -> str | None:
    res = gitops.git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return res.stdout.strip() or None if res.ok else None


def status(root: Path, settings: Settings, store: SessionStore, tmux: Tmux) -> dict[str, Any]:
    """Whether the master runs, its Claude session, the monitor window, the recorded repo."""
    name = master_session(prefix_for(root, settings))
    rows = [s for s in _rows(store, name) if s.name == name]
    row = rows[-1] if rows else None
    sid_file = root / SESSION_ID_FILE
    return {
        "tmux_session": name,
        "running": tmux.has_session(name) and bool((p := tmux.pane(name)) and not p.dead),
        "monitor": monitor_pid.status(settings.home, str(root)).running,
        "monitor_window": MONITOR_WINDOW in tmux.windows(name),
        "session": row.id if row else None,
        "claude_session_id": row.agent_session_id if row else None,
        "session_id_file": sid_file.read_text().strip() if sid_file.is_file() else None,
        "push_url": row.options.get("push_url") if row else None,
        "base_branch": row.base_ref if row else None,
        "activity": row.activity if row else None,
    }
