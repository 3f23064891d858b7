"""Keep credential values out of everything sandboxrun stores or prints.

The agent runs with credentials in its environment (``ANTHROPIC_API_KEY``,
``CLAUDE_CODE_OAUTH_TOKEN``...), and it is untrusted: it can print them, write them into a
file, or echo them in a tool result. :class:`Redactor` replaces every occurrence of those
values with ``[redacted:NAME]`` in text, bytes and JSON-like objects; it is applied where agent
output enters our storage (events, copied logs, saved artifacts) and where stored output is
printed (``logs``). Pure: the values come from the environment mapping it is built from.

Also here, because it is the same "make agent output safe to store" step: :func:`clamp`, which
bounds the size of every string in an event before it goes into the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["KNOWN_SECRET_VARS", "MIN_SECRET_LENGTH", "Redactor", "clamp", "secret_values"]

#: credentials sandboxrun itself hands to agents or uses
KNOWN_SECRET_VARS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "E2B_API_KEY",
    "E2B_ACCESS_TOKEN",
)
#: shorter values are left alone: redacting "1" or "true" everywhere would garble output
MIN_SECRET_LENGTH = 8
# names that hold credentials by convention: *_KEY, *_TOKEN, *_SECRET, *_PASSWORD ...
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)$", re.IGNORECASE
)
# ... but not these, which hold names, paths or switches rather than secrets
_NOT_SECRET = re.compile(r"(?:_FILE|_PATH|_DIR|_NAME|_ID|_URL|_HOST|_TYPE|_MODE)$", re.I)


def secret_values(env: Mapping[str, str]) -> dict[str, str]:
    """``{value: variable name}`` of the credentials in ``env`` worth redacting."""
    found: dict[str, str] = {}
    for name, value in env.items():
        known = name in KNOWN_SECRET_VARS
        if not known and (not _SECRET_NAME.search(name) or _NOT_SECRET.search(name)):
            continue
        value = value.strip()
        if len(value) >= MIN_SECRET_LENGTH and value.lower() not in ("true", "false"):
            found.setdefault(value, name)
    return found


class Redactor:
    """Replaces known secret values with ``[redacted:NAME]``; a no-op when there are none."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        # longest first, so a value that contains another is replaced whole
        ordered = sorted(self.values, key=len, reverse=True)
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._bytes = (
            re.compile(b"|".join(re.escape(v.encode("utf-8", "surrogateescape")) for v in ordered))
            if ordered
            else None
        )
        self._by_bytes = {v.encode("utf-8", "surrogateescape"): n for v, n in self.values.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        """A redactor for the credentials in ``env`` (usually ``os.environ``)."""
        return cls(secret_values(env))

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        """``text`` with every known value replaced."""
        if self._text is None or not text:
            return text
        return self._text.sub(lambda m: f"[redacted:{self.values[m.group(0)]}]", text)

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every known value (UTF-8 encoded) replaced."""
        if self._bytes is None or not data:
            return data
        return self._bytes.sub(lambda m: f"[redacted:{self._by_bytes[m.group(0)]}]".encode(), data)

    def obj(self, value: Any) -> Any:
        """A JSON-like value with every string in it (keys included) redacted."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.obj(k): self.obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.obj(v) for v in value]
        return value


def clamp(value: Any, limit: int, *, depth: int = 8, items: int = 200) -> Any:
    """A JSON-like value bounded for storage: long strings cut, deep or wide nesting elided.

    A cut string ends with ``…[N more chars]`` so a reader knows it is not whole; the full
    text stays in the agent's log artifact.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return value[:limit] + f"…[{len(value) - limit} more chars]"
    if depth <= 0 and isinstance(value, dict | list | tuple):
        return f"…[nested {type(value).__name__} elided]"
    if isinstance(value, dict):
        out = {
            str(k)[:200]: clamp(v, limit, depth=depth - 1, items=items)
            for k, v in list(value.items())[:items]
        }
        if len(value) > items:
            out["…"] = f"{len(value) - items} more keys"
        return out
    if isinstance(value, list | tuple):
        out_list = [clamp(v, limit, depth=depth - 1, items=items) for v in list(value)[:items]]
        if len(value) > items:
            out_list.append(f"…[{len(value) - items} more items]")
        return out_list
    return value
