"""The sandbox pipeline in-process: ``RunDriver``, the follower and the session operations.

Fast enough for every change: the local backend, the test stand-in agent (``fake_claude.py``)
as a real detached process, real git, real SQLite, a 20 ms poll. Where a test needs the agent
to be mid-run it waits on a gate file the test creates, never on the clock. The slow CLI tests
(``test_run_local.py``) check the same paths through ``python -m sandboxrun``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sbr_testlib import branch_files, git, retry_until

from sandboxrun.config import load_settings
from sandboxrun.errors import (
    AgentError,
    Interrupted,
    SandboxLostError,
    SandboxrunError,
    UsageError,
)
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.prepare import RunRequest, prepare_run
from sandboxrun.sandbox.runner import RunDriver
from sandboxrun.sandbox.sessions import (
    attach_session,
    cleanup,
    download_session,
    extend_session,
    kill_session,
)
from sandboxrun.store import SessionStore


class DriverDied(BaseException):
    """Raised inside the driver to stand for its process dying (nothing catches it)."""


class Recorder:
    """A Reporter that keeps what it was told; ``die_on`` kills the driver at that event."""

    def __init__(self, die_on: str | None = None) -> None:
        self.phases: list[str] = []
        self.warnings: list[str] = []
        self.events: list[str] = []
        self.ticks: list[tuple[float, float | None]] = []
        self.die_on = die_on

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.append(name)

    def agent_event(self, event) -> None:
        self.events.append(event.type if event.type != "tool_use" else event.data["name"])
        if self.die_on is not None and self.events[-1] == self.die_on:
            raise DriverDied()

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def tick(self, progress, elapsed: float, remaining: float | None) -> None:
        self.ticks.append((elapsed, remaining))


@pytest.fixture
def settings(isolated_env, repo):
    """This repo's settings (home, stand-in agent from the environment), polling every 20 ms."""
    return load_settings(repo).with_overrides(poll_interval=0.02)


@pytest.fixture
def store(settings):
    store = SessionStore(settings.db_path)
    yield store
    store.close()


class Gate:
    """A file the agent waits for (``@bash`` loop) until the test opens it.

    It lives in the sandbox's home, next to (not in) the repository, where the agent can see it
    even when isolated (its /tmp and HOME are private) and where it is not part of the work.
    """

    line = "@bash while [ ! -e ../gate ]; do sleep 0.02; done"

    def __init__(self, store) -> None:
        self.store = store

    def open(self, session) -> None:
        home = self.store.get(session.id).sandbox_home
        if home and Path(home).is_dir():
            Path(home, "gate").touch()


@pytest.fixture
def gate(store) -> Gate:
    return Gate(store)


def wait_line(gate: Gate) -> str:
    return gate.line


@pytest.fixture
def pipeline(settings, store, repo, gate):
    """Start runs (now or in a background thread); every agent and thread is gone afterwards."""
    pool = ThreadPoolExecutor(max_workers=4)

    class Pipeline:
        def start(self, prompt: str, name: str = "t", **request):
            return prepare_run(
                settings,
                store,
                RunRequest(repo=repo, prompt=prompt, name=name, backend="local", **request),
            )

        def driver(self, session, reporter=None) -> RunDriver:
            # A store per thread, as a second process would have.
            return RunDriver(settings, SessionStore(settings.db_path), session, reporter)

        def run(self, prompt: str, name: str = "t", reporter=None, **request):
            return self.driver(self.start(prompt, name, **request), reporter).execute()

        def background(self, fn, *args, **kwargs) -> Future:
            return pool.submit(fn, *args, **kwargs)

        def wait_for_agent(self, session, tool: str = "Write") -> None:
            """Until the agent has reported a ``tool`` call (it is then mid-run)."""
            retry_until(
                lambda: any(
                    ev["payload"].get("name") == tool
                    for ev in store.events(session.id, kinds=("agent",))
                )
            )

    yield Pipeline()
    # Pass or fail: release every agent, then tear its sandbox down (the agent with it), so
    # that every driver thread ends and no process outlives the test.
    sessions = store.list()
    for s in sessions:
        gate.open(s)
    for s in sessions:
        if s.sandbox_id:
            with contextlib.suppress(SandboxrunError):
                get_backend("local", settings).connect(s.sandbox_id).destroy()
    pool.shutdown(wait=True, cancel_futures=True)


def agent_tools(store, session) -> list[str]:
    return [
        ev["payload"]["name"]
        for ev in store.events(session.id, kinds=("agent",))
        if ev["payload"].get("type") == "tool_use"
    ]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- whole runs ----------------------------------------------------------------------------


def test_run_brings_back_commits_and_leftovers(pipeline, settings, store, repo):
    """The driver packs, provisions, starts the agent, follows it and commits its work."""
    reporter = Recorder()
    prompt = (
        "@write src/new.py NEW = 2\n@commit agent: add new.py\n"
        "@delete src/old.py\n@append README.md more\n@binary blob.bin 300"
    )
    final = pipeline.run(prompt, name="happy", reporter=reporter)

    assert final.status == "completed" and final.error is None
    assert git(repo, "log", "--format=%s", "main..sandboxrun/happy").splitlines() == [
        "sandboxrun: uncommitted changes left by the agent",
        "agent: add new.py",
    ]
    files = branch_files(repo, "sandboxrun/happy")
    assert {"src/new.py", "blob.bin"} <= files and "src/old.py" not in files
    assert "deploy/server.pem" in files  # never uploaded, so never deleted
    assert final.files_changed == 4 and final.num_turns == 6 and final.cost_usd > 0
    assert len(final.result_commits) == 2 and final.agent_session_id
    assert final.exit_code == 0 and final.ended_at is not None
    # What the person watching was told, in order.
    assert reporter.phases[:3] == ["packing", "provisioning", "running"]
    assert reporter.phases[-1] == "collecting"
    assert reporter.events[:1] == ["init"] and reporter.events[-1] == "result"
    assert "Write" in reporter.events and reporter.ticks
    assert any("deploy/server.pem" in w for w in reporter.warnings)  # kept out of the upload
    # Artifacts kept, sandbox gone, every log line stored once.
    artifacts = settings.session_artifacts(final.id)
    assert (artifacts / "objects" / "pack" / "work.pack").stat().st_size > 0  # as git objects
    assert (artifacts / "agent.log").read_bytes().count(b"\n") == len(
        store.events(final.id, kinds=("stdout",))
    )
    assert not (settings.sandboxes_dir / final.id).exists()
    assert agent_tools(store, final) == ["Write", "Bash", "Bash", "Edit", "Write"]


@pytest.mark.parametrize(
    ("directive", "words"),
    [
        ("@fail 3", ["code 3", "failing on request"]),
        ("@error API Error: 500 boom", ["API Error: 500 boom", "error_during_execution"]),
    ],
)
def test_a_failing_agent_fails_the_run_with_its_reason_and_keeps_the_work(
    pipeline, repo, directive, words
):
    final = pipeline.run(f"@write partial.txt half done\n{directive}", name="boom")
    assert final.status == "failed"
    for word in words:
        assert word in final.error
    assert "partial.txt" in branch_files(repo, "sandboxrun/boom")


def test_dry_run_verifies_the_upload_without_an_agent(pipeline, store, monkeypatch):
    final = pipeline.run("x", name="dry", dry_run=True)
    assert final.status == "completed_no_changes" and final.agent_pgid is None
    (report,) = [ev["payload"] for ev in store.events(final.id, kinds=("dry_run",))]
    assert report["files"] == report["verified"] > 0
    assert report["missing"] == [] and report["differ"] == []


def test_sensitive_paths_are_refused_and_the_rest_is_applied(pipeline, settings, store, repo):
    final = pipeline.run("@write .claude/settings.json {}\n@write ok.txt fine", name="sneaky")
    assert final.status == "completed_with_refusals"
    files = branch_files(repo, "sandboxrun/sneaky")
    assert "ok.txt" in files and ".claude/settings.json" not in files
    kept = (settings.session_artifacts(final.id) / "refused.diff").read_bytes()
    assert b".claude/settings.json" in kept and b"ok.txt" not in kept

    final = pipeline.run("@write .claude/settings.json {}", name="ok", allow_sensitive=True)
    assert final.status == "completed"
    assert ".claude/settings.json" in branch_files(repo, "sandboxrun/ok")


def test_a_missing_agent_program_fails_before_anything_runs(pipeline, settings, store, repo):
    session = pipeline.start("@write a.txt a", name="noagent")
    driver = RunDriver(settings.with_overrides(claude_bin="/nonexistent/claude"), store, session)
    with pytest.raises(AgentError, match="is not installed"):
        driver.execute()
    s = store.get(session.id)
    assert s.status == "failed" and "/nonexistent/claude" in s.error
    assert not (settings.sandboxes_dir / session.id).exists()


def test_usage_limit_stops_the_waiting_agent_and_records_the_reset(pipeline, store, repo):
    reset = int(time.time()) + 3600
    session = pipeline.start(f"@write w.txt work\n@ratelimit {reset}", name="quota")
    # 50 ms allowed blocked without a result before we stop it (the default is 20 s).
    store.update(session.id, options={**session.options, "quota_stall": 0.05})
    final = pipeline.driver(session).execute()
    assert final.status == "waiting_quota"
    assert final.options["quota_resets_at"] == reset and "usage limit" in final.error
    assert "w.txt" in branch_files(repo, "sandboxrun/quota")


# -- the clock ---------------------------------------------------------------------------------


def test_warning_marks_then_the_limit_stop_the_agent_and_collect(
    pipeline, settings, store, repo, gate
):
    """A warn mark fires (with a checkpoint of the work), then the limit stops and collects."""
    reporter = Recorder()
    session = pipeline.start(f"@write early.txt before\n{wait_line(gate)}\n@write late.txt",
                             name="slow")  # fmt: skip
    store.update(session.id, warn_at=[0.001])
    run = pipeline.background(pipeline.driver(session, reporter).execute)
    retry_until(lambda: store.events(session.id, kinds=("warning",)))
    retry_until(
        lambda: any(e["payload"].get("phase") == "checkpoint" for e in store.events(session.id))
    )
    pipeline.wait_for_agent(session)  # early.txt is written: the agent waits at the gate
    store.update(session.id, deadline=time.time() - 1)  # the limit is here
    final = run.result(timeout=180)

    assert final.status == "timeout" and "time limit" in final.error
    marks = [ev["payload"]["mark"] for ev in store.events(session.id, kinds=("warning",))]
    assert marks == [0.001, "limit"]
    assert any("extend with `sandboxrun extend`" in w for w in reporter.warnings)
    assert "time limit, to collect the work" in reporter.warnings[-1]
    files = branch_files(repo, "sandboxrun/slow")
    assert "early.txt" in files and "late.txt" not in files
    assert final.exit_code is not None and final.exit_code != 0  # it was interrupted


def test_extend_pushes_the_deadline_and_the_run_carries_on(pipeline, settings, store, repo, gate):
    session = pipeline.start(f"@write a.txt a\n{wait_line(gate)}\n@write b.txt b", name="ext")
    run = pipeline.background(pipeline.driver(session).execute)
    pipeline.wait_for_agent(session)
    before = store.get(session.id)
    after = extend_session(settings, store, before, 90)
    assert after.deadline == pytest.approx(before.deadline + 90)
    assert after.timeout_s == pytest.approx(after.deadline - after.started_at)
    assert any(e["payload"].get("phase") == "extended" for e in store.events(session.id))
    gate.open(session)
    final = run.result(timeout=180)
    assert final.status == "completed"
    assert {"a.txt", "b.txt"} <= branch_files(repo, "sandboxrun/ext")
    with pytest.raises(SandboxrunError, match="already ended"):
        extend_session(settings, store, final, 60)


# -- kill, download, attach, cleanup ------------------------------------------------------------


@pytest.mark.parametrize("discard", [False, True])
def test_kill_while_driven_stops_the_agent(pipeline, settings, store, repo, gate, discard):
    """`kill` from another terminal asks the driver (alive) to stop; it collects or discards."""
    session = pipeline.start(f"@write made.txt made\n{wait_line(gate)}", name="victim")
    run = pipeline.background(pipeline.driver(session).execute)
    pipeline.wait_for_agent(session)
    killed = kill_session(settings, store, store.get(session.id), discard=discard)
    final = run.result(timeout=180)
    assert killed.status == final.status == "killed"
    assert ("made.txt" in branch_files(repo, "sandboxrun/victim")) is not discard
    assert ("discarded" in final.error) is discard
    with pytest.raises(SandboxrunError, match="already ended"):
        kill_session(settings, store, final)


def test_a_dead_driver_leaves_the_agent_working_for_download_and_attach(
    pipeline, settings, store, repo, gate, tmp_path
):
    """The driving process dies mid-run: the agent goes on, `download` takes its work so far,
    `cleanup` calls the session an orphan, and `attach` follows it to the end, counting each
    line once."""
    session = pipeline.start(f"@write first.txt one\n{wait_line(gate)}\n@write second.txt two",
                             name="crash")  # fmt: skip
    run = pipeline.background(pipeline.driver(session, Recorder(die_on="Write")).execute)
    with pytest.raises(DriverDied):
        run.result(timeout=180)
    store.update(session.id, owner_pid=dead_pid())
    s = store.get(session.id)
    assert s.status == "running" and not s.is_terminal

    with pytest.raises(SandboxrunError, match="still follows it"):
        attach_session(settings, store, store.update(session.id, owner_pid=os.getpid()))
    store.update(session.id, owner_pid=dead_pid())

    dl = download_session(settings, store, store.get(session.id), tmp_path / "dl")
    assert dl.live and dl.agent_commits == 0
    assert b"first.txt" in (tmp_path / "dl" / "changes.diff").read_bytes()
    assert cleanup(settings, store).orphans == ["crash"]

    gate.open(session)
    reporter = Recorder()
    final = attach_session(settings, store, store.get(session.id), reporter)
    assert final.status == "completed"
    assert {"first.txt", "second.txt"} <= branch_files(repo, "sandboxrun/crash")
    assert reporter.phases[0] == "attached"
    assert agent_tools(store, final) == ["Write", "Bash", "Write"]  # no line lost or repeated
    assert final.num_turns == 4

    after = download_session(settings, store, final, tmp_path / "dl2")
    assert not after.live and (tmp_path / "dl2" / "agent.log").exists()
    with pytest.raises(SandboxrunError, match="already ended"):
        attach_session(settings, store, final)


def test_kill_with_no_driver_left_does_the_whole_job(pipeline, settings, store, repo, gate):
    session = pipeline.start(f"@write w.txt w\n{wait_line(gate)}", name="orphan")
    run = pipeline.background(pipeline.driver(session, Recorder(die_on="Write")).execute)
    with pytest.raises(DriverDied):
        run.result(timeout=180)
    store.update(session.id, owner_pid=dead_pid())
    final = kill_session(settings, store, store.get(session.id))
    assert final.status == "killed" and "the work so far was collected" in final.error
    assert "w.txt" in branch_files(repo, "sandboxrun/orphan")
    assert not (settings.sandboxes_dir / session.id).exists()


def test_a_sandbox_that_vanishes_mid_run_ends_lost(pipeline, settings, store, gate):
    session = pipeline.start(f"@write w.txt w\n{wait_line(gate)}", name="vanish")
    run = pipeline.background(pipeline.driver(session).execute)
    pipeline.wait_for_agent(session)
    get_backend("local", settings).connect(session.id).destroy()
    with pytest.raises(SandboxLostError):
        run.result(timeout=180)
    assert store.get(session.id).status == "lost"
    with pytest.raises(SandboxLostError):
        get_backend("local", settings).connect(session.id)


def test_cleanup_removes_kept_sandboxes_and_clean_worktrees_only(pipeline, settings, store, repo):
    kept = pipeline.run("@write k.txt k", name="kept", keep=True)
    dirty = pipeline.run("@write d.txt d", name="dirty")
    assert (settings.sandboxes_dir / kept.id).is_dir()
    (Path(dirty.worktree) / "scratch.txt").write_text("user work in progress\n")

    dry = cleanup(settings, store, worktrees=True, dry_run=True)
    assert dry.sandboxes_removed == ["kept"] and (settings.sandboxes_dir / kept.id).is_dir()
    report = cleanup(settings, store, worktrees=True)
    assert report.sandboxes_removed == ["kept"] and report.orphans == []
    assert not (settings.sandboxes_dir / kept.id).exists()
    assert report.worktrees_removed == [kept.worktree] and report.kept_dirty == [dirty.worktree]
    assert (Path(dirty.worktree) / "scratch.txt").exists()
    assert "k.txt" in branch_files(repo, "sandboxrun/kept")  # branches always stay

    forgot = cleanup(settings, store, forget=True)
    assert sorted(forgot.forgotten) == ["dirty", "kept"] and store.list() == []


# -- interruptions and our own failures -----------------------------------------------------------


class Interrupter(Recorder):
    """Ctrl-C (KeyboardInterrupt) at the agent's first Write, and again while we stop it when
    ``twice``, as a person pressing it in the terminal would."""

    def __init__(self, twice: bool) -> None:
        super().__init__()
        self.twice = twice

    def agent_event(self, event) -> None:
        super().agent_event(event)
        if self.events[-1] == "Write" and self.events.count("Write") == 1:
            raise KeyboardInterrupt

    def warning(self, message: str) -> None:
        super().warning(message)
        if self.twice and message.startswith("kill requested"):
            raise KeyboardInterrupt


def test_ctrl_c_stops_the_agent_and_collects(pipeline, store, repo, gate):
    session = pipeline.start(f"@write c.txt before ctrl-c\n{wait_line(gate)}", name="ctrlc")
    reporter = Interrupter(twice=False)
    final = pipeline.driver(session, reporter).execute()
    assert final.status == "killed"
    assert "c.txt" in branch_files(repo, "sandboxrun/ctrlc")
    assert any(w.startswith("Ctrl-C: stopping the agent") for w in reporter.warnings)
    marks = [ev["payload"]["mark"] for ev in store.events(session.id, kinds=("warning",))]
    assert marks == ["interrupt"]


def test_a_second_ctrl_c_leaves_the_agent_running(pipeline, settings, store, repo, gate):
    """The second Ctrl-C gives the terminal back and says how to carry on; nothing is lost."""
    session = pipeline.start(f"@write d.txt first\n{wait_line(gate)}", name="ctrlc2")
    with pytest.raises(Interrupted, match="may still be running") as err:
        pipeline.driver(session, Interrupter(twice=True)).execute()
    assert "sandboxrun attach ctrlc2" in err.value.hint and err.value.exit_code == 130
    s = store.get(session.id)
    assert not s.is_terminal and (settings.sandboxes_dir / s.id).is_dir()
    store.update(s.id, owner_pid=dead_pid())
    final = kill_session(settings, store, store.get(s.id))
    assert final.status == "killed" and "d.txt" in branch_files(repo, "sandboxrun/ctrlc2")


def test_kill_before_the_agent_starts_stops_without_collecting(pipeline, settings, store, repo):
    session = pipeline.start("@write never.txt x", name="early")
    store.request_kill(session.id, discard=False)
    final = pipeline.driver(session).execute()
    assert final.status == "killed" and final.error == "killed before the agent started"
    assert final.agent_pgid is None
    assert not (settings.sandboxes_dir / session.id).exists()
    assert git(repo, "rev-parse", "sandboxrun/early") == git(repo, "rev-parse", "main")


def test_kill_or_attach_a_session_whose_driver_died_before_the_agent(pipeline, settings, store):
    # an interrupted start (sandbox.interrupted): attach ends it failed, kill ends it killed
    session = pipeline.start("@write x.txt x", name="stillborn")
    store.update(session.id, owner_pid=dead_pid())
    final = attach_session(settings, store, store.get(session.id))
    assert final.status == "failed" and final.error.startswith("interrupted while created")
    with pytest.raises(SandboxrunError, match="already ended"):
        attach_session(settings, store, store.get(session.id))
    session = pipeline.start("@write x.txt x", name="stillborn2")
    store.update(session.id, owner_pid=dead_pid())
    final = kill_session(settings, store, store.get(session.id))
    assert final.status == "killed" and final.error.startswith("interrupted while created")


def test_our_own_crash_after_the_agent_started_keeps_the_sandbox(pipeline, settings, store, gate):
    """An unexpected error in the driver fails the session but keeps the sandbox, whose work
    `download` can still fetch, and says so."""

    class Broken(Recorder):
        def agent_event(self, event) -> None:
            super().agent_event(event)
            if self.events[-1] == "Write":
                raise RuntimeError("a bug of ours")

    session = pipeline.start(f"@write w.txt w\n{wait_line(gate)}", name="bug")
    with pytest.raises(RuntimeError, match="a bug of ours"):
        pipeline.driver(session, Broken()).execute()
    s = store.get(session.id)
    assert s.status == "failed"
    assert "unexpected error: RuntimeError: a bug of ours" in s.error
    assert "sandboxrun download bug" in s.error
    assert (settings.sandboxes_dir / s.id).is_dir()
    assert cleanup(settings, store).sandboxes_removed == ["bug"]
    assert not (settings.sandboxes_dir / s.id).exists()


def test_attach_when_the_sandbox_is_gone_marks_it_lost(pipeline, settings, store, gate):
    session = pipeline.start(f"@write w.txt w\n{wait_line(gate)}", name="gone")
    run = pipeline.background(pipeline.driver(session, Recorder(die_on="Write")).execute)
    with pytest.raises(DriverDied):
        run.result(timeout=180)
    store.update(session.id, owner_pid=dead_pid())
    get_backend("local", settings).connect(session.id).destroy()
    with pytest.raises(SandboxLostError):
        attach_session(settings, store, store.get(session.id))
    assert store.get(session.id).status == "lost"


def test_update_claude_runs_before_the_agent_and_install_is_refused_locally(
    pipeline, settings, store
):
    final = pipeline.run("@write u.txt u", name="upd", extra_options={"update_claude": True})
    assert final.status == "completed"
    (update,) = [
        ev["payload"]
        for ev in store.events(final.id, kinds=("phase",))
        if ev["payload"].get("phase") == "claude_update"
    ]
    assert update["ok"] and "up to date" in update["detail"]

    # --install-claude only installs into an isolated sandbox; locally it says what to do.
    session = pipeline.start("@write i.txt i", name="inst")
    store.update(session.id, options={**session.options, "install_claude": True})
    driver = RunDriver(
        settings.with_overrides(claude_bin="/nonexistent/claude"), store, store.get(session.id)
    )
    with pytest.raises(UsageError, match="isolated sandbox only") as err:
        driver.execute()
    assert "scripts/install.sh --with-claude" in err.value.hint
    assert store.get(session.id).status == "failed"


def test_attach_to_a_session_still_starting_says_so(pipeline, settings, store):
    """Its run process is alive and still making the sandbox ready: `attach` says the session
    is still starting and names what works now (watch it, stop it), not "never started";
    once that process is gone, the start was interrupted and attach finishes it instead."""
    session = pipeline.start("@write a.txt a", name="early")
    assert session.starter_pid == os.getpid()  # this process is "the run starting it"
    with pytest.raises(SandboxrunError) as err:
        attach_session(settings, store, store.get(session.id))
    assert "still starting" in err.value.message and "never" not in err.value.message
    hint = err.value.hint or ""
    assert "`sandboxrun logs early --follow`" in hint and "`sandboxrun kill early`" in hint
    # the driver claimed it and is alive, before the agent started: still starting too
    store.update(session.id, owner_pid=os.getpid(), status="provisioning")
    with pytest.raises(SandboxrunError, match="still starting"):
        RunDriver(settings, store, store.get(session.id)).resume()
    # the run process died before the agent started: attach ends it, nothing to follow
    store.update(session.id, owner_pid=dead_pid(), starter_pid=dead_pid())
    final = attach_session(settings, store, store.get(session.id))
    assert final.is_terminal and final.agent_pgid is None
