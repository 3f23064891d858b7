"""Ignored files worth keeping: what removing a worktree would silently delete.

``git worktree remove`` refuses untracked and modified files but deletes *ignored* ones with the
tree: a ``.env``, local notes, a hand-made config. Those are uncommitted work too, so removal
refuses them unless the command's explicit discard flag is given. Regenerable clutter (caches,
build output, installed dependencies) and unchanged copies of the files ``copy_files`` put
there are not worth keeping and never block a removal.
"""

from __future__ import annotations

import filecmp
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from sandboxrun import gitops

#: Directories any tool recreates (a whole ignored one, or anything inside one).
CLUTTER_DIRS = frozenset(
    {
        "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".tox",
        ".nox", ".venv", "venv", ".eggs", "node_modules", ".next", ".nuxt", ".parcel-cache",
        ".turbo", ".gradle", "target", "build", "dist", "htmlcov", ".cache", ".sass-cache",
    }
)  # fmt: skip
CLUTTER_NAMES = frozenset({".DS_Store", "Thumbs.db", ".coverage"})
CLUTTER_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".tsbuildinfo")


def is_clutter(rel: str) -> bool:
    """Whether the ignored path ``rel`` (``git ls-files`` form; a directory ends in ``/``) is
    regenerable: a cache, build output or installed dependencies."""
    parts = PurePosixPath(rel.rstrip("/")).parts
    if any(p in CLUTTER_DIRS or p.endswith(".egg-info") for p in parts):
        return True
    name = parts[-1] if parts else ""
    return name in CLUTTER_NAMES or name.endswith(CLUTTER_SUFFIXES)


def worth_keeping(paths: Iterable[str], is_copy: set[str]) -> list[str]:
    """The ignored ``paths`` a removal would lose: not clutter, not an unchanged copy."""
    return sorted(p for p in paths if not is_clutter(p) and p.rstrip("/") not in is_copy)


def ignored_files(worktree: Path) -> list[str]:
    """The worktree's ignored files (a wholly ignored directory once, ending in ``/``)."""
    res = gitops.git(
        worktree,
        "ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z",
    )  # fmt: skip
    return [p for p in res.stdout.split("\0") if p]


def kept_ignored(root: Path, worktree: Path, copy_files: Iterable[str]) -> list[str]:
    """The worktree's ignored files that removing it would lose (see :func:`worth_keeping`);
    a ``copy_files`` file still identical to the repository's own is not among them."""
    found = ignored_files(worktree)
    copies = {
        name
        for name in copy_files
        if (worktree / name).is_file()
        and (root / name).is_file()
        and filecmp.cmp(worktree / name, root / name, shallow=False)
    }
    return worth_keeping(found, copies)


def describe(paths: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: a few names, then a count."""
    head = ", ".join(paths[:shown])
    rest = len(paths) - shown
    return head + (f" and {rest} more" if rest > 0 else "")
