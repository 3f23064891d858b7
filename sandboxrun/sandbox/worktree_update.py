"""Bringing a worktree from one commit to the next after the branch moved, fast for big changes.

``git read-tree -m -u OLD NEW`` is correct but, for each changed file, unlinks it and creates a
new one: on this project's ext4 that inode churn is what made 20,000 changed files take 5–60 s
depending on the load (docs/performance.md). Most of an agent's changes are plain edits, so
:func:`update_worktree` rewrites those files *in place* and leaves every other change to git:

1. candidates: paths modified from OLD to NEW as a regular file of the same mode, no bigger
   than 1 MiB, with no checkout conversion (no ``core.autocrlf=true``, no ``text``/``eol``/
   ``filter``/``ident``/``working-tree-encoding`` attribute, no ``.gitattributes`` among the
   changes), tracked in the index with no special flags (skip-worktree, assume-unchanged);
2. each candidate is opened through its directories without following a symlink, and written
   only when it is a regular file with one link whose ``stat`` still matches the index entry
   exactly (size, mtime and ctime to the nanosecond, inode) and is not racily clean: the same
   proof git uses that a file holds the committed content, taken the moment before writing, so
   a user's uncommitted edit is never overwritten (any doubt leaves the path to git, which
   refuses to overwrite a modified file);
3. the index takes the new blobs of the written paths (``update-index --index-info``) and their
   fresh stat data (``update-index --refresh``, which also hashes the files we wrote);
4. ``git read-tree -m -u MID NEW`` does everything else (additions, deletions, mode and type
   changes, the candidates refused above) with git's own checks.

A crash at any step leaves files that hold the old or the new version (or one half-written file
of ours) and an index at OLD, MID or NEW; :func:`sandboxrun.sandbox.apply.finish_pending`
recognises all of these.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from sandboxrun.errors import GitError
from sandboxrun.process import RawResult, run, run_raw
from sandboxrun.sync.replay import GIT_OPTS

#: Test hook (see :mod:`sandboxrun.sandbox.apply`): ``inplace`` kills the applier (SIGKILL)
#: halfway through the in-place writes. Never set outside tests.
FAULT_ENV = "SANDBOXRUN_FAULT_APPLY"
#: Blobs bigger than this are left to git, which streams them (memory stays bounded).
INPLACE_MAX = 1 << 20
#: Blob contents fetched per ``cat-file --batch`` call, at most (bounds our memory).
BATCH_BYTES = 32 << 20
_REGULAR = ("100644", "100755")
_CONVERSION_ATTRS = ("text", "eol", "filter", "ident", "working-tree-encoding", "crlf")
_NO_CHECKOUT_CONVERSION = ("false", "no", "off", "0", "input")


class Change(NamedTuple):  # a NamedTuple: 20,000 of them are built per big apply
    """One line of ``git diff-tree -r --raw``: a path changed between two trees."""

    old_mode: str
    new_mode: str
    old_sha: str
    new_sha: str
    status: str
    path: str


def _git(worktree: Path, *args: str, input: bytes | None = None, check: bool = True) -> RawResult:
    return run_raw(["git", *GIT_OPTS, *args], cwd=worktree, input=input, check=check)


def tree_changes(worktree: Path, old: str, new: str) -> list[Change]:
    """Every path that differs between ``old`` and ``new`` (no rename detection)."""
    raw = _git(worktree, "diff-tree", "-r", "-z", "--no-renames", "--no-commit-id",
               old, new).stdout  # fmt: skip
    parts = raw.split(b"\0")
    out: list[Change] = []
    i = 0
    while i + 1 < len(parts) and parts[i].startswith(b":"):
        old_mode, new_mode, old_sha, new_sha, status = parts[i][1:].decode().split(" ")
        out.append(
            Change(old_mode, new_mode, old_sha, new_sha, status[:1], os.fsdecode(parts[i + 1]))
        )
        i += 2
    return out


def _conversion_free(worktree: Path, changes: list[Change]) -> bool:
    """True when checkout writes blobs byte for byte as far as repository-wide settings go."""
    if any(posix_name(c.path) == ".gitattributes" for c in changes):
        return False  # the agent changed which conversions apply: let git handle all of it
    res = run(["git", "config", "--get", "core.autocrlf"], cwd=worktree, check=False)
    # Unset, false or "input" (converts on commit only); any other value may convert: git's.
    return res.returncode == 1 or res.stdout.strip().lower() in _NO_CHECKOUT_CONVERSION


def posix_name(path: str) -> str:
    """The last component of a slash-separated path."""
    return path.rsplit("/", 1)[-1]


def _attribute_free(worktree: Path, paths: list[str]) -> set[str]:
    """The paths none of the conversion attributes is set on (set, unset or valued)."""
    if not paths:
        return set()
    data = b"".join(os.fsencode(p) + b"\0" for p in paths)
    raw = _git(worktree, "check-attr", "-z", "--stdin", *_CONVERSION_ATTRS, input=data).stdout
    parts = raw.split(b"\0")
    flagged = set()
    for i in range(0, len(parts) - 2, 3):
        if parts[i + 2] != b"unspecified":
            flagged.add(os.fsdecode(parts[i]))
    return set(paths) - flagged


class _Entry(NamedTuple):
    ctime: tuple[int, int]
    mtime: tuple[int, int]
    ino: int
    size: int
    flags: int


# One entry of ``git ls-files --debug -z``: the path, NUL, then five indented lines of stat data.
_DEBUG_RE = re.compile(
    rb"([^\0]+)\0  ctime: (\d+):(\d+)\n  mtime: (\d+):(\d+)\n  dev: \d+\tino: (\d+)\n"
    rb"  uid: \d+\tgid: \d+\n  size: (\d+)\tflags: ([0-9a-f]+)\n"
)


def _index_entries(worktree: Path, wanted: set[str]) -> dict[str, _Entry]:
    """Stat data of the index entries of ``wanted`` paths, from ``git ls-files --debug``."""
    raw = _git(worktree, "ls-files", "--debug", "-z").stdout
    out: dict[str, _Entry] = {}
    for m in _DEBUG_RE.finditer(raw):
        path = os.fsdecode(m[1])
        if path in wanted:
            out[path] = _Entry((int(m[2]), int(m[3])), (int(m[4]), int(m[5])), int(m[6]),
                               int(m[7]), int(m[8], 16))  # fmt: skip
    return out


def _index_mtime(worktree: Path) -> tuple[int, int]:
    rel = run(["git", "rev-parse", "--git-path", "index"], cwd=worktree).stdout.strip()
    seconds, nanos = divmod(os.stat(worktree / rel).st_mtime_ns, 1_000_000_000)
    return seconds, nanos


def _matches(entry: _Entry, st: os.stat_result, index_mtime: tuple[int, int]) -> bool:
    """True when ``st`` is the file the index entry describes, beyond reasonable doubt."""
    mtime = divmod(st.st_mtime_ns, 1_000_000_000)
    ctime = divmod(st.st_ctime_ns, 1_000_000_000)
    return (
        entry.flags == 0
        and stat.S_ISREG(st.st_mode)
        and st.st_nlink == 1
        and entry.size == st.st_size
        and entry.mtime == mtime
        and entry.ctime == ctime
        and entry.ino == st.st_ino & 0xFFFFFFFF
        and entry.mtime < index_mtime  # not racily clean: the stat data proves the content
    )


class _Dirs:
    """Directory fds along the current path, opened without following symlinks."""

    def __init__(self, root: Path) -> None:
        self.chain: list[tuple[str, int]] = [("", os.open(root, os.O_RDONLY | os.O_DIRECTORY))]

    def fd(self, parts: list[str]) -> int:
        keep = 1
        while (
            keep < len(self.chain)
            and keep - 1 < len(parts)
            and self.chain[keep][0] == parts[keep - 1]
        ):
            keep += 1
        for _, fd in self.chain[keep:]:
            os.close(fd)
        del self.chain[keep:]
        for name in parts[keep - 1 :]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            self.chain.append((name, os.open(name, flags, dir_fd=self.chain[-1][1])))
        return self.chain[-1][1]

    def close(self) -> None:
        for _, fd in self.chain:
            os.close(fd)
        self.chain = []


def _contents(worktree: Path, shas: list[str]) -> Iterator[bytes]:
    """The contents of blobs, in order (the caller keeps their total under BATCH_BYTES)."""
    raw = _git(worktree, "cat-file", "--batch", input="\n".join(shas).encode() + b"\n").stdout
    pos = 0
    for sha in shas:
        nl = raw.index(b"\n", pos)
        header = raw[pos:nl].split(b" ")
        if header[0].decode() != sha or header[1] != b"blob":
            raise GitError(f"git cat-file returned {raw[pos:nl][:100]!r} for {sha}")
        size = int(header[2])
        yield raw[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1


def _sizes(worktree: Path, shas: list[str]) -> dict[str, int]:
    data = "\n".join(shas).encode() + b"\n"
    out: dict[str, int] = {}
    for line in _git(worktree, "cat-file", "--batch-check", input=data).stdout.splitlines():
        parts = line.split(b" ")
        if len(parts) == 3 and parts[1] == b"blob":
            out[parts[0].decode()] = int(parts[2])
    return out


def _batches(changes: list[Change], sizes: dict[str, int]) -> Iterator[list[Change]]:
    batch: list[Change] = []
    total = 0
    for c in changes:
        if batch and total + sizes[c.new_sha] > BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(c)
        total += sizes[c.new_sha]
    if batch:
        yield batch


def _write_in_place(worktree: Path, changes: list[Change]) -> list[Change]:
    """Rewrite each candidate that provably holds its committed content; return those written."""
    entries = _index_entries(worktree, {c.path for c in changes})
    index_mtime = _index_mtime(worktree)
    sizes = _sizes(worktree, sorted({c.new_sha for c in changes}))
    fit = [c for c in changes if sizes.get(c.new_sha, INPLACE_MAX + 1) <= INPLACE_MAX
           and c.path in entries]  # fmt: skip
    written: list[Change] = []
    dirs = _Dirs(worktree)
    try:
        for batch in _batches(fit, sizes):
            for c, content in zip(batch, _contents(worktree, [c.new_sha for c in batch]),
                                  strict=True):  # fmt: skip
                if _write_one(dirs, c.path, content, entries[c.path], index_mtime):
                    written.append(c)
                    if (
                        len(written) == (len(fit) + 1) // 2
                        and os.environ.get(FAULT_ENV) == "inplace"
                    ):
                        os.kill(os.getpid(), signal.SIGKILL)
    finally:
        dirs.close()
    return written


def _write_one(dirs: _Dirs, path: str, content: bytes, entry: _Entry,
               index_mtime: tuple[int, int]) -> bool:  # fmt: skip
    parts = path.split("/")
    try:
        parent = dirs.fd(parts[:-1])
        fd = os.open(parts[-1], os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=parent)  # fmt: skip
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise
        return False  # missing, a symlink on the way, not a file: git decides
    try:
        st = os.fstat(fd)
        if not _matches(entry, st, index_mtime):
            return False
        # Overwrite, then cut the tail: freeing blocks (truncating to 0, or git's unlink and
        # create) is what costs on this disk (ext4 with discard: ~2 ms a file under load).
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        if st.st_size != len(content):
            os.ftruncate(fd, len(content))
        return True
    finally:
        os.close(fd)


def update_worktree(worktree: Path, old: str, new: str) -> int:
    """Bring ``worktree`` (index and files at ``old``) to ``new``; return the files written in place.

    Raises GitError when git refuses the rest of the update (a file in the way); the user's
    changes are never overwritten.
    """
    worktree = Path(worktree)
    changes = tree_changes(worktree, old, new)
    candidates = [c for c in changes
                  if c.status == "M" and c.old_mode == c.new_mode and c.new_mode in _REGULAR]  # fmt: skip
    written: list[Change] = []
    if candidates and _conversion_free(worktree, changes):
        plain = _attribute_free(worktree, [c.path for c in candidates])
        try:
            written = _write_in_place(worktree, [c for c in candidates if c.path in plain])
        except OSError as exc:  # a full disk, an I/O error: as when git's own update fails
            raise GitError(
                f"The branch now holds the agent's work, but its worktree {worktree} could not "
                f"be updated: {exc}",
                "Fix the cause, then run `sandboxrun apply` on the session to finish.",
            ) from exc
    start = old
    if written:
        info = b"".join(f"{c.new_mode} {c.new_sha}\t".encode() + os.fsencode(c.path) + b"\0"
                        for c in written)  # fmt: skip
        _git(worktree, "update-index", "-z", "--index-info", input=info)
        _git(worktree, "update-index", "-q", "--refresh", check=False)
        start = run(["git", *GIT_OPTS, "write-tree"], cwd=worktree).stdout.strip()
    if len(written) < len(changes):
        res = _git(worktree, "read-tree", "-m", "-u", start, new, check=False)
        if not res.ok:
            raise GitError(
                f"The branch now holds the agent's work, but its worktree {worktree} could not "
                f"be updated: {res.stderr.decode(errors='replace').strip()[-500:]}",
                "Run `sandboxrun apply` on the session to finish.",
            )
    return len(written)
