"""The pure half of checking the agent's work: deciding which changes may land.

The safety rules over :class:`FileChange` records (:func:`check_changes`): paths that leave the
tree or reach into ``.git``, symlinks, gitlinks, unknown modes, and the :data:`SENSITIVE_PATHS`
that need ``allow_sensitive``. Nothing here runs git or touches a work tree;
:mod:`.replay` reads every change of every commit the sandbox sent (``git diff-tree``) into
these records and builds only what the rules let through.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


_Rule = tuple[bool, bool, tuple[str, ...], str]


@functools.lru_cache(maxsize=64)
def _compiled_rules(
    extra: tuple[str, ...],
) -> tuple[tuple[_Rule, ...], dict[str, list[int]], list[int]]:
    """The rules as (any depth, is a directory, folded components, reason), folded once; and
    their indexes by first component (a literal name), and of those starting with a glob."""
    rules = [*SENSITIVE_PATHS, *((p, "git hooks (core.hooksPath)") for p in extra)]
    out = []
    by_first: dict[str, list[int]] = {}
    globbed: list[int] = []
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
