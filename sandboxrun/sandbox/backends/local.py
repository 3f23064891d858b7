"""The ``local`` backend: a throwaway directory on this machine.

Not isolated: the agent runs as you, with your files and network within reach. It exists so
the whole pipeline can run (and be tested) without a cloud account; use ``e2b`` for isolation.
Each sandbox is ``$SANDBOXRUN_HOME/sandboxes/<id>``; its ``home`` is that directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandboxrun import process
from sandboxrun.config import Settings
from sandboxrun.errors import (
    AgentError,
    BackendError,
    ProcessError,
    ProgramNotFoundError,
    SandboxLostError,
)
from sandboxrun.sandbox.backends.base import ExecResult

# The wrapper runs the agent with its stdio redirected and records its exit code atomically.
# `trap : INT TERM` makes the shell wait for the agent to finish its own shutdown instead of
# dying first (a trap with a command, unlike an ignored signal, is reset for the child).
# Paths come in through the environment, the agent argv through "$@": no user text is ever
# interpolated into the script.
DETACH_WRAPPER = r"""
trap : INT TERM
echo $$ > "$SBR_PID_PATH"
"$@" < "$SBR_STDIN_PATH" > "$SBR_LOG_PATH" 2> "$SBR_STDERR_PATH"
code=$?
echo $code > "$SBR_EXIT_PATH.tmp" && mv "$SBR_EXIT_PATH.tmp" "$SBR_EXIT_PATH"
"""

_SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "0": 0}


class LocalSandbox:
    """A sandbox that is a directory on this machine."""

    def __init__(self, sandbox_id: str, root: Path) -> None:
        self.id = sandbox_id
        self.root = root
        self.home = str(root)

    @property
    def repo_dir(self) -> str:
        return f"{self.home}/repo"

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        full = dict(os.environ)
        full.update(env or {})
        return full

    def exec(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> ExecResult:
        """Run a short command in the sandbox directory."""
        self._require()
        try:
            res = process.run_raw(
                argv, cwd=cwd or self.home, env=self._env(env), check=False, timeout=timeout
            )
        except ProgramNotFoundError:
            return ExecResult(127, b"", f"{argv[0]}: command not found".encode())
        except ProcessError as exc:
            raise BackendError(
                f"{argv[0]} did not finish within {timeout:g}s in the sandbox"
            ) from exc
        return ExecResult(res.returncode, res.stdout, res.stderr)

    def start_detached(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        stdin_path: str,
        log_path: str,
        stderr_path: str,
        exit_path: str,
        pid_path: str,
    ) -> int:
        """Start ``argv`` in a new session (its own process group), surviving our exit."""
        self._require()
        if process.which(argv[0]) is None:
            raise AgentError(
                f"cannot run the agent: {argv[0]} not found",
                "Install Claude Code (npm install -g @anthropic-ai/claude-code) or set "
                "SANDBOXRUN_CLAUDE_BIN to its path.",
            )
        wrap_env = self._env(env)
        wrap_env.update(
            {
                "SBR_PID_PATH": pid_path,
                "SBR_STDIN_PATH": stdin_path,
                "SBR_LOG_PATH": log_path,
                "SBR_STDERR_PATH": stderr_path,
                "SBR_EXIT_PATH": exit_path,
            }
        )
        pid = process.spawn_detached(
            ["/bin/sh", "-c", DETACH_WRAPPER, "sh", *argv], cwd=cwd, env=wrap_env
        )
        Path(pid_path).write_text(f"{pid}\n")
        return pid

    def read_file(self, path: str, offset: int = 0) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()

    def write_file(self, path: str, data: bytes) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)

    def upload_and_unpack(self, tarball: Path, compression: str, dest: str) -> None:
        from sandboxrun.sync.unpack import safe_extract

        self._require()
        Path(dest).mkdir(parents=True, exist_ok=True)
        safe_extract(tarball, Path(dest), compression)

    def signal_group(self, pgid: int, signame: str) -> bool:
        try:
            os.killpg(int(pgid), _SIGNALS[signame])
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def set_timeout(self, seconds: float) -> None:
        """Local sandboxes have no lifetime limit of their own: our watchdog is the limit."""

    def is_alive(self) -> bool:
        return self.root.is_dir()

    def time_left(self) -> float | None:
        return None

    def destroy(self) -> None:
        pid_file = self.root / ".sandboxrun" / "agent.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError):
                self.signal_group(int(pid_file.read_text().strip()), "KILL")
        shutil.rmtree(self.root, ignore_errors=True)

    def _require(self) -> None:
        if not self.root.is_dir():
            raise SandboxLostError(
                f"local sandbox {self.id} is gone ({self.root} no longer exists)",
                "Its last collected patches are under the session's artifacts directory.",
            )


class LocalBackend:
    """Creates :class:`LocalSandbox` directories under ``$SANDBOXRUN_HOME/sandboxes``."""

    name = "local"
    isolated = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_ready(self, *, dry_run: bool) -> None:
        if dry_run:
            return
        if process.which(self.settings.claude_bin) is None:
            raise AgentError(
                f"Claude Code ({self.settings.claude_bin!r}) is not installed on this machine",
                "Install it with `npm install -g @anthropic-ai/claude-code`, or set "
                "SANDBOXRUN_CLAUDE_BIN to the claude executable. "
                "`--dry-run` works without it.",
            )

    def create(
        self,
        session_id: str,
        *,
        timeout_s: float,
        env: Mapping[str, str],
        metadata: Mapping[str, str],
    ) -> LocalSandbox:
        root = self.settings.sandboxes_dir / session_id
        try:
            root.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise BackendError(f"local sandbox directory {root} already exists") from exc
        return LocalSandbox(session_id, root)

    def connect(self, sandbox_id: str) -> LocalSandbox:
        root = self.settings.sandboxes_dir / sandbox_id
        sandbox = LocalSandbox(sandbox_id, root)
        sandbox._require()
        return sandbox

    def agent_env(self, *, dry_run: bool) -> dict[str, str]:
        # The agent inherits this machine's environment (and so its credentials) as is.
        return {}
