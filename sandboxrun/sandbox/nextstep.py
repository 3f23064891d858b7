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
    #: its driver was asked to stop, or is collecting: the time limit no longer matters
    stopping: bool = False
    #: the final collection is in the artifacts (what ``sandboxrun apply`` lands)
    collected: bool = False
    #: "sandbox" (a run), or "local" (a child in tmux: `read`, `open`, `close` act on it)
    mode: str = "sandbox"


def next_commands(f: SessionFacts) -> list[str]:
    """The commands that make sense now, most useful first."""
    n = f.name
    if f.mode != "sandbox":  # a local-mode child: the sandbox commands do not apply
        ended = f.status not in _STARTING and f.status not in ("running", "collecting")
        if ended:
            return [f"sandboxrun logs {n}"]
        return [f"sandboxrun read {n}", f"sandboxrun open {n}", f"sandboxrun close {n}"]
    if f.status in _STARTING:
        if f.driver_alive:
            return [f"sandboxrun logs {n} --follow", f"sandboxrun kill {n}"]
        return [f"sandboxrun kill {n}"]
    if f.status in ("running", "collecting"):
        if f.driver_alive:
            if f.status == "collecting" or not f.agent_started:
                return [f"sandboxrun logs {n} --follow"]
            if f.stopping:  # asked to stop: its limit no longer matters, kill is under way
                return [f"sandboxrun logs {n} --follow", f"sandboxrun download {n}"]
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


#: the commands that act on one session, each checked against the state by :func:`refusal`
SESSION_COMMANDS = ("status", "logs", "kill", "attach", "extend", "download", "apply")


@dataclass(frozen=True)
class Refusal:
    """Why a command does not work on a session in its state, and what does (exit code 1:
    the command was called right, the session is not in a state it can act on)."""

    message: str
    hint: str
    exit_code: int = 1


def refusal(command: str, f: SessionFacts) -> Refusal | None:
    """Whether ``command`` works on a session with facts ``f``: None when it does, else why
    not with a hint naming only commands that do (:func:`next_commands`). Pure: the one gate
    of ``kill``, ``attach``, ``extend``, ``download`` and ``apply`` on a session's state.
    """
    if command not in SESSION_COMMANDS:
        raise ValueError(f"unknown session command {command!r}")
    why = _why_not(command, f)
    if why is None:
        return None
    return Refusal(f"cannot {command} session {f.name}: {why}", next_step_hint(f))


def _why_not(command: str, f: SessionFacts) -> str | None:
    ended = f.status not in _STARTING and f.status not in ("running", "collecting")
    if command in ("status", "logs"):
        return None
    if f.mode != "sandbox":
        return "it is a local-mode child (in tmux), not a sandbox run"
    if command == "kill":
        return f"it already ended ({f.status})" if ended else None
    if command == "attach":
        if ended:
            return None if f.checkpoint_pending else f"it already ended ({f.status})"
        if f.driver_alive and (f.status in _STARTING or not f.agent_started):
            return (f"it is still starting ({f.status}): its agent is not running yet, so "
                    "there is nothing to attach to yet")  # fmt: skip
        if f.driver_alive:
            return "another sandboxrun process still follows it (its driver is alive)"
        return None  # carries it on, or ends a start that was interrupted
    if command == "extend":
        if ended:
            return f"it already ended ({f.status})"
        if f.status in _STARTING:  # (`running` is set once the agent runs)
            return f"its agent has not started yet ({f.status}); the time limit starts with it"
        if f.status == "collecting" or f.stopping:
            return "it is already stopping and collecting its agent's work (no limit to extend)"
        return None
    if command == "download":
        if f.has_patches or (not ended and f.agent_started):
            return None
        return "no work has been collected from it" + (
            f" (it ended {f.status} before its agent's work was saved)"
            if ended
            else " yet: its agent has not started"
        )
    # apply
    if not ended:
        return f"it has not ended yet ({f.status}); its work is applied when it does"
    if not f.collected:
        return "there is no collected work of it to apply" + (
            "; `download` writes its last checkpoint, `apply --from` lands that"
            if f.has_patches
            else ""
        )
    return None
