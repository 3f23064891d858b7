"""Sandboxes E2B started for a session that never learnt of them, found and killed.

A create whose answer never came (hung, dropped, given up on for good) may still be carried
out by E2B, then or minutes later: the sandbox would live out its provisioning margin unknown
to the session. Every create carries ``metadata={"sandboxrun_session": id}``, so after giving
up, and again at ``sandboxrun cleanup``, the sandboxes with that metadata are listed
(``Sandbox.list`` with a ``SandboxQuery``) and killed: best effort, within a bound, since
this runs on a path that is already failing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from e2b import Sandbox as SDKSandbox
from e2b import SandboxQuery

from sandboxrun.errors import SandboxrunError

T = TypeVar("T")
log = logging.getLogger(__name__)

#: at most this long spent looking for and killing them (a hung E2B must not hold up the
#: failure being reported, nor `cleanup`)
SWEEP_BUDGET = 20.0
#: metadata key every create carries
SESSION_KEY = "sandboxrun_session"


class E2BBackend(Protocol):
    """What is needed of ``e2b.E2BBackend`` (a protocol: no import cycle with it)."""

    request_timeout: float | None

    def retry(self, what: str, fn: Callable[[], T], *, sandbox_id: str | None = None) -> T: ...


def list_ids(backend: E2BBackend, session_id: str) -> list[str]:
    """Ids of the running (or paused) sandboxes E2B has for ``session_id``."""
    query = SandboxQuery(metadata={SESSION_KEY: session_id})
    pages = SDKSandbox.list(query=query, **_opts(backend))
    ids: list[str] = []
    while pages.has_next:
        ids += [info.sandbox_id for info in pages.next_items()]
    return ids


def sweep(
    backend: E2BBackend, session_id: str, budget: float = SWEEP_BUDGET, *, kill: bool = True
) -> list[str]:
    """Kill every sandbox E2B has for ``session_id``; the ids killed (with ``kill`` False:
    found). Never raises.

    Gives up once ``budget`` seconds went by (what was killed by then is returned).
    """
    from sandboxrun.sandbox.lifetime import within

    killed: list[str] = []

    def go() -> None:
        for sandbox_id in backend.retry("listing the session's sandboxes",
                                        lambda: list_ids(backend, session_id)):  # fmt: skip
            if not kill:
                killed.append(sandbox_id)
                continue
            try:
                backend.retry(
                    "killing a sandbox started late",
                    functools.partial(_kill, sandbox_id, backend),
                    sandbox_id=sandbox_id,
                )
                killed.append(sandbox_id)
            except SandboxrunError as exc:
                log.warning("could not kill E2B sandbox %s: %s", sandbox_id, exc)

    try:
        within(budget, go)
    except Exception as exc:  # noqa: BLE001 - best effort on a failing path
        log.warning("could not look for sandboxes of session %s: %s", session_id, exc)
    return list(killed)


def _opts(backend: E2BBackend) -> dict[str, Any]:
    return {"request_timeout": backend.request_timeout} if backend.request_timeout else {}


def _kill(sandbox_id: str, backend: E2BBackend) -> bool:
    return bool(SDKSandbox.kill(sandbox_id, **_opts(backend)))
