"""Watching local children: their states, exits, stale turns, and carrying on after usage limits.

:func:`observe` gathers one child's facts (the row the hooks maintain, and its tmux pane) and
:func:`sandboxrun.local.states.derive_state` turns them into a state. :class:`Monitor` does
that for every child every few seconds (``sandboxrun monitor``): it records state changes,
closes the books on children whose ``claude`` died without a SessionEnd hook, flags stale ones,
and at a usage limit's reset (plus a margin) sends ``.sandboxrun/continue.txt`` (default
"continue") unless Claude Code's own auto-continue banner is showing (pressing anything then,
Escape above all, would cancel it). Everything it needs is in the database and tmux, so a
restarted monitor carries on where the last one stopped.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import signal
import threading
import time
from pathlib import Path

from sandboxrun.agent import parse_limit_message
from sandboxrun.config import Settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.local import adopt as adopt_mod
from sandboxrun.local import send as send_mod
from sandboxrun.local.identity import find_checkout
from sandboxrun.local.observe import PaneMemory, observe
from sandboxrun.local.spawn import prefix_for
from sandboxrun.local.states import DEFAULT_GRACE, DEFAULT_STALE_AFTER, State, derive_state
from sandboxrun.local.transcript import rate_limit_reset
from sandboxrun.store import Session, SessionStore, Status
from sandboxrun.tmux import Tmux

CONTINUE_FILE = Path(".sandboxrun") / "continue.txt"
DEFAULT_CONTINUE = "continue"
#: Claude Code's own auto-continue banners (2.1.330: "Continuing automatically {when} · Esc to
#: cancel", "Usage limit reached · set to continue automatically {when}", "... again · set to
#: continue automatically", "Usage limit reset · Continuing automatically"; older versions:
#: "continuing automatically at 3:45pm"); never press keys while one shows
_ARMED = re.compile(
    r"continuing automatically|set to continue automatically|continues automatically when",
    re.IGNORECASE,
)
#: ... and the lines that say it will not happen after all (then we continue the child)
_DISARMED = re.compile(r"automatic continue (cancelled|canceled|stopped)", re.IGNORECASE)
_PROMPT_MARK = "\u276f"  # ❯ : a prompt in the conversation, and the composer
#: resets this close are one limit (the screen gives the minute, the transcript the second)
_SAME_RESET = 90.0
#: continue attempts per usage-limit reset before the monitor escalates instead
MAX_CONTINUE_ATTEMPTS = 3
_LIMIT_TEXTS = ("You've hit your", "usage limit reached", "limit reached ∙ resets")

log = logging.getLogger("sandboxrun.monitor")


def children(store: SessionStore, repo: str | None = None) -> list[Session]:
    """The tmux children the database knows (newest last), ended ones included."""
    return [s for s in store.list(repo=repo) if s.mode == "local" and s.backend == "tmux"]


def limit_from_pane(text: str, now: float) -> tuple[bool, float | None]:
    """Whether the pane shows a usage limit as its latest word, and its reset time when the
    text gives one. Pure.

    A limit line above the newest prompt echoed in the conversation (``❯ continue``: the
    child was continued since) is history, not a limit: it stays on screen for a while.
    """
    lines = text.splitlines()
    prompts = [i for i, line in enumerate(lines) if line.lstrip().startswith(_PROMPT_MARK)]
    # the last ❯ line is the composer; the one before it, the newest prompt sent
    newest_prompt = prompts[-2] if len(prompts) >= 2 else -1
    for i in range(len(lines) - 1, newest_prompt, -1):
        line = lines[i]
        if any(t in line for t in _LIMIT_TEXTS) and "% of your" not in line:
            reset = parse_limit_message(line, now)
            # "resets 3:45pm" is a minute: its end, or a continue could come up to 59 s early
            # (and meet the limit again)
            if reset is not None and "|" not in line:
                reset += 60
            return True, reset
    return False, None


def auto_continue_armed(text: str) -> bool:
    """Whether the screen shows Claude Code's own auto-continue as still to come (pure).

    The lowest line that speaks of it decides: a later "Automatic continue cancelled" (Esc, a
    relaunch, a login change) means nobody will continue the child but us.
    """
    for line in reversed(text.splitlines()):
        if _DISARMED.search(line):
            return False
        if _ARMED.search(line):
            return True
    return False


def continue_text(repo: str | None) -> str:
    """What to send at a usage limit's reset: ``.sandboxrun/continue.txt`` or "continue"."""
    if repo:
        path = Path(repo) / CONTINUE_FILE
        if path.is_file() and path.read_text().strip():
            return path.read_text()
    return DEFAULT_CONTINUE


def setup_logging(home: Path) -> None:
    """Structured lines in ``$SANDBOXRUN_HOME/logs/monitor.log``, rotated at 1 MB (5 kept)."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        logs / "monitor.log", maxBytes=1_000_000, backupCount=5
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


class Monitor:
    """One pass (:meth:`tick`) over every child; :meth:`run` repeats it."""

    def __init__(
        self,
        store: SessionStore,
        tmux: Tmux,
        settings: Settings,
        *,
        repo: str | None = None,
        grace: float = DEFAULT_GRACE,
        stale_after: float | None = None,
        margin: float = 2.0,
        merge_interval: float = 30.0,
    ) -> None:
        self.store = store
        self.tmux = tmux
        self.settings = settings
        self.repo = repo
        self.grace = grace
        self.stale_after = stale_after if stale_after is not None else DEFAULT_STALE_AFTER
        self.margin = margin
        self.memory = PaneMemory()
        #: seconds between merge checks of the children's branches (git calls: not every tick)
        self.merge_interval = merge_interval
        self._merges_checked: float | None = None

    def _last_state(self, session_id: str) -> str | None:
        row = self.store.conn.execute(
            "SELECT payload FROM events WHERE session_id = ? AND kind = 'state' "
            "ORDER BY id DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        return str(json.loads(row[0]).get("state"))

    def sync(self) -> list[str]:
        """Take over ``{prefix}_child_*`` sessions whose rows the database lost (names).

        Only children whose session id has no row at all (a lost or replaced database): a row
        that just ended while its claude exits must not be revived; ``sandboxrun adopt``
        takes those over by hand.
        """
        repos = {self.repo} if self.repo else {s.repo for s in children(self.store) if s.repo}
        taken = []
        for repo in sorted(r for r in repos if r):
            prefix = prefix_for(Path(repo), self.settings)
            for orphan in adopt_mod.discover(self.store, self.tmux, prefix):
                known = (
                    orphan.session_id
                    and self.store.conn.execute(
                        "SELECT 1 FROM sessions WHERE id = ?", (orphan.session_id,)
                    ).fetchone()
                )
                checkout = find_checkout(orphan.worktree) if orphan.worktree else None
                inside = checkout is not None and str(checkout.main) == repo
                if orphan.session_id and not known and inside:
                    adopt_mod.adopt(self.store, self.tmux, orphan)
                    log.info("child=%s adopted (its row was lost)", orphan.name)
                    taken.append(orphan.name)
        return taken

    def tick(self, now: float | None = None) -> dict[str, State]:
        """Observe every live child once; record changes and act on them."""
        now = time.time() if now is None else now
        out: dict[str, State] = {}
        try:
            self.sync()
        except Exception:  # discovery must not stop the pass over the known children
            log.exception("discovering children failed")
        for session in children(self.store, self.repo):
            if session.is_terminal:
                continue
            facts, text = observe(self.tmux, session, now=now, memory=self.memory)
            state = derive_state(facts, grace=self.grace, stale_after=self.stale_after)
            if state.name not in ("exited", "waiting_quota"):
                limited, reset = limit_from_pane(text, now)
                if limited:  # the pane says so though no StopFailure hook did
                    state = State("waiting_quota", "the pane shows a usage limit", reset)
            if state.name == "waiting_quota":
                state = self._quota(session, state, text, now)
            previous = self._last_state(session.id)
            if state.name != previous:
                self.store.add_event(session.id, "state", {**state.to_dict(), "previous": previous})
                log.info("child=%s state=%s reason=%r", session.name, state.name, state.reason)
                if state.name == "stale":
                    self.store.add_event(
                        session.id, "escalation", {"reason": state.reason, "at": now}
                    )
            if state.name == "exited":
                self._exited(session, facts.pane_exists)
            out[session.name] = state
        self._merges(now)
        return out

    def _merges(self, now: float) -> None:
        """Every ``merge_interval`` seconds: detect merges of children's branches into their
        base and send MERGED messages (``coord/merges.py``); a git failure only logs."""
        if self._merges_checked is not None and now - self._merges_checked < self.merge_interval:
            return
        self._merges_checked = now
        from sandboxrun.coord import merges

        try:
            found = merges.monitor_pass(self.store.conn, self.repo, pm_role=self.settings.pm_role)
        except SandboxrunError as exc:
            log.warning("merge check failed: %s", exc.message)
            return
        for event in found:
            log.info("merged: %s into %s (%s)", event.branch, event.base, event.repo)

    def _exited(self, session: Session, pane_exists: bool) -> None:
        """claude is gone: end the row (the hook's SessionEnd may never have run)."""
        fields: dict[str, object] = {"activity": "exited", "activity_at": time.time()}
        if session.activity != "exited":
            fields["error"] = "claude exited without a SessionEnd hook (killed or crashed)"
        self.store.set_status(session.id, Status.COMPLETED, only_if_active=True, **fields)
        if session.role and session.repo and session.activity != "exited":
            from sandboxrun.local.worktrees import record_end

            record_end(
                self.store.conn,
                session.repo,
                session.role,
                session.worktree or "",
                reason="claude exited without SessionEnd",
            )
        if pane_exists and session.tmux_session:
            self.tmux.kill_session(session.tmux_session)  # remain-on-exit kept it for reading

    def _quota(self, session: Session, state: State, text: str, now: float) -> State:
        """At a usage limit: learn the reset time, and continue the child once it has passed."""
        reset = rate_limit_reset(Path(session.transcript_path) if session.transcript_path else None)
        reset = reset or state.resets_at
        if reset is None:
            _, reset = limit_from_pane(text, now)
        if reset is not None and reset != session.resets_at:
            self.store.update(session.id, resets_at=reset)
        state = State("waiting_quota", state.reason, reset)
        if reset is None or now < reset + self.margin:
            return state
        if auto_continue_armed(text):
            log.info("child=%s Claude Code continues by itself; not touching it", session.name)
            return state
        # Under a per-child lock and decided from the database: two monitors (one per repo and
        # one for all, or an old one still finishing) continue one reset once between them.
        with send_mod.child_lock(self.settings.home, session.id, "continue"):
            earlier = self._continues(session.id, reset)
            if any(c.get("outcome") != send_mod.FAILED for c in earlier):
                return State("busy", "continued after the usage limit reset")
            if len(earlier) >= MAX_CONTINUE_ATTEMPTS:
                return state  # escalated below, once: a human has to look
            message = continue_text(session.repo)
            result = send_mod.send(
                self.store, self.tmux, self.store.get(session.id), message, home=self.settings.home
            )
            self.store.add_event(
                session.id, "quota_continue", {**result.to_dict(), "resets_at": reset}
            )
        log.info("child=%s continued after usage limit: %s", session.name, result.outcome)
        if result.outcome != send_mod.FAILED:
            return State("busy", "continued after the usage limit reset")
        if len(earlier) + 1 >= MAX_CONTINUE_ATTEMPTS:
            self.store.add_event(
                session.id,
                "escalation",
                {"reason": f"could not continue after the usage limit: {result.detail}"},
            )
        return state

    def _continues(self, session_id: str, reset: float) -> list[dict[str, object]]:
        """The continue attempts already made for the limit that resets at ``reset``."""
        # A StopFailure hook starts a limit episode: a continue after the newest one belongs to
        # it (a continue sent too early meets a fresh limit: that one is continued again).
        # Without such a hook (a limit seen on the screen only), the reset time tells.
        hooks = self.store.conn.execute(
            "SELECT id, payload FROM events WHERE session_id = ? AND kind = 'hook' "
            "AND payload LIKE '%StopFailure%' ORDER BY id DESC",
            (session_id,),
        ).fetchall()
        episode = next((i for i, p in hooks if json.loads(p).get("event") == "StopFailure"), None)
        rows = self.store.conn.execute(
            "SELECT id, payload FROM events WHERE session_id = ? AND kind = 'quota_continue'",
            (session_id,),
        ).fetchall()
        out = []
        for event_id, payload in rows:
            data = json.loads(payload)
            if episode is not None:
                if event_id > episode:
                    out.append(data)
            elif abs(float(data.get("resets_at") or 0) - reset) < _SAME_RESET:
                out.append(data)
        return out

    def run(self, interval: float = 5.0, *, once: bool = False) -> None:
        """Tick every ``interval`` seconds until interrupted (or once).

        SIGTERM (``monitor --stop``) ends it like Ctrl-C: through ``finally`` blocks, so the
        caller's pidfile is emptied and the log says so.
        """
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        log.info("monitor started pid=%s repo=%s interval=%ss", os.getpid(), self.repo, interval)
        try:
            self._loop(interval, once)
        finally:
            log.info("monitor stopped pid=%s", os.getpid())

    def _loop(self, interval: float, once: bool) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # one bad pass must not end the monitor
                log.exception("monitor pass failed")
            if once:
                return
            time.sleep(interval)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
