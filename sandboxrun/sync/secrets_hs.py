"""The fast engine of the content check: every check's pattern in one Hyperscan database.

Hyperscan (the ``hyperscan`` PyPI package, Intel's SIMD regular expression library) scans a
buffer for all of :data:`.secrets_content.CHECKS` at once, at ~1.3–1.4 GB/s here against
~270 MB/s for the pure-Python engine. Each pattern is compiled from the very expression the Python
engine uses, in prefilter mode (``HS_FLAG_PREFILTER``: look-arounds, which Hyperscan cannot
run, are dropped, so it reports a superset of the matches, never fewer) and reported at most
once per buffer (``HS_FLAG_SINGLEMATCH``). A file with a candidate goes through
:func:`.secrets_content.confirm`, the exact Python rules (placeholders included), so both
engines return the same rule for every input; ``tests/test_secrets_engines.py`` checks that.

The database is compiled once per process (30–80 ms); with a cache directory it is kept
there, serialized and checksummed, keyed by the patterns, the Hyperscan version and the
machine, and loaded in ~0.2 ms by the next process. Scanning releases the GIL; each thread gets its own scratch
space, so packs on several threads may scan at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sandboxrun.sync.secrets_content import CHECKS, SCAN_LIMIT, confirm

__all__ = ["HyperscanEngine", "load_engine"]

log = logging.getLogger(__name__)

_CACHE_MAGIC = b"sandboxrun-secrets-hyperscan 1 "
_lock = threading.Lock()
_engine: HyperscanEngine | None = None
_failure: str | None = None


class HyperscanEngine:
    """``engine(data)`` -> the rule ``data`` matches, or None (as :func:`.scan_python`)."""

    name = "hyperscan"

    def __init__(self, hs: ModuleType, database: Any) -> None:
        self.hs = hs
        self.db = database
        #: cache directories the database is known to be kept in
        self.saved: set[Path] = set()
        self._scan: Callable[..., None] = database.scan
        self._local = threading.local()

    def _new_scratch(self) -> Any:
        # one per thread: a scratch space serves one scan at a time
        scratch = self._local.scratch = self.hs.Scratch(self.db)
        return scratch

    def candidates(self, data: bytes) -> list[int]:
        """Indexes into ``CHECKS`` of every pattern Hyperscan found in ``data`` (no check
        for text or size: callers use :meth:`__call__`)."""
        try:
            scratch = self._local.scratch
        except AttributeError:
            scratch = self._new_scratch()
        found: list[int] = []
        self._scan(data, match_event_handler=_collect, context=found, scratch=scratch)
        return found

    def __call__(self, data: bytes) -> str | None:
        """The name of the first check ``data`` matches, or None; binary or over
        ``SCAN_LIMIT``: not scanned (None). Never the matched value."""
        # scannable() inlined: this runs once per file of every pack
        if len(data) > SCAN_LIMIT or data.find(b"\0", 0, 8192) >= 0:
            return None
        found = self.candidates(data)
        return confirm(data, found) if found else None


def _collect(index: int, _start: int, _end: int, _flags: int, found: list[int]) -> None:
    found.append(index)  # None: go on (SINGLEMATCH reports each pattern once)


def _flags(hs: ModuleType, pattern: re.Pattern[bytes]) -> int:
    flags: int = hs.HS_FLAG_SINGLEMATCH | hs.HS_FLAG_PREFILTER
    for bit, hs_bit in ((re.DOTALL, "HS_FLAG_DOTALL"), (re.IGNORECASE, "HS_FLAG_CASELESS"),
                        (re.MULTILINE, "HS_FLAG_MULTILINE")):  # fmt: skip
        if pattern.flags & bit:
            flags |= getattr(hs, hs_bit)
    unknown = pattern.flags & ~(re.DOTALL | re.IGNORECASE | re.MULTILINE)
    if unknown:  # re.VERBOSE and the like mean something else to Hyperscan: refuse
        raise ValueError(f"pattern flags {unknown:#x} have no Hyperscan equivalent")
    return flags


def _cache_key(hs: ModuleType) -> str:
    parts = [getattr(hs, "__version__", "?"), platform.machine(), platform.system()]
    parts += [repr((p.pattern, p.flags)) for p in CHECKS]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _compile(hs: ModuleType) -> Any:
    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    db.compile(
        expressions=[p.pattern for p in CHECKS],
        ids=list(range(len(CHECKS))),
        flags=[_flags(hs, p) for p in CHECKS],
    )
    return db


def _load_cached(hs: ModuleType, path: Path) -> Any:
    """The database serialized at ``path``, or None if absent, damaged or foreign."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head, _, blob = raw.partition(b"\n")
    if head != _CACHE_MAGIC + hashlib.sha256(blob).hexdigest().encode():
        return None  # truncated or damaged: never hand Hyperscan a corrupt database
    try:
        return hs.loadb(blob, hs.HS_MODE_BLOCK)
    except Exception:  # noqa: BLE001 - another CPU or library build: compile afresh
        return None


def _save(hs: ModuleType, db: Any, path: Path) -> None:
    with contextlib.suppress(OSError):
        blob = hs.dumpb(db)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-hyperscan.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_CACHE_MAGIC + hashlib.sha256(blob).hexdigest().encode() + b"\n" + blob)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)


def load_engine(cache_dir: Path | None = None) -> HyperscanEngine | None:
    """The process's Hyperscan engine, built on first use; None if Hyperscan is unusable
    here (not installed, no wheel for this platform, a CPU it does not support), with the
    reason in :func:`failure`.

    ``cache_dir``: where the compiled database is kept between processes (best effort).
    """
    global _engine, _failure
    with _lock:  # uncontended after the first call: ~0.1 us
        if _engine is None and _failure is None:
            _engine, _failure = _build(cache_dir)
        elif _engine is not None and cache_dir is not None and cache_dir not in _engine.saved:
            # built earlier without this directory (``run --with-changes`` checks the carried
            # files first): keep it there too, so the next process loads it
            path = cache_dir / f"secrets-hyperscan-{_cache_key(_engine.hs)}.db"
            if not path.exists():
                _save(_engine.hs, _engine.db, path)
            _engine.saved.add(cache_dir)
        return _engine


def _build(cache_dir: Path | None) -> tuple[HyperscanEngine | None, str | None]:
    try:
        import hyperscan as hs
    except ImportError as exc:
        return None, f"hyperscan cannot be imported ({exc})"
    path = cache_dir / f"secrets-hyperscan-{_cache_key(hs)}.db" if cache_dir else None
    db = _load_cached(hs, path) if path is not None else None
    if db is None:
        try:
            db = _compile(hs)
        except Exception as exc:  # noqa: BLE001 - hs.error (e.g. an unsupported CPU)
            return None, f"hyperscan cannot compile the rules here ({exc!r})"
        log.debug("secrets: compiled the hyperscan database of %d checks", len(CHECKS))
        if path is not None:
            _save(hs, db, path)
    else:
        log.debug("secrets: loaded the hyperscan database from %s", path)
    engine = HyperscanEngine(hs, db)
    if cache_dir is not None:
        engine.saved.add(cache_dir)
    return engine, None


def failure() -> str | None:
    """Why :func:`load_engine` returned None (after it did), else None."""
    return _failure


def reset() -> None:
    """Forget the process's engine (tests: build it again, e.g. with hyperscan hidden)."""
    global _engine, _failure
    with _lock:
        _engine = _failure = None
