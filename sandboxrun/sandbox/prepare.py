"""Starting a sandbox run: validate the request, make the worktree and branch, register the
session. Leaves nothing half-made when anything fails; `RunDriver` takes it from there.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun import gitops, process
from sandboxrun.config import SANDBOX_KEYS, Settings, format_duration
from sandboxrun.errors import AgentError, NameInUseError, SandboxrunError, UsageError
from sandboxrun.sandbox import submodules
from sandboxrun.sandbox.backends import Backend, get_backend
from sandboxrun.store import Session, SessionStore
from sandboxrun.sync.secrets import secret_paths
from sandboxrun.textfiles import read_text_file


@dataclass
class RunRequest:
    """Everything ``sandboxrun run`` was asked to do."""

    repo: Path
    prompt: str | None = None
    prompt_file: Path | None = None
    name: str | None = None
    base: str = "HEAD"
    backend: str | None = None
    keep: bool = False
    dry_run: bool = False
    allow_sensitive: bool = False
    with_changes: bool = False
    extra_options: dict[str, Any] = field(default_factory=dict)
    #: flags given that only the e2b backend uses (``--template``, ``--install-claude``)
    e2b_only: tuple[str, ...] = ()
    #: the caller already ran :func:`check_agent_can_start` for this backend (a fan-out group
    #: checks once, not before each of its tasks: ``claude auth status`` alone takes ~0.4 s)
    agent_checked: bool = False


def default_name(prompt_file: Path | None, prompt: str | None) -> str:
    """``<prompt-file stem>-<4 hex>``, or the first words of the prompt, or ``run-<hex>``."""
    if prompt_file is not None:
        stem = prompt_file.stem
    elif prompt:
        stem = "-".join(re.findall(r"[A-Za-z0-9]+", prompt)[:3])
    else:
        stem = "run"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._").lower()[:40] or "run"
    return f"{stem}-{secrets.token_hex(2)}"


def choose_backend(settings: Settings, requested: str | None) -> str:
    """The backend to use: the flag, else the config, else e2b when E2B_API_KEY is set."""
    name = requested or settings.backend
    if name:
        return name
    if os.environ.get("E2B_API_KEY"):
        return "e2b"
    raise UsageError(
        "no backend chosen and E2B_API_KEY is not set",
        "Set E2B_API_KEY to run in an E2B cloud sandbox, or pass --backend local to run in a "
        "directory on this machine (confined with bubblewrap on Linux; not isolated on macOS).",
    )


def read_task(prompt: str | None, prompt_file: Path | None, *, allow_empty: bool = False) -> str:
    """The task text from ``--prompt`` or ``--prompt-file`` (exactly one), checked.

    The one reading of a task for every way of starting an agent (``run``, ``spawn``, the MCP
    tool): a missing file, a directory or an empty task is a :class:`UsageError` naming it.
    """
    if (prompt is None) == (prompt_file is None):
        raise UsageError(
            "give exactly one of --prompt or --prompt-file",
            'e.g. --prompt-file PLAN.md, or --prompt "fix the failing test"',
        )
    if prompt_file is None:
        text = prompt or ""
        empty_hint = 'Say what the agent should do: --prompt "fix the failing test".'
    else:
        path = prompt_file.expanduser()
        if path.is_dir():
            raise UsageError(
                f"prompt file {prompt_file} is a directory",
                "Give the file with the task in it, e.g. --prompt-file plans/PLAN.md.",
            )
        if not path.is_file():
            raise UsageError(
                f"prompt file {prompt_file} does not exist",
                "Check the path, or pass the text with --prompt.",
            )
        text = read_text_file(path, "prompt file")
        empty_hint = f"Write the task into {prompt_file}."
    if not text.strip() and not allow_empty:
        where = "--prompt" if prompt_file is None else f"prompt file {prompt_file}"
        raise UsageError(f"the prompt is empty ({where})", empty_hint)
    return text


def read_prompt(req: RunRequest) -> str:
    """The run's task (:func:`read_task`); a dry run may have none."""
    return read_task(req.prompt, req.prompt_file, allow_empty=req.dry_run)


def check_agent_can_start(
    backend_name: str,
    backend: Backend,
    settings: Settings,
    *,
    dry_run: bool,
    isolated: bool = False,
) -> None:
    """Refuse, before anything is created, a run whose agent could not start.

    The backend's own readiness (E2B key, ``claude`` installed), the agent's credentials, and on
    the local backend the two ways the real Claude Code CLI refuses to work: as root without a
    sandbox, and when it is not logged in. ``isolated``: the agent runs confined as another
    user (bubblewrap), so the root check does not apply.
    """
    backend.check_ready(dry_run=dry_run)
    if dry_run:
        return
    backend.agent_env(dry_run=False)  # raises when no credentials can reach the agent
    if backend_name != "local":
        return
    refusal = root_refusal(os.geteuid(), os.environ, isolated=isolated)
    if refusal is not None:
        raise AgentError(*refusal)
    login = claude_login_state(settings.claude_bin)
    if login is False:
        raise AgentError(
            f"Claude Code ({settings.claude_bin}) is not logged in",
            "Log in once with `claude auth login` (or run `claude`), or set ANTHROPIC_API_KEY "
            "or CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`). `--dry-run` needs neither.",
        )


def root_refusal(euid: int, env: Mapping[str, str], *, isolated: bool) -> tuple[str, str] | None:
    """Why Claude Code would refuse to run for us, as (message, hint), or None.

    As root, Claude Code refuses ``--dangerously-skip-permissions`` unless ``IS_SANDBOX=1`` says
    the machine itself is a throwaway sandbox. Pure, so the rule is tested on its own.
    """
    if euid != 0 or isolated or env.get("IS_SANDBOX") == "1":
        return None
    return (
        "Claude Code refuses to run with --dangerously-skip-permissions as root, and this "
        "local run would start it as root without isolation",
        "Run sandboxrun as an ordinary user; or install bubblewrap (scripts/install_bwrap.sh) "
        "and drop --no-isolation, so the agent runs as an unprivileged user; or, if this "
        "machine is itself a disposable sandbox (container, VM), set IS_SANDBOX=1.",
    )


def claude_login_state(claude_bin: str) -> bool | None:
    """True/False when ``claude auth status --json`` says whether it is logged in, else None.

    None (cannot tell: an old CLI, a wrapper, a timeout) never blocks a run.
    """
    try:
        res = process.run(
            [claude_bin, "auth", "status", "--json"], input="", check=False, timeout=20
        )
    except SandboxrunError:
        return None
    try:
        state = json.loads(res.stdout)
    except ValueError:
        return None
    if isinstance(state, dict) and isinstance(state.get("loggedIn"), bool):
        return bool(state["loggedIn"])
    return None


def submodule_paths(repo: Path, commit: str) -> list[str]:
    """Paths of the submodules (gitlinks) in ``commit``'s tree."""
    return [path for path, _ in submodules.submodule_entries(repo, commit)]


def submodules_warning(paths: list[str]) -> str:
    """What a run on a repository with submodules does not take along, and how to take it."""
    return submodules.left_out_note(paths)


def _submodule_entries(repo: Path, commit: str) -> list[tuple[str, str]]:
    """:func:`~sandboxrun.sandbox.submodules.submodule_entries`, once per commit and process:
    a commit's tree never changes, and a fan-out group prepares its tasks from the same base
    (the whole tree's listing each time cost a git process, longer in a large repository)."""
    return list(_submodule_entries_cached(repo, commit))


@functools.lru_cache(maxsize=32)
def _submodule_entries_cached(repo: Path, commit: str) -> tuple[tuple[str, str], ...]:
    return tuple(submodules.submodule_entries(repo, commit))


def prepare_run(settings: Settings, store: SessionStore, req: RunRequest) -> Session:
    """Validate the request, create the worktree + branch and register the session.

    Everything that can be checked is checked before the worktree, branch and row exist.
    """
    settings.check(SANDBOX_KEYS)  # a bad setting fails the run now, not half-way
    prompt = read_prompt(req)
    if settings.max_turns is not None and settings.max_turns < 1:
        raise UsageError(
            f"--max-turns must be 1 or more, got {settings.max_turns}",
            "Leave it out for no limit.",
        )
    requested_root, repo, common = gitops.repo_paths(req.repo)
    if requested_root != repo and requested_root.parent.name == settings.worktree_dir:
        raise UsageError(
            f"{requested_root} is a sandboxrun worktree, not the main checkout",
            f"Run from the main checkout: sandboxrun run --repo {shlex.quote(str(repo))} ...",
        )
    backend_name = choose_backend(settings, req.backend)
    no_isolation = bool(req.extra_options.get("no_isolation"))
    if no_isolation and backend_name != "local":
        raise UsageError(
            "--no-isolation is for --backend local only",
            f"The {backend_name} backend is always isolated; drop --no-isolation.",
        )
    if req.e2b_only and backend_name != "e2b":
        flags = " and ".join(req.e2b_only)
        raise UsageError(
            f"{flags} {'is' if len(req.e2b_only) == 1 else 'are'} for --backend e2b only "
            f"(this run uses {backend_name})",
            f"Drop {flags}, or run with --backend e2b.",
        )
    if backend_name == "e2b" and settings.timeout > settings.max_lifetime:
        raise UsageError(
            f"a time limit of {format_duration(settings.timeout)} is longer than an E2B "
            f"sandbox may live (max_lifetime {format_duration(settings.max_lifetime)})",
            "E2B allows 1 h per sandbox on Hobby and 24 h on Pro: give a shorter --timeout, or "
            'on Pro set `max_lifetime = "24h"` in .sandboxrun.toml (or SANDBOXRUN_MAX_LIFETIME).',
        )
    # The repository's own facts first (a name, a base, no commits yet): cheap, and the fix a
    # user makes before any about the machine (an E2B key, Claude Code installed).
    name = gitops.validate_name(req.name or default_name(req.prompt_file, prompt))
    base_commit = gitops.resolve_commit(repo, req.base)
    branch = f"{settings.branch_prefix}{name}"
    worktree = repo / settings.worktree_dir / name
    if store.conn.execute("SELECT 1 FROM sessions WHERE name = ?", (name,)).fetchone():
        raise NameInUseError(
            f"a session named {name!r} already exists",
            f"Pick another --name, or look at it with `sandboxrun status {name}`.",
        )
    backend = get_backend(backend_name, settings, no_isolation=no_isolation)
    if not req.agent_checked:
        check_agent_can_start(
            backend_name,
            backend,
            settings,
            dry_run=req.dry_run,
            isolated=backend.confines_agent,
        )
    isolation_warning = getattr(getattr(backend, "decision", None), "warning", None)

    subs = _submodule_entries(repo, base_commit)
    included = subs if settings.include_submodules else []
    submodules.check_available(repo, included)
    gitops.ensure_excluded(repo, f"/{settings.worktree_dir}/", common)
    gitops.create_worktree(repo, worktree, branch, base_commit, common)
    try:
        submodules.materialize(repo, worktree, included)
        carried_secrets: list[str] = []
        if req.with_changes:
            _, carried_secrets = gitops.carry_changes(requested_root, worktree, secret_paths)
        options = {
            "submodules": [path for path, _ in subs],
            "included_submodules": [path for path, _ in included],
            "keep": req.keep,
            "dry_run": req.dry_run,
            "allow_sensitive": req.allow_sensitive,
            "with_changes": req.with_changes,
            "compression": settings.compression,
            "template": settings.template,
            "grace": settings.grace,
            "quota_stall": settings.quota_stall,
            "secrets_not_carried": carried_secrets,
            **req.extra_options,
        }
        if isolation_warning:
            options["isolation_warning"] = isolation_warning
        session = store.create_session(
            name=name,
            mode="sandbox",
            backend=backend_name,
            repo=str(repo),
            worktree=str(worktree),
            branch=branch,
            base_ref=req.base,
            base_commit=base_commit,
            prompt=prompt,
            prompt_file=str(req.prompt_file) if req.prompt_file else None,
            model=settings.model,
            max_turns=settings.max_turns,
            timeout_s=settings.timeout,
            warn_at=[w for w in settings.warn_at if w < settings.timeout],
            options=options,
            isolated=backend.confines_agent,
        )
        if options["submodules"]:
            paths = options["submodules"]
            note = submodules.included_note(paths) if included else submodules_warning(paths)
            store.add_event(session.id, "warning", {"message": note})
    except BaseException:
        # Leave nothing half-made: the worktree and branch are ours and hold no user work.
        gitops.remove_worktree(repo, worktree, branch, delete_branch=True, force=True)
        raise
    if isolation_warning:
        # In the session's own record too (`logs`), not only on this terminal.
        store.add_event(session.id, "warning", {"message": isolation_warning})
    return session
