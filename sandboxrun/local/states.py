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
