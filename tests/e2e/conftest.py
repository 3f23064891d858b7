"""Fixtures for the end-to-end tests: the real Claude Code CLI against a fake Anthropic API.

- ``claude_cli`` (session): the installed CLI, found through ``SANDBOXRUN_TEST_CLAUDE`` or the
  cache that scripts/install_claude.sh fills; when it is missing every e2e test is SKIPPED
  with the reason (never passed without running).
- ``fake_api``: a fresh :class:`~tests.fake_anthropic.FakeAnthropic` per test; script it with
  ``fake_api.script(...)``.
- ``agent_env``: the environment for running ``claude`` offline against ``fake_api``
  (throwaway ``HOME``/``CLAUDE_CONFIG_DIR``, fake key, ``IS_SANDBOX=1``).
- ``run_claude``: runs ``claude -p`` headless with ``agent_env`` and parses its events.
- ``project`` / ``sandboxrun``: a small git repo, and our own CLI run as a process on it with
  the real ``claude`` (``SANDBOXRUN_CLAUDE_BIN``) and ``agent_env``, state under tmp_path.

At the end, the terminal summary says how many e2e tests ran with which CLI version.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sbr_testlib import git

# tests/e2e has no __init__.py, so pytest puts this directory, not the repository root, on
# sys.path: add the root for `tests.fake_anthropic` (as tests/e2b/conftest.py does).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fake_anthropic import FakeAnthropic  # noqa: E402
from tests.fake_anthropic.cli import (  # noqa: E402
    PINNED_VERSION,
    ClaudeRun,
    claude_env,
    claude_version,
)
from tests.fake_anthropic.cli import run_claude as _run_claude  # noqa: E402

#: env var naming the claude executable (scripts/test.sh sets it from install_claude.sh)
CLAUDE_ENV_VAR = "SANDBOXRUN_TEST_CLAUDE"


def _cache_dir() -> Path:
    return Path(
        os.environ.get("SANDBOXRUN_TEST_CACHE") or Path.home() / ".cache" / "sandboxrun-test"
    )


def locate_claude() -> tuple[Path | None, str]:
    """The claude executable to test with, or None and why there is none."""
    explicit = os.environ.get(CLAUDE_ENV_VAR)
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path, ""
        return None, f"{CLAUDE_ENV_VAR}={explicit} is not an executable file"
    cache = _cache_dir()
    marker = cache / f"claude-code-{PINNED_VERSION}.unavailable"
    if marker.exists():
        reason = marker.read_text().strip() or "unknown reason"
        return None, f"claude install unavailable: {reason}"
    default = cache / f"claude-code-{PINNED_VERSION}" / "bin" / "claude"
    if default.is_file() and os.access(default, os.X_OK):
        return default, ""
    return None, (
        f"Claude Code {PINNED_VERSION} is not installed: run scripts/install_claude.sh "
        f"(or set {CLAUDE_ENV_VAR} to a claude executable)"
    )


@dataclass(frozen=True)
class ClaudeCLI:
    """The real CLI under test."""

    path: Path
    version: str


# What the terminal summary reports; filled in by the hooks below.
_E2E = {"version": None, "skip_reason": None, "passed": 0, "failed": 0, "xfailed": 0, "skipped": 0}


@pytest.fixture(scope="session")
def claude_cli() -> ClaudeCLI:
    """The installed Claude Code CLI; skips every test using it when there is none."""
    path, reason = locate_claude()
    if path is None:
        _E2E["skip_reason"] = reason
        pytest.skip(reason)
    try:
        version = claude_version(path)
    except Exception as exc:  # a broken install is a reason to skip, said plainly
        _E2E["skip_reason"] = f"{path} --version failed: {exc}"
        pytest.skip(str(_E2E["skip_reason"]))
    _E2E["version"] = version
    return ClaudeCLI(path, version)


@pytest.fixture
def fake_api():
    """A fake Anthropic API on a loopback port for this test (script it before the run)."""
    with FakeAnthropic() as api:
        yield api


@pytest.fixture
def agent_env(tmp_path: Path, fake_api: FakeAnthropic, claude_cli: ClaudeCLI) -> dict[str, str]:
    """Environment for running claude offline against ``fake_api``.

    Throwaway ``HOME`` and ``CLAUDE_CONFIG_DIR`` under tmp_path, a fake API key,
    ``CLAUDE_CODE_MAX_RETRIES=1`` (so an API error fails in about a second instead of after
    minutes of backoff), ``TZ=UTC`` and ``IS_SANDBOX=1``. Tests may
    change it (e.g. ``agent_env.update(claude_env(..., gateway=True))``).
    """
    return claude_env(fake_api.url, tmp_path / "agent-home")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory for the agent to work in."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def run_claude(claude_cli: ClaudeCLI, agent_env: dict[str, str], workdir: Path):
    """Run ``claude -p PROMPT`` (stream-json) in ``workdir`` with ``agent_env``."""

    def run(prompt: str, *args: str, timeout: float = 60, **kw) -> ClaudeRun:
        kw.setdefault("cwd", workdir)
        kw.setdefault("env", agent_env)
        return _run_claude(claude_cli.path, prompt, args=args, timeout=timeout, **kw)

    return run


_E2E_IDS: set[str] = set()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember which tests are marked e2e (report keywords also hold directory names)."""
    _E2E_IDS.update(item.nodeid for item in items if item.get_closest_marker("e2e"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count e2e outcomes for the summary line."""
    if report.nodeid not in _E2E_IDS:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            _E2E["xfailed" if report.skipped else "passed"] += 1
        elif report.passed:
            _E2E["passed"] += 1
        elif report.skipped:
            _E2E["skipped"] += 1
        else:
            _E2E["failed"] += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say whether the e2e tests really ran the Claude Code CLI, and which version."""
    ran = _E2E["passed"] + _E2E["failed"] + _E2E["xfailed"]
    if not ran and not _E2E["skipped"]:
        return
    if ran:
        line = f"{ran} e2e tests ran with the real Claude Code CLI {_E2E['version']}"
        extra = [f"{_E2E[k]} {k}" for k in ("failed", "xfailed", "skipped") if _E2E[k]]
        if extra:
            line += f" ({', '.join(extra)})"
    else:
        reason = _E2E["skip_reason"] or "see the skip reasons above"
        line = (
            f"{_E2E['skipped']} e2e tests SKIPPED, the real Claude Code CLI did not run: {reason}"
        )
    terminalreporter.write_sep("-", "e2e")
    terminalreporter.write_line(line)


# -- sandboxrun itself, driving the real CLI --------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small git repository for sandboxrun to run an agent on."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# project\n")
    (root / "src" / "app.py").write_text("print('hello')\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@dataclass
class Sandboxrun:
    """Runs ``python -m sandboxrun`` as a real process in ``project`` with ``env``."""

    project: Path
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sandboxrun", *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self, name: str) -> dict:
        """``sandboxrun status NAME --json`` for one session."""
        proc = self("status", name, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)[0]

    def cli_events(self, name: str) -> list[dict]:
        """The Claude Code CLI's own stream-json lines, as recorded by sandboxrun's follower."""
        proc = self("logs", name, "--json")
        assert proc.returncode == 0, proc.stderr
        events = []
        for line in proc.stdout.splitlines():
            entry = json.loads(line)
            if entry.get("kind") == "stdout":
                with contextlib.suppress(ValueError):
                    events.append(json.loads(entry["payload"]["line"]))
        return events


@pytest.fixture
def sandboxrun(tmp_path: Path, project: Path, agent_env: dict[str, str], claude_cli: ClaudeCLI):
    """``sandboxrun`` with the real CLI (``SANDBOXRUN_CLAUDE_BIN``) pointed at ``fake_api``.

    The local backend passes the Anthropic/Claude part of its environment on to the agent
    (an allow-list; ``IS_SANDBOX`` never: under bubblewrap the CLI runs as uid 1000), so
    ``agent_env`` (mutable through ``sandboxrun.env``) is what the CLI sees, with a private
    ``HOME`` inside its sandbox; the state lives under tmp_path.
    """
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("")
    env = dict(agent_env)
    for var in ("E2B_API_KEY", "SANDBOXRUN_BACKEND", "GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.pop(var, None)
    env.update(
        {
            "SANDBOXRUN_HOME": str(tmp_path / "sbr-home"),
            "SANDBOXRUN_CLAUDE_BIN": str(claude_cli.path),
            "SANDBOXRUN_POLL_INTERVAL": "0.1",
            "GIT_CONFIG_GLOBAL": str(gitconfig),
            "GIT_CONFIG_NOSYSTEM": "1",
        }
    )
    return Sandboxrun(project, env)
