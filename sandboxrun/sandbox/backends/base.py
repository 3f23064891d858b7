"""The contract every sandbox backend fulfils.

The run pipeline (``sandboxrun.sandbox.runner``) only talks to a :class:`Sandbox` through these few
primitives, so a new backend plugs in without touching the pipeline. Paths inside a sandbox
are strings (POSIX); ``Sandbox.home`` is the sandbox's home directory (``/home/user`` on E2B,
a private directory for the local backend) and the repository lives at ``Sandbox.repo_dir``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# How every backend runs a detached program: this wrapper, as ``/bin/sh -c WRAPPER sh ARGV...``
# in a new session, with the paths of :class:`Launch` in its environment. It runs the program
# with its stdio redirected and records its exit code atomically. `trap : INT TERM` makes the
# shell wait for the program to finish its own shutdown instead of dying first (a trap with a
# command, unlike an ignored signal, is reset for the child). The pid file is written
# atomically too, for backends that poll for it. Paths come in through the environment, the
# argv through "$@": no user text is ever interpolated into the script.
DETACH_WRAPPER = r"""
trap : INT TERM
echo $$ > "$SBR_PID_PATH.tmp" && mv -f "$SBR_PID_PATH.tmp" "$SBR_PID_PATH"
"$@" < "$SBR_STDIN_PATH" > "$SBR_LOG_PATH" 2> "$SBR_STDERR_PATH"
code=$?
echo $code > "$SBR_EXIT_PATH.tmp" && mv -f "$SBR_EXIT_PATH.tmp" "$SBR_EXIT_PATH"
"""


def control_dir(sandbox: Sandbox) -> str:
    """Where sandboxrun keeps its files inside a sandbox (outside the repo, so not in diffs)."""
    return f"{sandbox.home}/.sandboxrun"


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a short command run inside a sandbox."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode(errors="backslashreplace")

    def error_text(self) -> str:
        return (self.stderr or self.stdout).decode(errors="backslashreplace").strip()


@dataclass(frozen=True)
class Launch:
    """A long-running program to start detached, and the files its run is recorded in.

    stdin comes from ``stdin_path``; stdout goes to ``log_path`` and stderr to
    ``stderr_path``; when it ends its exit code is written to ``exit_path`` (atomically). Its
    process-group id is written to ``pid_path``.
    """

    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    stdin_path: str
    log_path: str
    stderr_path: str
    exit_path: str
    pid_path: str

    def wrapper_argv(self) -> list[str]:
        """The command line that runs the program under :data:`DETACH_WRAPPER`."""
        return ["/bin/sh", "-c", DETACH_WRAPPER, "sh", *self.argv]

    def wrapper_env(self) -> dict[str, str]:
        """The wrapper's environment: the program's own, plus where its files go."""
        return {
            **self.env,
            "SBR_PID_PATH": self.pid_path,
            "SBR_STDIN_PATH": self.stdin_path,
            "SBR_LOG_PATH": self.log_path,
            "SBR_STDERR_PATH": self.stderr_path,
            "SBR_EXIT_PATH": self.exit_path,
        }


class Sandbox(Protocol):
    """A live sandbox: a place with a filesystem where commands run."""

    id: str
    home: str

    @property
    def repo_dir(self) -> str:
        """Where the repository is unpacked (``{home}/repo``)."""
        ...

    def exec(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> ExecResult:
        """Run a short command to completion (argv list, never a shell string with user text).

        The one signature and its defaults; a backend (subclassing :class:`Sandbox`) runs it
        in :meth:`run_argv`, every argument given.
        """
        return self.run_argv(argv, cwd, env, timeout)

    def run_argv(
        self, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None, timeout: float
    ) -> ExecResult:
        """The backend's own :meth:`exec`."""
        ...

    def start_detached(self, launch: Launch) -> int:
        """Start ``launch`` under :data:`DETACH_WRAPPER` in its own process group, detached.

        Returns its process-group id. The process must survive our own process dying.
        """
        ...

    def read_file(self, path: str, offset: int = 0) -> bytes:
        """Bytes of ``path`` from byte ``offset`` on; raises FileNotFoundError if it is absent."""
        ...

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace ``path`` with ``data`` (parent directories are created)."""
        ...

    def upload_and_unpack(self, tarball: Path, compression: str, dest: str) -> None:
        """Stream ``tarball`` into the sandbox and unpack it into ``dest`` safely.

        Refuses links, special files, absolute names and ``..`` components.
        """
        ...

    def signal_group(self, pgid: int, signame: str) -> bool:
        """Send ``signame`` (INT, TERM, KILL) to process group ``pgid``; False if it is gone.

        ``signame="0"`` sends nothing and only tells whether the group still exists.
        """
        ...

    def set_timeout(self, seconds: float) -> None:
        """Make the sandbox live ``seconds`` from now (no-op where there is no such limit)."""
        ...

    def is_alive(self) -> bool:
        """True while the sandbox exists and accepts commands."""
        ...

    def time_left(self) -> float | None:
        """Seconds until the backend itself ends the sandbox, or None if it never will."""
        ...

    def destroy(self) -> None:
        """Tear the sandbox down and free its resources (idempotent)."""
        ...


class Backend(Protocol):
    """Creates sandboxes and reconnects to them by id."""

    name: str
    #: True when the sandbox is a separate machine with its own programs (E2B); False for
    #: ``local``, whose agent runs this machine's ``claude`` (confined or not: see
    #: ``confines_agent``).
    isolated: bool

    @property
    def confines_agent(self) -> bool:
        """True when the agent cannot reach this machine's files outside its sandbox (E2B;
        local under bubblewrap). Recorded per session as ``isolated``."""
        ...

    def check_ready(self, *, dry_run: bool) -> None:
        """Raise a SandboxrunError naming the fix when this backend cannot run (missing key...)."""
        ...

    def create(
        self,
        session_id: str,
        *,
        timeout_s: float,
        env: Mapping[str, str],
        metadata: Mapping[str, str],
    ) -> Sandbox:
        """Create a fresh sandbox for ``session_id``."""
        ...

    def connect(self, sandbox_id: str) -> Sandbox:
        """Reconnect to an existing sandbox; raises SandboxLostError when it is gone."""
        ...

    def agent_env(self, *, dry_run: bool) -> dict[str, str]:
        """Environment the agent needs inside the sandbox (credentials). Never stored or logged."""
        ...
