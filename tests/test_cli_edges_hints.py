"""Every error a user can meet from the sandbox-mode commands says what to do next.

Errors raised where a command parses, checks and prepares (the CLI modules, settings, the
run's preparation, packing) carry their own hint: checked statically over the source. Errors
raised while a run or a session command acts on a sandbox (backend, transfer, collection)
get the session's next step (``statecheck.next_step_on_error``, around ``RunDriver.execute``
and ``kill``/``attach``/``extend``/``download``): checked on a real session."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from sandboxrun.config import load_settings
from sandboxrun.errors import BackendError, SandboxrunError
from sandboxrun.sandbox.statecheck import next_step_on_error
from sandboxrun.store import SessionStore

PACKAGE = Path(__file__).resolve().parents[1] / "sandboxrun"
ERRORS = {
    name
    for name, value in vars(__import__("sandboxrun.errors", fromlist=["x"])).items()
    if isinstance(value, type) and issubclass(value, SandboxrunError)
}
#: other helpers' areas (local mode, coordination, MCP, fan-out, web): not sandbox mode
NOT_SANDBOX_MODE = ("local/", "coord/", "mcp/", "fanout/", "web/", "dashboard/", "tmux",
                    "cli/local_cmd", "cli/coord_cmd", "cli/mcp_cmd", "cli/fanout_cmd",
                    "cli/dashboard_cmd", "cli/hooks_cmd", "hook.py")  # fmt: skip
#: modules whose errors are raised only while a run or a session command acts on a sandbox,
#: inside ``next_step_on_error`` (or are internal invariants): they may leave the hint to it
ACTING = {
    "sandbox/gitpack.py", "sandbox/lifetime.py", "sandbox/provision.py", "sandbox/runner.py",
    "sandbox/transfer.py", "sandbox/worktree_update.py", "sandbox/backends/e2b.py",
    "sandbox/backends/e2b_checkout.py", "sandbox/backends/local.py", "sync/replay.py",
    "sync/unpack.py", "sync/gitupload.py", "store.py",
}  # fmt: skip


def hintless_raises() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(part in rel for part in NOT_SANDBOX_MODE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in ERRORS:
                continue
            args, kws = node.exc.args, node.exc.keywords
            if len(args) >= 2 or any(k.arg == "hint" for k in kws):
                continue
            if any(isinstance(a, ast.Starred) for a in args):
                continue  # (message, hint) from a table
            found.append((rel, node.lineno, name))
    return found


def test_errors_of_checking_and_preparing_carry_their_own_hint():
    outside = [f"{rel}:{line} {name}" for rel, line, name in hintless_raises()
               if rel not in ACTING]  # fmt: skip
    assert outside == [], "give these a hint naming the next step"


def test_the_acting_modules_listed_still_exist():
    assert all((PACKAGE / rel).is_file() for rel in ACTING)


@pytest.fixture
def ended_session(cli):
    assert cli("run", "--backend", "local", "--dry-run", "-p", "x", "--name", "h1").returncode == 0
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    yield store, store.resolve("h1")
    store.close()


def test_an_error_while_acting_gets_the_sessions_next_step(ended_session):
    store, session = ended_session
    settings = load_settings(None)
    with pytest.raises(BackendError) as err, next_step_on_error(settings, store, session.id):
        raise BackendError("reading /x in sandbox s failed: exit code 1")
    assert err.value.hint == "Next: `sandboxrun download h1`, or `sandboxrun logs h1`."
    # a hint the error has already is kept
    with pytest.raises(BackendError) as err, next_step_on_error(settings, store, session.id):
        raise BackendError("E2B said no", "Check E2B_API_KEY.")
    assert err.value.hint == "Check E2B_API_KEY."


def test_the_session_commands_are_wrapped():
    from sandboxrun.sandbox import sessions

    for fn in (sessions.kill_session, sessions.attach_session, sessions.download_session,
               sessions.extend_session):  # fmt: skip
        assert fn.__wrapped__ is not None  # functools.wraps of statecheck._hinted
