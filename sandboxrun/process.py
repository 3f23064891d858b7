"""The one place that runs external programs (git, tar, claude, tmux).

Always argv lists, never shell strings built from user input. Output is decoded with
``errors="backslashreplace"`` so odd bytes never crash us. Callers decide what a failure means.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandboxrun.errors import ProcessError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """What a finished program left behind."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def which(program: str) -> str | None:
    """Resolve a program name (or path) to an executable path, or None."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program)


def _run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    input: str | bytes | None,
    check: bool,
    timeout: float | None,
    hint: str | None,
) -> tuple[list[str], subprocess.CompletedProcess[bytes]]:
    """Start ``argv``, wait for it, and raise :class:`ProcessError` the way callers expect."""
    args = [os.fspath(a) for a in argv]
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
        raise ProcessError(
            f"{args[0]} is not installed or not on PATH",
            hint or f"Install {Path(args[0]).name} and try again.",
            argv=args,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(
            f"{Path(args[0]).name} did not finish within {timeout:g}s", hint, argv=args
        ) from exc
    if check and proc.returncode != 0:
        stdout = proc.stdout.decode(errors="backslashreplace")
        stderr = proc.stderr.decode(errors="backslashreplace")
        detail = stderr.strip() or stdout.strip() or f"exit code {proc.returncode}"
        raise ProcessError(
            f"{Path(args[0]).name} {' '.join(args[1:3])} failed: {detail}",
            hint,
            argv=args,
            returncode=proc.returncode,
            stdout=stdout,
            stderr=stderr,
        )
    return args, proc


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    hint: str | None = None,
) -> Result:
    """Run ``argv`` to completion and return its output as text.

    With ``check`` (the default) a non-zero exit raises :class:`ProcessError` carrying the
    program's stderr, so the user sees git's own words rather than a bare exit code.
    """
    args, proc = _run(argv, cwd=cwd, env=env, input=input, check=check, timeout=timeout, hint=hint)
    return Result(
        argv=args,
        returncode=proc.returncode,
        stdout=proc.stdout.decode(errors="backslashreplace"),
        stderr=proc.stderr.decode(errors="backslashreplace"),
    )


def run_bytes(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> bytes:
    """Run ``argv`` and return its raw stdout (for binary-safe diffs and NUL lists)."""
    _, proc = _run(argv, cwd=cwd, env=env, input=None, check=check, timeout=timeout, hint=None)
    return proc.stdout
