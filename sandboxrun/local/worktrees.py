"""Agent worktrees: one git worktree and branch per role, with the role's own git identity.

``setup`` makes ``.worktrees/<role>/`` on ``agent/<role>/active`` (template configurable) under
the repository lock that every worktree change in sandboxrun takes, so concurrent setups never
race; the identity is set with ``git config --worktree`` (``extensions.worktreeConfig``), so
the main checkout's identity is untouched. ``merge`` never switches or dirties the user's
checkout: it merges in the checkout that has the target branch when that one is clean, refuses
when it is dirty, and writes the merge with ``git merge-tree --write-tree`` + ``update-ref``
when the target is checked out nowhere. Conflicts abort and change nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun import gitops, process
from sandboxrun.config import Settings
from sandboxrun.coord import messages, presence
from sandboxrun.errors import GitError, SandboxrunError, UsageError
from sandboxrun.local.identity import check_allowed, identity_for, validate_role


class WorktreeNotFoundError(SandboxrunError):
    """No agent worktree exists for a role."""


class MergeConflictError(GitError):
    """A merge stopped on conflicts; nothing was changed."""

    def __init__(self, message: str, hint: str | None = None, *, files: list[str]) -> None:
        super().__init__(message, hint)
        self.files = files


class DirtyWorktreeError(GitError):
    """A checkout has uncommitted changes that an operation would lose or touch."""


def check_role(role: str | None, settings: Settings) -> str:
    """Validate a role for an agent worktree: a valid name, allowed, not the pm role."""
    role = validate_role(role)
    problem = check_allowed(role, settings.roles)
    if problem:
        raise UsageError(problem, "Add it to `roles` in .sandboxrun.toml, or use one of those.")
    if role == settings.pm_role:
        raise UsageError(
            f"role {role!r} is the project manager role: it works in the main checkout",
            "Start the pm's Claude Code in the main checkout; worktrees are for the other roles.",
        )
    return role


def branch_for(role: str, settings: Settings) -> str:
    """The branch of a role's worktree, from ``branch_template``."""
    return settings.branch_template.format(role=role)


def default_branch(repo: Path) -> str:
    """The repository's default branch: origin's HEAD, else main/master, else what main has."""
    res = gitops.git(repo, "symbolic-ref", "--quiet", "refs/remotes/origin/HEAD", check=False)
    if res.ok:
        name = res.stdout.strip().removeprefix("refs/remotes/origin/")
        if gitops.branch_exists(repo, name):
            return name
    for name in ("main", "master"):
        if gitops.branch_exists(repo, name):
            return name
    res = gitops.git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if res.ok and res.stdout.strip():
        return res.stdout.strip()
    raise GitError("cannot tell the repository's default branch", "Pass --base BRANCH.")


@dataclass
class SetupResult:
    role: str
    path: Path
    branch: str
    created: bool  # False: it existed already and nothing changed
    base: str | None = None
    copied: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _registered_worktrees(repo: Path) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` as a list of ``{worktree, HEAD, branch}`` dicts."""
    out = gitops.git(repo, "worktree", "list", "--porcelain").stdout
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in out.splitlines():
        if not line:
            if current:
                entries.append(current)
            current = {}
            continue
        key, _, value = line.partition(" ")
        current[key] = value
    if current:
        entries.append(current)
    for entry in entries:
        entry["branch"] = entry.get("branch", "").removeprefix("refs/heads/")
    return entries


def _checked_out_at(repo: Path, branch: str) -> Path | None:
    for entry in _registered_worktrees(repo):
        if entry["branch"] == branch:
            return Path(entry["worktree"])
    return None


def _occupied(root: Path, path: Path, role: str, branch: str) -> GitError:
    """The error for a role whose worktree path is taken: by another branch's worktree (a
    sandbox run's, say: never to be removed on our say-so) or by a stray directory."""
    for entry in _registered_worktrees(root):
        if Path(entry["worktree"]).resolve() == path.resolve():
            holder = entry["branch"] or "a detached HEAD"
            return GitError(
                f"{path} is already the worktree of {holder}, not of {branch!r}",
                f"Pick another name than {role!r} (that worktree belongs to {holder}).",
            )
    return GitError(
        f"{path} exists but is not a git worktree (it would be {branch!r}'s)",
        f"Pick another name than {role!r}, or move that directory away and try again.",
    )


def setup(repo: Path, role: str, settings: Settings, *, base: str | None = None) -> SetupResult:
    """Create (or find) the role's worktree; idempotent: a second call changes nothing."""
    role = check_role(role, settings)
    root = gitops.main_worktree(repo)
    path = root / settings.worktree_dir / role
    branch = branch_for(role, settings)
    name, email = identity_for(role, settings.identities)
    with gitops.repo_lock(root):
        at = _checked_out_at(root, branch)
        if at is not None:
            if at.resolve() == path.resolve():
                return SetupResult(role, path, branch, created=False)
            raise GitError(
                f"branch {branch!r} is already checked out in {at}",
                "Remove that worktree or pick another role.",
            )
        if path.exists():
            raise _occupied(root, path, role, branch)
        gitops.ensure_excluded(root, f"/{settings.worktree_dir}/")
        if gitops.branch_exists(root, branch):
            base_ref = None  # an earlier teardown kept the branch: carry on from it
            res = gitops.git(root, "worktree", "add", str(path), branch, check=False)
        else:
            base_ref = base or default_branch(root)
            commit = gitops.resolve_commit(root, base_ref)
            res = gitops.git(
                root, "worktree", "add", "--no-track", "-b", branch, str(path), commit, check=False
            )
        if not res.ok:
            if base_ref is not None and gitops.branch_exists(root, branch) and not path.exists():
                gitops.git(root, "branch", "-D", branch, check=False)
            gitops.git(root, "worktree", "prune", check=False)
            raise GitError(f"git worktree add failed: {res.stderr.strip()}")
        # Worktree-scoped identity: the main checkout (and other worktrees) keep theirs.
        gitops.git(root, "config", "extensions.worktreeConfig", "true")
        gitops.git(path, "config", "--worktree", "user.name", name)
        gitops.git(path, "config", "--worktree", "user.email", email)
        gitops.git(path, "config", "--worktree", "sandboxrun.role", role)
    result = SetupResult(role, path, branch, created=True, base=base_ref)
    _copy_files(root, path, settings.copy_files, result)
    if settings.post_create:
        res = process.run(list(settings.post_create), cwd=path, check=False)
        if not res.ok:
            raise GitError(
                f"the worktree was created at {path}, but post_create "
                f"{' '.join(settings.post_create)!r} failed (exit {res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[-500:]}",
                "Fix the command in .sandboxrun.toml and run it in the worktree yourself.",
            )
    return result


def _copy_files(root: Path, path: Path, names: tuple[str, ...], result: SetupResult) -> None:
    """Copy the files the user chose (``copy_files``) into the new worktree; never outside it."""
    for name in names:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise UsageError(
                f"copy_files entry {name!r} must be a path inside the repository",
                "Use paths relative to the repository root, e.g. .env.local.",
            )
        src = root / rel
        if not src.is_file():
            result.missing.append(name)
            continue
        dest = path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        result.copied.append(name)


@dataclass
class WorktreeInfo:
    role: str
    branch: str
    path: str
    head: str
    dirty: bool
    base: str | None
    ahead: int | None
    behind: int | None
    presence: str | None  # active | stale | inactive | None (never registered)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _role_of(entry: dict[str, str], root: Path, settings: Settings) -> str | None:
    path = Path(entry["worktree"])
    if path.parent != root / settings.worktree_dir:
        return None
    role = path.name
    return role if entry["branch"] == branch_for(role, settings) else None


def list_worktrees(
    repo: Path, settings: Settings, conn: sqlite3.Connection | None = None
) -> list[WorktreeInfo]:
    """The agent worktrees of ``repo`` (sandbox-run worktrees are not agent worktrees)."""
    root = gitops.main_worktree(repo)
    entries = [
        (role, e)
        for e in _registered_worktrees(root)
        if (role := _role_of(e, root, settings)) is not None
    ]
    if not entries:
        return []
    base = default_branch(root)
    now = time.time()
    infos = []
    for role, entry in entries:
        ahead = behind = None
        counts = gitops.git(
            root, "rev-list", "--left-right", "--count", f"{base}...{entry['branch']}", check=False
        )
        if counts.ok:
            behind, ahead = (int(x) for x in counts.stdout.split())
        state = None
        if conn is not None:
            found = presence.get(conn, str(root), role, stale_after=settings.stale_after, now=now)
            state = found.state if found else None
        path = Path(entry["worktree"])
        infos.append(
            WorktreeInfo(
                role=role,
                branch=entry["branch"],
                path=str(path),
                head=entry.get("HEAD", ""),
                dirty=path.exists() and not gitops.is_clean(path),
                base=base,
                ahead=ahead,
                behind=behind,
                presence=state,
            )
        )
    return infos


def find(repo: Path, role: str, settings: Settings) -> tuple[Path, Path, str]:
    """``(main checkout, worktree path, branch)`` of an existing role worktree."""
    role = validate_role(role)
    root = gitops.main_worktree(repo)
    branch = branch_for(role, settings)
    path = root / settings.worktree_dir / role
    at = _checked_out_at(root, branch)
    if at is None or at.resolve() != path.resolve():
        raise WorktreeNotFoundError(
            f"no agent worktree for role {role!r} in {root}",
            "List them with `sandboxrun worktree list`; create one with "
            f"`sandboxrun worktree setup {role}`.",
        )
    return root, path, branch


def _tracked_dirty(path: Path) -> bool:
    return bool(gitops.git(path, "status", "--porcelain", "--untracked-files=no").stdout.strip())


@dataclass
class MergeResult:
    role: str
    branch: str
    into: str
    how: str  # up-to-date | fast-forward | merge-commit
    commit: str
    where: str | None  # checkout the merge ran in; None: ref updated directly

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge(repo: Path, role: str, settings: Settings, *, into: str | None = None) -> MergeResult:
    """Merge the role's branch into ``into`` (default branch); conflicts change nothing."""
    root, _path, branch = find(repo, role, settings)
    target = into or default_branch(root)
    if not gitops.branch_exists(root, target):
        raise GitError(f"branch {target!r} does not exist", "Pass --into with an existing branch.")
    with gitops.repo_lock(root):
        source = gitops.resolve_commit(root, branch)
        old = gitops.resolve_commit(root, target)
        if _is_ancestor(root, source, old):
            return MergeResult(role, branch, target, "up-to-date", old, None)
        where = _checked_out_at(root, target)
        if where is not None:
            return _merge_in_checkout(root, where, role, branch, target)
        if _is_ancestor(root, old, source):
            gitops.git(root, "update-ref", f"refs/heads/{target}", source, old)
            return MergeResult(role, branch, target, "fast-forward", source, None)
        res = gitops.git(
            root, "merge-tree", "--write-tree", "--name-only", "--no-messages", old, source,
            check=False,
        )  # fmt: skip
        lines = res.stdout.splitlines()
        if res.returncode == 1:
            raise _conflict(branch, target, [line for line in lines[1:] if line])
        if not res.ok:
            raise GitError(f"git merge-tree failed: {res.stderr.strip()}")
        tree = lines[0].strip()
        commit = gitops.git(
            root, "commit-tree", tree, "-p", old, "-p", source,
            "-m", f"Merge branch '{branch}' into {target}",
            env=gitops.identity_env(root),
        ).stdout.strip()  # fmt: skip
        gitops.git(root, "update-ref", f"refs/heads/{target}", commit, old)
        return MergeResult(role, branch, target, "merge-commit", commit, None)


def _is_ancestor(repo: Path, a: str, b: str) -> bool:
    return gitops.git(repo, "merge-base", "--is-ancestor", a, b, check=False).ok


def _conflict(branch: str, target: str, files: list[str]) -> MergeConflictError:
    return MergeConflictError(
        f"merging {branch!r} into {target!r} conflicts in: {', '.join(files) or '(unknown)'}",
        "Nothing was changed. Resolve it by hand: merge the other way in the agent's worktree "
        f"(`git merge {target}` there), commit, and merge again.",
        files=files,
    )


def _merge_in_checkout(root: Path, where: Path, role: str, branch: str, target: str) -> MergeResult:
    if _tracked_dirty(where):
        raise DirtyWorktreeError(
            f"{target!r} is checked out in {where} with uncommitted changes",
            "Commit or stash them there first; sandboxrun never merges into a dirty checkout.",
        )
    env = gitops.identity_env(where)
    res = gitops.git(
        where, "merge", "--no-edit", "-m", f"Merge branch '{branch}' into {target}", branch,
        check=False, env=env,
    )  # fmt: skip
    if not res.ok:
        files = gitops.git(where, "diff", "--name-only", "--diff-filter=U", check=False)
        conflicted = [f for f in files.stdout.splitlines() if f]
        gitops.git(where, "merge", "--abort", check=False)
        if conflicted:
            raise _conflict(branch, target, conflicted)
        raise GitError(f"git merge failed in {where}: {(res.stderr or res.stdout).strip()}")
    head = gitops.resolve_commit(where, "HEAD")
    parents = gitops.git(where, "rev-list", "--parents", "-n", "1", head).stdout.split()
    how = "merge-commit" if len(parents) > 2 else "fast-forward"
    return MergeResult(role, branch, target, how, head, str(where))


@dataclass
class TeardownResult:
    role: str
    path: str
    branch: str
    merged: MergeResult | None
    removed: bool
    branch_deleted: bool
    branch_kept_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["merged"] = self.merged.to_dict() if self.merged else None
        return data


def teardown(
    repo: Path,
    role: str,
    settings: Settings,
    *,
    merge_first: bool = False,
    abandon: bool = False,
    delete_branch: bool = False,
    conn: sqlite3.Connection | None = None,
) -> TeardownResult:
    """Remove a role's worktree; its branch goes only when explicitly asked and fully merged."""
    if merge_first and abandon:
        raise UsageError("--merge and --abandon exclude each other", "Pick one.")
    root, path, branch = find(repo, role, settings)
    if not gitops.is_clean(path) and not abandon:
        raise DirtyWorktreeError(
            f"the worktree of {role!r} ({path}) has uncommitted changes",
            "Commit them (then --merge), or pass --abandon to discard them.",
        )
    # A conflict raises here, before anything is removed: everything stays in place.
    merged = merge(root, role, settings) if merge_first else None
    try:
        gitops.remove_worktree(root, path, force=abandon)
    finally:
        # Deregistered even when the removal failed: the session there is over.
        if conn is not None:
            record_end(conn, str(root), role, str(path), reason="teardown")
    base = merged.into if merged else default_branch(root)
    deleted, kept = False, None
    if not (merge_first or delete_branch):
        kept = "kept (pass --delete-branch to delete it once merged)"
    elif not _is_ancestor(root, branch, base):
        kept = f"kept: it has commits not merged into {base!r}"
    else:
        with gitops.repo_lock(root):
            gitops.git(root, "branch", "-D", branch)
        deleted = True
    return TeardownResult(role, str(path), branch, merged, True, deleted, kept)


def record_end(
    conn: sqlite3.Connection, repo: str, role: str, worktree: str, *, reason: str
) -> None:
    """Deregister the role's presence and record SESSION_END (one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        presence.deregister(conn, repo, role)
        messages.send(
            conn,
            repo,
            messages.SESSION_END,
            sender=role,
            body={"worktree": worktree, "reason": reason},
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
