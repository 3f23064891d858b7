"""Running the real Claude Code CLI against the fake API: its environment and one headless run.

Shared by the e2e fixtures (tests/e2e/conftest.py) and the fixture capture
(``python -m tests.fake_anthropic.capture``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fake_anthropic.script import gateway_token

#: the Claude Code release the tests are written against (scripts/install_claude.sh installs it)
PINNED_VERSION = "2.1.330"

#: environment variables that point the CLI somewhere real or change its behaviour; never
#: inherited by a test run
_SCRUB_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "CLAUDECODE", "AWS_BEARER_TOKEN_BEDROCK")


def claude_env(
    api_url: str,
    home: Path,
    *,
    gateway: bool = False,
    max_retries: int | None = 1,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for running ``claude`` offline against the fake API at ``api_url``.

    ``home`` becomes a throwaway ``HOME`` (and ``CLAUDE_CONFIG_DIR`` under it), so no real
    login, settings or transcripts are read or written. ``gateway`` authenticates with a
    ``claude-gateway`` token, which makes the CLI act on usage-limit headers (see
    :func:`tests.fake_anthropic.script.gateway_token`); otherwise a fake API key is used.
    ``max_retries`` caps the CLI's own retries of API errors (default 10, with exponential
    backoff: minutes); None leaves the CLI's default.
    """
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(_SCRUB_PREFIXES)
    }
    config = home / ".claude"
    config.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(config),
            "ANTHROPIC_BASE_URL": api_url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            # Reset times in messages ("resets 3pm (UTC)") are rendered in local time.
            "TZ": "UTC",
        }
    )
    if gateway:
        env["ANTHROPIC_AUTH_TOKEN"] = gateway_token()
    else:
        env["ANTHROPIC_API_KEY"] = "sk-ant-test-fake-key"
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    # As root, --dangerously-skip-permissions refuses to run outside a declared sandbox; and
    # 2.1.330 behaves differently outside one (a repeated in-stream overload ends as "Repeated
    # 529 Overloaded errors" instead of "529 Overloaded"), so every user gets it: the tests
    # then see the same CLI as root and as an ordinary user, as sandboxrun's agents run it.
    env["IS_SANDBOX"] = "1"
    return env


@dataclass
class ClaudeRun:
    """The outcome of one headless ``claude -p`` run."""

    returncode: int | None  # None: we killed it at the time limit
    stdout: str
    stderr: str
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        """Whether the run was still going at its time limit."""
        return self.returncode is None

    def of_type(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        """Events with this ``type`` (and ``subtype``)."""
        return [
            e
            for e in self.events
            if e.get("type") == type_ and (subtype is None or e.get("subtype") == subtype)
        ]

    @property
    def init(self) -> dict[str, Any]:
        """The ``system/init`` event."""
        return self.of_type("system", "init")[0]

    @property
    def result(self) -> dict[str, Any] | None:
        """The final ``result`` event, if the CLI got that far."""
        results = self.of_type("result")
        return results[-1] if results else None


def run_claude(
    claude: str | Path,
    prompt: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = 60,
    stop_when: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> ClaudeRun:
    """Run ``claude -p PROMPT --output-format stream-json --verbose`` to completion.

    Killed (``returncode`` None) when still running after ``timeout`` seconds; the output so
    far is kept, which is how a CLI that sits waiting on a usage limit is observed.
    ``stop_when(events so far)`` true also kills it: a run that would sit waiting is observed
    as soon as it said what the test needs (no fixed time that a slow machine could miss).
    """
    argv = [
        str(claude),
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
        *args,
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="backslashreplace",
    )
    if stop_when is not None:
        return _run_until(proc, start, timeout, stop_when)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        code = None
    return ClaudeRun(code, out, err, time.monotonic() - start, _events(out))


def _events(out: str) -> list[dict[str, Any]]:
    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"type": "<non-json>", "line": line})
    return events


def _run_until(
    proc: subprocess.Popen, start: float, timeout: float, stop_when: Callable[..., bool]
) -> ClaudeRun:
    """Read ``proc``'s stdout as it comes; kill it once ``stop_when(events)`` or at ``timeout``."""
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    errs: list[str] = []
    stdout, stderr = proc.stdout, proc.stderr

    def read_out() -> None:
        for line in stdout:
            lines.append(line)

    readers = [
        threading.Thread(target=read_out, daemon=True),
        threading.Thread(target=lambda: errs.append(stderr.read()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if stop_when(_events("".join(lines))):
            break
        time.sleep(0.1)
    code = proc.poll()
    if code is None:
        proc.kill()
        proc.wait()
    for reader in readers:
        reader.join(timeout=30)
    out = "".join(lines)
    return ClaudeRun(code, out, "".join(errs), time.monotonic() - start, _events(out))


def claude_version(claude: str | Path) -> str:
    """The CLI's version number (``2.1.330``) from ``claude --version``."""
    proc = subprocess.run(
        [str(claude), "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    return proc.stdout.split()[0] if proc.stdout.split() else ""


def logged_in_home(api_url: str, home: Path, *, gateway: bool = False) -> dict[str, str]:
    """claude's environment (:func:`claude_env`) with onboarding done and the key approved, as
    for a real user: what an interactive Claude Code needs to start without asking anything."""
    env = claude_env(api_url, home, gateway=gateway)
    config = Path(env["CLAUDE_CONFIG_DIR"]) / ".claude.json"
    data: dict[str, Any] = {"hasCompletedOnboarding": True}
    if "ANTHROPIC_API_KEY" in env:
        data["customApiKeyResponses"] = {
            "approved": [env["ANTHROPIC_API_KEY"][-20:]],
            "rejected": [],
        }
    config.write_text(json.dumps(data))
    return env


def installed_claude() -> Path:
    """The pinned real Claude Code CLI (``SANDBOXRUN_TEST_CLAUDE``, else the test cache);
    the calling test is skipped with the reason when it is not installed."""
    explicit = os.environ.get("SANDBOXRUN_TEST_CLAUDE")
    cache = Path(
        os.environ.get("SANDBOXRUN_TEST_CACHE") or Path.home() / ".cache" / "sandboxrun-test"
    )
    path = (
        Path(explicit) if explicit else cache / f"claude-code-{PINNED_VERSION}" / "bin" / "claude"
    )
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"the real Claude Code CLI is not installed at {path} (scripts/install_claude.sh)"
        )
    return path
