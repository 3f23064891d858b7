"""`e` (extend) and `K` (kill) through the dashboard app, on real runs: a local-backend run (our
deadline moves; a kill collects the work done so far) and an E2B run against the emulator (the
sandbox's own end moves with the deadline). The agent waits at a gate, so nothing races the
clock."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from dashlib import run_app, until
from sbr_testlib import FAKE_CLAUDE, GATE_WAIT, branch_files, open_gate, retry_until

from sandboxrun.config import load_settings
from sandboxrun.dashboard.app import DashboardApp
from sandboxrun.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.slow


def row(store: SessionStore, name: str):
    return store.resolve(name)


async def extend(pilot, app: DashboardApp, name: str, value: str) -> None:
    """Select ``name``, press e, replace the offered 10m with ``value``, Enter."""
    await until(pilot, lambda: app.snap and name in [r.name for r in app.snap.sessions], name)
    while app.selected().name != name:
        await pilot.press("down")
    said = len(app.said)
    await pilot.press("e")
    await until(pilot, lambda: app.screen.query("#answer"), "the prompt")
    assert "left) by" in str(app.screen.query_one("Label").render())
    await pilot.press("backspace", "backspace", "backspace", *value, "enter")
    await until(pilot, lambda: len(app.said) > said, "what it did", 60)


def test_e_pushes_a_local_runs_deadline(cli, repo, store):
    run = cli.popen("run", "--backend", "local", "--name", "ext", "--timeout", "10m",
                    "--warn-at", "none", "--prompt", f"@write a.txt a\n{GATE_WAIT}\n"
                    "@write done.txt finished")  # fmt: skip
    retry_until(lambda: (st := cli.status_or_none("ext")) and st["status"] == "running", 60)
    before = row(store, "ext")
    app = DashboardApp(load_settings(), str(repo), poll=0.05)

    async def script(pilot):
        await extend(pilot, app, "ext", "soon")  # not a duration: said, nothing moves
        assert "soon" in app.said[-1] and row(store, "ext").deadline == before.deadline
        await extend(pilot, app, "ext", "30s")

    run_app(app, script)
    assert app.said[-1].startswith("ext: limit extended by 30s, now "), app.said
    after = row(store, "ext")
    assert after.deadline == pytest.approx(before.deadline + 30)
    assert after.timeout_s == pytest.approx(600 + 30)
    open_gate("ext")
    out, err = run.communicate(timeout=90)
    assert run.returncode == 0, err
    assert "done.txt" in branch_files(repo, "sandboxrun/ext")


def test_k_kills_a_run_and_brings_back_its_work(cli, repo, store):
    run = cli.popen("run", "--backend", "local", "--name", "victim", "--timeout", "10m",
                    "--prompt", f"@write a.txt a\n{GATE_WAIT}\n@write never.txt x")  # fmt: skip
    retry_until(lambda: "Write" in cli("logs", "victim").stdout, timeout=60)
    app = DashboardApp(load_settings(), str(repo), poll=0.05)

    def log() -> str:
        return "\n".join(app.query_one("#detail").lines)

    async def script(pilot):
        await until(pilot, lambda: app.snap and app.snap.sessions, "the row")
        await pilot.press("l")  # its log, from the start, then following
        await until(pilot, lambda: "/a.txt" in log(), "the run's events", 120)
        assert "status running" in log() and "Write: " in log()
        await pilot.press("K", "n")  # no: nothing happens
        await pilot.press("K", "y")
        await until(pilot, lambda: app.said, "what it did", 120)
        await until(pilot, lambda: app.snap.sessions[0].state == "killed", "the row", 120)
        await until(pilot, lambda: "status killed" in log(), "followed to its end", 120)

    run_app(app, script)
    assert app.said == ["victim: killed"], app.said
    run.communicate(timeout=60)
    assert store.resolve("victim").status == "killed"
    files = branch_files(repo, "sandboxrun/victim")
    assert "a.txt" in files and "never.txt" not in files


@pytest.fixture
def e2b(monkeypatch, repo):
    """The loopback E2B emulator with the stand-in agent, the SDK pointed at it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the E2B emulator needs Linux namespaces")
    missing = [p for p in ("unshare", "nsenter", "setpriv") if shutil.which(p) is None]
    if missing:  # as tests/e2b: fail with the reason, never pass without the test
        pytest.fail(f"the E2B emulator needs {', '.join(missing)} (util-linux)", pytrace=False)
    from tests.e2b_emulator import E2BEmulator

    emu = E2BEmulator()
    emu.start()
    try:
        emu.check()
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("E2B_DOMAIN", raising=False)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-dashboard-extend")
        emu.set_claude(FAKE_CLAUDE)
        yield emu
    finally:
        emu.stop()


def test_e_pushes_an_e2b_sandboxs_end_with_the_deadline(cli, repo, store, e2b):
    gate = "/home/user/go"
    run = cli.popen("run", "--backend", "e2b", "--name", "ext", "--timeout", "10m",
                    "--warn-at", "none", "--prompt",
                    f"@write a.txt a\n@bash while [ ! -e {gate} ]; do sleep 0.05; done\n"
                    "@write done.txt ok")  # fmt: skip
    retry_until(lambda: (st := cli.status_or_none("ext")) and st["status"] == "running", 90)
    before = row(store, "ext")
    end_before = e2b.sandbox(before.sandbox_id).end_at
    app = DashboardApp(load_settings(), str(repo), poll=0.05)

    async def script(pilot):
        await extend(pilot, app, "ext", "5m")

    run_app(app, script)
    assert app.said[-1].startswith("ext: limit extended by 5m00s, now "), app.said
    after = row(store, "ext")
    assert after.deadline == pytest.approx(before.deadline + 300)
    end = e2b.sandbox(before.sandbox_id).end_at
    assert end >= after.deadline - 1 and end >= end_before + 299  # E2B's own end moved
    assert after.sandbox_end == pytest.approx(end, abs=1)
    e2b.host_path(before.sandbox_id, gate).touch()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "done.txt" in branch_files(repo, "sandboxrun/ext")
