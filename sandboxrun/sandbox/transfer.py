"""Getting bytes out of a sandbox: streamed to disk in pieces, retried, resumed, checked.

Everything that comes out of a sandbox — checkpoints, the final collection, the agent's logs —
goes through :func:`fetch_file`. From E2B a file is streamed to ``dest.part`` (never whole in
memory) in pieces; a piece that fails is retried with backoff and the transfer goes on from
the bytes already on disk. The ``.part`` file's sidecar names the SHA-256 of the file version
its bytes belong to, so a later call (after a crash, or from ``attach`` after the run gave
up) resumes only when the remote file is still that version, and the whole result is checked
against that SHA-256 before it replaces ``dest``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from sandboxrun.errors import BackendError, SandboxLostError, SandboxrunError
from sandboxrun.redact import Redactor
from sandboxrun.sandbox.backends.base import control_dir
from sandboxrun.sandbox.deadline import backoff
from sandboxrun.sandbox.lifetime import alive_within

if TYPE_CHECKING:
    from sandboxrun.sandbox.backends.base import Sandbox

log = logging.getLogger(__name__)

T = TypeVar("T")

#: bytes per resumable piece of a download
PIECE = 64 << 20
#: tries per step (producing, each piece) before a collection gives up, with backoff between
ATTEMPTS = 6
#: Files bigger than this come out of a sandbox without streaming (no ``download_to``) in
#: pieces of this size, so the client never holds a whole pack in memory.
FETCH_CHUNK = 32 << 20

# "$1": print its size and SHA-256 (what a streamed, resumable fetch checks against).
_SIZE_SHA_SCRIPT = r"""stat -c %s -- "$1" && sha256sum < "$1" | cut -d' ' -f1"""

# Cut "$1" into numbered pieces of "$2" bytes next to it; print how many.
_SPLIT_SCRIPT = r"""
set -e
rm -f -- "$1".part.*
split -b "$2" -d -a 5 -- "$1" "$1.part."
ls -- "$1".part.* | wc -l
"""


class CollectionIncomplete(BackendError):
    """Bringing the work back failed after retries; the sandbox is kept for a later try."""


def retrying(what: str, fn: Callable[[], T], sandbox: Sandbox, *, attempts: int = ATTEMPTS) -> T:
    """Call ``fn``; retry transient failures with backoff, but not once the sandbox is gone.

    A failure that might be the sandbox's end is checked with ``is_alive`` (which answers
    "alive" while E2B cannot be reached), so a lost sandbox is reported at once instead of
    after every retry.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except SandboxLostError:
            raise
        except (BackendError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or attempt == attempts - 1:
                raise
            if not alive_within(sandbox):
                raise SandboxLostError(
                    f"the sandbox {sandbox.id} is gone (while {what})",
                    "The last checkpoint of the work is kept.",
                ) from exc
            delay = backoff(attempt)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(sandbox: Sandbox, remote: str, dest: Path, size: int, sha: str) -> None:
    """Stream ``remote`` (``size`` bytes, ``sha``) to ``dest``: pieces, retries, resume.

    Bytes land in ``dest.part`` as they arrive; its sidecar ``dest.part.sha`` names the file
    version they belong to, so a later call (after a crash or a failed try) carries on from
    the bytes already there, and a changed file starts over.
    """
    part = dest.with_name(dest.name + ".part")
    want = dest.with_name(dest.name + ".part.sha")
    if not (want.exists() and want.read_text() == sha):
        # Bytes of another version of the file: kept only where they are still a prefix of
        # this one (a pack made again from the same objects often is), checked in the sandbox.
        have = part.stat().st_size if part.exists() else 0
        if not (0 < have <= size and _is_prefix(sandbox, remote, part, have)):
            part.unlink(missing_ok=True)
        want.write_text(sha)
    part.touch()
    with open(part, "r+b") as fh:

        def piece() -> int:
            # Every try starts from the bytes already on disk: a transfer broken halfway
            # goes on from there (what arrived before the break is a true prefix).
            have = fh.seek(0, 2)
            try:
                download_piece(sandbox, remote, fh, have, min(PIECE, size - have), size)
            finally:
                fh.flush()
            return fh.seek(0, 2)

        while (have := fh.seek(0, 2)) < size:
            if retrying(f"downloading {remote}", piece, sandbox) <= have:
                raise BackendError(f"{remote} in the sandbox is shorter than its manifest says")
        fh.truncate(size)
    if _sha256(part) != sha:
        part.unlink(missing_ok=True)
        raise BackendError(f"{remote} arrived damaged (SHA-256 differs); it will be fetched again")
    part.replace(dest)
    want.unlink(missing_ok=True)


# "$1" file, "$2" bytes: the SHA-256 of its first "$2" bytes.
_PREFIX_SHA_SCRIPT = r"""head -c "$2" -- "$1" | sha256sum | cut -d' ' -f1"""


def _is_prefix(sandbox: Sandbox, remote: str, part: Path, have: int) -> bool:
    """True when the ``have`` bytes of ``part`` are the first bytes of ``remote``."""
    try:
        res = sandbox.exec(["sh", "-c", _PREFIX_SHA_SCRIPT, "sh", remote, str(have)], timeout=600)
    except SandboxrunError:
        return False
    return res.ok and res.text().strip() == _sha256(part)


def download_piece(
    sandbox: Sandbox, remote: str, fh: BinaryIO, offset: int, length: int | None, size: int
) -> None:
    """``length`` bytes of ``remote`` from ``offset`` into ``fh`` (None: to the end)."""
    if offset == 0 and length == size:
        length = None
    download_to = getattr(sandbox, "download_to", None)
    if download_to is not None:
        download_to(remote, fh, offset=offset, length=length)
    else:  # backends without streaming (local: a file on this machine) read the rest at once
        data = sandbox.read_file(remote, offset)
        fh.write(data if length is None else data[:length])


def fetch_file(sandbox: Sandbox, src: str, dest: Path) -> None:
    """Copy a file out of the sandbox to ``dest`` without holding it all in memory.

    From E2B it is streamed in pieces, retried, resumed from the bytes already in
    ``dest.part`` (when the remote file is still the version they came from) and checked
    against its SHA-256 (:func:`fetch`).
    """
    copy_out = getattr(sandbox, "copy_out", None)
    if copy_out is not None:  # the local backend: a streamed copy that follows no link
        copy_out(src, dest)
        return
    if getattr(sandbox, "download_to", None) is not None:
        res = retrying(
            f"measuring {src}",
            lambda: sandbox.exec(["sh", "-c", _SIZE_SHA_SCRIPT, "sh", src], timeout=600),
            sandbox,
        )
        parts = res.text().split() if res.ok else []
        if len(parts) < 2 or not parts[0].isdigit():
            raise BackendError(f"cannot measure {src} in the sandbox: {res.error_text()[-300:]}")
        fetch(sandbox, src, dest, int(parts[0]), parts[1])
        return
    fetch_in_pieces(sandbox, src, dest)


def fetch_in_pieces(sandbox: Sandbox, src: str, dest: Path, chunk: int = FETCH_CHUNK) -> None:
    """Copy ``src`` out of any sandbox, ``chunk`` bytes at a time when it is big."""
    res = sandbox.exec(["stat", "-c", "%s", "--", src])
    size = int(res.text().strip() or 0) if res.ok else 0
    if size <= chunk:
        dest.write_bytes(sandbox.read_file(src))
        return
    res = sandbox.exec(["sh", "-c", _SPLIT_SCRIPT, "sh", src, str(chunk)], timeout=600)
    if not res.ok:
        raise BackendError(f"cannot cut {src} into pieces: {res.error_text()[-300:]}")
    pieces = int(res.text().strip().splitlines()[-1])
    try:
        with open(dest, "wb") as out:
            for i in range(pieces):
                out.write(sandbox.read_file(f"{src}.part.{i:05d}"))
    finally:
        sandbox.exec(["sh", "-c", 'rm -f -- "$1".part.*', "sh", src])
    if dest.stat().st_size != size:
        raise BackendError(f"{src} came out of the sandbox incomplete")


def copy_logs(sandbox: Sandbox, artifacts: Path) -> None:
    """The agent's ``agent.log`` and ``agent.stderr`` into ``artifacts``, streamed, redacted."""
    ctl = control_dir(sandbox)
    for name in ("agent.log", "agent.stderr"):
        dest = artifacts / name
        with contextlib.suppress(FileNotFoundError, SandboxrunError, OSError):
            with open(dest.with_name(name + ".tmp"), "wb") as fh:
                download_piece(sandbox, f"{ctl}/{name}", fh, 0, None, -1)
            redact_file(dest.with_name(name + ".tmp"))
            dest.with_name(name + ".tmp").replace(dest)


def redact_file(path: Path, redactor: Redactor | None = None) -> None:
    """Replace our credentials' values in ``path`` (``sandboxrun.redact``), in bounded memory.

    The file is read in 1 MiB chunks; a tail as long as the longest secret is carried over,
    so a value split across two chunks is still found.
    """
    redactor = redactor if redactor is not None else Redactor.from_env(os.environ)
    if not redactor:
        return
    values = sorted((v.encode("utf-8", "surrogateescape") for v in redactor.values), key=len)
    pattern = re.compile(b"|".join(re.escape(v) for v in reversed(values)))
    keep = len(values[-1]) - 1
    tmp = path.with_name(path.name + ".redacting")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        carry = b""
        while chunk := src.read(1 << 20):
            buf = carry + chunk
            cut = max(0, len(buf) - keep)
            # never cut through a value: move the cut before any that straddles it
            for m in pattern.finditer(buf):
                if m.start() < cut < m.end():
                    cut = m.start()
            dst.write(redactor.bytes(buf[:cut]))
            carry = buf[cut:]
        dst.write(redactor.bytes(carry))
    tmp.replace(path)
