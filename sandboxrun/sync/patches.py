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
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandboxrun.errors import GitError, PatchRejectedError
from sandboxrun.process import Result, run, run_bytes

log = logging.getLogger(__name__)

#: Paths whose changes need ``allow_sensitive``, with why. Matching is per path component and
#: case-insensitive (macOS and Windows filesystems are). ``**/`` means "at any depth"; a trailing
#: ``/`` means the directory itself (replaced by a file or symlink) or anything under it; the last
#: component may use ``fnmatch`` wildcards. The line we draw: files that make programs run without
#: anyone choosing to run the project's code (CI, git hooks, editor tasks, git drivers), or that
#: steer Claude Code itself. We cannot list every file that ends up executed (Makefile,
#: package.json scripts, the tests): the user reviews the branch before running those.
SENSITIVE_PATHS: tuple[tuple[str, str], ...] = (
    # Claude Code reads .claude/ (settings, hooks, commands, agents, skills) in any directory it is
    # started from, so any depth: an agent could grant the next run permissions or hooks.
    ("**/.claude/", "Claude Code settings, hooks and commands"),
    ("**/.mcp.json", "MCP servers that Claude Code starts as programs"),
    # Workflows and local actions run with the repository's secrets; CODEOWNERS controls review.
    (".github/", "GitHub Actions workflows, actions and CODEOWNERS"),
    (".gitlab-ci.yml", "GitLab CI pipeline"),
    (".gitlab/", "GitLab CI templates and CODEOWNERS"),
    (".circleci/", "CircleCI pipeline"),
    (".buildkite/", "Buildkite pipeline"),
    (".travis.yml", "Travis CI pipeline"),
    (".drone.yml", "Drone CI pipeline"),
    ("azure-pipelines.yml", "Azure Pipelines"),
    ("bitbucket-pipelines.yml", "Bitbucket Pipelines"),
    ("jenkinsfile", "Jenkins pipeline"),
    # Git hook managers: these run on the user's machine at their next commit or push.
    ("**/.husky/", "git hooks (husky)"),
    ("**/.githooks/", "git hooks"),
    ("**/.git-hooks/", "git hooks"),
    (".pre-commit-config.*", "pre-commit hooks"),
    ("lefthook*", "git hooks (lefthook)"),
    (".lefthook*", "git hooks (lefthook)"),
    # .gitattributes picks filter/diff/merge drivers (programs) and can hide content from diffs
    # (`-diff`, `linguist-generated`); .lfsconfig sets the server git-lfs talks to.
    ("**/.gitattributes", "git attributes: filter, diff and merge drivers"),
    (".lfsconfig", "git-lfs server settings"),
    (".gitmodules", "submodule URLs fetched by `git submodule update`"),
    # Editors run tasks on folder open and take program paths from workspace settings.
    (".vscode/", "VS Code tasks and settings"),
    (".devcontainer/", "dev container build and start commands"),
)

SENSITIVE_REASON = "sensitive path"
DEFAULT_LEFTOVER_MESSAGE = "sandboxrun: uncommitted changes left by the agent"
#: Identity for commits when git has none configured (CI machines), unless the caller passes one.
DEFAULT_IDENTITY = ("sandboxrun", "sandboxrun@localhost")

_KNOWN_MODES = {"100644", "100755", "120000", "160000", "100664"}
_SYMLINK, _GITLINK, _EXEC = "120000", "160000", "100755"
# Code points HFS+ ignores in names (git's is_hfs_dotgit) plus bidi isolates: they make one
# name look like another, so we refuse them and also drop them before comparing names.
_INVISIBLE = set(
    "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"
)
_HUNK_RE = re.compile(rb"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_C_ESCAPES = {
    ord("a"): 7, ord("b"): 8, ord("t"): 9, ord("n"): 10, ord("v"): 11,
    ord("f"): 12, ord("r"): 13, ord('"'): 34, ord("\\"): 92,
}  # fmt: skip


@dataclass
class FileChange:
    """One file touched by one ``diff --git`` section.

    ``path`` is the path after the change (for a deletion: the deleted path); ``old_path`` the
    path before (None for an added file). Modes are git's octal strings (``"100644"``).
    """

    path: str
    old_path: str | None = None
    status: str = "modified"  # added / modified / deleted / renamed / copied
    old_mode: str | None = None
    new_mode: str | None = None
    is_binary: bool = False
    symlink_target: str | None = None  # for a created/changed symlink, when the diff shows it

    @property
    def is_symlink(self) -> bool:
        """The file is a symlink after the change."""
        return self.new_mode == _SYMLINK and self.status != "deleted"

    @property
    def mode_change(self) -> bool:
        """The mode changes (e.g. 100644 -> 100755) on a file that exists before and after."""
        return bool(self.old_mode and self.new_mode and self.old_mode != self.new_mode)


@dataclass
class PatchCheck:
    """What :func:`check_changes` found. ``refused`` holds (path, reason) pairs that block."""

    refused: list[tuple[str, str]] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)  # touched, whether allowed or not
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing blocks applying."""
        return not self.refused

    @property
    def only_sensitive(self) -> bool:
        """Everything refused would pass with ``allow_sensitive``."""
        return bool(self.refused) and all(r.startswith(SENSITIVE_REASON) for _, r in self.refused)


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
# Parsing


def unquote_git_path(raw: bytes | str) -> str:
    """Decode a path as git prints it: C-quoted (``"a/sp\\303\\251cial"``) or bare.

    Bytes that are not UTF-8 survive as surrogate escapes (like :func:`os.fsdecode`).
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if data.startswith(b'"'):
        value, end = _take_quoted(data, 0)
        if data[end:].strip():
            raise ValueError(f"text after a quoted path: {data!r}")
        data = value
    return data.decode("utf-8", "surrogateescape")


def _take_quoted(data: bytes, start: int) -> tuple[bytes, int]:
    """Unquote the C-quoted string at ``data[start]``; return it and the index after it."""
    out = bytearray()
    i = start + 1
    while i < len(data):
        c = data[i]
        if c == ord('"'):
            return bytes(out), i + 1
        if c != ord("\\"):
            out.append(c)
            i += 1
            continue
        nxt = data[i + 1 : i + 2]
        if not nxt:
            break
        if nxt in b"01234567":
            digits = data[i + 1 : i + 4]
            if len(digits) != 3 or any(d not in b"01234567" for d in digits):
                raise ValueError(f"bad octal escape in quoted path: {data!r}")
            out.append(int(digits, 8) & 0xFF)
            i += 4
        elif nxt[0] in _C_ESCAPES:
            out.append(_C_ESCAPES[nxt[0]])
            i += 2
        else:
            raise ValueError(f"bad escape in quoted path: {data!r}")
    raise ValueError(f"unterminated quoted path: {data!r}")


def _strip_prefix(name: bytes) -> bytes | None:
    """Drop the first component (``a/``, ``b/``) the way ``git apply -p1`` does."""
    slash = name.find(b"/")
    return name[slash + 1 :] if slash >= 0 and slash + 1 < len(name) else None


def _header_name(rest: bytes) -> str | None:
    """The path from ``diff --git A B`` when both sides name the same file, else None.

    Bare names may contain spaces, so like git we look for the split where both halves agree.
    """
    if rest.startswith(b'"'):
        first, end = _take_quoted(rest, 0)
        splits = [(first, rest[end:].lstrip(b" "))]
    else:
        splits = [(rest[:i], rest[i + 1 :]) for i, c in enumerate(rest) if c == ord(" ")]
    for a, b in splits:
        try:
            b = _take_quoted(b, 0)[0] if b.startswith(b'"') else b
        except ValueError:
            continue
        sa, sb = _strip_prefix(a), _strip_prefix(b)
        if sa is not None and sa == sb:
            return sa.decode("utf-8", "surrogateescape")
    return None


def _dash_name(rest: bytes) -> str | None:
    """The path from a ``--- a/x`` / ``+++ b/x`` line, or None for /dev/null."""
    # Bare names end at a TAB (git appends one when the name has spaces).
    name = _take_quoted(rest, 0)[0] if rest.startswith(b'"') else rest.split(b"\t", 1)[0]
    if name == b"/dev/null":
        return None
    stripped = _strip_prefix(name)
    return (stripped if stripped is not None else name).decode("utf-8", "surrogateescape")


@dataclass
class _Section:
    """Header facts of one ``diff --git`` section while it is being read."""

    line: int
    header: str | None
    names: dict[str, str | None] = field(default_factory=dict)  # rename/copy/---/+++ names
    old_mode: str | None = None
    new_mode: str | None = None
    index_mode: str | None = None
    new_file: bool = False
    deleted: bool = False
    is_binary: bool = False
    new_lines: list[bytes] = field(default_factory=list)

    def finish(self) -> FileChange:
        n = self.names
        old = n.get("rename from") or n.get("copy from") or n.get("---") or self.header
        new = n.get("rename to") or n.get("copy to") or n.get("+++") or self.header
        added = self.new_file or ("---" in n and n["---"] is None)
        deleted = self.deleted or ("+++" in n and n["+++"] is None)
        if "rename from" in n or "rename to" in n:
            status = "renamed"
        elif "copy from" in n or "copy to" in n:
            status = "copied"
        else:
            status = "added" if added else "deleted" if deleted else "modified"
        path = old if deleted else new
        if not path:
            raise PatchRejectedError(
                f"Cannot tell which file the 'diff --git' header at line {self.line} changes.",
                "The patch is malformed; it was not applied.",
            )
        old_mode = None if added else (self.old_mode or self.index_mode)
        new_mode = None if deleted else (self.new_mode or self.index_mode)
        target = None
        if new_mode == _SYMLINK and self.new_lines and not self.is_binary:
            target = b"\n".join(self.new_lines).decode("utf-8", "surrogateescape")
        return FileChange(
            path=path,
            old_path=None if added else old,
            status=status,
            old_mode=old_mode,
            new_mode=new_mode,
            is_binary=self.is_binary,
            symlink_target=target,
        )


_NAME_LINES = (b"rename from ", b"rename to ", b"rename old ", b"rename new ",
               b"copy from ", b"copy to ")  # fmt: skip
_OTHER_HEADER_LINES = (b"similarity index ", b"dissimilarity index ")


def parse_changes(data: bytes) -> list[FileChange]:
    """List the files changed by a git diff or a ``format-patch`` mbox (several patches).

    Hunk line counts are followed, so content lines that look like headers are not mistaken for
    them. Where this reader and git could disagree we lean to seeing more: a ``diff --git`` line
    always starts a new section. A plain unified diff (``---``/``+++``/``@@`` with no ``diff --git``
    header), which ``git apply`` would also apply, raises :class:`PatchRejectedError`.
    """
    changes: list[FileChange] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    sec: _Section | None = None
    state = "garbage"  # garbage / header / hunk / between (hunks) / binary / binary-data
    old_left = new_left = blocks = 0

    def close() -> None:
        nonlocal sec, state
        if sec is not None:
            changes.append(sec.finish())
        sec, state = None, "garbage"

    for i, line in enumerate(lines):
        lineno = i + 1
        if line.startswith(b"diff --git "):
            close()
            try:
                header = _header_name(line[11:])
            except ValueError as exc:
                raise _malformed(lineno, exc) from exc
            sec, state, blocks = _Section(line=lineno, header=header), "header", 0
            continue
        if sec is not None and state == "header":
            if _read_header_line(sec, line, lineno):
                continue
            if line == b"GIT binary patch":
                sec.is_binary, state = True, "binary"
                continue
            if line.startswith(b"Binary files ") and line.endswith(b" differ"):
                sec.is_binary = True
                close()
                continue
            state = "between"
        if sec is not None and state == "binary-data":
            if not line:  # a blank line ends each of the (at most two) base85 blocks
                state = "binary" if blocks < 2 else "garbage"
                if state == "garbage":
                    close()
            continue
        if sec is not None and state == "binary":
            if line.startswith((b"literal ", b"delta ")):
                state, blocks = "binary-data", blocks + 1
                continue
            close()
        if sec is not None and state in ("hunk", "between"):
            if state == "between" and (m := _HUNK_RE.match(line)):
                old_left = int(m.group(1)) if m.group(1) is not None else 1
                new_left = int(m.group(2)) if m.group(2) is not None else 1
                state = "hunk" if old_left or new_left else "between"
                continue
            if line.startswith(b"\\ "):  # "\ No newline at end of file"
                continue
            if state == "hunk" and (not line or line[:1] in b" +-"):
                kind = line[:1] or b" "
                if kind != b"+":
                    old_left -= 1
                if kind != b"-":
                    new_left -= 1
                    sec.new_lines.append(line[1:])
                if old_left <= 0 and new_left <= 0:
                    state = "between"
                continue
            # Anything else ends the section (git would call a short hunk corrupt).
            close()
        # Between sections: what git apply would still take for a patch.
        if (
            line.startswith(b"--- ")
            and i + 2 < len(lines)
            and lines[i + 1].startswith(b"+++ ")
            and lines[i + 2].startswith(b"@@ -")
        ):
            raise PatchRejectedError(
                f"The patch holds a plain unified diff without a 'diff --git' header "
                f"(line {lineno}); sandboxrun only accepts patches made by git.",
                "The patch was not applied.",
            )
    close()
    return changes


def _read_header_line(sec: _Section, line: bytes, lineno: int) -> bool:
    """Record one extended header line; False when ``line`` is not a header line."""
    try:
        for prefix in _NAME_LINES:
            if line.startswith(prefix):
                key = prefix.decode().strip().replace(" old", " from").replace(" new", " to")
                sec.names[key] = unquote_git_path(line[len(prefix) :])
                return True
        if line.startswith(b"--- ") or line.startswith(b"+++ "):
            sec.names[line[:3].decode()] = _dash_name(line[4:])
            return True
    except ValueError as exc:
        raise _malformed(lineno, exc) from exc
    text = line.decode("utf-8", "replace")
    for prefix, attr in (("old mode ", "old_mode"), ("new mode ", "new_mode"),
                         ("deleted file mode ", "old_mode"), ("new file mode ", "new_mode")):  # fmt: skip
        if text.startswith(prefix):
            setattr(sec, attr, text[len(prefix) :].strip())
            sec.deleted |= prefix.startswith("deleted")
            sec.new_file |= prefix.startswith("new file")
            return True
    if text.startswith("index "):
        parts = text.split()
        sec.index_mode = parts[2] if len(parts) > 2 else None
        return True
    return line.startswith(_OTHER_HEADER_LINES)


def _malformed(lineno: int, exc: Exception) -> PatchRejectedError:
    return PatchRejectedError(
        f"Cannot read the file name at line {lineno} of the patch: {exc}",
        "The patch is malformed; it was not applied.",
    )


# --------------------------------------------------------------------------------------------
# Checking


def _norm(component: str) -> str:
    """Fold a path component to what a case-insensitive (HFS+/NTFS) filesystem would see."""
    folded = "".join(c for c in component if c not in _INVISIBLE).casefold()
    return folded.split(":", 1)[0].rstrip(". ")  # NTFS: ".git::$DATA", ".git." and ".git " = .git


def _path_problem(path: str) -> str | None:
    """Why ``path`` may never be written, or None."""
    if not path:
        return "empty path"
    if any(unicodedata.category(c) == "Cc" or c in _INVISIBLE for c in path):
        return "control or invisible character in path"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "absolute path"
    if "\\" in path:
        return "backslash in path (a separator on Windows)"
    parts = path.split("/")
    if ".." in parts:
        return "'..' component leaves the repository"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    if any(_norm(p) in (".git", "git~1") for p in parts):
        return "path inside .git"
    return None


def _sensitive_why(path: str, extra: Sequence[str] = ()) -> str | None:
    """The reason ``path`` is sensitive, or None."""
    parts = [_norm(p) for p in path.split("/")]
    rules = [*SENSITIVE_PATHS, *((p, "git hooks (core.hooksPath)") for p in extra)]
    for pattern, why in rules:
        any_depth = pattern.startswith("**/")
        pat = pattern.removeprefix("**/")
        is_dir = pat.endswith("/")
        pat_parts = [_norm(p) for p in pat.rstrip("/").split("/")]
        k = len(pat_parts)
        for start in range(len(parts) - k + 1) if any_depth else (0,):
            window = parts[start : start + k]
            if len(window) < k or (not is_dir and start + k != len(parts)):
                continue
            if all(fnmatch.fnmatchcase(name, p) for name, p in zip(window, pat_parts, strict=True)):
                return why
    return None


def _check_symlink(path: str, target: str | None) -> tuple[str | None, str]:
    """Return (refusal or None, where the link resolves to inside the tree)."""
    if target is None:
        return "symlink whose target the patch does not show", ""
    if not target or any(unicodedata.category(c) == "Cc" for c in target):
        return "symlink with an empty target or control characters in it", ""
    if target.startswith("/") or "\\" in target or re.match(r"^[A-Za-z]:", target):
        return f"symlink to an absolute path ({target})", ""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        return f"symlink points outside the repository ({target})", ""
    if any(_norm(p) in (".git", "git~1") for p in resolved.split("/")):
        return f"symlink points into .git ({target})", ""
    return None, resolved


def check_changes(
    changes: Iterable[FileChange],
    *,
    allow_sensitive: bool = False,
    extra_sensitive: Sequence[str] = (),
) -> PatchCheck:
    """Decide whether ``changes`` may be applied.

    Never allowed: absolute paths, ``..``, anything in ``.git`` (any case), empty paths, control
    or invisible characters, symlinks that are absolute, leave the tree or sit in a sensitive
    place, gitlinks (submodule entries point at other repositories), unknown modes. Sensitive
    paths (:data:`SENSITIVE_PATHS` plus ``extra_sensitive`` patterns) are refused unless
    ``allow_sensitive``. Deleting or renaming away from a path counts as changing it. Symlinks
    inside the tree and executable bits are allowed with a warning.
    """
    check = PatchCheck()

    def refuse(path: str, reason: str) -> None:
        if (path, reason) not in check.refused:
            check.refused.append((path, reason))

    def warn(text: str) -> None:
        if text not in check.warnings:
            check.warnings.append(text)

    def sensitive(path: str, why: str) -> None:
        if path not in check.sensitive:
            check.sensitive.append(path)
        if not allow_sensitive:
            refuse(path, f"{SENSITIVE_REASON} ({why}); allowed only with --allow-sensitive")

    for ch in changes:
        touched = [ch.path]
        if ch.old_path is not None and ch.old_path != ch.path:
            touched.append(ch.old_path)  # a copy's source is only read, but must still be sane
        for p in touched:
            if problem := _path_problem(p):
                refuse(p, problem)
        if any(_path_problem(p) for p in touched):
            continue
        written = touched if ch.status != "copied" else [ch.path]
        for p in written:
            if why := _sensitive_why(p, extra_sensitive):
                sensitive(p, why)
        for mode in (ch.old_mode, ch.new_mode):
            if mode is not None and mode not in _KNOWN_MODES:
                refuse(ch.path, f"unsupported file mode {mode}")
        if ch.status != "deleted" and ch.new_mode == _GITLINK:
            refuse(ch.path, "submodule entry (gitlink) pointing at another repository")
        elif ch.old_mode == _GITLINK:
            warn(f"{ch.path}: submodule entry removed")
        if ch.status != "deleted" and ch.new_mode == _EXEC and ch.old_mode != _EXEC:
            warn(f"{ch.path}: {'made executable' if ch.old_mode else 'new executable file'}")
        if ch.is_symlink:
            if _sensitive_why(ch.path, extra_sensitive):
                refuse(ch.path, "symlink inside a sensitive path")
            problem, resolved = _check_symlink(ch.path, ch.symlink_target)
            if problem:
                refuse(ch.path, problem)
                continue
            if why := _sensitive_why(resolved, extra_sensitive):
                sensitive(ch.path, f"symlink to {resolved}: {why}")
            warn(f"{ch.path}: symlink to {ch.symlink_target} (inside the repository)")
    return check


def summarize(changes: Iterable[FileChange]) -> str:
    """A one-line human summary, e.g. ``3 files: M a.py, A b.bin, R old.txt -> new.txt``."""
    letters = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R", "copied": "C"}
    items = []
    for ch in changes:
        name = f"{ch.old_path} -> {ch.path}" if ch.status in ("renamed", "copied") else ch.path
        items.append(f"{letters.get(ch.status, '?')} {name}")
    if not items:
        return "no changes"
    return f"{len(items)} file{'s' if len(items) != 1 else ''}: {', '.join(items)}"


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
    env = _identity_env(worktree, committer or DEFAULT_IDENTITY)
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
    return run(["git", "-c", f"core.hooksPath={os.devnull}", *args],
               cwd=worktree, env=env, check=check)  # fmt: skip


def _git_path(worktree: Path, name: str) -> Path:
    rel = _git(worktree, "rev-parse", "--git-path", name, check=True).stdout.strip()
    return worktree / rel


def _hooks_path_pattern(worktree: Path) -> list[str]:
    """core.hooksPath as a sensitive pattern when it points inside the worktree (husky does)."""
    # Not through _git: its own core.hooksPath override would hide the user's setting.
    res = run(["git", "config", "--path", "--get", "core.hooksPath"], cwd=worktree, check=False)
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


def _identity_env(worktree: Path, fallback: tuple[str, str]) -> dict[str, str]:
    """The environment for git, with a fallback identity where git has none configured."""
    env = dict(os.environ)
    for role in ("COMMITTER", "AUTHOR"):
        if not _git(worktree, "var", f"GIT_{role}_IDENT", env=env).ok:
            env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = fallback
    return env


def _precheck_with_git(
    worktree: Path, both: Path, changes: list[FileChange], artifacts_hint: str | None
) -> None:
    """Make sure git reads the input as we did, and that all of it applies, before writing."""
    numstat = run_bytes(["git", "apply", "--numstat", "-z", both], cwd=worktree, check=False)
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
    argv = ["git", "diff", "--raw", "-z", "--no-renames", "--no-abbrev", "--no-ext-diff"]
    raw = run_bytes([*argv, orig, "HEAD"], cwd=worktree)
    fields = raw.split(b"\0")
    changes = []
    for meta, name in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _old_sha, new_sha, status = meta[1:].decode().split()
        path = name.decode("utf-8", "surrogateescape")
        kind = {"A": "added", "D": "deleted"}.get(status[:1], "modified")
        target = None
        if new_mode == _SYMLINK and kind != "deleted":
            blob = run_bytes(["git", "cat-file", "blob", new_sha], cwd=worktree)
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
    raw = run_bytes(["git", "diff", "--name-only", "-z", "--no-renames", "--diff-filter=AMT",
                     orig, "HEAD"], cwd=worktree)  # fmt: skip
    for name in filter(None, raw.split(b"\0")):
        path = os.fsdecode(name)
        full = worktree / path
        if not full.is_symlink():
            continue
        real = os.path.realpath(full)
        if real != root and not real.startswith(root + os.sep):
            check.refused.append((path, f"symlink resolves outside the repository ({real})"))
        elif any(_norm(p) in (".git", "git~1") for p in Path(os.path.relpath(real, root)).parts):
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
    raw = run_bytes(["git", "diff", "--numstat", "-z", "-M", "--no-textconv", "--no-ext-diff",
                     orig, "HEAD"], cwd=worktree)  # fmt: skip
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
        hint = _kept(artifacts_hint, "Review them, then rerun with --allow-sensitive to apply.")
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
