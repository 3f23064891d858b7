"""A collection directory: the sandbox's report of what it packed, and its objects kept apart.

What comes back from a sandbox (the final collection, a checkpoint, a ``download``) is a
directory holding ``collect.out`` (the :class:`Manifest`, written last) and ``objects/pack/``
(one pack, or a checkpoint's several, and the baseline's trees). :class:`Quarantine` reads and
writes objects there only, chained to the repository's own store, so nothing from the sandbox
reaches the repository until :mod:`sandboxrun.sandbox.apply` moves the accepted commits in.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandboxrun.errors import PatchRejectedError
from sandboxrun.process import Result, run, run_bytes

MANIFEST = "collect.out"
WORK_PACK = "work"
BASELINE_PACK = "baseline"
#: Options for every git we run here. No hooks: a hook is code the user trusts running over files
#: we just wrote from an untrusted source. Any blob over 1 MiB is big: streamed, never
#: delta-compressed or diffed in memory, so a huge file costs little memory (docs/performance.md).
GIT_OPTS = (
    "-c", f"core.hooksPath={os.devnull}", "-c", "core.bigFileThreshold=1m",
    # Packs are read through mmap windows (1 GiB each by default): the pages count as memory.
    "-c", "core.packedGitWindowSize=8m", "-c", "core.packedGitLimit=32m",
)  # fmt: skip
_GIT_OPTS = GIT_OPTS


@dataclass
class Manifest:
    """What the sandbox-side script reported about the work it packed."""

    mode: str  # "history": commits since the baseline; "tree": the final tree only
    base: str
    head: str
    tree: str
    commits: int = 0
    dotgit: int = 0  # ".git"-like names found in the tree and left out
    addfail: bool = False  # some files could not be read
    why: str = ""

    @classmethod
    def parse(cls, text: str) -> Manifest:
        """Read the ``key=value`` lines; anything malformed raises PatchRejectedError."""
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key] = value
        try:
            m = cls(
                mode=values["mode"],
                base=values["base"],
                head=values.get("head", ""),
                tree=values["tree"],
                commits=int(values.get("commits") or 0),
                dotgit=int(values.get("dotgit") or 0),
                addfail=values.get("addfail") == "1",
                why=values.get("why", "")[:500],
            )
        except (KeyError, ValueError) as exc:
            raise PatchRejectedError(
                f"the sandbox's collection report is malformed ({exc})",
                "Nothing was applied.",
            ) from exc
        for sha in (m.base, m.tree, *([m.head] if m.head else [])):
            if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
                raise PatchRejectedError(
                    f"the sandbox's collection report names an invalid object {sha[:50]!r}",
                    "Nothing was applied.",
                )
        if m.mode not in ("history", "tree") or (m.mode == "history" and not m.head):
            raise PatchRejectedError(
                f"the sandbox's collection report has an unknown mode {m.mode[:20]!r}",
                "Nothing was applied.",
            )
        return m


class Quarantine:
    """The sandbox's objects, kept apart from the repository's until a commit is accepted."""

    def __init__(self, worktree: Path, directory: Path) -> None:
        self.worktree = Path(worktree)
        self.directory = Path(directory)
        self.objects = self.directory / "objects"
        common = run(["git", "rev-parse", "--git-common-dir"], cwd=self.worktree).stdout.strip()
        self.repo_objects = (self.worktree / common).resolve() / "objects"
        self.env = {
            **os.environ,
            "GIT_OBJECT_DIRECTORY": str(self.objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self.repo_objects),
            "GIT_INDEX_FILE": str(self.directory / "replay.index"),
        }
        for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_CEILING_DIRECTORIES"):
            self.env.pop(var, None)

    def git(self, *args: str, input: bytes | str | None = None, check: bool = True) -> Result:
        """git in the worktree, reading and writing objects in the quarantine. No hooks."""
        return run(["git", *_GIT_OPTS, *args],
                   cwd=self.worktree, env=self.env, input=input, check=check)  # fmt: skip

    def raw(self, *args: str) -> bytes:
        """Like :meth:`git`, for binary output."""
        return run_bytes(["git", *_GIT_OPTS, *args],
                         cwd=self.worktree, env=self.env)  # fmt: skip

    def add_pack(self, source: Path, name: str) -> None:
        """Take ``source`` into the quarantine; index-pack verifies every object it holds."""
        pack_dir = self.objects / "pack"
        pack_dir.mkdir(parents=True, exist_ok=True)
        (self.objects / "info").mkdir(exist_ok=True)
        pack, idx = pack_dir / f"{name}.pack", pack_dir / f"{name}.idx"
        if source.resolve() != pack.resolve():
            idx.unlink(missing_ok=True)
            shutil.copyfile(source, pack)
        if idx.exists():
            return
        res = run(["git", *_GIT_OPTS, "index-pack", "-o", str(idx), str(pack)], cwd=self.worktree,
                  env=self.env, check=False)  # fmt: skip
        if not res.ok:
            idx.unlink(missing_ok=True)
            raise PatchRejectedError(
                f"the objects from the sandbox are damaged or incomplete: {res.stderr.strip()[-500:]}",
                "Nothing was applied.",
            )

    def exists(self, spec: str) -> bool:
        """True when ``spec`` (e.g. ``SHA^{commit}``) resolves in the quarantine."""
        return self.git("cat-file", "-e", spec, check=False).ok

    def tree_of(self, rev: str) -> str:
        """The tree SHA of a commit (or a tree)."""
        return self.git("rev-parse", "--verify", f"{rev}^{{tree}}").stdout.strip()
