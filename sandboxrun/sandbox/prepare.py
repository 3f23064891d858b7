"""Starting a sandbox run: validate the request, make the worktree and branch, register the
session. Leaves nothing half-made when anything fails; `RunDriver` takes it from there.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.errors import NameInUseError, UsageError
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.store import Session, SessionStore
from sandboxrun.sync.secrets import secret_paths


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
        "directory on this machine (not isolated).",
    )


def prepare_run(settings: Settings, store: SessionStore, req: RunRequest) -> Session:
    """Validate the request, create the worktree + branch and register the session."""
    if (req.prompt is None) == (req.prompt_file is None):
        raise UsageError(
            "give exactly one of --prompt or --prompt-file",
            "e.g. sandboxrun run --prompt-file PLAN.md",
        )
    prompt = req.prompt
    if req.prompt_file is not None:
        path = req.prompt_file.expanduser()
        if not path.is_file():
            raise UsageError(
                f"prompt file {req.prompt_file} does not exist",
                "Check the path, or pass the text with --prompt.",
            )
        prompt = path.read_text(encoding="utf-8", errors="replace")
    if not (prompt or "").strip() and not req.dry_run:
        raise UsageError("the prompt is empty", "Write the task into the prompt file.")

    requested_root = gitops.repo_root(req.repo)
    repo = gitops.main_worktree(requested_root)
    if requested_root != repo and requested_root.parent.name == settings.worktree_dir:
        raise UsageError(
            f"{requested_root} is a sandboxrun worktree, not the main checkout",
            f"Run from the main checkout: sandboxrun run --repo {repo} ...",
        )
    backend_name = choose_backend(settings, req.backend)
    no_isolation = bool(req.extra_options.get("no_isolation"))
    if no_isolation and backend_name != "local":
        raise UsageError(
            "--no-isolation is for --backend local only",
            f"The {backend_name} backend is always isolated; drop --no-isolation.",
        )
    backend = get_backend(backend_name, settings, no_isolation=no_isolation)
    backend.check_ready(dry_run=req.dry_run)
    isolation_warning = getattr(getattr(backend, "decision", None), "warning", None)

    name = gitops.validate_name(req.name or default_name(req.prompt_file, prompt))
    base_commit = gitops.resolve_commit(repo, req.base)
    branch = f"{settings.branch_prefix}{name}"
    worktree = repo / settings.worktree_dir / name
    if any(other.name == name for other in store.list()):
        raise NameInUseError(
            f"a session named {name!r} already exists",
            f"Pick another --name, or look at it with `sandboxrun status {name}`.",
        )
    gitops.ensure_excluded(repo, f"/{settings.worktree_dir}/")
    gitops.create_worktree(repo, worktree, branch, base_commit)
    try:
        carried_secrets: list[str] = []
        if req.with_changes:
            _, carried_secrets = gitops.carry_changes(requested_root, worktree, secret_paths)
        options = {
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
    except BaseException:
        # Leave nothing half-made: the worktree and branch are ours and hold no user work.
        gitops.remove_worktree(repo, worktree, branch, delete_branch=True, force=True)
        raise
    if isolation_warning:
        # In the session's own record too (`logs`), not only on this terminal.
        store.add_event(session.id, "warning", {"message": isolation_warning})
    return session
