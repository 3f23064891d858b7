"""Unpack tarballs without letting them write outside their destination, and check trees.

Python 3.11.7's ``tarfile`` lacks the 2025 symlink-chain fixes, so ``filter="data"`` is only
the second line of defence here. The first is :func:`check_member`: only regular files and
directories with plain relative names are accepted; links, devices, fifos, absolute names,
``..`` components and anything under ``.git/`` are refused, as are destinations that already
hold a symlink on the way to a member.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from sandboxrun import process
from sandboxrun.errors import PackError, UnsafeArchiveError, UsageError

log = logging.getLogger(__name__)

_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


def detect_compression(tarball: Path) -> str:
    """Return ``"gzip"``, ``"zstd"`` or ``"none"`` from the file's first bytes."""
    with open(tarball, "rb") as fh:
        head = fh.read(4)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return "none"


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symlink (-> {member.linkname})"
    if member.islnk():
        return f"hardlink (-> {member.linkname})"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return f"member of type {member.type!r}"


def check_member(member: tarfile.TarInfo) -> str:
    """Return the member's normalised relative name, or raise :class:`UnsafeArchiveError`.

    Accepted: regular files and directories whose names are relative, hold no ``..`` and
    no ``.git`` component (any case: on a case-insensitive disk ``.GIT`` is ``.git``).
    """
    name = member.name
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(
            f"archive member {name!r} is a {_kind(member)}; only regular files are allowed",
            "Links and special files are never unpacked; remove them from the archive.",
        )
    if not name or "\0" in name:
        raise UnsafeArchiveError(f"archive member {name!r} has an invalid name")
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} climbs out with '..'")
    if any(p.lower() == ".git" for p in parts):
        raise UnsafeArchiveError(
            f"archive member {name!r} is under .git/",
            "Git metadata is never unpacked: it could install hooks or rewrite config.",
        )
    if not parts:
        raise UnsafeArchiveError(f"archive member {name!r} has an empty name")
    return "/".join(parts)


class _PathGuard:
    """Refuses members whose path in ``dest`` already runs through a symlink.

    The archive itself cannot add links (they are refused), so each directory needs checking
    only once; directories that do not exist yet will be created as real ones.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = str(dest)
        self.checked: set[str] = {""}

    def check(self, name: str) -> None:
        parent, _, _ = name.rpartition("/")
        if parent not in self.checked:
            path = self.dest
            done: list[str] = []
            for part in parent.split("/"):
                done.append(part)
                path = os.path.join(path, part)
                try:
                    mode = os.lstat(path).st_mode
                except FileNotFoundError:
                    break
                if stat.S_ISLNK(mode):
                    raise UnsafeArchiveError(
                        f"archive member {name!r} would be written through the symlink "
                        f"{'/'.join(done)!r} in {self.dest}",
                        "Unpack into an empty directory.",
                    )
                self.checked.add("/".join(done))
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(os.path.join(self.dest, name)).st_mode):
                raise UnsafeArchiveError(
                    f"archive member {name!r} would overwrite a symlink in {self.dest}",
                    "Unpack into an empty directory.",
                )


@contextlib.contextmanager
def _tar_stream(tarball: Path, compression: str) -> Iterator[BinaryIO]:
    """Yield the uncompressed tar bytes of ``tarball`` as a readable stream."""
    if compression == "gzip":
        # GzipFile reads multi-member gzip too (pigz, concatenations); tarfile's own "r|gz"
        # stops after the first member
        with gzip.open(tarball, "rb") as fh:
            yield fh  # type: ignore[misc]
    elif compression == "zstd":
        exe = process.which("zstd")
        if exe is None:
            raise PackError(
                f"{tarball} is zstd-compressed but the zstd program is not installed",
                "Install zstd (apt-get install zstd), or pack with --compression gzip.",
            )
        with process.Stream(
            [exe, "-d", "-c", "-q", "--", str(tarball)],
            what=f"zstd could not decompress {tarball}",
            hint="The download may be truncated; fetch it again.",
            stdout=process.Stream.PIPE,
        ) as proc:
            yield proc.stdout  # type: ignore[misc]
            while proc.stdout.read(1 << 20):  # drain padding so zstd can finish cleanly
                pass
    elif compression == "none":
        with open(tarball, "rb") as fh:
            yield fh
    else:
        raise UsageError(
            f"unknown compression {compression!r}", "Use gzip, zstd, none, or leave it out."
        )


def safe_extract(tarball: Path, dest: Path, compression: str | None = None) -> list[str]:
    """Extract ``tarball`` into ``dest`` (created if needed), refusing anything unsafe.

    ``compression`` is ``"gzip"``, ``"zstd"``, ``"none"`` or None to detect it from the magic
    bytes. Every member goes through :func:`check_member` and a check that no symlink
    already in ``dest`` lies on its path, then is extracted with ``filter="data"``. Returns
    the names of the regular files written, in archive order. Raises
    :class:`UnsafeArchiveError` naming the first offending member; members before it may
    already be on disk, so extract into a fresh directory and discard it on error.
    """
    tarball, dest = Path(tarball), Path(dest)
    if not tarball.is_file():
        raise PackError(f"archive {tarball} does not exist")
    comp = compression or detect_compression(tarball)
    dest.mkdir(parents=True, exist_ok=True)
    real_dest = dest.resolve()
    guard = _PathGuard(real_dest)
    names: list[str] = []
    try:
        with _tar_stream(tarball, comp) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
            for member in tf:
                name = check_member(member)
                guard.check(name)
                tf.extract(member, real_dest, set_attrs=True, filter="data")
                if member.isreg():
                    names.append(name)
    except tarfile.FilterError as exc:  # our checks should have caught it first
        raise UnsafeArchiveError(f"archive {tarball} refused: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PackError(
            f"cannot read archive {tarball} ({comp}): {exc}",
            "The file may be truncated or not a tarball; fetch or pack it again.",
        ) from exc
    log.debug("extracted %d files from %s into %s", len(names), tarball, real_dest)
    return names


def _sha256(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None  # missing, a symlink or a directory where a file should be: not intact


def manifest(root: Path, files: Iterable[str]) -> dict[str, str]:
    """Map each relative path in ``files`` to the sha256 hex digest of ``root/path``.

    Files that are missing (or symlinks) are left out, so comparing two manifests shows
    them. Hashing runs on a few threads: hashlib releases the GIL on large buffers.
    """
    base = str(root)
    names = list(files)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        digests = pool.map(_sha256, (os.path.join(base, n) for n in names), chunksize=64)
        return {n: d for n, d in zip(names, digests, strict=True) if d is not None}


def verify_tree(root: Path, expected: dict[str, str]) -> list[str]:
    """Return the paths of ``expected`` (a :func:`manifest`) missing or different under root.

    An empty list means every file arrived intact. Extra files under ``root`` are not looked at.
    """
    actual = manifest(root, expected)
    return sorted(p for p, digest in expected.items() if actual.get(p) != digest)
