"""Choose the files of a work tree to upload and stream them into a compressed tarball.

Two steps with a boundary between them so the CLI can show one without the other:

* :func:`select_files` decides *what* leaves the machine: git's own ignore rules (or
  ``.gitignore`` files on a plain directory), then ``.sandboxrunignore``, then the secrets
  check of :mod:`.secrets` (by name, and by content for text files), then
  ``.sandboxruninclude`` bringing chosen files back. Symlinks and other non-regular files are
  skipped and reported.
* :func:`pack_worktree` writes those files as a tar stream of regular files only, compressed
  with gzip (in parallel blocks, still one ordinary gzip member) or zstd (the ``zstd`` binary).
  The bytes themselves (tar headers, compression sinks, reading members safely) are
  :mod:`.tarstream`'s; this module decides what goes in, and records what was left out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sandboxrun import testhold
from sandboxrun.errors import PackError, UsageError
from sandboxrun.sync.candidates import (
    Spec,
    git_candidates,
    git_ignored_matching,
    is_git_dir,
    is_git_worktree,
    load_spec,
    read_lines,
    walk_candidates,
    with_submodules,
)
from sandboxrun.sync.secrets import SCAN_LIMIT, ContentCheck, name_reason
from sandboxrun.sync.tarstream import (
    BLOCK,
    COMPRESSIONS,
    GZIP_LEVEL,
    SUFFIXES,
    ZSTD_LEVEL,
    Batcher,
    Sink,
    end_archive,
    file_kind,
    make_sink,
    read_member,
    write_member,
)

__all__ = [
    "COMPRESSIONS",
    "GZIP_LEVEL",
    "IGNORE_FILE",
    "INCLUDE_FILE",
    "SUFFIXES",
    "ZSTD_LEVEL",
    "PackResult",
    "Selection",
    "pack_worktree",
    "select_files",
]

log = logging.getLogger(__name__)

IGNORE_FILE = ".sandboxrunignore"
INCLUDE_FILE = ".sandboxruninclude"
_UNREADABLE_HINT = f"Fix its permissions, or list it in {IGNORE_FILE} to leave it out."


@dataclass
class Selection:
    """The outcome of :func:`select_files`: what would be uploaded and what was left out."""

    root: Path
    files: list[str] = field(default_factory=list)
    excluded_secrets: list[str] = field(default_factory=list)
    #: why each of ``excluded_secrets`` was left out: "name: <family>" or "content: <rule>"
    secret_reasons: dict[str, str] = field(default_factory=dict)
    excluded_by_ignorefile: list[str] = field(default_factory=list)
    included_on_purpose: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total_bytes: int = 0
    source: str = "git"  # "git" (git ls-files) or "walk" (plain directory)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (file list included)."""
        return {
            "root": str(self.root),
            "source": self.source,
            "file_count": len(self.files),
            "total_bytes": self.total_bytes,
            "files": self.files,
            "excluded_secrets": self.excluded_secrets,
            "secret_reasons": self.secret_reasons,
            "excluded_by_ignorefile": self.excluded_by_ignorefile,
            "included_on_purpose": self.included_on_purpose,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class PackResult:
    """What :func:`pack_worktree` wrote."""

    path: Path
    compression: str
    file_count: int
    bytes_in: int
    bytes_out: int
    seconds: float
    selection: Selection
    #: a git upload (``compression == "git"``, :mod:`.gitupload`): the baseline tree it holds
    tree: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary without the selection."""
        return {
            "path": str(self.path),
            "compression": self.compression,
            "file_count": self.file_count,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- selection


def select_files(
    root: Path, *, scan_cache: Path | None = None, submodules: Sequence[str] = ()
) -> Selection:
    """Decide which files under ``root`` would be uploaded.

    In a git work tree the candidates are ``git ls-files -co --exclude-standard`` (tracked plus
    untracked-but-not-ignored, so nested ``.gitignore``, negations and ``.git/info/exclude``
    all behave exactly as in git); files deleted from disk are left out. On a plain directory
    the tree is walked honouring every ``.gitignore`` in it. Then ``.sandboxrunignore`` removes
    files, the secrets check (:mod:`.secrets`, by name then content) removes secrets, with a
    reason each in ``secret_reasons``, and ``.sandboxruninclude`` brings back files git ignores
    or the check excludes (``.sandboxrunignore`` still wins). Symlinks, submodules and special
    files are never uploaded: listed in ``skipped`` (the sandbox-side unpack refuses links);
    the paths in ``submodules`` instead stand for the files under them (see :func:`_start`).
    """
    sel, named, wanted = _start(root, submodules)
    check = ContentCheck(scan_cache)
    chosen: dict[str, int] = {}
    dir_fd = _open_dir(sel.root)
    try:
        for rel, on_purpose in named(dir_fd):
            try:
                st = os.lstat(rel, dir_fd=dir_fd)  # dir_fd: no path joins, ~2x faster
            except (FileNotFoundError, NotADirectoryError):
                continue  # tracked but deleted in the work tree: nothing to upload
            except OSError as exc:
                raise PackError(
                    f"cannot look at {rel}: {exc.strerror}",
                    "Make it readable (chmod/chown), or leave it out with a line in .sandboxrunignore.",
                ) from exc
            if stat.S_ISREG(st.st_mode):
                if not on_purpose and st.st_size <= SCAN_LIMIT:
                    rule = check(_read_small(dir_fd, rel))
                    if rule is not None:
                        on_purpose = wanted(rel)
                        if not on_purpose:
                            _exclude(sel, rel, f"content: {rule}")
                            continue
                chosen[rel] = st.st_size
                if on_purpose:
                    sel.included_on_purpose.append(rel)
            else:
                sel.skipped.append(_skip(rel, file_kind(st.st_mode), fresh=True))
    finally:
        os.close(dir_fd)
    check.save()
    return _finish(sel, list(chosen), sum(chosen.values()))


_NamedFiles = Callable[[int], Iterator[tuple[str, bool]]]


def _exclude(sel: Selection, rel: str, reason: str) -> None:
    sel.excluded_secrets.append(rel)
    sel.secret_reasons[rel] = reason


def _read_small(dir_fd: int, rel: str) -> bytes:
    """The first ``SCAN_LIMIT + 1`` bytes of a file (b"" when it cannot be read now)."""
    with contextlib.suppress(OSError):  # packing opens it again and reports what is wrong
        fd = os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            return os.read(fd, SCAN_LIMIT + 1)
        finally:
            os.close(fd)
    return b""


def _start(
    root: Path, submodules: Sequence[str] = ()
) -> tuple[Selection, _NamedFiles, Callable[[str], bool]]:
    """List candidates and load the rules; return an empty Selection and a generator.

    The generator applies the name rules only and yields ``(path, on_purpose)`` for each
    path to upload if it turns out to be a regular file; excluded paths that exist are
    recorded in the Selection. Callers look at the files themselves: :func:`select_files`
    with lstat, :func:`pack_worktree` by opening them, so it stats each file only once; both
    check the content of what they read, and ask the returned ``wanted(path)`` (does
    ``.sandboxruninclude`` name it?) before leaving a file out for its content.

    ``submodules``: gitlink paths whose files were written into the tree for the upload
    (:mod:`sandboxrun.sandbox.submodules`); each stands for the files under it, found as on a
    plain directory (its own ``.gitignore`` files honoured), then every rule above applies.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise PackError(f"{root} is not a directory", "Pass the path of a work tree to pack.")
    ignore_spec = load_spec(root / IGNORE_FILE)
    include_lines = read_lines(root / INCLUDE_FILE)
    include_spec = Spec(include_lines) if include_lines else None
    sel = Selection(root=root)
    if is_git_worktree(root):
        candidates = git_candidates(root)
        if submodules:
            candidates = with_submodules(root, candidates, submodules)
        ignored = git_ignored_matching(root, include_lines) if include_spec else []
    elif is_git_dir(root):
        raise PackError(
            f"{root} is a git directory (a bare repository or .git), not a work tree",
            "Pack a checkout: clone the repository (git clone) and pass its path.",
        )
    else:
        sel.source = "walk"
        candidates, ignored = walk_candidates(root, include_lines, include_spec)

    def note(lst: list[str], dir_fd: int, rel: str) -> bool:
        with contextlib.suppress(OSError):  # a deleted tracked file is not worth a mention
            os.lstat(rel, dir_fd=dir_fd)
            lst.append(rel)
            return True
        return False

    def named(dir_fd: int) -> Iterator[tuple[str, bool]]:
        for rel in candidates:
            if ignore_spec is not None and ignore_spec.match(rel):
                note(sel.excluded_by_ignorefile, dir_fd, rel)
            elif (reason := name_reason(rel)) is None:
                yield rel, False
            elif include_spec is not None and include_spec.match(rel):
                yield rel, True
            elif note(sel.excluded_secrets, dir_fd, rel):
                sel.secret_reasons[rel] = reason
        # ignored by git (or .gitignore): only what .sandboxruninclude names comes back
        for rel in ignored:
            if include_spec is None or not include_spec.match(rel):
                continue
            if ignore_spec is not None and ignore_spec.match(rel):
                note(sel.excluded_by_ignorefile, dir_fd, rel)
            else:
                yield rel, True

    return sel, named, _wanted(include_spec)


def _wanted(include_spec: Spec | None) -> Callable[[str], bool]:
    return (lambda rel: False) if include_spec is None else include_spec.match


def _finish(sel: Selection, files: list[str], total_bytes: int) -> Selection:
    sel.files = sorted(files)
    sel.total_bytes = total_bytes
    for lst in (sel.excluded_secrets, sel.excluded_by_ignorefile, sel.included_on_purpose):
        lst.sort()
    sel.skipped.sort()
    log.debug(
        "selected %d files (%d bytes) under %s by %s",
        len(sel.files),
        sel.total_bytes,
        sel.root,
        sel.source,
    )
    return sel


def _open_dir(root: Path) -> int:
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


# why a path is not in the archive: found so at selection (fresh) or changed since (raced)
_SKIP_FRESH = {
    "symlink": "symlink (the sandbox unpack refuses links)",
    "dir": "submodule or nested git repository",
    "special": "not a regular file",
}
_SKIP_RACED = {
    "missing": "vanished before packing",
    "symlink": "became a symlink before packing",
    "dir": "no longer a regular file",
    "special": "no longer a regular file",
}


def _skip(rel: str, kind: str, *, fresh: bool) -> tuple[str, str]:
    return rel.rstrip("/"), (_SKIP_FRESH if fresh else _SKIP_RACED)[kind]


def pack_worktree(
    root: Path,
    output: Path,
    *,
    compression: str = "gzip",
    selection: Selection | None = None,
    progress: Callable[[int, int], None] | None = None,
    level: int | None = None,
    scan_cache: Path | None = None,
    submodules: Sequence[str] = (),
) -> PackResult:
    """Write the selected files of ``root`` as a compressed tarball at ``output``.

    ``compression`` is ``"gzip"`` (default; parallel blocks, one standard gzip member),
    ``"zstd"`` (needs the ``zstd`` program) or ``"none"``; ``level`` overrides the default
    level (:data:`GZIP_LEVEL`, :data:`ZSTD_LEVEL`). Members are regular files with relative
    names, their permission bits and mtime, owner 0:0 and no user names. The archive is
    streamed to a temporary file beside ``output`` and renamed into place only when complete.

    Without ``selection`` the files are chosen exactly as :func:`select_files` would, while
    packing (compression overlaps selection, and each file is stat'ed once); the result's
    ``selection`` reports them. ``progress`` is called as ``progress(bytes_done, bytes_total)``
    (uncompressed) about once per MiB and at the end; it needs the total first, so with
    ``progress`` and no ``selection`` the selection is made up front. A file of a given
    selection that has vanished or become a link is skipped and noted in ``skipped``. The
    bytes read are content-checked before they are written (a secret is left out unless
    ``.sandboxruninclude`` names it); ``scan_cache``: see :class:`.secrets.ContentCheck`;
    ``submodules``: see :func:`select_files`.
    """
    if compression not in COMPRESSIONS:
        raise UsageError(
            f"unknown compression {compression!r}", f"Use one of: {', '.join(COMPRESSIONS)}."
        )
    limits = {"gzip": (0, 9), "zstd": (1, 19), "none": (0, 0)}[compression]
    if level is not None and not limits[0] <= level <= limits[1]:
        raise UsageError(
            f"{compression} level {level} is out of range", f"Use {limits[0]}..{limits[1]}."
        )
    started = time.perf_counter()
    output = Path(output).absolute()
    if not output.parent.is_dir():
        raise PackError(
            f"cannot write {output}: {output.parent} is not a directory",
            "Create the directory first or choose another --output.",
        )
    if selection is None and progress is not None:
        selection = select_files(root, scan_cache=scan_cache, submodules=submodules)
    check = ContentCheck(scan_cache)
    if selection is None:
        sel, named, wanted = _start(root, submodules)
        skipped = sel.skipped
    else:
        sel = replace(
            selection,
            excluded_secrets=list(selection.excluded_secrets),
            secret_reasons=dict(selection.secret_reasons),
        )
        brought_back = set(sel.included_on_purpose)
        skipped = list(sel.skipped)
        wanted = _wanted(load_spec(sel.root / INCLUDE_FILE))

        def named(dir_fd: int) -> Iterator[tuple[str, bool]]:
            return ((rel, rel in brought_back) for rel in sel.files)

    # never pack an earlier copy of the tarball we are about to write
    try:
        own = output.resolve().relative_to(sel.root).as_posix()
    except ValueError:
        own = None

    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    tmp = Path(tmp_name)
    testhold.hold("packing-tarball")  # a test kills the run here: a partial tarball stays
    bytes_in = 0
    written: list[str] = []
    included: list[str] = []
    sink: Sink | None = None
    dir_fd = _open_dir(sel.root)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            sink = make_sink(compression, out, level)
            batch = Batcher(sink)
            next_report = 0
            for rel, on_purpose in named(dir_fd):
                if rel == own:
                    skipped.append((rel, "the output tarball itself"))
                    continue
                got = read_member(dir_fd, rel, unreadable_hint=_UNREADABLE_HINT)
                if isinstance(got, str):
                    if selection is not None or got != "missing":  # else: deleted, tracked
                        skipped.append(_skip(rel, got, fresh=selection is None))
                    continue
                # the content check sees exactly the bytes that would be uploaded
                if not on_purpose and (rule := check(got[1])) is not None:
                    on_purpose = wanted(rel)
                    if not on_purpose:
                        _exclude(sel, rel, f"content: {rule}")
                        continue
                size = write_member(batch, dir_fd, rel, *got)
                bytes_in += size
                written.append(rel)
                if on_purpose:
                    included.append(rel)
                if progress is not None and bytes_in >= next_report:
                    progress(bytes_in, max(sel.total_bytes, bytes_in))
                    next_report = bytes_in + BLOCK
            end_archive(batch)
            sink.close()
            sink = None
        if progress is not None:
            progress(bytes_in, max(sel.total_bytes, bytes_in))
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        if sink is not None:
            sink.abort()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(dir_fd)
    check.save()
    if selection is None:
        sel.included_on_purpose = included
        sel = _finish(sel, written, bytes_in)
    elif len(written) != len(sel.files) or skipped != sel.skipped:
        sel.excluded_secrets.sort()
        sel = replace(
            sel,
            files=written,
            skipped=sorted(skipped),
            total_bytes=bytes_in,
            included_on_purpose=included,
        )
    result = PackResult(
        path=output,
        compression=compression,
        file_count=len(written),
        bytes_in=bytes_in,
        bytes_out=output.stat().st_size,
        seconds=time.perf_counter() - started,
        selection=sel,
    )
    log.debug("packed %s: %s", output, result.to_dict())
    return result
