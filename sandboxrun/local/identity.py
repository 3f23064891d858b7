"""Who an agent is: role names, their git identities, and which worktree a path belongs to.

Standard library only: the hook entry point (``sandboxrun/hook.py``) uses it on every tool call.
Identity is resolved in a fixed order: ``CLAUDE_INSTANCE_ID`` in the environment wins, then the
worktree-scoped ``user.email`` of the checkout (mapped back to a role), then none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandboxrun.errors import UsageError

#: domain of the default agent e-mail addresses (``<role>@agents.sandboxrun.invalid``); the
#: ``.invalid`` TLD can never be a real mailbox
DEFAULT_EMAIL_DOMAIN = "agents.sandboxrun.invalid"

ROLE_RULES = (
    "A role is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(no spaces, no slashes, no '..'), e.g. backend, frontend-2, qa."
)
_ROLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_role(role: str | None) -> str:
    """Return ``role`` when it can name a worktree and a branch; UsageError with the rules."""
    if role is None or role == "":
        raise UsageError("a role name is required", ROLE_RULES)
    if not _ROLE_RE.match(role) or ".." in role or role.endswith(".lock"):
        raise UsageError(f"invalid role name {role!r}", ROLE_RULES)
    return role


def check_allowed(role: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    """The problem with ``role`` given the allowed-roles list (None when fine or no list)."""
    if allowed and role not in allowed:
        return f"role {role!r} is not in the allowed roles ({', '.join(allowed)})"
    return None


def identity_for(role: str, identities: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """``(user.name, user.email)`` for ``role``: its config entry, else derived from the name."""
    entry = identities.get(role, {})
    return (
        entry.get("name") or f"{role} agent",
        entry.get("email") or f"{role}@{DEFAULT_EMAIL_DOMAIN}",
    )


def role_from_email(email: str | None, identities: Mapping[str, Mapping[str, str]]) -> str | None:
    """The role whose identity uses ``email`` (configured ones first, then the default form)."""
    if not email:
        return None
    for role, entry in identities.items():
        if entry.get("email", "").lower() == email.lower():
            return role
    local, _, domain = email.partition("@")
    if domain.lower() == DEFAULT_EMAIL_DOMAIN and _ROLE_RE.match(local):
        return local
    return None


@dataclass(frozen=True)
class Checkout:
    """A git work tree found from a path, without running git (the hook is on the hot path)."""

    top: Path  # the work tree's top directory
    git_dir: Path  # its own git dir (``.git`` or ``.git/worktrees/<id>``)
    main: Path  # the main checkout of the repository

    @property
    def is_main(self) -> bool:
        return self.top == self.main

    def branch(self) -> str | None:
        """The checked-out branch name (None when detached or unreadable)."""
        try:
            head = (self.git_dir / "HEAD").read_text().strip()
        except OSError:
            return None
        return head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else None

    def worktree_email(self) -> str | None:
        """``user.email`` from this work tree's own ``config.worktree`` (None when unset)."""
        return read_config_value(self.git_dir / "config.worktree", "user", "email")


def find_checkout(path: Path | str) -> Checkout | None:
    """The git work tree containing ``path`` (walking up to a ``.git``), or None."""
    here = Path(path).resolve()  # the same spelling git (and the CLI) use
    for top in (here, *here.parents):
        dot_git = top / ".git"
        if dot_git.is_dir():
            return Checkout(top, dot_git, top)
        if dot_git.is_file():
            try:
                text = dot_git.read_text().strip()
            except OSError:
                return None
            if not text.startswith("gitdir:"):
                return None
            git_dir = (top / text.removeprefix("gitdir:").strip()).resolve()
            common = git_dir
            commondir = git_dir / "commondir"
            if commondir.is_file():
                common = (git_dir / commondir.read_text().strip()).resolve()
            main = common.parent if common.name == ".git" else common
            return Checkout(top, git_dir, main)
    return None


def read_config_value(path: Path, section: str, key: str) -> str | None:
    """One ``section.key`` value from a git config file (simple form; last one wins)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    current, value = "", None
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]").split()[0].lower() if line.strip("[]") else ""
            continue
        name, sep, rest = line.partition("=")
        if sep and current == section and name.strip().lower() == key:
            value = rest.strip().strip('"')
    return value


@dataclass(frozen=True)
class Identity:
    """Who is running: the role (None when unknown) and where that came from."""

    role: str | None
    source: str  # "CLAUDE_INSTANCE_ID" | "git user.email" | "none"


def resolve_identity(
    env: Mapping[str, str],
    checkout: Checkout | None,
    identities: Mapping[str, Mapping[str, str]],
) -> Identity:
    """``CLAUDE_INSTANCE_ID`` wins, then the worktree's ``user.email``, then none."""
    instance = env.get("CLAUDE_INSTANCE_ID", "").strip()
    if instance:
        return Identity(instance, "CLAUDE_INSTANCE_ID")
    if checkout is not None:
        role = role_from_email(checkout.worktree_email(), identities)
        if role:
            return Identity(role, "git user.email")
    return Identity(None, "none")


def placement_warning(
    role: str | None, checkout: Checkout | None, pm_role: str, worktree_dir: str = ".worktrees"
) -> str | None:
    """Warn (never block) when the pm role sits in an agent worktree or another role in main."""
    if role is None or checkout is None:
        return None
    if role == pm_role and not checkout.is_main:
        return (
            f"role {role!r} is the project manager and belongs in the main checkout "
            f"({checkout.main}), but this session runs in the worktree {checkout.top}."
        )
    if role != pm_role and checkout.is_main:
        return (
            f"role {role!r} should work in its own worktree, but this session runs in the main "
            f"checkout {checkout.main}. Create it with `sandboxrun worktree setup {role}` and "
            f"start Claude Code in {checkout.main / worktree_dir / role}."
        )
    return None
