"""Where log lines go, for every entry point (the CLI, and the MCP server a child starts).

Core: no typer, rich or fastmcp.
"""

from __future__ import annotations

import logging
import os

from sandboxrun.errors import SandboxrunError


def configure_logging() -> None:
    """Log lines (ours, the e2b SDK's, httpx's) go to a file, never into the live view.

    With ``SANDBOXRUN_DEBUG`` set they go to stderr instead, at debug level.
    """
    if os.environ.get("SANDBOXRUN_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
        return
    from logging.handlers import RotatingFileHandler

    from sandboxrun.config import load_settings

    # A log line that cannot be written (a full disk) is dropped, not printed as a traceback.
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    logging.getLogger("sandboxrun").setLevel(logging.INFO)
    handler: logging.Handler
    try:
        home = load_settings(None).home
        home.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(home / "sandboxrun.log", maxBytes=5 << 20, backupCount=1)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s")
        )
    except (OSError, SandboxrunError):  # an unusable home: the command itself says so
        handler = logging.NullHandler()
    root.addHandler(handler)
