"""Shared test helpers and fixtures: an isolated sandboxrun home, a real git repo, the CLI as a
process. Named uniquely (not conftest) so test modules can import it unambiguously."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
FAKE_CLAUDE = TESTS / "fake_claude.py"


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in ``repo`` with a fixed test identity; return stdout."""
    proc = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout


def branch_files(repo: Path, branch: str) -> set[str]:
    """The paths committed on ``branch`` of ``repo``."""
    return set(git(repo, "ls-tree", "-r", "--name-only", branch).split())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own SANDBOXRUN_HOME and no global git identity (like CI)."""
    home = tmp_path / "sbr-home"
    monkeypatch.setenv("SANDBOXRUN_HOME", str(home))
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "E2B_API_KEY",
        "SANDBOXRUN_BACKEND",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SANDBOXRUN_CLAUDE_BIN", str(FAKE_CLAUDE))
    # The test machine is a throwaway sandbox: as root, an unisolated local run would otherwise
    # be refused before it starts (Claude Code refuses to skip permissions as root without it).
    monkeypatch.setenv("IS_SANDBOX", "1")
    monkeypatch.setenv("SANDBOXRUN_POLL_INTERVAL", "0.1")
    yield home
    kill_local_agents(home)


def kill_local_agents(home: Path) -> None:
    """Tear down this home's local sandboxes that still exist, and their agents with them.

    A test that fails (or a driver it killed) can leave an agent running; it must not outlive
    the test. The backend's own teardown does it, which ends an isolated sandbox's processes
    too. (E2B sandboxes' agents die with the emulator's sandboxes.)
    """
    db = home / "state.db"
    if not db.exists():
        return
    from sandboxrun.config import Settings
    from sandboxrun.errors import SandboxrunError
    from sandboxrun.sandbox.backends import get_backend

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT sandbox_id FROM sessions WHERE backend = 'local' AND sandbox_id IS NOT NULL"
        ).fetchall()
    backend = get_backend("local", Settings(home=home))
    for (sandbox_id,) in rows:
        with contextlib.suppress(SandboxrunError):
            backend.connect(sandbox_id).destroy()


def sandbox_home(name: str) -> Path:
    """The home directory of session ``name``'s sandbox (local backend), from the store."""
    db = Path(os.environ["SANDBOXRUN_HOME"]) / "state.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT sandbox_home FROM sessions WHERE name = ?", (name,)).fetchone()
    assert row and row[0], f"session {name} has no sandbox yet"
    return Path(row[0])


#: a directive that makes the stand-in agent wait until ``open_gate`` (its sandbox's home,
#: next to the repository: visible to an isolated agent, and not part of its work)
GATE_WAIT = "@bash while [ ! -e ../gate ]; do sleep 0.05; done"


def open_gate(name: str) -> None:
    """Let session ``name``'s agent past its ``GATE_WAIT``."""
    (sandbox_home(name) / "gate").touch()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A small real git repository with one commit, ignored files and a secret."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# project\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hello')\n")
    (root / "src" / "old.py").write_text("OLD = 1\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    # A secret committed by mistake: it is in every checkout, but must never be uploaded.
    (root / "deploy").mkdir()
    (root / "deploy" / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\nsupersecret-pem\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    (root / "debug.log").write_text("ignored\n")
    (root / "build").mkdir()
    (root / "build" / "out.bin").write_text("ignored\n")
    (root / ".env").write_text("API_TOKEN=supersecret-value-123\n")
    return root


class CLI:
    """Runs `python -m sandboxrun` as a real process."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[subprocess.Popen] = []

    def reap(self) -> None:
        """Kill and wait for every process ``popen`` started that is still running."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(TESTS.parent)
        env.update(extra or {})
        return env

    def __call__(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sandboxrun", *args],
            cwd=cwd or self.cwd,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start the CLI in the background; the ``cli`` fixture reaps it, pass or fail."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxrun", *args],
            cwd=self.cwd,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def json(self, *args: str, **kw):
        proc = self(*args, "--json", **kw)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def status(self, session: str) -> dict:
        return self.json("status", session)[0]

    def status_or_none(self, session: str) -> dict | None:
        """The session's status, or None while it does not exist yet."""
        proc = self("status", session, "--json")
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def wait_status(self, session: str, predicate, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self("status", session, "--json")
            if proc.returncode == 0:
                data = json.loads(proc.stdout)[0]
                if predicate(data):
                    return data
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting on {session}: last {proc.stdout} {proc.stderr}")


@pytest.fixture
def cli(repo):
    """The CLI on ``repo``; whatever it started in the background is reaped afterwards."""
    runner = CLI(repo)
    yield runner
    runner.reap()


def retry_until(fn, timeout: float = 120, interval: float = 0.1):
    """Poll ``fn`` until it returns something truthy (instead of sleeping blindly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def edge_error(stderr: str) -> tuple[str, str | None]:
    """The ``Error:`` message and ``Hint:`` the CLI edge printed (the test fails without them).

    The message runs from the ``Error:`` line to the ``Hint:`` line, the hint to the end.
    """
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(starts) == 1, f"expected one 'Error:' line in:\n{stderr}"
    rest = lines[starts[0] :]
    hint_at = next((i for i, line in enumerate(rest) if line.startswith("Hint: ")), len(rest))
    message = "\n".join(rest[:hint_at])[len("Error: ") :]
    hint = "\n".join(rest[hint_at:])[len("Hint: ") :] if hint_at < len(rest) else None
    return message, hint


# --------------------------------------------------------------------------- local mode
# Shared by tests/local and tests/tmux (and any directory: a `from conftest import` would pick
# whichever conftest pytest loaded first when several directories run together).


def git_project(root: Path, files: dict[str, str]) -> Path:
    """A git repository at ``root`` on ``main``: ``files`` in one commit, and the user's own
    identity (``Human User``) in its config, as a developer's checkout has."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Human User")
    git(root, "config", "user.email", "human@example.com")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def commit_file(path: Path, name: str, text: str, message: str = "change") -> str:
    """Write ``name`` in the checkout ``path``, commit it with that checkout's identity."""
    (path / name).write_text(text)
    subprocess.run(["git", "-C", str(path), "add", name], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", message], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def plain_git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with whatever identity the repository/worktree itself has."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout


def hook_argv() -> list[str]:
    """The installed ``sandboxrun-hook`` console script (what Claude Code runs)."""
    script = Path(sys.executable).parent / "sandboxrun-hook"
    assert script.exists(), "pip install -e . creates the sandboxrun-hook console script"
    return [str(script)]


def run_hook(event: str, payload, env: dict[str, str] | None = None, *, raw: bytes | None = None):
    """Run ``sandboxrun-hook EVENT`` as a process with ``payload`` (JSON) on stdin."""
    data = raw if raw is not None else json.dumps(payload).encode()
    return subprocess.run(
        [*hook_argv(), event],
        input=data,
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=60,
    )


def db_rows(sql: str, args: tuple = ()) -> list[dict]:
    """Rows from the test's ``$SANDBOXRUN_HOME/state.db``."""
    conn = sqlite3.connect(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def hook_log() -> str:
    """What the hook logged in the test's ``$SANDBOXRUN_HOME/logs/hook.log`` ("" if nothing)."""
    log = Path(os.environ["SANDBOXRUN_HOME"]) / "logs" / "hook.log"
    return log.read_text() if log.exists() else ""


def run_on_pty(args: list[str], cwd: Path, env: dict[str, str], prompt: bytes, answer: bytes):
    """Run ``python -m sandboxrun ARGS`` on a real pty; answer ``prompt`` with ``answer``.

    Returns (exit code, everything written to the terminal).
    """
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with the pty as its terminal
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "sandboxrun", *args], env)
    output = b""
    try:
        while prompt not in output:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            output += chunk
        os.write(fd, answer + b"\r")
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def logs_json(cli, name: str) -> list[dict]:
    """The events of session ``name`` (``logs NAME --json``), [] while it does not exist yet:
    an error is a JSON object too (``{"error", "hint", "exit_code"}``), so a poll must look at
    the exit code, not only at the lines."""
    proc = cli("logs", name, "--json")
    if proc.returncode != 0:
        return []
    return [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]


@contextlib.contextmanager
def private_tmux(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A tmux server of this test's own (a ``sandboxrun.tmux.Tmux``), killed afterwards with
    everything in it.

    ``TMUX``/``TMUX_PANE`` are unset first, so nothing joins the developer's own server, and
    ``SANDBOXRUN_TMUX_SOCKET`` names the socket to sandboxrun (in a short /tmp directory:
    ``sun_path`` holds 108 bytes).
    """
    import shutil
    import tempfile

    from sandboxrun.tmux import SOCKET_ENV, Tmux

    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TMUX_PANE", raising=False)
    sockdir = tempfile.mkdtemp(prefix="sbr-tmux-", dir="/tmp")
    socket = os.path.join(sockdir, "s")
    monkeypatch.setenv(SOCKET_ENV, socket)
    server = Tmux(socket_path=socket)
    try:
        yield server
    finally:
        server.kill_server()
        shutil.rmtree(sockdir, ignore_errors=True)
