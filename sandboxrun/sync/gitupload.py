"""A cold upload as git objects: the baseline's tree is built here, the sandbox checks it out.

The tarball path (:mod:`.pack`) sends every byte as file content and the sandbox then hashes
all of it again to make the baseline commit (``git add``). A git work tree already knows the
blob id of every tracked file git sees unchanged (its index, after a stat check), and its
packs already hold those blobs compressed. So instead:

1. :func:`~.pack.select_files` decides what leaves the machine, exactly as for a tarball
   (ignore files, ``.sandboxrunignore``, the secrets check by name and content,
   ``.sandboxruninclude``).
2. The *manifest* of those files (path -> mode, blob id): from the index for tracked files
   ``git diff-files`` sees unchanged; every other file is read here once, its bytes
   content-checked, and written as a blob by ``git fast-import`` (exactly the bytes checked).
   The mode is the file's own executable bit, as ``git add`` in the sandbox would record it.
3. ``git update-index --index-info`` (a scratch index: git's own ``verify_path`` refuses
   ``.git``/``..`` components) and ``git write-tree`` make the baseline tree, in a scratch
   object directory that borrows the repository's objects (nothing is written to the user's
   repository), and ``git pack-objects`` packs that tree and everything in it, reusing the
   compressed objects of the repository's packs as they are.

It applies only where the blobs are the files' bytes: a git work tree (sha1 objects) without
included submodules, no ``core.autocrlf``, and no attributes file anywhere that could ask for a content
conversion (a ``.gitattributes``, ``info/attributes``, a global or system one). Otherwise
:func:`plan` says why and the run uploads a tarball as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

from sandboxrun import gitops, process
from sandboxrun.errors import GitError, PackError
from sandboxrun.sync.candidates import is_git_worktree, load_spec
from sandboxrun.sync.pack import INCLUDE_FILE, PackResult, Selection, _wanted, select_files
from sandboxrun.sync.secrets import ContentCheck

log = logging.getLogger(__name__)

#: the ``compression`` a :class:`~.pack.PackResult` of this module reports
GIT = "git"
#: newly written blobs and trees are deflated fast; reused ones keep the repository's bytes
_LEVEL = "1"


#: what to do about a file that changed while it was being packed
_CHANGED_HINT = (
    "Something (a build, an editor, a watcher) changed it while it was packed: run again once "
    "it is done, or leave it out with a line in .sandboxrunignore."
)


def plan(root: Path, submodules: tuple[str, ...] | list[str] = ()) -> str | None:
    """Why a git upload cannot stand for a tarball of ``root`` (None: it can)."""
    if not is_git_worktree(root):
        return "not a git work tree"
    if submodules:
        return "submodules are included"
    res = gitops.git(root, "config", "--get", "core.autocrlf", check=False)
    if res.stdout.strip().lower() in ("true", "input"):
        return "core.autocrlf converts line endings"
    fmt, prefix, where = gitops.git(
        root, "rev-parse", "--show-object-format", "--show-prefix", "--path-format=absolute",
        "--git-path", "info/attributes",
    ).stdout.split("\n")[:3]  # fmt: skip
    if fmt != "sha1":  # a sandbox's fresh repository is sha1
        return f"object format {fmt}"
    if prefix:  # index paths are the top's; the upload's are relative to root
        return "not the top of a work tree"
    if _non_empty(Path(where)):
        return "info/attributes"
    glob = gitops.git(root, "config", "--path", "--get", "core.attributesFile", check=False)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for path in (glob.stdout.strip(), f"{xdg}/git/attributes", "/etc/gitattributes"):
        if path and _non_empty(Path(path)):
            return f"attributes file {path}"
    tracked = gitops.git_bytes(root, "ls-files", "-z", "--", ":(glob)**/.gitattributes")
    if tracked.strip(b"\0"):
        return ".gitattributes"
    return None


def _alternate(path: str) -> str:
    """``path`` as one entry of GIT_ALTERNATE_OBJECT_DIRECTORIES (C-quoted if it must be)."""
    if not any(c in path for c in ':"\\\n'):
        return path
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _non_empty(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.stat().st_size > 0
    return False


def pack_git(
    root: Path,
    output: Path,
    *,
    scan_cache: Path | None = None,
    selection: Selection | None = None,
) -> PackResult:
    """Write the baseline of ``root``'s selected files as one git pack at ``output``.

    Raises :class:`GitError` or :class:`PackError` when it cannot (the caller packs a tarball
    instead). Call only when :func:`plan` returned None.
    """
    started = time.perf_counter()
    root = Path(root).resolve()
    output = Path(output).absolute()
    if selection is None:
        sel = select_files(root, scan_cache=scan_cache)
    else:  # a copy: the caller's selection is not changed by a second look at contents
        sel = replace(
            selection,
            files=list(selection.files),
            excluded_secrets=list(selection.excluded_secrets),
            secret_reasons=dict(selection.secret_reasons),
        )
    if any(f.rpartition("/")[2].lower() == ".gitattributes" for f in sel.files):
        raise PackError("a .gitattributes is uploaded (the sandbox would convert contents)")
    # outside the artifacts: removed by a thread once the pack is written (see below)
    scratch = Path(tempfile.mkdtemp(prefix="sandboxrun-gitupload-"))
    try:
        objects = gitops.git(
            root, "rev-parse", "--path-format=absolute", "--git-path", "objects"
        ).stdout.strip()
        env = {
            "GIT_INDEX_FILE": str(scratch / "index"),
            "GIT_OBJECT_DIRECTORY": str(scratch / "objects"),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": _alternate(objects),
        }
        (scratch / "objects" / "pack").mkdir(parents=True)
        entries, reused, size, sel = _manifest(root, sel, env, scan_cache)
        gitops.git(root, "update-index", "-z", "--index-info", input=entries, env=env)
        tree = gitops.git(root, "write-tree", env=env).stdout.strip()
        tmp = output.with_name(f".{output.name}.tmp")
        try:
            # the tree and everything in it; stored objects are copied as they are
            # (--window=0: no new deltas searched, stored ones reused)
            with open(tmp, "wb") as fh, _git_stream(
                root, env, "-c", f"pack.compression={_LEVEL}", "pack-objects", "--revs",
                "--stdout", "-q", "--window=0", stdout=fh,
            ) as packer:  # fmt: skip
                packer.stdin.write(f"{tree}\n".encode())
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        # the scratch objects are not needed any more: removing their directories is left to
        # a thread (a loaded disk takes a while to remove a few hundred), not waited for
        threading.Thread(target=shutil.rmtree, args=(scratch, True), name="gitupload-rm").start()
    log.debug(
        "git upload of %s: %d files, %d blob ids from the index", root, len(sel.files), reused
    )
    return PackResult(
        path=output,
        compression=GIT,
        file_count=len(sel.files),
        bytes_in=size,
        bytes_out=output.stat().st_size,
        seconds=time.perf_counter() - started,
        selection=sel,
        tree=tree,
    )


def _manifest(
    root: Path, sel: Selection, env: dict[str, str], scan_cache: Path | None
) -> tuple[bytes, int, int, Selection]:
    """``update-index --index-info`` lines for the files, blobs written for those not indexed.

    Returns the lines, how many blob ids came from the index, the files' bytes, and the
    selection (less any file whose content turned out to be a secret on this second look).
    """
    index: dict[bytes, bytes] = {}
    for entry in gitops.git_bytes(root, "ls-files", "-s", "-z").split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3 and parts[2] == b"0" and parts[0] in (b"100644", b"100755"):
            index[path] = parts[1]
    dirty = set(gitops.git_bytes(root, "diff-files", "--name-only", "-z").split(b"\0"))
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    lines: list[bytes] = []
    fresh: list[tuple[bytes, bytes]] = []  # (mode, path) of the blobs fast-import writes
    blobs = _Blobs(root, env)
    size = 0
    check = ContentCheck(scan_cache)
    wanted = _wanted(load_spec(root / INCLUDE_FILE))
    on_purpose = set(sel.included_on_purpose)
    kept: list[str] = []
    try:
        for rel in sel.files:
            raw = rel.encode(errors="surrogateescape")
            st = os.lstat(rel, dir_fd=dir_fd)
            if not stat.S_ISREG(st.st_mode):
                raise PackError(f"{rel} is no longer a regular file", _CHANGED_HINT)
            mode = b"100755" if st.st_mode & stat.S_IXUSR else b"100644"
            oid = index.get(raw)
            if oid is not None and raw not in dirty:
                lines.append(b"%s %s\t%s\0" % (mode, oid, raw))
                size += st.st_size
                kept.append(rel)
                continue
            fd = os.open(rel, _OPEN, dir_fd=dir_fd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise PackError(f"{rel} is no longer a regular file", _CHANGED_HINT)
                if st.st_size <= _WHOLE:
                    data = _read_exactly(fd, rel, st.st_size)
                    # the content check sees exactly the bytes that become the blob
                    rule = None if rel in on_purpose else check(data)
                    if rule is not None and not wanted(rel):
                        sel.excluded_secrets.append(rel)
                        sel.secret_reasons[rel] = f"content: {rule}"
                        continue
                    blobs.add(len(data), [data])
                else:  # too big to be scanned (as in a tarball): streamed in pieces
                    blobs.add(st.st_size, _pieces(fd, rel, st.st_size))
            finally:
                os.close(fd)
            fresh.append((mode, raw))
            size += st.st_size
            kept.append(rel)
        oids = blobs.finish()
    except BaseException:
        blobs.kill()
        raise
    finally:
        os.close(dir_fd)
    check.save()
    lines += [b"%s %s\t%s\0" % (m, oid, p) for (m, p), oid in zip(fresh, oids, strict=True)]
    reused = len(kept) - len(fresh)
    if len(kept) != len(sel.files):
        sel.excluded_secrets.sort()
        sel.files = kept
        sel.total_bytes = size
    return b"".join(lines), reused, size, sel


_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WHOLE = 32 << 20  # files up to this size are read whole (and content-checked)
_PIECE = 1 << 20


def _read_exactly(fd: int, rel: str, size: int) -> bytes:
    """``size`` bytes of ``fd`` and not one more (a file that changes size fails)."""
    data = b"".join(_pieces(fd, rel, size))
    return data


def _pieces(fd: int, rel: str, size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, _PIECE))
        if not chunk:
            break
        left -= len(chunk)
        yield chunk
    if left or os.read(fd, 1):
        raise PackError(f"{rel} changed size while it was being packed", _CHANGED_HINT)


def _git_stream(
    root: Path, env: dict[str, str], *args: str, stdout: IO[bytes] | None = None
) -> process.Stream:
    argv = ["git", "-C", str(root), *args]
    return process.Stream(
        argv,
        what=f"git {args[2] if args[0] == '-c' else args[0]} in {root}",
        stdin=process.Stream.PIPE,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        env={**os.environ, **env},
    )


class _Blobs:
    """Blobs written by one ``git fast-import`` as they come; their ids at the end."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.proc: process.Stream | None = None
        self.count = 0
        self.marks = Path(env["GIT_OBJECT_DIRECTORY"]).parent / "marks"

    def add(self, size: int, pieces: Iterable[bytes]) -> None:
        if self.proc is None:
            self.proc = _git_stream(
                self.root, self.env, "-c", f"pack.compression={_LEVEL}", "fast-import",
                "--quiet", f"--export-marks={self.marks}",
            )  # fmt: skip
        self.count += 1
        out = self.proc.stdin
        out.write(b"blob\nmark :%d\ndata %d\n" % (self.count, size))
        for piece in pieces:
            out.write(piece)
        out.write(b"\n")

    def finish(self) -> list[bytes]:
        if self.proc is None:
            return []
        try:
            self.proc.finish()
        except BrokenPipeError:
            raise self.proc.failed() from None
        oids: dict[int, bytes] = {}
        for line in self.marks.read_bytes().splitlines():
            mark, _, oid = line.partition(b" ")
            oids[int(mark[1:])] = oid
        if sorted(oids) != list(range(1, self.count + 1)):
            raise GitError("git fast-import did not report every blob")
        return [oids[i] for i in range(1, self.count + 1)]

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
