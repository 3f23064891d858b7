"""Reading a file whose text goes to an agent or a child: a prompt, a plan, a message.

Standard library only (and :mod:`sandboxrun.errors`): the pure TASKS-file parser, ``run`` and
``send`` all read through here, and none of them should pay for another's imports.
"""

from __future__ import annotations

from pathlib import Path

from sandboxrun.errors import UsageError


def read_text_file(path: Path, what: str) -> str:
    """The text of a plan, prompt or message file; a binary one (NUL bytes: an image, an
    archive, a file saved as UTF-16) is refused rather than sent to an agent as a prompt.
    A stray byte that is not UTF-8 in a text file is kept as U+FFFD."""
    data = path.read_bytes()
    if b"\0" in data:
        raise UsageError(
            f"{what} {path} is not a text file (it holds NUL bytes)",
            "Give a plain-text or markdown file (saved as UTF-8).",
        )
    return data.decode("utf-8", errors="replace")
