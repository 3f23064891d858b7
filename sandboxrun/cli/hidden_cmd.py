"""Internal commands that sandboxrun starts itself (not for people to type)."""

from __future__ import annotations

from pathlib import Path

import typer

from sandboxrun.cli.common import open_store
from sandboxrun.config import load_settings
from sandboxrun.store import SUCCESS, SessionStore


def drive(session_id: str) -> None:
    """Drive a detached session to its end (started by `run --detach`)."""
    from sandboxrun.sandbox.runner import RunDriver

    home_store = open_store(load_settings())
    session = home_store.get(session_id)
    # The repo's own config (timeouts, compression...) applies as it did for `run`.
    settings = load_settings(Path(session.repo) if session.repo else None).with_overrides(
        template=session.options.get("template"),
        compression=session.options.get("compression"),
    )
    store = home_store if settings.db_path == home_store.path else SessionStore(settings.db_path)
    final = RunDriver(settings, store, session).execute()
    if final.status not in SUCCESS:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the internal commands to ``app`` (hidden from --help)."""
    app.command("_drive", hidden=True)(drive)
