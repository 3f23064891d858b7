"""The agent's process inside a sandbox: where its files are, whether it runs, how to stop it.

The agent runs detached, in its own process group, with its stdin, stdout, stderr, exit code
and process-group id in files of the sandbox's control directory; everything here works from
those files and the group id alone, so any process can look after an agent another started.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sandboxrun.sandbox.backends.base import Launch, Sandbox, control_dir
from sandboxrun.sandbox.deadline import STOP_BUDGET, stop_schedule


@dataclass(frozen=True)
class AgentFiles:
    """The agent's files in a sandbox's control directory."""

    prompt: str  # its stdin
    log: str  # its stdout: stream-json, one event a line
    stderr: str
    exit: str  # its exit code, written when it ends
    pid: str  # its process-group id

    @classmethod
    def of(cls, sandbox: Sandbox) -> AgentFiles:
        ctl = control_dir(sandbox)
        return cls(
            prompt=f"{ctl}/prompt.txt",
            log=f"{ctl}/agent.log",
            stderr=f"{ctl}/agent.stderr",
            exit=f"{ctl}/agent.exit",
            pid=f"{ctl}/agent.pid",
        )

    def launch(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> Launch:
        """How to start ``argv`` as the agent: its stdio and status in these files."""
        return Launch(
            argv=tuple(argv),
            cwd=cwd,
            env=dict(env),
            stdin_path=self.prompt,
            log_path=self.log,
            stderr_path=self.stderr,
            exit_path=self.exit,
            pid_path=self.pid,
        )


@dataclass(frozen=True)
class AgentProcess:
    """A started agent: its sandbox and its process group."""

    sandbox: Sandbox
    pgid: int

    @property
    def files(self) -> AgentFiles:
        return AgentFiles.of(self.sandbox)

    def exited(self) -> bool:
        """True once the agent has written its exit code or its process group is gone."""
        try:
            self.sandbox.read_file(self.files.exit)
            return True
        except FileNotFoundError:
            return not self.sandbox.signal_group(self.pgid, "0")

    def exit_code(self) -> int | None:
        """The agent's exit code, or None when it has none (still running, or killed)."""
        try:
            return int(self.sandbox.read_file(self.files.exit).decode().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self, budget: float = STOP_BUDGET) -> None:
        """Interrupt the agent: INT, then TERM, then KILL, each at its time within ``budget``.

        The times are fixed against one deadline (``deadline.stop_schedule``), not waits after
        each signal, so an agent that ignores INT costs half the budget, never the time the
        collection needs.
        """
        start = time.monotonic()
        for signame, at in stop_schedule(start, budget):
            while time.monotonic() < at:
                if self.exited():
                    return
                time.sleep(0.1)
            if not self.sandbox.signal_group(self.pgid, signame):
                return
        while time.monotonic() < start + budget:
            if self.exited():
                return
            time.sleep(0.1)
