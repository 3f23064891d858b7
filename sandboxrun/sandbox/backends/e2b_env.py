"""What of this machine's environment reaches an E2B sandbox, and what is masked in messages."""

from __future__ import annotations

import os

#: credentials the agent may use (any one of them is enough)
CREDENTIAL_VARS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN")
#: non-secret settings of Claude Code passed through from the user's environment when set
PASSTHROUGH_VARS = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
)
SECRET_VARS = ("E2B_API_KEY", *CREDENTIAL_VARS)


def scrub(text: str) -> str:
    """``text`` with the values of our secret environment variables masked."""
    for var in SECRET_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text
