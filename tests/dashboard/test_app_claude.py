"""The dashboard's permission keys on real Claude Code children in tmux (the real CLI against a
fake Anthropic API): `a` approves the dialog a child waits on, `x` refuses it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sbr_testlib import private_tmux, retry_until

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandboxrun.config import load_settings  # noqa: E402
from sandboxrun.dashboard.app import DashboardApp  # noqa: E402
from sandboxrun.local.observe import PERMISSION_TEXT  # noqa: E402
from sandboxrun.tmux import SOCKET_ENV  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, text, tool  # noqa: E402
from tests.fake_anthropic.cli import installed_claude  # noqa: E402
from tests.tmux.conftest import Children, logged_in_home  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def children(proj, tmp_path, monkeypatch):
    """Real claude children of ``proj`` on a private tmux server, against a fake API."""
    with FakeAnthropic() as api, private_tmux(monkeypatch) as tmux:  # tmux killed first
        env = logged_in_home(api.url, tmp_path / "agent-home")
        env["SANDBOXRUN_CLAUDE_BIN"] = str(installed_claude())
        env["SANDBOXRUN_HOME"] = os.environ["SANDBOXRUN_HOME"]
        env[SOCKET_ENV] = os.environ[SOCKET_ENV]  # private_tmux's socket
        env["PROJECT_PREFIX"] = "t"
        yield Children(proj, env, api, tmux)


async def until(pilot, condition, what: str, limit: float = 60.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"not reached: {what}")


def test_approve_and_refuse_a_permission_from_the_dashboard(children, proj):
    wt = proj / ".worktrees"
    # in request order: p's turn, q's turn (both then wait on a dialog), p after approval,
    # q after refusal (if Claude Code asks again at all)
    children.api.script(
        tool("Bash", command="echo yes > approved.txt"),
        tool("Bash", command="echo no > refused.txt"),
        text("made it"),
        text("fine, not doing it"),
        text("message received"),
        text("message received"),
    )
    for name in ("p", "q"):
        out = children("spawn", name, "--prompt", f"run it {name}", "--permission-mode", "default")
        assert out.returncode == 0, out.stderr
        wait = children("wait", name, "--timeout", "60s")
        assert wait.returncode == 10, wait.stdout + wait.stderr  # needs_permission
    app = DashboardApp(load_settings(), str(proj), poll=0.1)

    def state(name: str) -> str | None:
        rows = [r for r in (app.snap.sessions if app.snap else []) if r.name == name]
        return rows[0].state if rows else None

    async def select(pilot, name: str) -> None:
        table = app.query_one("#sessions")
        index = [r.name for r in app.snap.sessions].index(name)
        table.move_cursor(row=index)
        await pilot.pause()
        assert app.selected().name == name

    async def script(pilot):
        await until(pilot, lambda: state("p") == "needs_permission", "p asks")
        await until(pilot, lambda: state("q") == "needs_permission", "q asks")
        await select(pilot, "p")
        await pilot.press("a")
        await until(pilot, lambda: any("p: permission approved" in s for s in app.said), "said")
        await until(pilot, lambda: (wt / "p" / "approved.txt").exists(), "the tool ran")
        await until(pilot, lambda: state("p") == "idle", "p idle after its turn")
        await select(pilot, "q")
        await pilot.press("x")
        await until(pilot, lambda: any("q: permission refused" in s for s in app.said), "said")
        # pressing again: the dialog is gone, so nothing is pressed into the composer
        await until(
            pilot,
            lambda: PERMISSION_TEXT not in children.tmux.capture("t_child_q"),
            "dialog closed",
        )
        await pilot.press("x")
        await until(pilot, lambda: "shows no permission dialog" in app.said[-1], "refusal")
        # s: a message to p, confirmed by its UserPromptSubmit hook (as `sandboxrun send`)
        await select(pilot, "p")
        await pilot.press("s")
        await pilot.press(*"check [the] logs")
        await pilot.press("enter")
        await until(pilot, lambda: any("p: delivered" in s for s in app.said), "delivered", 90)
        # r: its conversation from the transcript, agent text as text
        await pilot.press("r")
        detail = lambda: "\n".join(app.query_one("#detail").lines)  # noqa: E731

        async def reread() -> bool:
            await pilot.press("r")  # a snapshot of the transcript: read again until the
            return "message received" in detail()  # answer to the message is in it

        for _ in range(100):
            if await reread():
                break
        assert "user: check [the] logs" in detail() and "assistant: made it" in detail()
        assert "made it" in detail()
        # K then y: the child is closed (its worktree kept)
        await pilot.press("K")
        await pilot.press("y")
        await until(pilot, lambda: any("p: closed" in s for s in app.said), "closed", 90)
        await until(pilot, lambda: state("p") == "exited", "p exited")

    async def main():
        async with app.run_test(size=(170, 45)) as pilot:
            await script(pilot)

    asyncio.run(main())
    assert not (wt / "q" / "refused.txt").exists()
    assert children.prompts().count("check [the] logs") == 1
    assert not children.tmux.has_session("t_child_p") and (wt / "p").is_dir()
    retry_until(lambda: (wt / "p" / "approved.txt").read_text() == "yes\n")
