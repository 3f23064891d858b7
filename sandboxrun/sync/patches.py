"""Checking the agent's patches and applying them as commits on the session's branch.

Everything that comes back from a sandbox is untrusted. The agent's work arrives as a
``git format-patch`` mbox (its own commits) and a ``git diff`` (what it left uncommitted). We:

1. parse the ``diff --git`` sections ourselves and refuse dangerous changes up front: paths that
   leave the tree or reach into ``.git``, symlinks pointing outside, gitlinks, and (unless the
   user allows it) changes to files that make programs run or steer agents (:data:`SENSITIVE_PATHS`);
2. cross-check with ``git apply --numstat`` that git sees no path our parser missed, and
   ``git apply --check`` the whole input;
3. apply with ``git am`` / ``git apply --index`` + ``git commit`` with hooks switched off, because a
   hook would run code over files the agent just wrote (or the agent's own hook, if
   ``core.hooksPath`` points into the tree);
4. re-check what actually landed (``git diff --raw ORIG HEAD``, symlinks resolved on disk), and
   put the branch back exactly where it was if anything fails or is refused.

Step 1's parser and rules are pure and live in :mod:`.patchcheck` (re-exported here); this
module runs git for steps 2 to 4.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sandboxrun.errors import GitError, PatchRejectedError
from sandboxrun.gitops import FALLBACK_IDENTITY, git, git_bytes, identity_env
from sandboxrun.process import Result
from sandboxrun.sync.patchcheck import (
    SENSITIVE_PATHS,
    SENSITIVE_REASON,
    SYMLINK_MODE,
    FileChange,
    PatchCheck,
    check_changes,
    norm_component,
    parse_changes,
    summarize,
    unquote_git_path,
)

__all__ = [
    "DEFAULT_IDENTITY",
    "DEFAULT_LEFTOVER_MESSAGE",
    "SENSITIVE_PATHS",
    "SENSITIVE_REASON",
    "ApplyResult",
    "FileChange",
    "PatchCheck",
    "apply_changes",
    "check_changes",
    "parse_changes",
    "summarize",
    "unquote_git_path",
]

log = logging.getLogger(__name__)

DEFAULT_LEFTOVER_MESSAGE = "sandboxrun: uncommitted changes left by the agent"
#: Identity for commits when git has none configured (CI machines), unless the caller passes one.
DEFAULT_IDENTITY = FALLBACK_IDENTITY


@dataclass
class ApplyResult:
    """What :func:`apply_changes` committed on the branch."""

    commits: list[str] = field(default_factory=list)  # new commit SHAs, oldest first
    files_changed: list[str] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    warnings: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)  # sensitive paths let through


# --------------------------------------------------------------------------------------------
# Applying


def apply_changes(
    worktree: Path,
    commits_mbox: bytes,
    leftover_diff: bytes,
    *,
    allow_sensitive: bool = False,
    leftover_message: str = DEFAULT_LEFTOVER_MESSAGE,
    committer: tuple[str, str] | None = None,
    artifacts_hint: str | None = None,
) -> ApplyResult:
    """Check the agent's patches and commit them on the worktree's branch, all or nothing.

    The mbox's commits are kept as separate commits (``git am``, messages and authors kept); the
    leftover diff becomes one more commit with ``leftover_message``. If git has no identity,
    ``committer`` (default :data:`DEFAULT_IDENTITY`) is used. Git hooks do not run: they would
    execute code over files the agent wrote. ``artifacts_hint`` (where the raw patches are
    kept) is named in error hints.

    Raises :class:`PatchRejectedError` when a check refuses something or the patches do not
    apply (the branch is left exactly as it was), :class:`GitError` when the worktree has
    uncommitted changes or an operation in progress.
    """
    worktree = Path(worktree)
    has_commits, has_leftover = bool(commits_mbox.strip()), bool(leftover_diff.strip())
    changes = parse_changes(commits_mbox) + parse_changes(leftover_diff)
    extra = _hooks_path_pattern(worktree)
    check = check_changes(changes, allow_sensitive=allow_sensitive, extra_sensitive=extra)
    if not check.ok:
        raise _rejection(check, artifacts_hint)
    if not has_commits and not has_leftover:
        return ApplyResult(warnings=check.warnings)

    _require_clean(worktree)
    orig = _git(worktree, "rev-parse", "--verify", "HEAD^{commit}").stdout.strip()
    env = {**os.environ, **identity_env(worktree, committer or DEFAULT_IDENTITY)}
    with tempfile.TemporaryDirectory(prefix="sandboxrun-patches-") as tmp:
        mbox_file, diff_file, both_file = (Path(tmp) / n for n in ("mbox", "diff", "both"))
        mbox_file.write_bytes(commits_mbox)
        diff_file.write_bytes(leftover_diff)
        sep = b"" if not commits_mbox or commits_mbox.endswith(b"\n") else b"\n"
        both_file.write_bytes(commits_mbox + sep + leftover_diff)
        _precheck_with_git(worktree, both_file, changes, artifacts_hint)
        try:
            if has_commits:
                res = _git(worktree, "am", "--patch-format=mboxrd", "--keep-cr", "--keep-non-patch", "--no-3way",
                           "--no-scissors", "--whitespace=nowarn", "--quiet", mbox_file, env=env)  # fmt: skip
                if not res.ok:
                    raise _did_not_apply("the agent's commits", res, artifacts_hint)
            if has_leftover:
                res = _git(worktree, "apply", "--index", "--binary", "--whitespace=nowarn",
                           diff_file, env=env)  # fmt: skip
                if not res.ok:
                    raise _did_not_apply("the agent's uncommitted changes", res, artifacts_hint)
                if not _git(worktree, "diff", "--cached", "--quiet", env=env).ok:
                    _git(worktree, "commit", "--quiet", "--no-verify", "-m", leftover_message,
                         env=env, check=True)  # fmt: skip
            landed = check_changes(
                _landed_changes(worktree, orig),
                allow_sensitive=allow_sensitive,
                extra_sensitive=extra,
            )
            _check_symlinks_on_disk(worktree, orig, landed)
            if not landed.ok:
                raise _rejection(landed, artifacts_hint)
        except BaseException:
            _restore(worktree, orig)
            raise
    return _result(worktree, orig, landed)


def _git(worktree: Path, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
         check: bool = False) -> Result:  # fmt: skip
    # Hooks off for every call: a hook is code the user trusts running over files we just
    # wrote from an untrusted source (and core.hooksPath may point into the tree).
    return git(worktree, *args, env=env, check=check, hooks=False)


def _git_path(worktree: Path, name: str) -> Path:
    rel = _git(worktree, "rev-parse", "--git-path", name, check=True).stdout.strip()
    return worktree / rel


def _hooks_path_pattern(worktree: Path) -> list[str]:
    """core.hooksPath as a sensitive pattern when it points inside the worktree (husky does)."""
    # Not through _git: its own core.hooksPath override would hide the user's setting.
    res = git(worktree, "config", "--path", "--get", "core.hooksPath", check=False)
    value = res.stdout.strip()
    if not res.ok or not value:
        return []
    if os.path.isabs(value):
        try:
            value = os.path.relpath(os.path.realpath(value), os.path.realpath(worktree))
        except ValueError:
            return []
    value = posixpath.normpath(value.replace(os.sep, "/"))
    if value in (".", "..") or value.startswith("../"):
        return []
    return [value + "/"]


def _require_clean(worktree: Path) -> None:
    """Refuse to work on a worktree with changes we could not tell from our own."""
    for name in ("rebase-apply", "rebase-merge", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD"):
        if _git_path(worktree, name).exists():
            raise GitError(
                f"The worktree {worktree} has a git operation in progress ({name}).",
                "Finish or abort it (e.g. `git am --abort`, `git rebase --abort`), then retry.",
            )
    res = _git(worktree, "status", "--porcelain", "-z", "--untracked-files=no", check=True)
    if res.stdout.strip("\0"):
        raise GitError(
            f"The worktree {worktree} has uncommitted changes; sandboxrun will not apply the "
            "agent's work over them.",
            f"Commit or stash them (`git -C {worktree} stash`), then retry.",
        )


def _precheck_with_git(
    worktree: Path, both: Path, changes: list[FileChange], artifacts_hint: str | None
) -> None:
    """Make sure git reads the input as we did, and that all of it applies, before writing."""
    numstat = git_bytes(worktree, "apply", "--numstat", "-z", both, check=False)
    ours = {p for ch in changes for p in (ch.path, ch.old_path) if p is not None}
    for record in numstat.split(b"\0"):
        fields = record.split(b"\t", 2)
        if len(fields) == 3 and fields[2]:
            name = fields[2].decode("utf-8", "surrogateescape")
            if name not in ours:
                raise PatchRejectedError(
                    f"git reads a change to {name!r} that sandboxrun's checker did not see; "
                    "refusing the patch.",
                    _kept(artifacts_hint, "It was not applied."),
                    paths=[name],
                )
    res = _git(worktree, "apply", "--check", "--index", "--binary", "--whitespace=nowarn", both)
    if not res.ok:
        raise _did_not_apply("the agent's changes", res, artifacts_hint)


def _landed_changes(worktree: Path, orig: str) -> list[FileChange]:
    """What the new commits really changed, read back from git (no renames: both sides count)."""
    args = ["diff", "--raw", "-z", "--no-renames", "--no-abbrev", "--no-ext-diff"]
    raw = git_bytes(worktree, *args, orig, "HEAD")
    fields = raw.split(b"\0")
    changes = []
    for meta, name in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _old_sha, new_sha, status = meta[1:].decode().split()
        path = name.decode("utf-8", "surrogateescape")
        kind = {"A": "added", "D": "deleted"}.get(status[:1], "modified")
        target = None
        if new_mode == SYMLINK_MODE and kind != "deleted":
            blob = git_bytes(worktree, "cat-file", "blob", new_sha)
            target = blob.decode("utf-8", "surrogateescape")
        changes.append(FileChange(
            path=path,
            old_path=None if kind == "added" else path,
            status=kind,
            old_mode=None if kind == "added" else old_mode,
            new_mode=None if kind == "deleted" else new_mode,
            symlink_target=target,
        ))  # fmt: skip
    return changes


def _check_symlinks_on_disk(worktree: Path, orig: str, check: PatchCheck) -> None:
    """Resolve new symlinks for real: a chain through an existing link can leave the tree."""
    root = os.path.realpath(worktree)
    raw = git_bytes(worktree, "diff", "--name-only", "-z", "--no-renames", "--diff-filter=AMT",
                    orig, "HEAD")  # fmt: skip
    for name in filter(None, raw.split(b"\0")):
        path = os.fsdecode(name)
        full = worktree / path
        if not full.is_symlink():
            continue
        real = os.path.realpath(full)
        if real != root and not real.startswith(root + os.sep):
            check.refused.append((path, f"symlink resolves outside the repository ({real})"))
        elif any(
            norm_component(p) in (".git", "git~1") for p in Path(os.path.relpath(real, root)).parts
        ):
            check.refused.append((path, "symlink resolves into .git"))


def _restore(worktree: Path, orig: str) -> None:
    """Put the branch, index and files back to ``orig``: only our own work is there to lose."""
    if _git_path(worktree, "rebase-apply").exists():
        _git(worktree, "am", "--quit")
    res = _git(worktree, "reset", "--hard", "--quiet", orig)
    if not res.ok:
        log.error("could not restore %s to %s: %s", worktree, orig, res.stderr.strip())


def _result(worktree: Path, orig: str, landed: PatchCheck) -> ApplyResult:
    commits = _git(worktree, "rev-list", "--reverse", f"{orig}..HEAD", check=True).stdout.split()
    raw = git_bytes(worktree, "diff", "--numstat", "-z", "-M", "--no-textconv", "--no-ext-diff",
                    orig, "HEAD")  # fmt: skip
    fields = raw.split(b"\0")
    files: list[str] = []
    insertions = deletions = 0
    i = 0
    while i < len(fields):
        parts = fields[i].split(b"\t", 2)
        i += 1
        if len(parts) != 3:
            continue
        if parts[2]:
            name = parts[2]
        else:  # a rename: "ins\tdel\t\0old\0new\0"
            name = fields[i + 1] if i + 1 < len(fields) else b""
            i += 2
        insertions += int(parts[0]) if parts[0].isdigit() else 0  # "-" for binary files
        deletions += int(parts[1]) if parts[1].isdigit() else 0
        path = name.decode("utf-8", "surrogateescape")
        if path and path not in files:
            files.append(path)
    return ApplyResult(
        commits=commits,
        files_changed=files,
        insertions=insertions,
        deletions=deletions,
        warnings=landed.warnings,
        sensitive=landed.sensitive,
    )


def _kept(artifacts_hint: str | None, first: str) -> str:
    return f"{first} The patches are kept in {artifacts_hint}." if artifacts_hint else first


def _rejection(check: PatchCheck, artifacts_hint: str | None) -> PatchRejectedError:
    paths = list(dict.fromkeys(p for p, _ in check.refused))
    lines = [f"  {p}: {r}" for p, r in check.refused[:20]]
    if len(check.refused) > 20:
        lines.append(f"  ... and {len(check.refused) - 20} more")
    message = f"Refused the agent's changes to {len(paths)} path(s):\n" + "\n".join(lines)
    if check.only_sensitive:
        hint = _kept(
            artifacts_hint,
            "Review them; `sandboxrun apply SESSION --allow-sensitive` applies them.",
        )
    else:
        hint = _kept(
            artifacts_hint, "Nothing was applied: some of these changes are never allowed."
        )
    return PatchRejectedError(message, hint, paths=paths)


def _did_not_apply(what: str, res: Result, artifacts_hint: str | None) -> PatchRejectedError:
    # git's words, minus its advice about `git am --continue`: we have already undone everything.
    lines = (res.stderr + "\n" + res.stdout).splitlines()
    words = [
        ln for ln in lines if ln.strip() and not ln.startswith("hint:") and "git am --" not in ln
    ]
    detail = "\n".join(words[-15:]) or f"exit code {res.returncode}"
    paths = re.findall(r"^error: (.+): patch does not apply$", detail, flags=re.MULTILINE)
    return PatchRejectedError(
        f"{what.capitalize()} do not apply to the branch:\n{detail}",
        _kept(artifacts_hint, "The branch was left as it was; it may have moved since the run."),
        paths=list(dict.fromkeys(paths)),
    )
