"""State and disk faults, said once: a broken ``state.db`` or a full disk is one clear line.

Every command reaches the database through :class:`GuardedConnection` (the store's connection
factory), so a corrupt, read-only, locked or unopenable ``state.db``, or a full disk, surfaces as
a :class:`StateError` (a :class:`~sandboxrun.errors.SandboxrunError` with the next step) from the
query that met it, whatever the command. Disk faults met outside the database (writing an upload
tarball, artifacts, logs) are recognised by :func:`disk_fault`, which the program's edges (the
CLI, the MCP server, the hook) use for an ``OSError`` that reaches them.

The classification is pure: :func:`db_fault` and :func:`disk_fault` only read the exception.
"""

from __future__ import annotations

import errno
import shlex
import sqlite3
from pathlib import Path
from typing import Any, NoReturn, Self

from sandboxrun.errors import StateError

__all__ = ["StateError", "connect", "db_fault", "disk_fault", "open_fault"]


# SQLite's primary result codes (https://sqlite.org/rescode.html) that mean "the database or
# the disk under it cannot be used", rather than a mistake in our SQL.
_SQLITE_KINDS = {
    5: "locked",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "readonly",  # SQLITE_READONLY
    10: "io",  # SQLITE_IOERR
    11: "corrupt",  # SQLITE_CORRUPT
    13: "full",  # SQLITE_FULL
    14: "cantopen",  # SQLITE_CANTOPEN
    22: "full",  # SQLITE_NOLFS: file too large
    23: "readonly",  # SQLITE_AUTH
    26: "corrupt",  # SQLITE_NOTADB
}
# errno values of a write the disk (or the file system, or a limit) refused
_OS_KINDS = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EFBIG: "full",
    errno.EROFS: "readonly",
    errno.EACCES: "readonly",
    errno.EPERM: "readonly",
    errno.EIO: "io",
}


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def _hint(kind: str, path: Path | None, *, database: bool) -> str:
    """The next step for a fault of ``kind`` at ``path`` (a database file, any file, or None
    when the error did not say which)."""
    if path is None:
        path = Path("state.db") if database else Path(".")
    where = path.parent if database else path
    if kind == "corrupt":
        aside = path.parent / "broken"
        return (
            f"Move it (and its -wal/-shm files) aside and sandboxrun starts a new one: "
            f"`mkdir {_q(aside)} && mv {_q(path)}* {_q(aside)}/` (the sessions it recorded are "
            "forgotten; their branches, worktrees and artifacts stay). "
            f"`sqlite3 {_q(aside / path.name)} .recover` may rescue its rows."
        )
    if kind == "locked":
        return (
            f"Another process holds {path.name} in a long transaction (a sandboxrun command, or "
            f"a `sqlite3` shell): find it with `fuser {_q(path)}`, let it finish or end it, "
            "then try again."
        )
    if kind == "readonly" and database:
        return (
            f"Make it writable for you (`ls -l {_q(where)}`; `chmod u+w` the directory and "
            "state.db, state.db-wal, state.db-shm), or set SANDBOXRUN_HOME to a writable "
            "directory."
        )
    if kind == "readonly":
        return (
            f"Check its permissions and file system (`ls -ld {_q(where)}`, `findmnt -T "
            f"{_q(where)}`): it must be writable for you; then try again."
        )
    if kind == "full":
        return (
            f"Free space on the disk holding {where} (`df -h {_q(where)}`; "
            "`sandboxrun cleanup --all` removes leftovers of ended runs), then try again."
        )
    if kind == "cantopen":
        return (
            f"Check that {where} exists, is a directory and is writable for you, or set "
            "SANDBOXRUN_HOME to a directory that is."
        )
    return (
        f"The disk holding {where} may be full or failing: check `df -h {_q(where)}` "
        "(`sandboxrun cleanup --all` removes leftovers of ended runs) and the system log "
        "(`dmesg`), then try again."
    )


_WHAT = {
    "corrupt": "is corrupt (not a valid SQLite database)",
    "locked": "is locked by another process",
    "readonly": "is read-only",
    "full": "cannot be written: the disk is full",
    "cantopen": "cannot be opened",
    "io": "cannot be read or written (disk I/O error)",
}


def db_fault(
    exc: BaseException, path: Path | str, *, waited: float | None = None
) -> StateError | None:
    """The :class:`StateError` for a SQLite error met on ``path``; None when it is not a fault.

    Constraint violations, SQL mistakes and a missing table are not faults of the database:
    they stay as they are (None). Pure: reads only the exception.
    """
    if isinstance(exc, StateError):
        return exc
    if isinstance(exc, OSError):
        return disk_fault(exc, path)
    if not isinstance(exc, sqlite3.Error) or isinstance(exc, sqlite3.IntegrityError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    kind = _SQLITE_KINDS.get(code & 0xFF) if isinstance(code, int) else None
    if kind is None:  # an older sqlite3 module without codes: the messages are stable
        text = str(exc).lower()
        kind = next(
            (k for words, k in (
                ("locked", "locked"), ("busy", "locked"), ("readonly", "readonly"),
                ("read-only", "readonly"), ("malformed", "corrupt"),
                ("not a database", "corrupt"), ("disk is full", "full"),
                ("disk i/o", "io"), ("unable to open", "cantopen"),
            ) if words in text),
            None,
        )  # fmt: skip
    if kind is None:
        return None
    p = Path(path)
    what = _WHAT[kind]
    if kind == "locked" and waited:
        what += f" (waited {waited:g}s)"
    return StateError(
        f"sandboxrun's state database {p} {what}: {exc}", _hint(kind, p, database=True), kind=kind
    )


def disk_fault(exc: BaseException, path: Path | str | None = None) -> StateError | None:
    """The :class:`StateError` for an ``OSError`` that means the disk refused a write.

    ``path`` names the file when the exception does not. None for any other error (a missing
    file, a bug): those are not faults of the machine. Pure: reads only the exception.
    """
    if isinstance(exc, StateError):
        return exc
    if not isinstance(exc, OSError):
        return None
    kind = _OS_KINDS.get(exc.errno or 0)
    if kind is None:
        return None
    name = exc.filename or path
    p = Path(name) if name else None
    what = str(p) if p else "a file"  # a write() on an open file does not say which
    reason = exc.strerror or str(exc)
    if kind == "full":
        message = f"cannot write {what}: the disk (or a size limit) is full ({reason})"
    elif kind == "readonly" and exc.errno == errno.EROFS:
        message = f"cannot write {what}: {reason}"
    elif kind == "readonly":
        message = f"no permission to use {what}: {reason}"
    else:
        message = f"cannot read or write {what}: {reason}"
    return StateError(message, _hint(kind, p, database=False), kind=kind)


def open_fault(exc: OSError, path: Path | str) -> StateError:
    """The :class:`StateError` for an ``OSError`` met while opening the database at ``path``
    (making its directory, its lock file): always one, since nothing else can go on."""
    fault = disk_fault(exc, path)
    if fault is not None:
        return fault
    p = Path(path)
    return StateError(
        f"cannot open sandboxrun's state database {p}: {exc.strerror or exc}",
        _hint("cantopen", p, database=True),
        kind="cantopen",
    )


def schema_fault(exc: sqlite3.Error, path: Path | str) -> StateError:
    """The :class:`StateError` for a migration that failed on a database's own content (not a
    fault of the disk): a file made or changed by another version of sandboxrun, whose tables
    do not match the migrations it recorded. Nothing this version can fix in place."""
    p = Path(path)
    return StateError(
        f"sandboxrun's state database {p} cannot be brought up to date by this version "
        f"({exc}): another version of sandboxrun made or changed it",
        "Use the version that made it, or m" + _hint("corrupt", p, database=True)[1:],
        kind="schema",
    )


def _reraise(exc: sqlite3.Error, path: Path | str, waited: float | None) -> NoReturn:
    """Raise the :class:`StateError` for ``exc`` if it is a fault, else ``exc`` itself."""
    fault = db_fault(exc, path, waited=waited)
    if fault is None:
        raise exc
    raise fault from exc


class GuardedCursor(sqlite3.Cursor):
    """A cursor whose faults (at execute or at fetch) are :class:`StateError`."""

    def _reraise(self, exc: sqlite3.Error) -> NoReturn:
        conn = self.connection
        _reraise(exc, getattr(conn, "db_path", "state.db"), getattr(conn, "busy_wait", None))

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as exc:
            self._reraise(exc)

    def executemany(self, sql: str, seq: Any, /) -> Self:
        try:
            return super().executemany(sql, seq)
        except sqlite3.Error as exc:
            self._reraise(exc)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        try:
            return super().executescript(script)
        except sqlite3.Error as exc:
            self._reraise(exc)

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            self._reraise(exc)

    def fetchmany(self, size: int | None = None) -> list[Any]:
        try:
            return super().fetchmany(size if size is not None else self.arraysize)
        except sqlite3.Error as exc:
            self._reraise(exc)

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            self._reraise(exc)

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            self._reraise(exc)


class GuardedConnection(sqlite3.Connection):
    """``sqlite3.connect(..., factory=GuardedConnection)``: every fault is a :class:`StateError`.

    Covers what the store and everything built on ``store.conn`` (coordination, fan-out groups,
    sqlite-utils migrations) do: ``execute*`` and the rows they fetch, ``commit``.
    """

    db_path: Path
    busy_wait: float | None = None

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or GuardedCursor)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cur: sqlite3.Cursor = self.cursor()
        return cur.execute(sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> sqlite3.Cursor:
        cur: sqlite3.Cursor = self.cursor()
        return cur.executemany(sql, seq)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        cur: sqlite3.Cursor = self.cursor()
        return cur.executescript(script)

    def commit(self) -> None:
        try:
            super().commit()
        except sqlite3.Error as exc:
            _reraise(exc, self.db_path, self.busy_wait)


def connect(path: Path, *, timeout: float) -> GuardedConnection:
    """Open ``path`` as a :class:`GuardedConnection` (opening faults are :class:`StateError`)."""
    try:
        conn = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False,
            factory=GuardedConnection,
        )  # fmt: skip
    except sqlite3.Error as exc:
        _reraise(exc, path, timeout)
    assert isinstance(conn, GuardedConnection)
    conn.db_path = Path(path)
    conn.busy_wait = timeout
    return conn
