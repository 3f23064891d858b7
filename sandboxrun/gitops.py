"""Git operations on the user's repository: worktrees, branches, excludes.

Every call goes through :mod:`sandboxrun.process`. Worktree changes take a file lock in the
common git dir because concurrent ``git worktree add`` from one repo races on ``.git/config``
and half-written admin dirs.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sandboxrun import process
from sandboxrun.errors import (
    GitError,
    NameInUseError,
    NotAGitRepoError,
    ProcessError,
    ProgramNotFoundError,
    UsageError,
)

#: identity used for commits sandboxrun makes when the repo has none configured (CI machines)
FALLBACK_IDENTITY = ("sandboxrun", "sandboxrun@localhost")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


#: git commands whose first argument names what they do (``git worktree add``)
_TWO_WORD_COMMANDS = {"worktree", "stash", "remote", "submodule", "notes", "bisect", "config"}


def _subcommand(args: tuple[str | os.PathLike[str], ...]) -> str:
    """``diff`` for ``-c core.quotepath=on diff --cached``: what an error message names."""
    words = [os.fspath(a) for a in args]
    i = 0
    while i < len(words) and words[i].startswith("-"):
        i += 2 if words[i] in ("-c", "-C") else 1
    sub = words[i : i + 1]
    following = words[i + 1] if i + 1 < len(words) else "-"
    if sub and sub[0] in _TWO_WORD_COMMANDS and not following.startswith("-"):
        sub.append(following)
    return " ".join(sub) or "(no command)"


def _git_call(
    repo: Path | str,
    args: tuple[str | os.PathLike[str], ...],
    *,
    check: bool,
    env: dict[str, str] | None,
    input: str | bytes | None,
    hooks: bool,
) -> process.RawResult:
    argv: list[str | os.PathLike[str]] = ["git", "-C", str(repo)]
    if not hooks:
        argv += ["-c", f"core.hooksPath={os.devnull}"]
    try:
        return process.run_raw(
            [*argv, *args],
            check=check,
            env={**os.environ, **env} if env else None,
            input=input,
            what=f"git {_subcommand(args)} in {repo}",
        )
    except ProgramNotFoundError as exc:
        raise GitError(exc.message, "Install git (apt-get install git) and try again.") from exc
    except ProcessError as exc:
        raise GitError(exc.message, exc.hint) from exc


def git(
    repo: Path | str,
    *args: str | os.PathLike[str],
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | bytes | None = None,
    hooks: bool = True,
) -> process.Result:
    """Run ``git -C repo ARGS`` and return its output as text.

    The one way sandboxrun runs git. With ``check`` a failure raises :class:`GitError` naming
    the subcommand and the repository (``git worktree add in /repo failed: fatal: ...``).
    ``env`` is added to this process's environment. ``hooks=False`` turns the repository's
    hooks off for the call: they are code the user trusts, and must not run over files we
    wrote from an untrusted source.
    """
    raw = _git_call(repo, args, check=check, env=env, input=input, hooks=hooks)
    return process.Result(
        argv=raw.argv,
        returncode=raw.returncode,
        stdout=raw.stdout.decode(errors="backslashreplace"),
        stderr=raw.stderr.decode(errors="backslashreplace"),
    )


def git_bytes(
    repo: Path | str,
    *args: str | os.PathLike[str],
    check: bool = True,
    env: dict[str, str] | None = None,
    hooks: bool = True,
) -> bytes:
    """Like :func:`git`, but return stdout as raw bytes (NUL lists, binary diffs)."""
    return _git_call(repo, args, check=check, env=env, input=None, hooks=hooks).stdout


def repo_root(path: Path) -> Path:
    """Top level of the work tree containing ``path``; NotAGitRepoError otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NotAGitRepoError(f"{path} does not exist", "Pass --repo with a git repository path.")
    res = git(path, "rev-parse", "--show-toplevel", check=False)
    if not res.ok:
        raise _not_a_work_tree(path)
    return Path(res.stdout.strip()).resolve()


def _not_a_work_tree(path: Path) -> NotAGitRepoError:
    """The error for ``path`` outside any work tree: a bare repository said as such, the path
    absolute (``.`` tells nobody where they were)."""
    shown = path.absolute()
    bare = git(path, "rev-parse", "--is-bare-repository", check=False)
    if bare.ok and bare.stdout.strip() == "true":
        return NotAGitRepoError(
            f"{shown} is a bare repository (it has no work tree)",
            f"Clone it (git clone {shlex.quote(str(shown))} DIR) and run in the clone.",
        )
    return NotAGitRepoError(
        f"{shown} is not inside a git repository",
        "Run from a git checkout, pass --repo PATH, or `git init` and commit first.",
    )


def repo_paths(path: Path) -> tuple[Path, Path, Path]:
    """``(top level, main work tree, common git dir)`` of the checkout containing ``path``, in
    one git call (:func:`repo_root`, :func:`main_worktree` and :func:`common_dir` together)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NotAGitRepoError(f"{path} does not exist", "Pass --repo with a git repository path.")
    res = git(
        path, "rev-parse", "--show-toplevel", "--path-format=absolute", "--git-common-dir",
        check=False,
    )  # fmt: skip
    lines = res.stdout.splitlines()
    if not res.ok or len(lines) != 2:
        raise _not_a_work_tree(path)
    top, common = Path(lines[0]).resolve(), Path(lines[1])
    return top, (common.parent if common.name == ".git" else top), common


def main_worktree(path: Path) -> Path:
    """The repository's main work tree, even when ``path`` is one of its linked worktrees."""
    common = common_dir(path)
    return common.parent if common.name == ".git" else Path(repo_root(path))


def common_dir(repo: Path) -> Path:
    """The git dir shared by all worktrees (``.git`` of the main checkout)."""
    out = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").stdout.strip()
    return Path(out)


def resolve_commit(repo: Path, ref: str) -> str:
    """Full SHA of ``ref``; a clear error when it does not name a commit."""
    res = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not res.ok:
        if (
            ref == "HEAD"
            or not git(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False).ok
        ):
            raise GitError(
                "the repository has no commits yet",
                "Make a first commit (git add -A && git commit -m init) and run again.",
            )
        raise GitError(
            f"{ref!r} is not a commit in {repo}", "Pass --base with a branch, tag or SHA."
        )
    return res.stdout.strip()


def validate_name(name: str) -> str:
    """Session names become branch and directory names: keep them simple."""
    if not _NAME_RE.match(name) or name.endswith(".lock") or ".." in name:
        raise UsageError(
            f"invalid session name {name!r}",
            "Use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


@contextmanager
def repo_lock(repo: Path, common: Path | None = None) -> Iterator[None]:
    """Exclusive lock for worktree/branch changes in ``repo`` (all worktrees share it);
    ``common``: its :func:`common_dir`, when the caller knows it already."""
    lock_path = (common or common_dir(repo)) / "sandboxrun.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_excluded(repo: Path, pattern: str, common: Path | None = None) -> None:
    """Add ``pattern`` to ``.git/info/exclude`` (never to a tracked file) if missing."""
    exclude = (common or common_dir(repo)) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    if pattern in (line.strip() for line in text.splitlines()):
        return
    if text and not text.endswith("\n"):
        text += "\n"
    exclude.write_text(text + pattern + "\n")


def branch_exists(repo: Path, branch: str) -> bool:
    return git(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False).ok


def create_worktree(
    repo: Path, path: Path, branch: str, base_commit: str, common: Path | None = None
) -> None:
    """Create ``path`` on a new ``branch`` at ``base_commit``; leave nothing behind on failure."""
    with repo_lock(repo, common):
        if branch_exists(repo, branch):
            raise NameInUseError(
                f"branch {branch!r} already exists",
                "Pick another --name, or delete the old branch with "
                f"`git branch -D {branch}` if you no longer need it.",
            )
        if path.exists():
            raise NameInUseError(
                f"{path} already exists",
                "Pick another --name, or remove that directory if it is left over.",
            )
        res = git(
            repo, "worktree", "add", "--no-track", "-b", branch, str(path), base_commit, check=False
        )
        if not res.ok:
            # A failed `worktree add -b` can leave the branch behind: remove what we made.
            if branch_exists(repo, branch) and not path.exists():
                git(repo, "branch", "-D", branch, check=False)
            git(repo, "worktree", "prune", check=False)
            raise GitError(
                f"git worktree add in {repo} failed: {res.stderr.strip()}",
                "Check the repository state with `git worktree list`.",
            )


def remove_worktree(
    repo: Path,
    path: Path,
    branch: str | None = None,
    *,
    delete_branch: bool = False,
    force: bool = False,
) -> None:
    """Remove a worktree (and optionally its branch). Refuses dirty trees unless ``force``."""
    with repo_lock(repo):
        if path.exists():
            args = ["worktree", "remove", str(path)]
            if force:
                args[2:2] = ["--force", "--force"]
            res = git(repo, *args, check=False)
            if not res.ok:
                raise GitError(
                    f"cannot remove worktree {path}: {res.stderr.strip()}",
                    "It has uncommitted changes; commit them or pass --force to discard them.",
                )
        git(repo, "worktree", "prune", check=False)
        if delete_branch and branch and branch_exists(repo, branch):
            git(repo, "branch", "-D", branch)


def is_clean(worktree: Path) -> bool:
    """True when ``worktree`` has no staged, unstaged or untracked (non-ignored) changes."""
    return git(worktree, "status", "--porcelain", "--untracked-files=all").stdout.strip() == ""


def identity_env(repo: Path, fallback: tuple[str, str] = FALLBACK_IDENTITY) -> dict[str, str]:
    """Env overrides that give git an identity for each role it has none for (CI machines).

    Asks git itself (``git var``), so whatever it would use (config, env vars, a guessable
    host name) is respected and only a missing identity is filled in.
    """
    env: dict[str, str] = {}
    for role in ("COMMITTER", "AUTHOR"):
        if not git(repo, "var", f"GIT_{role}_IDENT", check=False).ok:
            env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = fallback
    return env


def carry_changes(
    source: Path, worktree: Path, secret_filter: Callable[[Path, list[str]], list[str]]
) -> tuple[str | None, list[str]]:
    """Copy ``source``'s uncommitted and untracked (not ignored) changes into ``worktree``.

    Committed there as the branch's first commit, so the agent starts from what the user sees.
    ``secret_filter(source, changed_paths)`` names the paths never to carry (the caller
    passes the upload's secrets check, :func:`sandboxrun.sync.secrets.secret_paths`: by name
    and by content), so ``prod.env``, ``deploy_key`` or a source file with a token pasted in
    are never committed onto the branch; a tracked file left behind keeps its committed
    version. Returns the new commit SHA (None when there was nothing to carry) and the
    secret paths left behind.
    """

    # A temporary index keeps the user's own index untouched.
    git_dir = git(source, "rev-parse", "--absolute-git-dir").stdout.strip()
    tmp_index = Path(git_dir) / f"sandboxrun-carry-{os.getpid()}.index"
    env = {"GIT_INDEX_FILE": str(tmp_index)}
    try:
        git(source, "read-tree", "HEAD", env=env)
        git(source, "add", "-A", env=env)
        changed = git_bytes(source, "diff", "--cached", "--name-only", "-z", "HEAD", env=env)
        names = [n.decode(errors="surrogateescape") for n in changed.split(b"\0") if n]
        skipped = secret_filter(source, names)
        if skipped:
            # back to HEAD: a tracked file keeps its committed version, a new one is dropped
            git(source, "reset", "-q", "HEAD", "--", *skipped, env=env)
        diff = git_bytes(source, "diff", "--cached", "--binary", "--full-index", "HEAD", env=env)
    finally:
        tmp_index.unlink(missing_ok=True)
    if not diff.strip():
        return None, skipped
    git(worktree, "apply", "--index", "--binary", input=diff)
    git(
        worktree,
        "commit",
        "-q",
        "--no-verify",
        "-m",
        "sandboxrun: uncommitted changes carried from the main checkout",
        env=identity_env(worktree),
    )
    return git(worktree, "rev-parse", "HEAD").stdout.strip(), skipped
