"""Where sandboxrun keeps its state (``$SANDBOXRUN_HOME``): one rule for every process.

Standard library only: the hook (:mod:`sandboxrun.hook`, on every tool call of every agent)
reads it too, and must agree with the CLI, the detached driver and the MCP server on one
directory, or its events land in a database nobody reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_HOME = Path.home() / ".local" / "share" / "sandboxrun"


def absolute_home(value: str, base: str | os.PathLike[str] | None = None) -> Path:
    """``SANDBOXRUN_HOME`` as an absolute path: ``~`` expanded; a relative one taken from
    ``base`` (default: the current directory), so that a run, its detached driver, its agent
    and the agent's hooks agree on one directory."""
    path = Path(value).expanduser()
    return Path(os.path.abspath(Path(base) / path if base is not None else path))


def hook_home(env: Mapping[str, str]) -> Path:
    """The home a Claude Code hook uses: ``$SANDBOXRUN_HOME``, else the default.

    A relative value is taken from ``$CLAUDE_PROJECT_DIR`` (where Claude Code was started, the
    current directory of whoever set the variable), not from the hook's own working directory:
    that is the agent's, and moves whenever the agent changes directory. Without it, from the
    current directory, as :func:`absolute_home`. sandboxrun itself always hands its agents an
    absolute value (config load makes it so); a relative one comes from a person's own shell.
    """
    home = env.get("SANDBOXRUN_HOME")
    if not home:
        return DEFAULT_HOME
    return absolute_home(home, env.get("CLAUDE_PROJECT_DIR") or None)
