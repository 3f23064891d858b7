"""``sandboxrun spawn``: a child = an interactive Claude Code in its own worktree and tmux session.

The child's ``claude`` is the pane's own process, started with a generated ``--settings``
file holding our hooks (``sandboxrun-hook`` for every event) and the first prompt as its
command-line argument: nothing is typed, so nothing can be garbled or left unsubmitted, however
many children start at once. ``SANDBOXRUN_SESSION`` binds every hook call to the child's row;
``CLAUDE_INSTANCE_ID`` carries its role. ``--mcp-config`` gives it sandboxrun's MCP server
merged with the repository's ``.mcp.json`` (:mod:`sandboxrun.local.mcp_config`).

First-run screens: the workspace trust dialog is pre-accepted in Claude Code's own config
(``projects[<worktree>].hasTrustDialogAccepted``, written atomically under a lock) and the
bypass-permissions confirmation is skipped by ``skipDangerousModePermissionPrompt`` in our
settings file. Should either screen still show, :func:`wait_ready` answers it in the pane; a
login/onboarding screen or a ``claude`` that dies at start is a clear error, never a hang.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.local import worktrees
from sandboxrun.local.hooks_install import hook_settings
from sandboxrun.local.identity import validate_role
from sandboxrun.local.mcp_config import repo_servers, write_mcp_config
from sandboxrun.local.send import prompt_seen
from sandboxrun.local.states import prompt_hash
from sandboxrun.store import Session, SessionStore, Status
from sandboxrun.tmux import Tmux, child_env

#: the file in ``.sandboxrun/`` that wraps a child's first prompt
CHILD_TEMPLATE = Path(".sandboxrun") / "child.txt"
PLACEHOLDERS = ("task", "name", "role", "branch", "worktree", "base")

_LOGIN_TEXTS = (
    "Select login method",
    "Unable to connect to Anthropic services",
    "Not logged in",
    "Please run /login",
    "Invalid API key",
    "Choose the text style",  # the first-run onboarding: claude was never set up
)
#: seconds between database reads / screen looks while waiting for a child to come up
_POLL, _LOOK_EVERY = 0.03, 0.3
_TRUST_TEXT = "Yes, I trust this folder"
_BYPASS_TEXT = "Yes, I accept"


class SpawnError(SandboxrunError):
    """A child could not be started (or did not come up)."""


def prefix_for(repo: Path, settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The tmux session prefix: ``PROJECT_PREFIX``, then config ``project_prefix``, then the
    repository directory's name (made safe for tmux: no ``.`` or ``:``)."""
    env = os.environ if env is None else env
    raw = env.get("PROJECT_PREFIX") or settings.project_prefix or repo.name
    return re.sub(r"[^A-Za-z0-9_-]", "-", str(raw)) or "sandboxrun"


def child_session(prefix: str, name: str) -> str:
    """The tmux session name of child ``name``."""
    return f"{prefix}_child_{name}"


def render_prompt(repo: Path, task: str, fields: Mapping[str, str]) -> str:
    """The first prompt: ``.sandboxrun/child.txt`` with ``{task}``, ``{name}``... filled in.

    Only the known placeholders are replaced, so braces elsewhere (code in the template or
    the task) stay as they are. Without a template the task itself is the prompt.
    """
    path = repo / CHILD_TEMPLATE
    if not path.is_file():
        return task
    values = {**fields, "task": task}
    pattern = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
    return pattern.sub(lambda m: str(values.get(m.group(1), "")), path.read_text())


def claude_config_file(env: Mapping[str, str]) -> Path:
    """Claude Code's own state file (``.claude.json``) for this environment."""
    config_dir = env.get("CLAUDE_CONFIG_DIR")
    if config_dir:
        return Path(config_dir) / ".claude.json"
    return Path(env.get("HOME") or Path.home()) / ".claude.json"


def trust_workspace(env: Mapping[str, str], path: Path) -> None:
    """Pre-accept Claude Code's trust dialog for ``path`` (merging into its config file)."""
    config = claude_config_file(env)
    config.parent.mkdir(parents=True, exist_ok=True)
    with open(config.with_name(config.name + ".sandboxrun.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(config.read_text()) if config.exists() else {}
        except ValueError as exc:
            raise SpawnError(
                f"{config} is not valid JSON, so the trust dialog cannot be pre-accepted",
                "Fix or move that file (Claude Code rewrites it on its next start).",
            ) from exc
        projects = data.setdefault("projects", {})
        entry = projects.setdefault(str(path), {})
        if entry.get("hasTrustDialogAccepted") is True:
            return
        entry["hasTrustDialogAccepted"] = True
        tmp = config.with_name(f"{config.name}.sandboxrun-{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, config)


def write_settings(home: Path, session_id: str, *, project_servers: Sequence[str] = ()) -> Path:
    """Our ``--settings`` file for one child: every hook, and no bypass confirmation.

    ``project_servers``: the names in the worktree's ``.mcp.json``. The child gets them through
    ``--mcp-config`` already; as project servers Claude Code would first ask to approve each
    in a dialog (and record the answer in the worktree), so they are turned off there.
    """
    path = home / "local" / session_id / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = hook_settings()
    settings["skipDangerousModePermissionPrompt"] = True
    if project_servers:
        settings["disabledMcpjsonServers"] = sorted(project_servers)
    path.write_text(json.dumps(settings, indent=2))
    return path


@dataclass
class SpawnRequest:
    """What ``sandboxrun spawn`` was asked for."""

    name: str
    task: str
    role: str | None = None
    base: str | None = None
    model: str | None = None
    skip_permissions: bool = False
    permission_mode: str | None = None
    worktree: bool = True


def agent_flags(req: SpawnRequest) -> list[str]:
    """The options of the request that change how Claude Code behaves (model, permissions):
    the child's own command line and the one :func:`by_hand` shows share them."""
    flags = ["--model", req.model] if req.model else []
    if req.skip_permissions:
        flags.append("--dangerously-skip-permissions")
    elif req.permission_mode:
        flags += ["--permission-mode", req.permission_mode]
    return flags


def claude_argv(
    claude: str,
    settings_file: Path,
    req: SpawnRequest,
    prompt: str | None,
    *,
    mcp_config: Path | None = None,
) -> list[str]:
    """The child's command line (argv; the prompt is one argument, never shell text)."""
    argv = [claude, "--settings", str(settings_file)]
    if mcp_config is not None:
        argv += ["--mcp-config", str(mcp_config)]
    argv += agent_flags(req)
    if prompt is None:
        return argv
    # "--" ends the options: a prompt starting with "-" stays the prompt.
    return [*argv, "--", prompt]


def root_refusal(req: SpawnRequest, euid: int, env: Mapping[str, str]) -> tuple[str, str] | None:
    """Why Claude Code would exit at once for this child, as (message, hint), or None.

    As root, Claude Code refuses ``--dangerously-skip-permissions`` (and the
    ``bypassPermissions`` mode) unless ``IS_SANDBOX=1`` says the machine is a throwaway
    sandbox: without this check the child's pane dies before its first screen. Pure.
    """
    bypass = req.skip_permissions or req.permission_mode == "bypassPermissions"
    if not bypass or euid != 0 or env.get("IS_SANDBOX") == "1":
        return None
    flag = "--skip-permissions" if req.skip_permissions else "--permission-mode bypassPermissions"
    return (
        f"Claude Code refuses to skip permissions as root ({flag}), so the child would exit "
        "at once; nothing was started",
        f"Run sandboxrun as an ordinary user; or drop {flag} (e.g. --permission-mode "
        "acceptEdits); or, if this machine is itself a disposable sandbox (container, VM), "
        "set IS_SANDBOX=1.",
    )


def spawn(
    repo: Path,
    req: SpawnRequest,
    settings: Settings,
    store: SessionStore,
    tmux: Tmux,
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> Any:
    """Start child ``req.name``: worktree, session row, tmux session; wait until it is up.

    Returns the session row. Raises :class:`SpawnError` (the tmux session ended, the row
    marked failed) when the child does not come up.
    """
    if req.skip_permissions and req.permission_mode:
        raise UsageError(
            "--skip-permissions and --permission-mode exclude each other",
            "Pick one: --skip-permissions, or e.g. --permission-mode acceptEdits.",
        )
    name = validate_role(req.name)
    role = validate_role(req.role) if req.role else name
    refusal = root_refusal(req, os.geteuid(), os.environ if env is None else env)
    if refusal is not None:
        raise SpawnError(*refusal)
    root = gitops.main_worktree(repo)
    prefix = prefix_for(root, settings, env)
    tmux_name = child_session(prefix, name)
    if tmux.has_session(tmux_name):
        raise UsageError(
            f"a child named {name!r} is already running (tmux session {tmux_name})",
            f"Talk to it with `sandboxrun send {name} ...`, or `sandboxrun close {name}` first.",
        )
    # a name held by another session is refused before a worktree or branch is made for it
    _free_name(store, name)
    branch: str | None
    if req.worktree:
        wt = worktrees.setup(root, role, settings, base=req.base)
        path, branch, base = wt.path, wt.branch, wt.base or req.base
    else:
        path, branch, base = root, _current_branch(root), req.base
    prompt = render_prompt(
        root,
        req.task,
        {
            "name": name,
            "role": role,
            "branch": branch or "",
            "worktree": str(path),
            "base": base or "",
        },
    )
    # a .mcp.json Claude Code could not load is refused before the child's row exists
    servers = list(repo_servers(path, path))
    row = tmux_row(store, tmux, name=name, role=role, repo=root, worktree=path, branch=branch,
                   base_ref=base, tmux_session=tmux_name, prompt=req.task, model=req.model,
                   options={"worktree": req.worktree})  # fmt: skip
    with failed_unless_up(store, tmux, row.id, tmux_name):
        full_env = claude_env(env, row, settings, path)
        settings_file = write_settings(settings.home, row.id, project_servers=servers)
        mcp_file = write_mcp_config(settings.home, row.id, worktree=path, root=root, env=full_env)
        argv = claude_argv(settings.claude_bin, settings_file, req, prompt, mcp_config=mcp_file)
        tmux.new_session(tmux_name, argv, cwd=path, env=full_env)
        wait_ready(store, tmux, row.id, tmux_name, prompt, timeout=ready_timeout,
                   by_hand=by_hand(settings.claude_bin, req, path))  # fmt: skip
    return store.get(row.id)


@contextmanager
def failed_unless_up(
    store: SessionStore, tmux: Tmux, session_id: str, tmux_name: str
) -> Iterator[None]:
    """Around starting a child (or the master) whose row exists: any failure ends its tmux
    session and marks the row failed, so no row says ``running`` with nothing behind it. A
    Ctrl-C leaves a child that is already up as it is (row and pane agree); one that never got
    a pane is marked failed."""
    try:
        yield
    except KeyboardInterrupt:
        if not tmux.has_session(tmux_name):
            store.set_status(session_id, Status.FAILED, error="interrupted before it started")
        raise
    except Exception as exc:
        tmux.kill_session(tmux_name)
        message = (
            exc.message if isinstance(exc, SandboxrunError) else f"{type(exc).__name__}: {exc}"
        )
        store.set_status(session_id, Status.FAILED, error=message)
        raise


def by_hand(claude_bin: str, req: SpawnRequest, cwd: Path) -> str:
    """The command that starts that Claude Code by hand, to see why it would not start."""
    argv = [claude_bin, *agent_flags(req)]
    return f"cd {shlex.quote(str(cwd))} && {shlex.join(argv)}"


def _current_branch(root: Path) -> str | None:
    res = gitops.git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return res.stdout.strip() or None if res.ok else None


def tmux_row(
    store: SessionStore, tmux: Tmux, *, repo: Path, worktree: Path, **fields: Any
) -> Session:
    """The row of an interactive Claude Code in tmux (a child or the master): local, running
    from now, in ``worktree`` of the repository ``repo``, its tmux server's socket recorded."""
    options = {**fields.pop("options", {}), "socket": tmux.socket_path}
    return store.create_session(mode="local", backend="tmux", status=Status.RUNNING,
                                repo=str(repo), worktree=str(worktree), started_at=time.time(),
                                options=options, **fields)  # fmt: skip


def claude_env(
    env: Mapping[str, str] | None, row: Session, settings: Settings, workspace: Path
) -> dict[str, str]:
    """The environment of that Claude Code: ``env`` (default ours) for a tmux pane, with its session and
    role (what its hooks and our MCP server bind to) and this home; its trust dialog for
    ``workspace`` pre-accepted."""
    full_env = child_env(env, SANDBOXRUN_SESSION=row.id, CLAUDE_INSTANCE_ID=row.role or "")
    full_env["SANDBOXRUN_HOME"] = str(settings.home)
    # the claim gate in its hooks judges other holders by the repository's stale_after
    # without reading the config file on every edit
    full_env["SANDBOXRUN_STALE_AFTER"] = f"{settings.stale_after:g}"
    trust_workspace(full_env, workspace)
    return full_env


def _free_name(store: SessionStore, name: str) -> None:
    """Let a new child reuse the name of an ended one (its row is renamed, not deleted)."""
    row = store.conn.execute("SELECT id, status FROM sessions WHERE name = ?", (name,)).fetchone()
    if row is None:
        return
    session = store.get(row["id"])
    if session.mode != "local" or not session.is_terminal:
        raise UsageError(
            f"a session named {name!r} already exists ({session.mode}, {session.status})",
            f"Close it first (`sandboxrun close {name}`) or pick another name.",
        )
    store.update(session.id, name=f"{name}~{session.id[:8]}")


def wait_ready(
    store: SessionStore,
    tmux: Tmux,
    session_id: str,
    tmux_name: str,
    prompt: str | None,
    *,
    timeout: float,
    by_hand: str | None = None,
) -> None:
    """Until the child's UserPromptSubmit hook has shown the first prompt, intact (its hash),
    or without a prompt until its SessionStart hook; answers first-run screens meanwhile and
    fails clearly on a login screen or an early exit.
    """
    deadline = time.monotonic() + timeout
    last_key = 0.0
    next_look = time.monotonic() + _LOOK_EVERY
    digest = prompt_hash(prompt) if prompt is not None else None
    while True:
        if digest is None:
            if store.get(session_id).agent_session_id:
                return
        elif prompt_seen(store, session_id, digest, 0):
            return
        # The database is read often (in-process, cheap); the screen less often: each look is
        # a tmux process, and on a busy machine it takes CPU from the claude that is starting.
        if time.monotonic() < next_look and time.monotonic() < deadline:
            time.sleep(_POLL)
            continue
        next_look = time.monotonic() + _LOOK_EVERY
        pane, text = tmux.snapshot(tmux_name)
        for needle in _LOGIN_TEXTS:
            if needle in text:
                raise SpawnError(
                    f"claude is not logged in or cannot reach its API (the pane shows {needle!r})",
                    "Run `claude` once by hand to log in (or set ANTHROPIC_API_KEY), "
                    "then spawn again.",
                )
        if pane is None or pane.dead:
            last = "\n".join(exit_lines(text))
            # tmux can report the pane dead a moment before its exit status
            status = pane.dead_status if pane else None
            raise SpawnError(
                "claude exited at start" + (f" (status {status})" if status is not None else "")
                + (f": {last}" if last else ", before its screen showed anything"),
                (f"Run it by hand to see why: {by_hand}" if by_hand else "Run `claude` by hand "
                 "to see why.") + " (SANDBOXRUN_CLAUDE_BIN names which claude is used.)",
            )  # fmt: skip
        for needle in (_TRUST_TEXT, _BYPASS_TEXT):
            # The pre-seeded config can lose the race with another running Claude Code that
            # rewrites .claude.json: then answer the screen. One key per look, decided by where
            # its cursor (❯) is, so a key lost while the screen draws is simply pressed again.
            if needle in text and time.monotonic() - last_key > 0.5:
                on_yes = any("\u276f" in line and needle in line for line in text.splitlines())
                tmux.send_keys(tmux_name, "Enter" if on_yes else "Down")
                last_key = time.monotonic()
        if time.monotonic() > deadline:
            screen = "\n".join(text.strip().splitlines()[-12:])
            # spawn() ends the tmux session on this error: the hint must not send anyone to it
            raise SpawnError(
                f"the child did not take its first prompt within {timeout:.0f}s "
                f"(no UserPromptSubmit hook with it); "
                + (f"its screen ended with:\n{screen}" if screen else "its screen was blank"),
                "Its tmux session was ended; the worktree and branch stay. Check that `claude` "
                "starts there by hand (SANDBOXRUN_CLAUDE_BIN names which one), then spawn again.",
            )
        time.sleep(_POLL)


def exit_lines(screen: str, keep: int = 5) -> list[str]:
    """The last ``keep`` lines a dead pane shows that say something: blank lines and tmux's
    own "Pane is dead" line left out (claude's error sits above a screen of blank lines)."""
    lines = [ln.rstrip() for ln in screen.splitlines()]
    said = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("Pane is dead")]
    return said[-keep:]
