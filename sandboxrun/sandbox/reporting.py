"""How a running pipeline tells a person (or a script) what is happening.

The core calls a :class:`Reporter`; the CLI supplies one that draws a live view or prints JSON
lines. Core code never imports rich.
"""

from __future__ import annotations

from typing import Protocol

from sandboxrun.agent import AgentEvent, AgentProgress
from sandboxrun.config import format_duration


class Reporter(Protocol):
    """Callbacks from a run in progress. All are optional to act on."""

    def phase(self, name: str, detail: str = "") -> None:
        """A new phase started (packing, provisioning, running, collecting, ...)."""

    def agent_event(self, event: AgentEvent) -> None:
        """The agent did something (text, tool use, result...)."""

    def warning(self, message: str) -> None:
        """Something the user should know (time warning, secrets kept out...)."""

    def tick(self, progress: AgentProgress, elapsed: float, remaining: float | None) -> None:
        """Called about once per poll while the agent runs."""


class NullReporter:
    """A reporter that ignores everything (detached runs, tests)."""

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def agent_event(self, event: AgentEvent) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def tick(self, progress: AgentProgress, elapsed: float, remaining: float | None) -> None:
        pass


def time_limit_message(elapsed: float, limit: float) -> str:
    """When and why an agent is stopped for its time limit: ``after 15s, 5s before the 20s
    time limit, to collect the work`` (the stop comes early so collecting fits in the limit)."""
    early = max(0.0, limit - elapsed)
    return (
        f"after {format_duration(elapsed)}, {format_duration(early)} before the "
        f"{format_duration(limit)} time limit, to collect the work"
    )
