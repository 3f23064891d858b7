"""What the dashboard (terminal and browser) can do to a session: the same core functions the
CLI calls, behind one small surface so both views act alike.

No UI here. Each function takes the session as the store has it now, refuses (a
``SandboxrunError`` with a hint) what does not apply to it (sending to a sandbox run, extending
a local child, merging an unfinished branch), and returns a short text saying what happened.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxrun.config import Settings, format_duration
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.store import Session, SessionStore

if TYPE_CHECKING:
    from sandboxrun.tmux import Tmux

#: what a permission answer presses in Claude Code's dialog: Enter takes the highlighted
#: "1. Yes"; Escape is "No, and tell Claude what to do differently"
APPROVE_KEY, REFUSE_KEY = "Enter", "Escape"


def _tmux(session: Session) -> Tmux:
    """The tmux server the child was started on (recorded at spawn; else the environment's)."""
    from sandboxrun.tmux import Tmux

    socket = session.options.get("socket") if isinstance(session.options, dict) else None
    return Tmux(socket_path=socket) if socket else Tmux()


def _local_child(session: Session, what: str) -> str:
    if session.mode != "local" or not session.tmux_session:
        raise UsageError(
            f"{session.name} is not a tmux child: {what} works on children started by "
            "`sandboxrun spawn`",
            "Select a local session (mode local, with a tmux pane).",
        )
    return session.tmux_session


@dataclass(frozen=True)
class OpenPlan:
    """How ``o`` shows a child's pane, and the command a person can type for it anywhere."""

    #: "switch": this tmux client switches to the child (the dashboard stays in its window);
    #: "window": a new window of the person's tmux attaches to sandboxrun's other tmux server;
    #: "attach": no tmux here, so the dashboard hands its terminal to ``tmux attach`` until
    #: the person detaches
    how: str
    argv: list[str]
    #: the exact ``tmux ... attach-session`` for any terminal (shell-quoted)
    attach: str
    name: str


def open_plan(
    tmux_session: str, socket_args: list[str], server_socket: str, tmux_env: str | None
) -> OpenPlan:
    """Decide how to show ``tmux_session`` (pure).

    ``socket_args``/``server_socket``: the children's tmux server (``-S PATH`` and its
    socket's path); ``tmux_env``: ``$TMUX`` of the dashboard (None outside tmux). Inside a
    client of the same server, ``switch-client``; inside another tmux server (sandboxrun's
    children on their own socket), a new window of that tmux running the attach with ``TMUX``
    unset (tmux refuses to nest otherwise); outside tmux, the attach itself.
    """
    target = f"={tmux_session}"
    attach = ["tmux", *socket_args, "attach-session", "-t", target]
    told = shlex.join(attach)
    if not tmux_env:
        return OpenPlan("attach", attach, told, tmux_session)
    ours = tmux_env.split(",", 1)[0]
    if os.path.realpath(ours) == os.path.realpath(server_socket):
        argv = ["tmux", *socket_args, "switch-client", "-t", target]
        return OpenPlan("switch", argv, told, tmux_session)
    window = ["tmux", "-S", ours, "new-window", "-n", tmux_session[:30], "--",
              "env", "-u", "TMUX", *attach]  # fmt: skip
    return OpenPlan("window", window, told, tmux_session)


def plan_open(session: Session) -> OpenPlan:
    """:func:`open_plan` for a child, its tmux session checked to exist first."""
    name = _local_child(session, "open")
    tmux = _tmux(session)
    if not tmux.has_session(name):
        raise SandboxrunError(
            f"{session.name}: its tmux session {name} is gone (the child has exited)",
            f"See `sandboxrun status {session.name}`; read what it did with `r`.",
        )
    socket = tmux.cmd("display-message", "-p", "#{socket_path}")
    return open_plan(name, tmux.socket_args(), socket[0] if socket else "", os.environ.get("TMUX"))


def open_pane(plan: OpenPlan) -> str:
    """Carry out a "switch" or "window" plan (they return at once); what it did, in words."""
    from sandboxrun import process

    res = process.run(plan.argv, check=False, what="tmux")
    if res.returncode != 0:
        raise SandboxrunError(
            f"tmux could not show {plan.name}: {res.stderr.strip() or res.returncode}",
            f"Attach from any terminal: {plan.attach}",
        )
    if plan.how == "switch":
        return (
            f"switched this tmux client to {plan.name}; back here: prefix + L "
            "(`tmux switch-client -l`)"
        )
    return (
        f"opened {plan.name} in a new window of your tmux (it attaches to sandboxrun's tmux "
        f"server: {plan.attach}); close that window to leave the child running"
    )


def send(settings: Settings, store: SessionStore, session: Session, text: str) -> str:
    """Give a child a message (``sandboxrun send``): delivered / queued / failed."""
    from sandboxrun.local import send as send_mod

    _local_child(session, "send")
    result = send_mod.send(store, _tmux(session), session, text, home=settings.home)
    if result.outcome == send_mod.FAILED:
        raise SandboxrunError(f"{session.name}: not delivered: {result.detail}")
    return f"{session.name}: {result.outcome} ({result.detail})"


def conversation(store: SessionStore, session: Session, last: int = 50) -> list[dict[str, Any]]:
    """The child's conversation (``sandboxrun read``): the last ``last`` messages."""
    from sandboxrun.local import transcript

    if session.mode != "local":
        raise UsageError(
            f"{session.name} is a sandbox run: its conversation is its log",
            "Follow its log instead (`sandboxrun logs NAME -f`).",
        )
    entries = transcript.conversation(transcript.transcript_paths(store, session))
    return entries[-last:]


def kill(settings: Settings, store: SessionStore, session: Session) -> str:
    """Stop a session: a sandbox run is killed and its work collected (``sandboxrun kill``); a
    local child is closed, forcibly (``sandboxrun close --force``), its worktree kept."""
    if session.mode == "local":
        from sandboxrun.local import close

        _local_child(session, "kill")
        done = close.close(store, _tmux(session), session, force=True)
        return f"{session.name}: closed ({done.get('how')}); worktree kept"
    from sandboxrun.sandbox.sessions import kill_session

    s = kill_session(settings, store, session)
    return f"{s.name}: {s.status}"


def extend(settings: Settings, store: SessionStore, session: Session, seconds: float) -> str:
    """Push a sandbox run's time limit back (``sandboxrun extend``)."""
    from sandboxrun.sandbox.sessions import extend_session

    if session.mode != "sandbox":
        raise UsageError(f"{session.name} is a local child: it has no time limit to extend")
    s = extend_session(settings, store, session, seconds)
    left = format_duration(max(0.0, (s.deadline or time.time()) - time.time()))
    until = time.strftime("%H:%M:%S", time.localtime(s.deadline)) if s.deadline else "?"
    return f"{s.name}: limit extended by {format_duration(seconds)}, now {until} ({left} left)"


def merge(settings: Settings, session: Session) -> str:
    """Merge a finished session's branch: a local child's into the default branch
    (``sandboxrun worktree merge ROLE``); a sandbox run's into the branch it started from,
    without a checkout (refused when that branch is checked out: merge it there with git)."""
    from sandboxrun.store import ACTIVE

    if not session.repo or not session.branch:
        raise UsageError(f"{session.name} has no branch to merge")
    repo = Path(session.repo)
    if session.mode == "local":
        from sandboxrun.local import worktrees

        if not session.role:
            raise UsageError(f"{session.name} has no role (worktree) to merge")
        r = worktrees.merge(repo, session.role, settings)
        return f"{r.branch} into {r.into}: {r.how} ({r.commit[:10]})"
    from sandboxrun.dashboard.model import MERGEABLE
    from sandboxrun.fanout.merge import integrate

    if session.status in ACTIVE or session.status not in MERGEABLE:
        raise UsageError(
            f"{session.name} is {session.status}: only a finished run's branch is merged",
            "Wait for it to complete (or `sandboxrun apply` what a check kept back).",
        )
    into = session.base_ref or "main"
    result = integrate(repo, into, [session.branch], into, f"sandboxrun {session.name}")
    if result.conflict_with:
        raise SandboxrunError(
            f"{session.branch} conflicts with {into} in: {', '.join(result.conflicts)}",
            "Nothing changed; merge it by hand to resolve the conflicts.",
        )
    return f"{session.branch} into {into}: {result.commit[:10]}"


def answer_permission(store: SessionStore, session: Session, *, approve: bool) -> str:
    """Answer the permission dialog a child waits on: Enter (yes) or Escape (no).

    Only when the pane shows the dialog now (``local/observe``): a key pressed into a composer
    or a running turn would do something else.
    """
    from sandboxrun.local.observe import PERMISSION_TEXT, observe

    name = _local_child(session, "answering a permission")
    tmux = _tmux(session)
    _facts, text = observe(tmux, store.get(session.id))
    if PERMISSION_TEXT not in text:
        raise SandboxrunError(
            f"{session.name} shows no permission dialog now",
            "It may have been answered already; look with `sandboxrun open NAME`.",
        )
    tmux.send_keys(name, APPROVE_KEY if approve else REFUSE_KEY)
    return f"{session.name}: permission {'approved' if approve else 'refused'}"
