"""The local sandbox's host side: files it reads and writes never follow what the agent planted,
teardown never signals a pid the agent chose, a sandbox keeps the isolation it was made with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sbr_testlib import retry_until

from sandboxrun.config import Settings
from sandboxrun.errors import BackendError
from sandboxrun.sandbox.backends.base import Launch
from sandboxrun.sandbox.backends.bwrap import find_bwrap
from sandboxrun.sandbox.backends.local import LocalBackend


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "sbr-home")


def make(settings: Settings, *, no_isolation: bool = True):
    backend = LocalBackend(settings, no_isolation=no_isolation)
    return backend, backend.create("s1", timeout_s=60, env={}, metadata={})


def test_layout_keeps_the_trusted_record_outside_the_sandbox_home(settings):
    _, sb = make(settings)
    root = settings.sandboxes_dir / "s1"
    assert sb.home == str(root / "home")
    assert (root / "sandbox.json").is_file() and (root / "etc" / "passwd").is_file()
    assert Path(sb.home, ".sandboxrun").is_dir() and Path(sb.home, ".claude").is_dir()


def test_reads_and_writes_refuse_links_planted_in_the_sandbox(settings, tmp_path):
    _, sb = make(settings)
    outside = tmp_path / "outside.txt"
    outside.write_text("host file\n")
    ctl = Path(sb.home) / ".sandboxrun"
    (ctl / "agent.log").symlink_to(outside)
    with pytest.raises(BackendError):
        sb.read_file(str(ctl / "agent.log"))
    # A planted link as the file to replace is replaced, not followed.
    (ctl / "prompt.txt").symlink_to(outside)
    sb.write_file(str(ctl / "prompt.txt"), b"the prompt")
    assert outside.read_text() == "host file\n"
    assert (ctl / "prompt.txt").read_bytes() == b"the prompt"
    # A directory swapped for a link to elsewhere is not walked through.
    (Path(sb.home) / "repo").symlink_to(tmp_path)
    with pytest.raises(BackendError):
        sb.read_file(f"{sb.home}/repo/outside.txt")
    with pytest.raises(BackendError):
        sb.write_file(f"{sb.home}/repo/new.txt", b"x")
    assert not (tmp_path / "new.txt").exists()
    # A FIFO does not block us.
    os.mkfifo(ctl / "agent.stderr")
    with pytest.raises(BackendError):
        sb.read_file(str(ctl / "agent.stderr"))
    with pytest.raises(BackendError):
        sb.read_file("/etc/hostname")


def test_destroy_never_signals_a_pid_the_agent_wrote(settings):
    """agent.pid is the agent's to forge; teardown uses sandbox.json and checks the pid."""
    _, sb = make(settings)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        Path(sb.home, ".sandboxrun", "agent.pid").write_text(f"{bystander.pid}\n")
        sb._write_meta(supervisor_pid=bystander.pid)  # even in the record: not our supervisor
        sb.destroy()
        assert bystander.poll() is None
        assert not (settings.sandboxes_dir / "s1").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_sandbox_keeps_the_isolation_it_was_made_with(settings):
    _, sb = make(settings, no_isolation=True)
    assert sb.isolated is False
    again = LocalBackend(settings).connect("s1")  # this process would isolate new ones
    assert again.isolated is False and again.home == sb.home


def test_legacy_sandbox_without_record_has_its_home_at_the_root(settings):
    root = settings.sandboxes_dir / "old"
    (root / ".sandboxrun").mkdir(parents=True)
    sb = LocalBackend(settings).connect("old")
    assert sb.home == str(root) and sb.isolated is False


@pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed")
def test_destroy_ends_a_running_isolated_sandbox(settings):
    """Teardown (cleanup of a kept sandbox, kill) kills the supervisor and so the namespace."""
    _, sb = make(settings, no_isolation=False)
    assert sb.isolated is True
    ctl = f"{sb.home}/.sandboxrun"
    sb.write_file(f"{ctl}/prompt.txt", b"")
    Path(sb.repo_dir).mkdir()
    pid = sb.start_detached(
        Launch(
            argv=("sh", "-c", "setsid sleep 300 & echo started; sleep 300"),
            cwd=sb.repo_dir,
            env={},
            stdin_path=f"{ctl}/prompt.txt",
            log_path=f"{ctl}/agent.log",
            stderr_path=f"{ctl}/agent.stderr",
            exit_path=f"{ctl}/agent.exit",
            pid_path=f"{ctl}/agent.pid",
        )
    )
    retry_until(lambda: b"started" in _read_or_empty(sb, f"{ctl}/agent.log"), timeout=120)
    sb.destroy()
    # Gone, or zombies waiting for init to reap them (this container's init is slow at it).
    retry_until(lambda: not _live_members(pid), timeout=120)
    assert not (settings.sandboxes_dir / "s1").exists()
    # Nothing with the sandbox's path in its environment is left (the setsid sleep included).
    assert not [
        p for p in Path("/proc").iterdir() if p.name.isdigit() and _environ_mentions(p, sb.home)
    ]


def _read_or_empty(sb, path: str) -> bytes:
    """The file's bytes, or nothing while the supervisor has not created it yet."""
    try:
        return sb.read_file(path)
    except FileNotFoundError:
        return b""


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies."""
    live = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            stat = (proc_dir / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: split after the last ")" (comm may hold spaces).
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            live.append(int(proc_dir.name))
    return live


def _environ_mentions(proc_dir: Path, text: str) -> bool:
    try:
        return text.encode() in (proc_dir / "environ").read_bytes()
    except OSError:
        return False
