"""E2B's failures in our words: which SDK errors are worth retrying, and the
:class:`~sandboxrun.errors.SandboxrunError` (with the next step) each one becomes. Pure."""

from __future__ import annotations

import httpx
from e2b import (
    AuthenticationException,
    NotEnoughSpaceException,
    RateLimitException,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    ServiceBusyException,
    TimeoutException,
)

from sandboxrun.errors import AuthError, BackendError, SandboxLostError, SandboxrunError
from sandboxrun.sandbox.backends.e2b_env import scrub

# Names only a command that works in every state: what to do next depends on where the run
# was (the CLI adds the next step; `status` lists them).
_NETWORK_HINT = (
    "Check the network (and https://status.e2b.dev); `sandboxrun status` says where the run "
    "stands and what to do next."
)


class StalledTransfer(BackendError):
    """A call or transfer that hung (no answer, no byte moving) past its bound: retried."""


def is_transient(exc: BaseException) -> bool:
    """A rate limit, a network hiccup or a call that timed out: safe to try again after a
    pause (only ever asked about calls that are safe to repeat)."""
    if isinstance(exc, SandboxNotRunningException):
        return False  # the sandbox is gone: trying again cannot help
    return isinstance(
        exc,
        RateLimitException
        | ServiceBusyException
        | SandboxUnreachableException
        | TimeoutException  # the SDK's request_timeout: a hung connection, not an answer
        | StalledTransfer
        | httpx.TransportError
        | ConnectionError,
    )


def translate(
    exc: BaseException, what: str, sandbox_id: str | None = None, *, retries: int = 0
) -> SandboxrunError:
    """One of our errors for an SDK (or network) failure while doing ``what``; ``retries`` is
    how many times a rate-limited call was already retried (said in the message)."""
    where = f"E2B sandbox {sandbox_id}" if sandbox_id else "E2B"
    detail = scrub(str(exc)).strip()[:500]
    if isinstance(exc, AuthenticationException):
        return AuthError(
            f"E2B rejected the API key (E2B_API_KEY) while {what}",
            "Check the key at https://e2b.dev/dashboard?tab=keys and export it again, or "
            "use `--backend local`.",
        )
    if isinstance(exc, SandboxNotFoundException | SandboxNotRunningException):
        return SandboxLostError(
            f"{where} is gone (it was killed or reached its time limit) while {what}",
            "Whatever was collected before (the last checkpoint) is kept under the session's "
            "artifacts; `sandboxrun status` says what was kept and what to do next.",
        )
    if isinstance(exc, RateLimitException):
        return BackendError(
            f"E2B kept rate-limiting us while {what} (gave up after {retries} retries)",
            "Start fewer sandboxes at once (E2B allows 1 creation/s on Hobby, 5/s on "
            "Pro) and try again in a minute.",
        )
    if isinstance(exc, NotEnoughSpaceException):
        return BackendError(
            f"{where} ran out of disk space while {what}",
            "Make the upload smaller (.sandboxrunignore), or build a template with more "
            "disk (`sandboxrun template build`).",
        )
    if isinstance(
        exc,
        httpx.TransportError | ConnectionError | SandboxUnreachableException | ServiceBusyException,
    ):
        return BackendError(
            f"cannot reach {where} while {what}: {detail}",
            _NETWORK_HINT,
        )
    if isinstance(exc, SandboxrunError):
        return exc
    if isinstance(exc, TimeoutException):
        return BackendError(
            f"E2B did not answer in time while {what} ({where}): {detail}",
            _NETWORK_HINT,
        )
    return BackendError(f"E2B failed while {what}: {detail}")
