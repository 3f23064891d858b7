"""Sandbox backends: where the agent runs (a local directory, or an E2B cloud sandbox)."""

from __future__ import annotations

from sandboxrun.config import Settings
from sandboxrun.errors import UsageError
from sandboxrun.sandbox.backends.base import Backend, ExecResult, Sandbox

BACKEND_NAMES = ("local", "e2b")


def get_backend(name: str, settings: Settings, *, no_isolation: bool = False) -> Backend:
    """Return the backend called ``name`` configured from ``settings``.

    ``no_isolation`` (``run --no-isolation``) lets the local backend run the agent unconfined;
    sandboxes already made keep the isolation they were made with.
    """
    if name == "local":
        from sandboxrun.sandbox.backends.local import LocalBackend

        return LocalBackend(settings, no_isolation=no_isolation)
    if name == "e2b":
        from sandboxrun.sandbox.backends.e2b import E2BBackend

        return E2BBackend(settings)
    raise UsageError(f"unknown backend {name!r}", f"Use one of: {', '.join(BACKEND_NAMES)}.")


__all__ = ["BACKEND_NAMES", "Backend", "ExecResult", "Sandbox", "get_backend"]
