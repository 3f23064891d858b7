"""``sandboxrun close``: end a child gracefully; its worktree and branch always stay.

Claude is asked to exit (``/exit``) and given time to run its SessionEnd hook; only then, or
when it does not answer and ``force`` was given, is the tmux session ended. A busy child (or one
waiting for a permission answer) is refused without ``force``: its turn would be lost. Presence
is deregistered and SESSION_END recorded here when the hook could not do it (a killed child).
Removing the worktree too is explicit (``--remove-worktree``) and refused when it has
uncommitted changes; the branch always stays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sandboxrun import gitops
from sandboxrun.config import Settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.local.observe import state_of
from sandboxrun.local.worktrees import record_end, teardown
from sandboxrun.store import Session, SessionStore, Status
from sandboxrun.tmux import Tmux


class CloseRefusedError(SandboxrunError):
    """Closing now would lose work."""


#: how Claude Code's own screens (/help, /config, /model ...) say Esc leaves them: /exit typed
#: while one shows would go into it, and the child would never exit
_DIALOG_TEXTS = ("esc to close", "esc to cancel", "esc to exit", "esc to go back")


def shows_dialog(screen: str) -> bool:
    """Whether the bottom of ``screen`` is one of Claude Code's Esc-to-leave screens (pure)."""
    tail = [ln.strip().lower() for ln in screen.splitlines() if ln.strip()][-4:]
    return any(text in ln for ln in tail for text in _DIALOG_TEXTS)


def _dismiss_dialog(tmux: Tmux, name: str, timeout: float = 5.0) -> None:
    """Leave a screen such as /help's with Esc (one key per look, until it is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pane, screen = tmux.snapshot(name)
        if pane is None or pane.dead or not shows_dialog(screen):
            return
        tmux.send_keys(name, "Escape")
        time.sleep(0.3)


def close(
    store: SessionStore,
    tmux: Tmux,
    session: Session,
    *,
    force: bool = False,
    wait: float = 20.0,
    remove_worktree: Settings | None = None,
) -> dict[str, Any]:
    """Close one child; returns what was done. Raises CloseRefusedError when it would lose work.

    ``remove_worktree`` (the settings to do it with) also removes the child's worktree, but
    only when it has no uncommitted changes (checked before anything is closed); its branch,
    and so every commit, stays.
    """
    name = session.tmux_session or ""
    removable = remove_worktree is not None and session.role and session.worktree
    if remove_worktree is not None and not removable:
        raise CloseRefusedError(
            f"{session.name} has no worktree of its own to remove (--no-worktree?)"
        )
    if (
        removable
        and Path(session.worktree or "").is_dir()
        and not gitops.is_clean(Path(session.worktree or ""))
    ):
        raise CloseRefusedError(
            f"{session.name}'s worktree {session.worktree} has uncommitted changes",
            "Commit them (or close without --remove-worktree: the worktree stays as it is).",
        )
    state = state_of(tmux, session)
    how = "already exited"
    if state.name != "exited":
        if state.name in ("busy", "starting", "needs_permission") and not force:
            raise CloseRefusedError(
                f"{session.name} is {state.name}: closing now would lose its current turn",
                f"Wait for it (`sandboxrun wait {session.name}`), or pass --force.",
            )
        how = "killed"
        if state.name in ("idle", "waiting_quota", "stale"):
            _dismiss_dialog(tmux, name)
            tmux.paste(name, "/exit")
            time.sleep(0.2)
            tmux.send_keys(name, "Enter")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                pane = tmux.pane(name)
                if pane is None or pane.dead:
                    how = "exited on /exit"
                    break
                time.sleep(0.1)
            if how == "killed" and not force:
                raise CloseRefusedError(
                    f"{session.name} did not exit within {wait:.0f}s of /exit",
                    f"Look at it (`sandboxrun open {session.name}`), or pass --force.",
                )
    tmux.kill_session(name)
    current = store.get(session.id)
    store.set_status(
        session.id,
        Status.COMPLETED,
        only_if_active=True,
        activity="exited",
        activity_at=time.time(),
    )
    if current.activity != "exited" and current.role and current.repo:
        # The SessionEnd hook did not run (killed): do its bookkeeping here.
        record_end(store.conn, current.repo, current.role, current.worktree or "", reason="close")
    removed = False
    if removable and remove_worktree is not None and current.repo and current.role:
        teardown(Path(current.repo), current.role, remove_worktree)
        removed = True
    return {
        "name": session.name,
        "closed": True,
        "how": how,
        "worktree": session.worktree,
        "worktree_removed": removed,
    }
