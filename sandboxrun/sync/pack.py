"""Choose the files of a work tree to upload and stream them into a compressed tarball.

Two steps with a boundary between them so the CLI can show one without the other:

* :func:`select_files` decides *what* leaves the machine: git's own ignore rules (or
  ``.gitignore`` files on a plain directory), then ``.sandboxrunignore``, then the built-in
  secrets deny-list (:data:`SECRET_PATTERNS`), then ``.sandboxruninclude`` bringing chosen
  ignored files back. Symlinks and other non-regular files are skipped and reported.
* :func:`pack_worktree` writes those files as a tar stream of regular files only, compressed
  with gzip (in parallel blocks, still one ordinary gzip member) or zstd (the ``zstd`` binary).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import subprocess
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import pathspec

from sandboxrun import process
from sandboxrun.errors import PackError, ProcessError, UsageError

log = logging.getLogger(__name__)

IGNORE_FILE = ".sandboxrunignore"
INCLUDE_FILE = ".sandboxruninclude"

#: Built-in secrets deny-list, in gitignore syntax (a pattern without a slash matches at any
#: depth; later lines win). Matching files are never uploaded unless ``.sandboxruninclude``
#: names them. Kept deliberately to names that almost always hold credentials, so the agent
#: still gets the source it needs.
SECRET_PATTERNS: tuple[str, ...] = (
    # dotenv files hold API keys; the committed templates people share are harmless
    ".env",
    ".env.*",
    ".envrc",
    "!.env.example",
    "!.env.sample",
    "!.env.template",
    # private keys and key stores; public halves (id_*.pub) are harmless and kept
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.keystore",
    "*.jks",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "!id_*.pub",
    # credential files of common tools
    "**/.aws/credentials",
    "**/.docker/config.json",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".git-credentials",
    "credentials.json",
    "secrets.json",
    "secrets.yaml",
    "secrets.yml",
    "secrets.toml",
    # everything under .ssh/, public keys included (last, so the .pub exception cannot win)
    "**/.ssh/**",
)

COMPRESSIONS = ("gzip", "zstd", "none")
SUFFIXES = {"gzip": ".tar.gz", "zstd": ".tar.zst", "none": ".tar"}

#: zlib level for gzip output. Level 6 (gzip's default) runs ~27 MB/s per core on source
#: code; lower levels are several times faster for ~10 % bigger output. See docs/performance.md.
GZIP_LEVEL = 4
ZSTD_LEVEL = 3

_BLOCK = 1 << 20  # uncompressed bytes per parallel gzip block
_BIG_FILE = 32 << 20  # files above this are streamed in chunks instead of read whole
_RECORD = 10240  # tar record size: pad the archive like GNU tar and tarfile do
# never follow a link swapped in since selection; never hang on a fifo swapped in either
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class Selection:
    """The outcome of :func:`select_files`: what would be uploaded and what was left out."""

    root: Path
    files: list[str] = field(default_factory=list)
    excluded_secrets: list[str] = field(default_factory=list)
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


_ANY_DEPTH = "^(?:.+/)?"  # how pathspec starts a pattern without a slash


class _Spec:
    """A gitignore-style spec with a one-regex prefilter.

    pathspec tries every pattern in turn (~30 regex searches per path for the deny-list, a
    quarter of a second on 20,000 files). Most paths match no pattern at all, so one combined
    regex of the non-negated patterns answers "no" in a single search; only paths it flags go
    through pathspec's full, order-aware check.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)
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


_SECRETS = _Spec(SECRET_PATTERNS)


def select_files(root: Path) -> Selection:
    """Decide which files under ``root`` would be uploaded.

    In a git work tree the candidates are ``git ls-files -co --exclude-standard`` (tracked plus
    untracked-but-not-ignored, so nested ``.gitignore``, negations and ``.git/info/exclude``
    all behave exactly as in git); files deleted from disk are left out. On a plain directory
    the tree is walked honouring every ``.gitignore`` in it. Then ``.sandboxrunignore`` removes
    files, :data:`SECRET_PATTERNS` removes likely secrets, and ``.sandboxruninclude`` brings
    back files that git ignores or the deny-list excludes (``.sandboxrunignore`` still wins
    over it). Symlinks, submodules and special files are never uploaded: they are listed in
    ``skipped`` because the sandbox-side unpack refuses links.
    """
    sel, named = _start(root)
    chosen: dict[str, int] = {}
    dir_fd = _open_dir(sel.root)
    try:
        for rel, on_purpose in named(dir_fd):
            try:
                st = os.lstat(rel, dir_fd=dir_fd)  # dir_fd: no path joins, ~2x faster
            except (FileNotFoundError, NotADirectoryError):
                continue  # tracked but deleted in the work tree: nothing to upload
            except OSError as exc:
                raise PackError(f"cannot look at {rel}: {exc.strerror}") from exc
            if stat.S_ISREG(st.st_mode):
                chosen[rel] = st.st_size
                if on_purpose:
                    sel.included_on_purpose.append(rel)
            else:
                sel.skipped.append(_skip(rel, _kind(st.st_mode), fresh=True))
    finally:
        os.close(dir_fd)
    return _finish(sel, list(chosen), sum(chosen.values()))


_NamedFiles = Callable[[int], Iterator[tuple[str, bool]]]


def _start(root: Path) -> tuple[Selection, _NamedFiles]:
    """List candidates and load the rules; return an empty Selection and a generator.

    The generator applies the name rules only and yields ``(path, on_purpose)`` for each
    path to upload if it turns out to be a regular file; excluded paths that exist are
    recorded in the Selection. Callers look at the files themselves: :func:`select_files`
    with lstat, :func:`pack_worktree` by opening them, so it stats each file only once.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise PackError(f"{root} is not a directory", "Pass the path of a work tree to pack.")
    ignore_spec = _load_spec(root / IGNORE_FILE)
    include_lines = _read_lines(root / INCLUDE_FILE)
    include_spec = _Spec(include_lines) if include_lines else None
    sel = Selection(root=root)
    if _is_git_worktree(root):
        candidates = _git_candidates(root)
        ignored = _git_ignored_matching(root, include_lines) if include_spec else []
    else:
        sel.source = "walk"
        candidates, ignored = _walk_candidates(root, include_lines, include_spec)

    def note(lst: list[str], dir_fd: int, rel: str) -> None:
        with contextlib.suppress(OSError):  # a deleted tracked file is not worth a mention
            os.lstat(rel, dir_fd=dir_fd)
            lst.append(rel)

    def named(dir_fd: int) -> Iterator[tuple[str, bool]]:
        for rel in candidates:
            if ignore_spec is not None and ignore_spec.match(rel):
                note(sel.excluded_by_ignorefile, dir_fd, rel)
            elif not _SECRETS.match(rel):
                yield rel, False
            elif include_spec is not None and include_spec.match(rel):
                yield rel, True
            else:
                note(sel.excluded_secrets, dir_fd, rel)
        # ignored by git (or .gitignore): only what .sandboxruninclude names comes back
        for rel in ignored:
            if include_spec is None or not include_spec.match(rel):
                continue
            if ignore_spec is not None and ignore_spec.match(rel):
                note(sel.excluded_by_ignorefile, dir_fd, rel)
            else:
                yield rel, True

    return sel, named


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


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    return "dir" if stat.S_ISDIR(mode) else "special"


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


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PackError(f"cannot read {path}: {exc.strerror}") from exc


def _load_spec(path: Path) -> _Spec | None:
    lines = _read_lines(path)
    return _Spec(lines) if lines else None


def _is_git_worktree(root: Path) -> bool:
    if process.which("git") is None:
        log.debug("git not found; walking %s as a plain directory", root)
        return False
    res = process.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, check=False)
    return res.ok and res.stdout.strip() == "true"


def _split_z(raw: bytes) -> list[str]:
    # git prints paths as raw bytes; fsdecode keeps odd (non-UTF-8) names round-trippable
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def _git_candidates(root: Path) -> list[str]:
    raw = process.run_bytes(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=root)
    # -c lists an unmerged path once per stage; dict keeps first-seen order
    return list(dict.fromkeys(_split_z(raw)))


def _include_pathspecs(lines: Iterable[str]) -> list[str]:
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


def _git_ignored_matching(root: Path, include_lines: list[str]) -> list[str]:
    specs = _include_pathspecs(include_lines)
    if not specs:
        return []
    raw = process.run_bytes(
        ["git", "ls-files", "-z", "-o", "-i", "--exclude-standard", "--", *specs], cwd=root
    )
    return _split_z(raw)


def _prefixes(include_lines: Iterable[str]) -> list[str]:
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


def _may_contain(prefixes: list[str], rel_dir: str) -> bool:
    return any(
        p in ("", rel_dir) or rel_dir.startswith(p + "/") or p.startswith(rel_dir + "/")
        for p in prefixes
    )


def _ignored_by(rel: str, specs: list[tuple[str, _Spec]]) -> bool:
    # deeper .gitignore files override shallower ones, as in git
    for base, spec in reversed(specs):
        result = spec.spec.check_file(rel[len(base) :])
        if result.include is not None:
            return bool(result.include)
    return False


def _walk_candidates(
    root: Path, include_lines: list[str], include_spec: _Spec | None
) -> tuple[list[str], list[str]]:
    """Walk a plain directory honouring nested .gitignore files; skip every ``.git``.

    Returns (candidates, ignored files worth testing against the include spec). An ignored
    directory is only descended into when an include pattern could match inside it.
    """
    files: list[str] = []
    ignored: list[str] = []
    prefixes = _prefixes(include_lines) if include_spec is not None else []
    stack: list[tuple[str, list[tuple[str, _Spec]], bool]] = [("", [], False)]
    while stack:
        rel_dir, specs, in_ignored = stack.pop()
        abs_dir = os.path.join(root, rel_dir)
        if not in_ignored:
            spec = _load_spec(Path(abs_dir) / ".gitignore")
            if spec is not None:
                specs = [*specs, (rel_dir, spec)]
        try:
            entries = list(os.scandir(abs_dir))
        except OSError as exc:
            raise PackError(f"cannot read directory {abs_dir}: {exc.strerror}") from exc
        for entry in entries:
            if entry.name == ".git":
                continue
            rel = rel_dir + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            hidden = in_ignored or _ignored_by(rel + "/" if is_dir else rel, specs)
            if is_dir:
                if not hidden or _may_contain(prefixes, rel):
                    stack.append((rel + "/", specs, hidden))
            elif hidden:
                if include_spec is not None:
                    ignored.append(rel)
            else:
                files.append(rel)
    return files, ignored


# --------------------------------------------------------------------------- tar stream


_OWNER = b"0000000\0" * 2  # uid 0, gid 0
# typeflag "0" (regular file), empty linkname, ustar magic, no user/group names (on purpose),
# device numbers 0
_MIDDLE = b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 64 + b"0000000\0" * 2
_HEADER_CONST = sum(_OWNER) + sum(b" " * 8) + sum(_MIDDLE)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _tar_header(name: str, size: int, mode: int, mtime: int) -> bytes:
    """A ustar header for a regular file, or a pax header pair when ustar cannot hold it."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    prefix = b""
    if raw and len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        if cut > 0 and len(raw) - cut - 1 <= 100:
            prefix, raw = raw[:cut], raw[cut + 1 :]
        else:
            raw = b""
    if not raw or size >= 8**11 or not 0 <= mtime < 8**11:
        return _pax_header(name, size, mode, mtime)
    mode_f, size_f, mtime_f = _octal(mode, 8), _octal(size, 12), _octal(mtime, 12)
    # the checksum is the byte sum of the header with its own field as spaces; summing only
    # the variable fields (plus a precomputed constant) is ~4x cheaper than summing 512 bytes
    chksum = _HEADER_CONST + sum(raw) + sum(prefix) + sum(mode_f) + sum(size_f) + sum(mtime_f)
    return b"".join(
        (
            raw.ljust(100, b"\0"),
            mode_f,
            _OWNER,
            size_f,
            mtime_f,
            b"%06o\0 " % chksum,
            _MIDDLE,
            prefix.ljust(155, b"\0"),
            b"\0" * 12,
        )
    )


def _pax_header(name: str, size: int, mode: int, mtime: int) -> bytes:
    import tarfile  # only for the rare long, non-ASCII or huge member

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, max(0, mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _Sink:
    """Receives the tar stream in order; subclasses compress and write it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        """Flush everything; raise on failure."""

    def abort(self) -> None:
        """Stop after an error; never raises."""


class _ParallelGzip(_Sink):
    """pigz-style gzip: blocks deflated in threads, joined into ONE gzip member.

    zlib releases the GIL, so blocks compress on all cores. Each block is primed with the
    previous block's last 32 KiB (so the ratio barely suffers) and ends with a sync flush
    (byte-aligned, not final); a final empty block and the CRC trailer close the member. A
    single member matters: tarfile's stream mode (``r|gz``) stops after the first member.
    """

    def __init__(self, out: BinaryIO, level: int, workers: int) -> None:
        super().__init__(out)
        self.level = level
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gzip")
        self.pending: deque[Future[bytes]] = deque()
        self.max_pending = workers * 2 + 1  # bounds memory to a few MiB
        self.crc = 0
        self.size = 0
        self.tail = b""
        # 10-byte gzip header: deflate, no name, mtime 0 (reproducible), OS 3 (unix)
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")

    def write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.pending.append(self.pool.submit(self._deflate, data, self.tail))
        self.tail = data[-32768:]
        while len(self.pending) >= self.max_pending:
            self.out.write(self.pending.popleft().result())

    def _deflate(self, data: bytes, dictionary: bytes) -> bytes:
        if dictionary:
            comp = zlib.compressobj(self.level, zlib.DEFLATED, -15, 9, zdict=dictionary)
        else:
            comp = zlib.compressobj(self.level, zlib.DEFLATED, -15, 9)
        return comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)

    def close(self) -> None:
        while self.pending:
            self.out.write(self.pending.popleft().result())
        self.pool.shutdown()
        self.out.write(b"\x03\x00")  # final, empty fixed-Huffman block
        self.out.write(
            self.crc.to_bytes(4, "little") + (self.size & 0xFFFFFFFF).to_bytes(4, "little")
        )

    def abort(self) -> None:
        for fut in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _ZstdPipe(_Sink):
    """Pipe the tar stream through ``zstd -T0`` (multi-threaded) into the output file.

    process.run cannot stream a tree that must not sit in memory, so this is the one place
    that starts a program with Popen; still an argv list, with stderr kept for the error.
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        super().__init__(out)
        exe = process.which("zstd")
        if exe is None:
            raise PackError(
                "zstd compression needs the zstd program, which is not installed",
                "Use --compression gzip, or install zstd (apt-get install zstd).",
            )
        self.argv = [exe, f"-{level}", "-T0", "-q", "-c"]
        log.debug("run(stream) %s", self.argv)
        # a file, not a pipe: a chatty zstd could otherwise block while we block writing
        self.errfile = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the pipe
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=out, stderr=self.errfile
        )
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin
        # zstd reads as much as the pipe holds; the default 64 KiB pipe costs it ~50 % more
        # time in small reads and wake-ups than a 1 MiB one (Linux only; harmless to skip)
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self.stdin.fileno(), fcntl.F_SETPIPE_SZ, _BLOCK)

    def write(self, data: bytes) -> None:
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            self._raise_failed()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()
        if self.proc.wait() != 0:
            self._raise_failed()
        self.errfile.close()

    def _raise_failed(self) -> None:
        self.proc.wait()
        self.errfile.seek(0)
        detail = self.errfile.read().decode(errors="backslashreplace").strip()
        raise ProcessError(
            f"zstd failed: {detail or f'exit code {self.proc.returncode}'}",
            "Check free disk space, or use --compression gzip.",
            argv=self.argv,
            returncode=self.proc.returncode,
            stderr=detail,
        )

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.errfile.close()


class _Batcher:
    """Gathers small writes into ~1 MiB blocks so the sink sees few, large writes."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.parts: list[bytes] = []
        self.size = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        self.total += len(data)
        if self.size >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.sink.write(b"".join(self.parts))
            self.parts, self.size = [], 0


def _make_sink(compression: str, out: BinaryIO, level: int | None) -> _Sink:
    if compression == "gzip":
        return _ParallelGzip(out, GZIP_LEVEL if level is None else level, os.cpu_count() or 2)
    if compression == "zstd":
        return _ZstdPipe(out, ZSTD_LEVEL if level is None else level)
    return _Sink(out)


def _read_member(dir_fd: int, rel: str) -> tuple[os.stat_result, bytes] | str:
    """Read a small file whole (big ones: stat only), or return what it is instead.

    Opened relative to the root, without following links (the tree may have changed since
    the selection) and without blocking (a fifo would hang a plain open). Returns
    ``"missing"``, ``"symlink"``, ``"dir"`` or ``"special"`` for a path not to pack.
    """
    try:
        fd = os.open(rel, _OPEN_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink"
        raise PackError(
            f"cannot read {rel}: {exc.strerror}",
            f"Fix its permissions, or list it in {IGNORE_FILE} to leave it out.",
        ) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _kind(st.st_mode)
        if st.st_size > _BIG_FILE:
            return st, b""
        # size + 1 detects growth; the header is written from what was actually read
        data = os.read(fd, st.st_size + 1)
        if len(data) != st.st_size:
            chunks = [data]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        return st, data
    finally:
        os.close(fd)


def _stream_big(dir_fd: int, rel: str, size: int, write: Callable[[bytes], None]) -> None:
    fd = os.open(rel, _OPEN_FLAGS, dir_fd=dir_fd)
    try:
        left = size
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            write(chunk)
            left -= len(chunk)
        if left or os.read(fd, 1):
            raise PackError(
                f"{rel} changed size while it was being packed",
                "Stop whatever is writing to it and pack again.",
            )
    finally:
        os.close(fd)


def pack_worktree(
    root: Path,
    output: Path,
    *,
    compression: str = "gzip",
    selection: Selection | None = None,
    progress: Callable[[int, int], None] | None = None,
    level: int | None = None,
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
    selection that has vanished or become a link is skipped and noted in ``skipped``.
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
        selection = select_files(root)
    if selection is None:
        sel, named = _start(root)
        skipped = sel.skipped
    else:
        sel = selection
        brought_back = set(sel.included_on_purpose)
        skipped = list(sel.skipped)

        def named(dir_fd: int) -> Iterator[tuple[str, bool]]:
            return ((rel, rel in brought_back) for rel in sel.files)

    # never pack an earlier copy of the tarball we are about to write
    try:
        own = output.resolve().relative_to(sel.root).as_posix()
    except ValueError:
        own = None

    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    tmp = Path(tmp_name)
    bytes_in = 0
    written: list[str] = []
    included: list[str] = []
    sink: _Sink | None = None
    dir_fd = _open_dir(sel.root)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            sink = _make_sink(compression, out, level)
            batch = _Batcher(sink)
            next_report = 0
            for rel, on_purpose in named(dir_fd):
                if rel == own:
                    skipped.append((rel, "the output tarball itself"))
                    continue
                got = _read_member(dir_fd, rel)
                if isinstance(got, str):
                    if selection is not None or got != "missing":  # else: deleted, tracked
                        skipped.append(_skip(rel, got, fresh=selection is None))
                    continue
                st, data = got
                size = len(data) if st.st_size <= _BIG_FILE else st.st_size
                batch.write(_tar_header(rel, size, st.st_mode & 0o777, int(st.st_mtime)))
                if st.st_size <= _BIG_FILE:
                    batch.write(data)
                else:
                    _stream_big(dir_fd, rel, size, batch.write)
                if size % 512:
                    batch.write(b"\0" * (512 - size % 512))
                bytes_in += size
                written.append(rel)
                if on_purpose:
                    included.append(rel)
                if progress is not None and bytes_in >= next_report:
                    progress(bytes_in, max(sel.total_bytes, bytes_in))
                    next_report = bytes_in + _BLOCK
            # end-of-archive: two zero blocks, then pad to a whole record like tar does
            batch.write(b"\0" * 1024)
            batch.write(b"\0" * (-batch.total % _RECORD))
            batch.flush()
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
    if selection is None:
        sel.included_on_purpose = included
        sel = _finish(sel, written, bytes_in)
    elif len(written) != len(sel.files) or skipped != sel.skipped:
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
