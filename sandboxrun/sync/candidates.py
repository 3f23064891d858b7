"""Which paths of a work tree are candidates for the upload, before the secrets check.

git's own view (``ls-files`` with the standard excludes) in a git work tree, or a walk that
honours nested ``.gitignore`` files on a plain directory; the gitignore-style specs of
``.sandboxrunignore`` / ``.sandboxruninclude`` (:class:`Spec`, with a one-regex prefilter); a
submodule's files in place of its gitlink. :mod:`.pack` decides what of this leaves the machine.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pathspec

from sandboxrun import process
from sandboxrun.errors import PackError
from sandboxrun.gitops import git, git_bytes

log = logging.getLogger(__name__)

_ANY_DEPTH = "^(?:.+/)?"  # how pathspec starts a pattern without a slash


class Spec:
    """A gitignore-style spec with a one-regex prefilter.

    pathspec tries every pattern in turn (~30 regex searches per path for the deny-list, a
    quarter of a second on 20,000 files). Most paths match no pattern at all, so one combined
    regex of the non-negated patterns answers "no" in a single search; only paths it flags go
    through pathspec's full, order-aware check.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        # pathspec >= 1.0 would pick its Hyperscan backend once hyperscan is installed (for
        # the secrets check): a database compile of ~0.1 s per spec, for matching that the
        # prefilter below already makes rare. The pure-Python backend is what is measured.
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")
        sources = [
            p.regex.pattern.replace("(?P<ps_d>", "(?:")
            for p in self.spec.patterns
            if p.include and p.regex is not None
        ]
        # "match at any depth" patterns share a prefix that makes the union backtrack at every
        # slash; hoisting it out keeps the prefilter at ~1.5 us per path
        anywhere = [s.removeprefix(_ANY_DEPTH) for s in sources if s.startswith(_ANY_DEPTH)]
        parts = [f"(?:{s})" for s in sources if not s.startswith(_ANY_DEPTH)]
        if anywhere:
            parts.append("(?:^|/)(?:" + "|".join(anywhere) + ")")
        try:
            self.any = re.compile("|".join(parts)) if parts else None
        except re.error:  # an unexpected pathspec regex dialect: fall back to the full check
            self.any = re.compile("")
        self.empty = not sources

    def match(self, path: str) -> bool:
        """True when the spec selects ``path`` (last matching pattern wins, as in git)."""
        if self.empty or (self.any is not None and not self.any.search(path)):
            return False
        return self.spec.match_file(path)


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PackError(
            f"cannot read {path}: {exc.strerror}",
            "Make it readable (chmod/chown), or leave it out with a line in .sandboxrunignore.",
        ) from exc


def load_spec(path: Path) -> Spec | None:
    lines = read_lines(path)
    return Spec(lines) if lines else None


def is_git_worktree(root: Path) -> bool:
    if process.which("git") is None:
        log.debug("git not found; walking %s as a plain directory", root)
        return False
    res = git(root, "rev-parse", "--is-inside-work-tree", check=False)
    return res.ok and res.stdout.strip() == "true"


def is_git_dir(root: Path) -> bool:
    """Whether ``root`` is inside a git directory itself (a bare repository, or ``.git``):
    its files are git's own, never a tree to upload."""
    if process.which("git") is None:
        return False
    res = git(root, "rev-parse", "--is-inside-git-dir", check=False)
    return res.ok and res.stdout.strip() == "true"


def split_z(raw: bytes) -> list[str]:
    # git prints paths as raw bytes; fsdecode keeps odd (non-UTF-8) names round-trippable
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def git_candidates(root: Path) -> list[str]:
    raw = git_bytes(root, "ls-files", "-z", "-c", "-o", "--exclude-standard")
    # -c lists an unmerged path once per stage; dict keeps first-seen order
    return list(dict.fromkeys(split_z(raw)))


def with_submodules(root: Path, candidates: list[str], paths: Sequence[str]) -> list[str]:
    """The candidates with each submodule's gitlink replaced by the files under it."""
    subs = set(paths)
    out = [c for c in candidates if c not in subs]
    for sub in paths:
        if (root / sub).is_dir():
            files, _ = walk_candidates(root / sub, [], None)
            out += [f"{sub}/{f}" for f in sorted(files)]
    return out


def include_pathspecs(lines: Iterable[str]) -> list[str]:
    """Translate ``.sandboxruninclude`` lines into git pathspecs that cover (at least) them.

    Only used to keep git from walking ignored trees the include file cannot match; the
    exact decision is still made by pathspec afterwards, so a superset is fine.
    """
    out: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue  # negations only remove, so they never widen the search
        anchored = "/" in line.rstrip("/")
        pat = line.strip("/")
        if not pat:
            continue
        base = pat if anchored else f"**/{pat}"
        out += [f":(glob){base}", f":(glob){base}/**"]
    return out


def git_ignored_matching(root: Path, include_lines: list[str]) -> list[str]:
    specs = include_pathspecs(include_lines)
    if not specs:
        return []
    raw = git_bytes(root, "ls-files", "-z", "-o", "-i", "--exclude-standard", "--", *specs)
    return split_z(raw)


def include_prefixes(include_lines: Iterable[str]) -> list[str]:
    """Literal leading directories of include patterns ("" when a pattern can match anywhere)."""
    out = []
    for raw in include_lines:
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        if "/" not in line.rstrip("/"):
            return [""]
        parts = []
        for part in line.strip("/").split("/")[:-1]:
            if any(ch in part for ch in "*?[\\"):
                break
            parts.append(part)
        out.append("/".join(parts))
    return out


def may_contain(prefixes: list[str], rel_dir: str) -> bool:
    return any(
        p in ("", rel_dir) or rel_dir.startswith(p + "/") or p.startswith(rel_dir + "/")
        for p in prefixes
    )


def ignored_by(rel: str, specs: list[tuple[str, Spec]]) -> bool:
    # deeper .gitignore files override shallower ones, as in git
    for base, spec in reversed(specs):
        result = spec.spec.check_file(rel[len(base) :])
        if result.include is not None:
            return bool(result.include)
    return False


def walk_candidates(
    root: Path, include_lines: list[str], include_spec: Spec | None
) -> tuple[list[str], list[str]]:
    """Walk a plain directory honouring nested .gitignore files; skip every ``.git``.

    Returns (candidates, ignored files worth testing against the include spec). An ignored
    directory is only descended into when an include pattern could match inside it.
    """
    files: list[str] = []
    ignored: list[str] = []
    prefixes = include_prefixes(include_lines) if include_spec is not None else []
    stack: list[tuple[str, list[tuple[str, Spec]], bool]] = [("", [], False)]
    while stack:
        rel_dir, specs, in_ignored = stack.pop()
        abs_dir = os.path.join(root, rel_dir)
        if not in_ignored:
            spec = load_spec(Path(abs_dir) / ".gitignore")
            if spec is not None:
                specs = [*specs, (rel_dir, spec)]
        try:
            entries = list(os.scandir(abs_dir))
        except OSError as exc:
            raise PackError(
                f"cannot read directory {abs_dir}: {exc.strerror}",
                "Make it readable (chmod/chown), or leave it out with a line in .sandboxrunignore.",
            ) from exc
        for entry in entries:
            if entry.name == ".git":
                continue
            rel = rel_dir + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            hidden = in_ignored or ignored_by(rel + "/" if is_dir else rel, specs)
            if is_dir:
                if not hidden or may_contain(prefixes, rel):
                    stack.append((rel + "/", specs, hidden))
            elif hidden:
                if include_spec is not None:
                    ignored.append(rel)
            else:
                files.append(rel)
    return files, ignored
