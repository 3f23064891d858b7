"""The pure half of patch handling: reading the agent's diffs and deciding what may land.

Owns parsing ``git diff`` / ``git format-patch`` output into :class:`FileChange` records
(:func:`parse_changes`, with git's C-quoted path names via :func:`unquote_git_path`) and the
safety rules over them (:func:`check_changes`): paths that leave the tree or reach into ``.git``,
symlinks, gitlinks, unknown modes, and the :data:`SENSITIVE_PATHS` that need
``allow_sensitive``. Nothing here runs git or touches a work tree; :mod:`.patches` does that,
and applies only what these rules let through.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxrun.errors import PatchRejectedError

#: Paths whose changes need ``allow_sensitive``, with why. Matching is per path component and
#: case-insensitive (macOS and Windows filesystems are). ``**/`` means "at any depth"; a trailing
#: ``/`` means the directory itself (replaced by a file or symlink) or anything under it; the last
#: component may use ``fnmatch`` wildcards. The line we draw: files that make programs run without
#: anyone choosing to run the project's code (CI, git hooks, editor tasks, git drivers), or that
#: steer Claude Code itself, or that change how sandboxrun, the user's shell, package managers or
#: later agents behave (docs/security.md, "What comes back", gives the reasoning). We do not list
#: files that are the project's own code even when something runs them (Makefile, package.json
#: scripts, setup.py, the tests): the user runs those on purpose, after reviewing the branch.
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
    (".idea/", "JetBrains run configurations and startup tasks"),
    (".devcontainer/", "dev container build and start commands"),
    # sandboxrun's own settings: the next run's backend, what it uploads, what it keeps out.
    ("**/.sandboxrun.toml", "sandboxrun settings (backend, limits) for the next run"),
    ("**/.sandboxruninclude", "sandboxrun upload list: could add a secret to the next upload"),
    ("**/.sandboxrunignore", "sandboxrun upload exclusions"),
    # Instructions every later agent reads as its own.
    ("**/CLAUDE.md", "instructions for every later Claude Code session"),
    ("**/CLAUDE.local.md", "instructions for every later Claude Code session"),
    ("**/AGENTS.md", "instructions for later coding agents"),
    ("**/.cursorrules", "instructions for Cursor's agent"),
    ("**/.cursor/", "Cursor rules and MCP servers"),
    # The shell runs these on its own: direnv on `cd`, shells at start (a dotfiles repo).
    ("**/.envrc", "direnv: runs when you cd into the directory"),
    (".bashrc", "shell start-up file"),
    (".bash_profile", "shell start-up file"),
    (".bash_login", "shell start-up file"),
    (".profile", "shell start-up file"),
    (".zshrc", "shell start-up file"),
    (".zshenv", "shell start-up file"),
    (".zprofile", "shell start-up file"),
    (".zlogin", "shell start-up file"),
    (".config/fish/", "shell start-up files"),
    # Package managers: registries (where the next install comes from), credentials, and
    # settings that run programs (npm's script-shell and node-options, yarnPath, pnpmfile).
    ("**/.npmrc", "npm registry, credentials and script settings"),
    ("**/.yarnrc", "yarn registry and settings"),
    ("**/.yarnrc.yml", "yarn settings (yarnPath runs a program)"),
    ("**/.yarn/releases/", "the yarn program the project runs"),
    ("**/.yarn/plugins/", "yarn plugins (code run by yarn)"),
    ("**/.pnpmfile.cjs", "pnpm hooks run at install"),
    ("**/.pypirc", "Python package index credentials and URLs"),
    ("**/pip.conf", "pip index and settings"),
    ("**/pip.ini", "pip index and settings"),
    ("**/uv.toml", "uv index and settings"),
    ("**/.condarc", "conda channels and settings"),
    ("**/.cargo/config", "cargo settings (wrappers, registries)"),
    ("**/.cargo/config.toml", "cargo settings (wrappers, registries)"),
    ("**/.bundle/config", "bundler settings"),
    ("**/.gemrc", "RubyGems sources and settings"),
    # Version managers install and run what these name (asdf plugins, mise tasks and hooks).
    ("**/.tool-versions", "asdf/mise tool versions (installs plugins)"),
    ("**/.mise.toml", "mise tools, tasks and hooks"),
    ("**/mise.toml", "mise tools, tasks and hooks"),
    ("**/.mise/", "mise settings"),
)

SENSITIVE_REASON = "sensitive path"

_KNOWN_MODES = {"100644", "100755", "120000", "160000", "100664"}
SYMLINK_MODE = "120000"
_GITLINK, _EXEC = "160000", "100755"
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
        return self.new_mode == SYMLINK_MODE and self.status != "deleted"

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
        if new_mode == SYMLINK_MODE and self.new_lines and not self.is_binary:
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
    for label, attr in (("old mode ", "old_mode"), ("new mode ", "new_mode"),
                        ("deleted file mode ", "old_mode"), ("new file mode ", "new_mode")):  # fmt: skip
        if text.startswith(label):
            setattr(sec, attr, text[len(label) :].strip())
            sec.deleted |= label.startswith("deleted")
            sec.new_file |= label.startswith("new file")
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


@functools.lru_cache(maxsize=1 << 16)
def norm_component(component: str) -> str:
    """Fold a path component to what a case-insensitive (HFS+/NTFS) filesystem would see."""
    # Cached (a big change repeats its directory names); ASCII has no invisible characters.
    if not component.isascii():
        component = "".join(c for c in component if c not in _INVISIBLE)
    folded = component.casefold()
    return folded.split(":", 1)[0].rstrip(". ")  # NTFS: ".git::$DATA", ".git." and ".git " = .git


def _path_problem(path: str) -> str | None:
    """Why ``path`` may never be written, or None."""
    if not path:
        return "empty path"
    # A tab is a legitimate (if odd) character in a POSIX name; other control characters
    # only serve to forge terminal output.
    plain = path.isascii() and path.replace("\t", " ").isprintable()  # so neither: fast
    if not plain and any(unicodedata.category(c) == "Cc" and c != "\t" or c in _INVISIBLE
                         for c in path):  # fmt: skip
        return "control or invisible character in path"
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "'..' component leaves the repository"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    if any(norm_component(p) in (".git", "git~1") for p in parts):
        return "path inside .git"
    # A backslash is an ordinary character here, but a separator on Windows: a name that
    # would leave the tree or reach .git there is refused too.
    win = path.replace("\\", "/").split("/")
    if ".." in win:
        return "'..' component leaves the repository (backslash is a separator on Windows)"
    if any(norm_component(p) in (".git", "git~1") for p in win):
        return "path inside .git (backslash is a separator on Windows)"
    return None


@functools.lru_cache(maxsize=64)
def _compiled_rules(extra: tuple[str, ...]) -> tuple[tuple[Any, ...], dict[str, list[int]], Any]:
    """The rules as (any depth, is a directory, folded components, reason), folded once; and
    their indexes by first component (a literal name), and of those starting with a glob."""
    rules = [*SENSITIVE_PATHS, *((p, "git hooks (core.hooksPath)") for p in extra)]
    out = []
    by_first: dict[str, list[int]] = {}
    globbed = []
    for i, (pattern, why) in enumerate(rules):
        pat = pattern.removeprefix("**/")
        parts = tuple(norm_component(p) for p in pat.rstrip("/").split("/"))
        out.append((pattern.startswith("**/"), pat.endswith("/"), parts, why))
        if any(c in parts[0] for c in "*?["):
            globbed.append(i)
        else:
            by_first.setdefault(parts[0], []).append(i)
    return tuple(out), by_first, globbed


def _sensitive_why(path: str, extra: Sequence[str] = ()) -> str | None:
    """The reason ``path`` is sensitive (the first rule that matches), or None."""
    parts = [norm_component(p) for p in path.split("/")]
    rules, by_first, globbed = _compiled_rules(tuple(extra))
    # Most rules start with a literal name: only those whose name the path has are tried.
    candidates = [i for name in set(parts) for i in by_first.get(name, ())] + globbed
    for i in sorted(set(candidates)) if len(candidates) > 1 else candidates:
        any_depth, is_dir, pat_parts, why = rules[i]
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
    if any(norm_component(p) in (".git", "git~1") for p in resolved.split("/")):
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
