"""Local sessions' states from hook facts: pure functions, standard library only.

The hook entry point (``sandboxrun/hook.py``) records an activity after each event; the tmux
monitor will combine these facts with a pane check when hooks fall silent.
"""

from __future__ import annotations

# Not `from typing import ...` at run time: the hook imports this on every call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: the events the hook understands (others are recorded as plain events)
EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "Stop",
    "StopFailure",
    "Notification",
    "SessionEnd",
)
_BUSY = ("UserPromptSubmit", "PreToolUse", "PostToolUse")


def activity_for(event: str, payload: dict[str, Any]) -> str | None:
    """The session's activity after ``event`` (None: unchanged). Pure."""
    if event in _BUSY:
        return "busy"
    if event == "Stop":
        return "idle"
    if event == "SessionStart":
        return "idle"
    if event == "SessionEnd":
        return "exited"
    if event == "StopFailure":
        kind = payload.get("error") or payload.get("error_type")
        return "usage_limited" if kind == "rate_limit" else "error"
    if event == "Notification":
        kind = payload.get("notification_type")
        if kind == "permission_prompt":
            return "needs_permission"
        if kind == "idle_prompt":
            return "idle"
    return None


# -- a child's state: hook facts + pane facts ------------------------------------------------

#: the states of a local child, as ``sandboxrun wait``/``status`` report them
STATES = ("starting", "busy", "idle", "needs_permission", "waiting_quota", "stale", "exited")
#: seconds a turn may sit "busy" with Claude Code's title saying done before we believe the title
DEFAULT_GRACE = 10.0
#: seconds without any hook and with an unchanged pane after which a busy child is "stale"
DEFAULT_STALE_AFTER = 300.0
#: Claude Code's window title: a Braille spinner while working, this mark when done
TITLE_DONE = "\u2733"  # ✳


def title_busy(title: str | None) -> bool | None:
    """What Claude Code's pane title says: True working, False done, None unknown."""
    if not title:
        return None
    first = title.lstrip()[:1]
    if first and 0x2800 <= ord(first) <= 0x28FF:  # Braille patterns: the spinner
        return True
    if first == TITLE_DONE:
        return False
    return None


class Facts:
    """What is known about one child at ``now`` (plain values: recorded sequences replay)."""

    __slots__ = (
        "activity",
        "activity_at",
        "last_heartbeat",
        "resets_at",
        "started_at",
        "pane_exists",
        "pane_dead",
        "pane_title",
        "pane_changed_at",
        "pane_asks",
        "pane_working",
        "now",
    )

    def __init__(
        self,
        *,
        now: float,
        activity: str | None = None,
        activity_at: float | None = None,
        last_heartbeat: float | None = None,
        resets_at: float | None = None,
        started_at: float | None = None,
        pane_exists: bool = True,
        pane_dead: bool = False,
        pane_title: str | None = None,
        pane_changed_at: float | None = None,
        pane_asks: bool | None = None,
        pane_working: bool | None = None,
    ) -> None:
        self.now = now
        self.activity = activity
        self.activity_at = activity_at
        self.last_heartbeat = last_heartbeat
        self.resets_at = resets_at
        self.started_at = started_at
        self.pane_exists = pane_exists
        self.pane_dead = pane_dead
        self.pane_title = pane_title
        self.pane_changed_at = pane_changed_at
        #: the pane shows a permission dialog (None: not looked)
        self.pane_asks = pane_asks
        #: the screen's status line says a turn is under way (None: not looked / no composer)
        self.pane_working = pane_working


class State:
    """A derived state, why, and the reset time of a usage limit."""

    __slots__ = ("name", "reason", "resets_at")

    def __init__(self, name: str, reason: str, resets_at: float | None = None) -> None:
        self.name = name
        self.reason = reason
        self.resets_at = resets_at

    def __repr__(self) -> str:
        return f"State({self.name!r}, {self.reason!r}, resets_at={self.resets_at!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.name, "reason": self.reason, "resets_at": self.resets_at}


def derive_state(
    facts: Facts, *, grace: float = DEFAULT_GRACE, stale_after: float = DEFAULT_STALE_AFTER
) -> State:
    """The child's state from hook facts and pane facts. Pure.

    Hooks are believed first; the pane corrects them where hooks are known to fall silent:
    a gone/dead pane is ``exited`` whatever the hooks said last; a permission dialog on screen
    is ``needs_permission`` before its (late) Notification hook, and one dismissed without a
    hook is no longer; a turn still ``busy`` after
    ``grace`` seconds while Claude Code's title says done (a turn that ended without a Stop
    hook) is ``idle`` (its screen's status line, when looked at, outranks the title); a
    ``busy``/``starting`` child with no hook and an unchanged pane for
    ``stale_after`` seconds is ``stale``.
    """
    young = facts.started_at is not None and facts.now - facts.started_at < grace
    if not facts.pane_exists and facts.activity is None and young:
        return State("starting", "the tmux session is being created")
    if not facts.pane_exists or facts.pane_dead:
        return State("exited", "the tmux pane is gone" if not facts.pane_exists else "pane dead")
    activity = facts.activity
    if activity == "exited":
        return State("exited", "SessionEnd hook")
    if activity == "usage_limited":
        return State("waiting_quota", "StopFailure rate_limit", facts.resets_at)
    since_hook = facts.now - facts.activity_at if facts.activity_at is not None else None
    if activity == "needs_permission":
        if (
            facts.pane_asks is False
            and title_busy(facts.pane_title) is False
            and since_hook is not None
            and since_hook > grace
        ):
            # The dialog is gone without a hook saying so (answered with Escape: no Stop).
            return State("idle", "the permission dialog is gone and the title says done")
        return State("needs_permission", "permission_prompt notification")
    if activity in ("busy", None) and facts.pane_asks:
        # The Notification hook comes seconds after the dialog: the pane says it first.
        return State("needs_permission", "the pane shows a permission dialog")
    if activity in ("idle", "error"):
        return State("idle", "Stop hook" if activity == "idle" else "turn ended with an error")
    last_hook = max(
        (t for t in (facts.last_heartbeat, facts.activity_at) if t is not None), default=None
    )
    quiet_since = max(
        (t for t in (last_hook, facts.pane_changed_at, facts.started_at) if t is not None),
        default=None,
    )
    if activity is None:
        if quiet_since is not None and facts.now - quiet_since > stale_after:
            return State("stale", f"no hook for {stale_after:.0f}s after start")
        return State("starting", "no hook yet")
    # busy (or an activity this version does not know): check the pane's word for it. The
    # screen's status line ("✽ Ideating… (12s · ↓ 20 tokens)") is believed before the title:
    # Claude Code 2.1.330 in tmux leaves its title at "✳ Claude Code" even mid-turn.
    since = facts.activity_at if facts.activity_at is not None else last_hook
    working = facts.pane_working
    if working is None:
        working = title_busy(facts.pane_title)
    if working is False and since is not None and facts.now - since > grace:
        return State("idle", f"the screen says done for over {grace:.0f}s without a Stop hook")
    if quiet_since is not None and facts.now - quiet_since > stale_after:
        return State("stale", f"no hook and an unchanged pane for {stale_after:.0f}s")
    return State("busy", "working" if working else "UserPromptSubmit/tool hook")


def unwrap_pastes(text: str) -> str:
    """The prompt as pasted: Claude Code 2.1.330 hands a multi-line paste to hooks and the
    model as ``<pasted_content id="X">\nTEXT\n</pasted_content id="X">``; this is TEXT."""
    import re

    return re.sub(
        r'\s*<pasted_content id="([^"]*)">\n(.*?)\n</pasted_content id="\1">\s*',
        lambda m: m.group(2),
        text,
        flags=re.DOTALL,
    )


def prompt_hash(text: str) -> str:
    """The hash by which ``send`` recognises its text in a UserPromptSubmit hook.

    Paste wrappers are removed, line ends unified and surrounding whitespace dropped (Claude
    Code trims the composer).
    """
    import hashlib  # only on UserPromptSubmit and in send: not on every hook call

    if "<pasted_content" in text:
        text = unwrap_pastes(text)
    return hashlib.sha256(text.replace("\r\n", "\n").strip().encode("utf-8")).hexdigest()
