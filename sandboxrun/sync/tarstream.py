"""Turn a list of files into compressed tar bytes: the byte-level half of :mod:`.pack`.

Owns the hand-built tar format (ustar headers, a pax header pair for the rare member ustar
cannot hold, record padding), the compression sinks (pigz-style parallel gzip that still writes
one ordinary gzip member, and the ``zstd`` program), the batcher that feeds the sinks large
blocks, and reading members relative to a directory fd without following links or blocking.
Which files to pack, and why, is :mod:`.pack`'s business; nothing here looks at ignore rules.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from sandboxrun import process
from sandboxrun.errors import PackError

log = logging.getLogger(__name__)

COMPRESSIONS = ("gzip", "zstd", "none")
SUFFIXES = {"gzip": ".tar.gz", "zstd": ".tar.zst", "none": ".tar"}

#: zlib level for gzip output. Level 6 (gzip's default) runs ~27 MB/s per core on source
#: code; lower levels are several times faster for ~10 % bigger output. See docs/performance.md.
GZIP_LEVEL = 4
ZSTD_LEVEL = 3

BLOCK = 1 << 20  # uncompressed bytes per parallel gzip block
_BIG_FILE = 32 << 20  # files above this are streamed in chunks instead of read whole
_RECORD = 10240  # tar record size: pad the archive like GNU tar and tarfile do
# never follow a link swapped in since selection; never hang on a fifo swapped in either
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def file_kind(mode: int) -> str:
    """What a non-regular file is, as the skip reasons name it: symlink, dir or special."""
    if stat.S_ISLNK(mode):
        return "symlink"
    return "dir" if stat.S_ISDIR(mode) else "special"


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


class Sink:
    """Receives the tar stream in order; subclasses compress and write it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        """Flush everything; raise on failure."""

    def abort(self) -> None:
        """Stop after an error; never raises."""


class _ParallelGzip(Sink):
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


class _ZstdPipe(Sink):
    """Pipe the tar stream through ``zstd -T0`` (multi-threaded) into the output file."""

    def __init__(self, out: BinaryIO, level: int) -> None:
        super().__init__(out)
        exe = process.which("zstd")
        if exe is None:
            raise PackError(
                "zstd compression needs the zstd program, which is not installed",
                "Use --compression gzip, or install zstd (apt-get install zstd).",
            )
        self.stream = process.Stream(
            [exe, f"-{level}", "-T0", "-q", "-c"],
            what="zstd failed",
            hint="Check free disk space, or use --compression gzip.",
            stdin=process.Stream.PIPE,
            stdout=out,
        )
        self.stdin = self.stream.stdin
        # zstd reads as much as the pipe holds; the default 64 KiB pipe costs it ~50 % more
        # time in small reads and wake-ups than a 1 MiB one (Linux only; harmless to skip)
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self.stdin.fileno(), fcntl.F_SETPIPE_SZ, BLOCK)

    def write(self, data: bytes) -> None:
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            raise self.stream.failed() from None

    def close(self) -> None:
        self.stream.finish()

    def abort(self) -> None:
        self.stream.kill()


class Batcher:
    """Gathers small writes into ~1 MiB blocks so the sink sees few, large writes."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.parts: list[bytes] = []
        self.size = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        self.total += len(data)
        if self.size >= BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.sink.write(b"".join(self.parts))
            self.parts, self.size = [], 0


def make_sink(compression: str, out: BinaryIO, level: int | None) -> Sink:
    """The sink for ``compression`` writing to ``out``; ``level`` None means the default."""
    if compression == "gzip":
        return _ParallelGzip(out, GZIP_LEVEL if level is None else level, os.cpu_count() or 2)
    if compression == "zstd":
        return _ZstdPipe(out, ZSTD_LEVEL if level is None else level)
    return Sink(out)


def read_member(
    dir_fd: int, rel: str, *, unreadable_hint: str
) -> tuple[os.stat_result, bytes] | str:
    """Read a small file whole (big ones: stat only), or return what it is instead.

    Opened relative to the root, without following links (the tree may have changed since
    the selection) and without blocking (a fifo would hang a plain open). Returns
    ``"missing"``, ``"symlink"``, ``"dir"`` or ``"special"`` for a path not to pack. An
    unreadable file raises :class:`PackError` with ``unreadable_hint`` as its hint.
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
            unreadable_hint,
        ) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return file_kind(st.st_mode)
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


def write_member(batch: Batcher, dir_fd: int, rel: str, st: os.stat_result, data: bytes) -> int:
    """Append one file as :func:`read_member` returned it: header, contents, padding.

    A big file (read_member gave no data) is streamed from disk now. Returns its size.
    """
    size = len(data) if st.st_size <= _BIG_FILE else st.st_size
    batch.write(_tar_header(rel, size, st.st_mode & 0o777, int(st.st_mtime)))
    if st.st_size <= _BIG_FILE:
        batch.write(data)
    else:
        _stream_big(dir_fd, rel, size, batch.write)
    if size % 512:
        batch.write(b"\0" * (512 - size % 512))
    return size


def end_archive(batch: Batcher) -> None:
    """Write the end-of-archive marker and hand everything still batched to the sink."""
    # two zero blocks, then pad to a whole record like tar does
    batch.write(b"\0" * 1024)
    batch.write(b"\0" * (-batch.total % _RECORD))
    batch.flush()
