"""`start_run`: the one start of a sandbox run behind `sandboxrun run` and MCP `run_in_sandbox`.

In-process on real repos with the local backend: the notes a person is told before the agent
starts, and the detached driver (a real `sandboxrun _drive` process) recorded as the owner and
carrying the run to its end. `spawn`'s task reading is the same function, checked through the CLI.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from sbr_testlib import edge_error, git, retry_until

from sandboxrun.config import load_settings
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.sandbox.detach import DriverStartError, process_exited, start_driver_process
from sandboxrun.sandbox.prepare import RunRequest, prepare_run, read_task
from sandboxrun.sandbox.start import changes_left_out, start_run
from sandboxrun.store import TERMINAL, SessionStore


def _start(repo, *, detach=False, **req):
    settings = load_settings(repo)
    store = SessionStore(settings.db_path)
    request = RunRequest(repo=repo, backend="local", dry_run=True, **req)
    return store, start_run(settings, store, request, detach=detach)


def test_uncommitted_changes_are_a_note_unless_carried(repo):
    (repo / "README.md").write_text("# edited, not committed\n")
    (repo / "new.txt").write_text("untracked\n")
    # .env (untracked, a secret by name) is never uploaded either way: not a change left out
    assert sorted(changes_left_out(repo)) == ["README.md", "new.txt"]
    _, started = _start(repo, prompt="x", name="plain")
    assert any("uncommitted changes" in n and "--with-changes" in n for n in started.notes)
    assert started.driver_pid is None
    _, carried = _start(repo, prompt="x", name="carried", with_changes=True)
    assert not any("uncommitted changes" in n for n in carried.notes)


def test_a_clean_checkout_starts_without_notes(repo):
    (repo / ".env").unlink()
    _, started = _start(repo, prompt="x", name="clean")
    assert started.notes == []


def test_detached_start_records_the_driver_which_finishes_the_run(repo):
    store, started = _start(repo, prompt="x", name="bg", detach=True)
    pid = started.driver_pid
    assert pid is not None and pid > 0
    try:
        assert store.get(started.session.id).owner_pid == pid
        final = retry_until(
            lambda: (s := store.get(started.session.id)).status in TERMINAL and s, timeout=120
        )
        assert final.status == "completed_no_changes", final.error
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_driver_waited_for_has_recorded_itself_when_the_start_returns(repo):
    """The shared detached start (run, fan-out task, fan-out group): with ``recorded`` it returns
    once the driver has claimed its session, here a fan-out task driver (the real module)."""
    settings = load_settings(repo)
    store = SessionStore(settings.db_path)
    req = RunRequest(repo=repo, prompt="x", name="waited", backend="local", dry_run=True)
    session = prepare_run(settings, store, req)
    log = settings.session_artifacts(session.id) / "driver.log"
    pid = start_driver_process(
        [session.id],
        module="sandboxrun.fanout.taskmain",
        log=log,
        home=settings.home,
        recorded=lambda pid: store.get(session.id).owner_pid == pid,
    )
    try:
        assert store.get(session.id).owner_pid == pid
        final = retry_until(
            lambda: (s := store.get(session.id)).status in TERMINAL and s, timeout=120
        )
        assert final.status == "completed_no_changes", final.error
        assert retry_until(lambda: process_exited(pid), timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_driver_that_dies_before_recording_itself_is_an_error_quoting_its_log(tmp_path):
    log = tmp_path / "logs" / "driver.log"
    log.parent.mkdir()
    log.write_text("an earlier driver's line\n")
    with pytest.raises(DriverStartError) as err:
        start_driver_process(
            ["x"], module="sandboxrun.no_such_driver", log=log, home=tmp_path / "home",
            recorded=lambda pid: False,
        )  # fmt: skip
    assert "exited before it started" in err.value.message
    assert "No module named sandboxrun.no_such_driver" in err.value.message
    assert "an earlier driver's line" not in err.value.message  # only what this one wrote
    assert str(log) in (err.value.hint or "")


def test_a_driver_log_that_cannot_be_made_is_an_error_with_the_next_step(tmp_path):
    (tmp_path / "artifacts").write_text("a file where the log's directory should be\n")
    with pytest.raises(SandboxrunError) as err:
        start_driver_process(
            ["_drive", "x"], log=tmp_path / "artifacts" / "s1" / "driver.log", home=tmp_path
        )
    assert "artifacts" in err.value.message and err.value.hint


@pytest.mark.parametrize(
    ("prompt", "prompt_file", "message"),
    [
        (None, None, "exactly one of --prompt or --prompt-file"),
        ("x", "plan.md", "exactly one of --prompt or --prompt-file"),
        ("  ", None, "the prompt is empty (--prompt)"),
        (None, "src", "is a directory"),
        (None, "nope.md", "does not exist"),
    ],
)
def test_read_task_refuses_what_is_not_a_task(repo, prompt, prompt_file, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_task(prompt, repo / prompt_file if prompt_file else None)


def test_spawn_reads_its_task_the_same_way(cli, repo):
    """`spawn --prompt-file DIR` is a usage error naming the directory, before anything exists."""
    proc = cli("spawn", "api", "--prompt-file", "src")
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "prompt file src is a directory" in message and hint
    assert git(repo, "worktree", "list").count("\n") == 1
    assert git(repo, "branch", "--list") == "* main\n"


# -- run_request: the one reading of `run`'s flags and `run_in_sandbox`'s arguments -------------


def test_run_request_lays_the_flags_over_the_repository_settings(repo, tmp_path):
    from pathlib import Path

    from sandboxrun.sandbox.request import run_request

    base = load_settings(repo)
    settings, req = run_request(
        base, Path("."), prompt="x", timeout="20m", warn_at="5m,10m", max_turns=3,
        include_submodules=None, cwd=repo, allow_claimed=True,
    )  # fmt: skip
    assert settings.timeout == 1200 and settings.warn_at == (300.0, 600.0)
    assert settings.max_turns == 3 and settings.include_submodules == base.include_submodules
    assert req.repo == repo / "." and req.prompt == "x" and req.prompt_file is None
    assert req.extra_options["allow_claimed"] is True and req.extra_options["no_isolation"] is False
    # the caller's directory places a relative plan (MCP); without one it stays as typed (CLI)
    _, req = run_request(base, repo, prompt_file=Path("plans/a.md"), cwd=tmp_path)
    assert req.prompt_file == tmp_path / "plans" / "a.md"
    _, req = run_request(base, repo, prompt_file=Path("plans/a.md"))
    assert req.prompt_file == Path("plans/a.md") and req.repo == repo


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"prompt": "x", "timeout": "soon"}, "soon"),
        ({"prompt": "x", "warn_at": "5m,later"}, "later"),
        ({"prompt": "x", "compression": "rar"}, "--compression"),
    ],
)
def test_run_request_refuses_what_a_run_cannot_take(repo, kw, message):
    from sandboxrun.sandbox.request import run_request

    with pytest.raises(UsageError, match=message):
        run_request(load_settings(repo), repo, **kw)
