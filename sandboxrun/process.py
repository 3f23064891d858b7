"""The one place that runs external programs (git, zstd, the agent, our own driver).

Always argv lists, never shell strings built from user input. Three ways to run one:
:func:`run` (to completion, output captured; :func:`run_bytes` and :func:`run_raw` for bytes),
:class:`Stream` (alongside us, fed or read through a pipe, for data that must not sit in
memory) and :func:`spawn_detached` (in its own session, outliving us). Text output is decoded
with ``errors="backslashreplace"`` so odd bytes never crash us. A program that cannot start or
does not finish in time raises :class:`ProcessError`; whether a non-zero exit is an error is
the caller's choice (``check``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypedDict, Unpack

from sandboxrun.errors import ProcessError, ProgramNotFoundError

log = logging.getLogger(__name__)

Argv = Sequence[str | os.PathLike[str]]
PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class Result:
    """What a finished program left behind, as text."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class RawResult:
    """What a finished program left behind, byte for byte."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def which(program: str) -> str | None:
    """Resolve a program name (or path) to an executable path, or None."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program)


def _argv(argv: Argv) -> list[str]:
    return [os.fspath(a) for a in argv]


def _not_found(args: list[str], hint: str | None, exc: OSError) -> ProgramNotFoundError:
    return ProgramNotFoundError(
        f"{args[0]} is not installed or not on PATH",
        hint or f"Install {Path(args[0]).name} and try again.",
        argv=args,
    )


def describe(args: Sequence[str]) -> str:
    """How an error names a command: the program and its first arguments."""
    return " ".join([Path(args[0]).name, *args[1:3]])


class RunOptions(TypedDict, total=False):
    """How :func:`run` and :func:`run_raw` run a program; every key may be left out."""

    #: the working directory (default: ours)
    cwd: PathArg | None
    #: the program's whole environment (default: ours)
    env: Mapping[str, str] | None
    #: fed on its stdin (text is UTF-8 encoded)
    input: str | bytes | None
    #: a non-zero exit raises :class:`ProcessError` (default True)
    check: bool
    #: seconds before it is killed and :class:`ProcessError` raised (default: no limit)
    timeout: float | None
    #: the hint of any error raised
    hint: str | None
    #: how an error names the command (default: the program and its first two arguments)
    what: str | None


def run_raw(argv: Argv, **options: Unpack[RunOptions]) -> RawResult:
    """Run ``argv`` to completion and return its exit code and output as bytes.

    With ``check`` a non-zero exit raises :class:`ProcessError` carrying the program's stderr,
    so the user sees the program's own words rather than a bare exit code. ``what`` names the
    command in that message (default: the program and its first two arguments).
    """
    cwd, env, input = options.get("cwd"), options.get("env"), options.get("input")
    timeout, hint, what = options.get("timeout"), options.get("hint"), options.get("what")
    check = options.get("check", True)
    args = _argv(argv)
    log.debug("run %s (cwd=%s)", args, cwd)
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=data,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise _not_found(args, hint, exc) from exc
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(
            f"{what or Path(args[0]).name} did not finish within {timeout:g}s", hint, argv=args
        ) from exc
    result = RawResult(args, proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        stdout = result.stdout.decode(errors="backslashreplace")
        stderr = result.stderr.decode(errors="backslashreplace")
        detail = stderr.strip() or stdout.strip() or f"exit code {result.returncode}"
        raise ProcessError(
            f"{what or describe(args)} failed: {detail}",
            hint,
            argv=args,
            returncode=result.returncode,
            stdout=stdout,
            stderr=stderr,
        )
    return result


def run(argv: Argv, **options: Unpack[RunOptions]) -> Result:
    """Run ``argv`` to completion and return its output as text (see :func:`run_raw`)."""
    raw = run_raw(argv, **options)
    return Result(
        argv=raw.argv,
        returncode=raw.returncode,
        stdout=raw.stdout.decode(errors="backslashreplace"),
        stderr=raw.stderr.decode(errors="backslashreplace"),
    )


def run_bytes(argv: Argv, **options: Unpack[RunOptions]) -> bytes:
    """Run ``argv`` and return its raw stdout (for binary-safe diffs and NUL lists)."""
    return run_raw(argv, **options).stdout


def run_foreground(argv: Argv, *, hint: str | None = None) -> int:
    """Run ``argv`` on this terminal (stdin/stdout/stderr inherited) until it exits; its code.

    For programs a person uses (``tmux attach`` from the dashboard), never for output we read.
    """
    args = _argv(argv)
    try:
        return subprocess.call(args)
    except OSError as exc:
        raise _not_found(args, hint, exc) from exc


class Stream:
    """A program running alongside us, fed through ``stdin`` or read through ``stdout``.

    For data too big to hold in memory (a tar stream through zstd). Pass ``stdin=PIPE`` or
    ``stdout=PIPE`` (or a file) like :class:`subprocess.Popen`; stderr goes to a temporary
    file (a pipe could fill up and block the program while we block on it) and becomes the
    message of the :class:`ProcessError` that :meth:`finish` raises when the program fails.
    As a context manager it finishes on success and kills the program on an exception.
    """

    PIPE = subprocess.PIPE

    def __init__(
        self,
        argv: Argv,
        *,
        what: str,
        hint: str | None = None,
        stdin: IO[bytes] | int | None = subprocess.DEVNULL,
        stdout: IO[bytes] | int | None = subprocess.DEVNULL,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = _argv(argv)
        self.what = what
        self.hint = hint
        log.debug("run(stream) %s", self.argv)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the program
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=self._err,
                cwd=cwd,
                env=dict(env) if env is not None else None,
            )
        except FileNotFoundError as exc:
            self._err.close()
            raise _not_found(self.argv, hint, exc) from exc

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None, "started without stdin=Stream.PIPE"
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None, "started without stdout=Stream.PIPE"
        return self.proc.stdout

    def finish(self) -> None:
        """Close our ends of the pipes and wait for the program; ProcessError if it failed."""
        self._close_pipes()
        if self.proc.wait() != 0:
            raise self.failed()
        self._err.close()

    def failed(self) -> ProcessError:
        """Wait for a program that failed (e.g. after a BrokenPipeError) and say why."""
        code = self.proc.wait()
        self._err.seek(0)
        detail = self._err.read().decode(errors="backslashreplace").strip()
        self._err.close()
        return ProcessError(
            f"{self.what}: {detail or f'exit code {code}'}",
            self.hint,
            argv=self.argv,
            returncode=code,
            stderr=detail,
        )

    def kill(self) -> None:
        """Stop the program (if it still runs) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._close_pipes()
        self.proc.wait()
        self._err.close()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.kill()


def spawn_detached(
    argv: Argv,
    *,
    cwd: PathArg | None = None,
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
) -> int:
    """Start ``argv`` in a new session (its own process group) that outlives us; its pid.

    stdin is ``/dev/null``; stdout and stderr are appended to ``output`` (or discarded). A
    thread of ours reaps it when it ends, so it never lingers as a zombie in process-group
    checks; if we exit first, init adopts it and it carries on.
    """
    args = _argv(argv)
    log.debug("spawn %s (cwd=%s)", args, cwd)
    kwargs: dict[str, Any] = {
        "cwd": cwd,
        "env": dict(env) if env is not None else None,
        "start_new_session": True,
        "stdin": subprocess.DEVNULL,
    }
    try:
        if output is None:
            proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs
            )
        else:
            with open(output, "ab") as out:
                proc = subprocess.Popen(args, stdout=out, stderr=out, **kwargs)
    except FileNotFoundError as exc:
        raise _not_found(args, None, exc) from exc
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid
