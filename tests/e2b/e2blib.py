"""What the CLI-level E2B tests share: the `e2b` fixture factory and helpers around a run.

Each test module states only what differs::

    e2b = e2b_fixture("sk-ant-api03-e2b-faults-secret", **FAST_RETRIES)

and gets the emulator (tests/e2b/conftest.py) as E2B for the CLI: the tests' stand-in agent
(tests/fake_claude.py) installed as ``claude`` on every sandbox's PATH, like the real
template, a Claude key set, and the module's own settings in the environment.

The waits here poll for a condition; their deadlines bound a failure (on a loaded CI machine a
run takes many times as long as alone), they never make a pass slower.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sbr_testlib import FAKE_CLAUDE, git, logs_json

#: fast backoff for the backend's retries of a failed call (production: 1, 2, 4, 8 s)
FAST_RETRIES = {"SANDBOXRUN_E2B_RETRY_DELAYS": "0.1,0.2,0.4"}
#: what a run (or any one CLI call) is given before the test fails: a hang guard
ENDS_WITHIN = 150
#: how long a run may take to get its agent going (create, upload, start) on a loaded machine
STARTS_WITHIN = 120


def e2b_fixture(secret: str, **env: str | None):
    """An ``e2b`` fixture: the emulator with the stand-in ``claude``, ``secret`` as the Claude
    key, and ``env`` set for the test (a None value unsets that variable)."""

    @pytest.fixture(name="e2b")
    def fixture(emulator, monkeypatch):
        emulator.set_claude(FAKE_CLAUDE)
        monkeypatch.setenv("SANDBOXRUN_CLAUDE_BIN", "claude")
        monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
        for key, value in env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        return emulator

    return fixture


#: what identifies the command that starts the agent (its launch script) in the emulator
START = "NOAGENT"


def clock_starts_once(e2b, done: Callable[[Path], bool]):
    """Hold the answer to the agent's launch until ``done(checkout)`` is true of its sandbox's
    checkout (on this machine); returns the fault.

    The run's clock (``--timeout``) starts when that answer comes: a test of a short limit
    then counts it from work the agent has done, however slow the machine. Without it, an
    agent slower to take its first step than the limit is stopped before it (on a loaded
    machine, a few seconds go by before the stand-in even runs). Never held past the
    launch's own bound (60 s; ``SANDBOXRUN_E2B_COMMAND_TIMEOUT`` when lower).
    """

    def ready() -> bool:
        try:
            (sandbox_id,) = e2b.sandbox_ids()
            return done(e2b.host_path(sandbox_id, "/home/user/repo"))
        except (ValueError, KeyError, OSError):  # none yet, or gone
            return False

    return e2b.faults.add("command", "stall", seconds=None, match=START, stall_after=0,
                          until=ready)  # fmt: skip


def home() -> Path:
    """This test's sandboxrun home."""
    return Path(os.environ["SANDBOXRUN_HOME"])


def artifacts(cli, name: str) -> Path:
    """Session ``name``'s artifacts directory."""
    return home() / "artifacts" / cli.status(name)["id"]


def run(cli, name: str, prompt: str, *extra: str, env: dict | None = None,
        timeout: float = ENDS_WITHIN):  # fmt: skip
    """``sandboxrun run --backend e2b`` to its end."""
    return cli("run", "--backend", "e2b", "--name", name, "--prompt", prompt, *extra,
               timeout=timeout, env=env)  # fmt: skip


def start(cli, name: str, prompt: str, *extra: str, env: dict | None = None):
    """``sandboxrun run --backend e2b`` in the background (the ``cli`` fixture reaps it)."""
    return cli.popen("run", "--backend", "e2b", "--name", name, "--prompt", prompt, *extra,
                     env=env)  # fmt: skip


def wait_running(cli, name: str) -> dict:
    """Session ``name``'s status once its agent runs."""
    return cli.wait_status(name, lambda s: s["status"] == "running", timeout=STARTS_WITHIN)


def phases(cli, name: str, phase: str) -> list[dict]:
    """The payloads of session ``name``'s ``phase`` events so far."""
    return [e["payload"] for e in logs_json(cli, name)
            if e["kind"] == "phase" and e["payload"].get("phase") == phase]  # fmt: skip


def checkpoint_holds_a_commit_and_work(art: Path) -> bool:
    """The last checkpoint in ``art`` holds the agent's one commit and uncommitted work."""
    path = art / "checkpoint.json"
    info = json.loads(path.read_text() or "{}") if path.exists() else {}
    return info.get("commits") == 1 and bool(info.get("uncommitted"))


def no_uploads_left() -> bool:
    """No upload (tarball or git pack) is left in the home."""
    return not list(home().rglob("upload.tar*")) and not list(home().rglob("upload.pack"))


def assert_nothing_left(e2b) -> None:
    """No sandbox alive, no upload left behind."""
    assert e2b.sandbox_ids() == []
    assert no_uploads_left()


def as_tarball(repo: Path) -> None:
    """Make the next run upload a tarball, not git objects (sync/gitupload.py's plan)."""
    (repo / ".gitattributes").write_text("*.bin binary\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "attributes")
