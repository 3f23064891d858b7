"""The CLI's run reporters: a live view for people, JSON lines for scripts.

Both implement :class:`sandboxrun.sandbox.reporting.Reporter`; `run` and `attach` pick one.
"""

from __future__ import annotations

from typing import Any

from rich.live import Live
from rich.table import Table
from rich.text import Text

from sandboxrun.agent import AgentEvent, AgentProgress
from sandboxrun.cli.common import err_console, print_json_line, styled
from sandboxrun.config import format_duration
from sandboxrun.store import Session


class LiveReporter:
    """Draws elapsed/remaining time, turns, tools, cost and the latest lines."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.phase_name = "starting"
        self.progress = AgentProgress()
        self.elapsed = 0.0
        self.remaining: float | None = None
        self.live = Live(self._render(), console=err_console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveReporter:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def _render(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        head = Text.assemble(
            (f"{self.session.name}", "bold"),
            f"  {self.phase_name}  ",
            f"elapsed {format_duration(self.elapsed)}",
            f"  left {format_duration(self.remaining)}" if self.remaining is not None else "",
            f"  turns {self.progress.turns}",
            f"  cost ${self.progress.cost_usd:.4f}" if self.progress.cost_usd is not None else "",
        )
        grid.add_row(head)
        if self.progress.tools:
            tools = ", ".join(f"{k}×{v}" for k, v in sorted(self.progress.tools.items()))
            grid.add_row(Text(f"tools: {tools}", style="dim"))
        for line in self.progress.last_lines:
            grid.add_row(Text(f"  {line}", overflow="ellipsis", no_wrap=True))
        return grid

    def phase(self, name: str, detail: str = "") -> None:
        self.phase_name = name
        self.live.console.print(styled((f"→ {name}", "cyan"), f" {detail}"))
        self.live.update(self._render())

    def agent_event(self, event: AgentEvent) -> None:
        self.progress.feed(event)
        if event.type in ("tool_use", "tool_error", "result", "rate_limit"):
            self.live.console.print(Text(f"  {event.summary}", style="dim"))
        self.live.update(self._render())

    def warning(self, message: str) -> None:
        self.live.console.print(styled((f"! {message}", "yellow")))

    def tick(self, progress: AgentProgress, elapsed: float, remaining: float | None) -> None:
        self.elapsed, self.remaining = elapsed, remaining
        self.live.update(self._render())


class JsonReporter:
    """Prints every event as one JSON line on stdout (`--json`)."""

    def __init__(self, session: Session) -> None:
        self.sid = session.id

    def phase(self, name: str, detail: str = "") -> None:
        print_json_line({"session": self.sid, "kind": "phase", "phase": name, "detail": detail})

    def agent_event(self, event: AgentEvent) -> None:
        print_json_line({"session": self.sid, "kind": "agent", **event.to_dict()})

    def warning(self, message: str) -> None:
        print_json_line({"session": self.sid, "kind": "warning", "message": message})

    def tick(self, progress: AgentProgress, elapsed: float, remaining: float | None) -> None:
        pass
