"""A session's state, as the commands on it see it: the facts the next-step table
(``sandbox.nextstep``) decides on, the check each command makes before it acts, and the
next-step hint an error raised while acting gets when it has none.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

from sandboxrun.config import Settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.sandbox.interrupted import still_starting
from sandboxrun.sandbox.nextstep import SessionFacts, next_step_hint, refusal
from sandboxrun.store import Session, SessionStore, owner_alive


def session_facts(settings: Settings, session: Session) -> SessionFacts:
    """What the next-step table needs to know about ``session``."""
    from sandboxrun.sandbox.apply import has_collection
    from sandboxrun.sandbox.checkpoint import checkpoint_dir, checkpoint_pending

    art = settings.session_artifacts(session.id)
    return SessionFacts(
        name=session.name,
        status=session.status,
        # before a driver claims it, the process that created the session is the one starting it
        driver_alive=owner_alive(session) or (not session.is_terminal and still_starting(session)),
        agent_started=session.agent_pgid is not None and bool(session.sandbox_id),
        has_commits=bool(session.result_commits),
        has_patches=has_collection(art) or has_collection(checkpoint_dir(art)),
        checkpoint_pending=session.status == "lost" and checkpoint_pending(art),
        branch=session.branch or "",
        repo=session.repo or "",
        stopping=bool(session.stop_reason),
        collected=has_collection(art),
        mode=session.mode,
    )


@contextlib.contextmanager
def next_step_on_error(settings: Settings, store: SessionStore, session_id: str) -> Iterator[None]:
    """Give an error raised while working on a session that says what went wrong but not what
    to do (a backend, transfer or git failure) the hint naming what works in the state the
    failure left the session in (``sandbox.nextstep``)."""
    try:
        yield
    except SandboxrunError as exc:
        if exc.hint is None:
            with contextlib.suppress(SandboxrunError):
                exc.hint = next_step(settings, store.get(session_id))
        raise


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _hinted(
    fn: Callable[Concatenate[Settings, SessionStore, Session, _P], _T],
) -> Callable[Concatenate[Settings, SessionStore, Session, _P], _T]:
    """``fn`` (a command on a session) with :func:`next_step_on_error` around it."""

    @functools.wraps(fn)
    def wrapper(
        settings: Settings, store: SessionStore, session: Session, *a: _P.args, **kw: _P.kwargs
    ) -> _T:
        with next_step_on_error(settings, store, session.id):
            return fn(settings, store, session, *a, **kw)

    return wrapper


def check_state(command: str, settings: Settings, session: Session) -> None:
    """Raise an error (exit 1) naming what works instead when ``command`` does not work on
    ``session`` in its state: the one table of ``sandbox.nextstep.refusal``."""
    refused = refusal(command, session_facts(settings, session))
    if refused is not None:
        raise SandboxrunError(refused.message, refused.hint)


def next_step(settings: Settings, session: Session) -> str:
    """The hint naming what works next for ``session`` (see ``sandbox.nextstep``)."""
    return next_step_hint(session_facts(settings, session))


def next_commands_for(settings: Settings, session: Session) -> list[str]:
    """The commands that work next for ``session`` (see ``sandbox.nextstep``)."""
    from sandboxrun.sandbox.nextstep import next_commands

    return next_commands(session_facts(settings, session))
