"""What a person can do next with a session, by state: one table, used by every hint.

Each row names only commands that work in that state (``attach`` needs an agent that started
and no live driver, or a lost session whose last checkpoint is not landed yet; ``download``
needs a live sandbox or saved work; ``extend`` needs a running agent), so no message sends
anyone to a command that will refuse. Pure: callers pass what they know about the session.
"""

from __future__ import annotations

from dataclasses import dataclass

#: statuses in which the run process is still getting somewhere
_STARTING = frozenset({"created", "preparing", "packing", "provisioning"})


@dataclass(frozen=True)
class SessionFacts:
    """What the table needs to know about a session."""

    name: str
    status: str
    driver_alive: bool
    agent_started: bool  # the agent ran (there is something to attach to or collect)
    has_commits: bool  # commits were put on the branch
    has_patches: bool  # patches are saved in the artifacts (a checkpoint or a collection)
    branch: str = ""
    repo: str = ""
    #: lost, with its last checkpoint kept but not landed yet (``attach`` lands it)
    checkpoint_pending: bool = False


def next_commands(f: SessionFacts) -> list[str]:
    """The commands that make sense now, most useful first."""
    n = f.name
    if f.status in _STARTING:
        if f.driver_alive:
            return [f"sandboxrun logs {n} --follow", f"sandboxrun kill {n}"]
        return [f"sandboxrun kill {n}"]
    if f.status in ("running", "collecting"):
        if f.driver_alive:
            if f.status == "collecting" or not f.agent_started:
                return [f"sandboxrun logs {n} --follow"]
            return [f"sandboxrun logs {n} --follow", f"sandboxrun download {n}",
                    f"sandboxrun extend {n} 30m", f"sandboxrun kill {n}"]  # fmt: skip
        if f.agent_started:
            # attach carries the run on (or finishes an interrupted collection)
            return [f"sandboxrun attach {n}", f"sandboxrun download {n}", f"sandboxrun kill {n}"]
        return [f"sandboxrun kill {n}"]
    # ended (waiting_quota is set when a run ends on a usage limit)
    steps = []
    if f.checkpoint_pending:
        steps.append(f"sandboxrun attach {n}")
    if f.has_commits and f.branch:
        steps.append(f"git -C {f.repo or '.'} log --stat {f.branch}")
    if f.has_patches and not f.has_commits:
        steps.append(f"sandboxrun download {n}")
    steps.append(f"sandboxrun logs {n}")
    return steps


def next_step_hint(f: SessionFacts) -> str:
    """One sentence naming the next commands (for error hints and status)."""
    commands = next_commands(f)
    return "Next: " + ", or ".join(f"`{c}`" for c in commands) + "."
