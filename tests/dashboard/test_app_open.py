"""`o` (open the child's tmux pane) through the dashboard app, on real tmux servers of their own:
"yours" (the tmux a person works in) and "kids" (sandboxrun's children, SANDBOXRUN_TMUX_SOCKET).
Each case asserts what tmux itself reports afterwards (which session a client shows, which
windows exist), and what the dashboard said."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from dashlib import run_app, sandbox_session, until
from sbr_testlib import retry_until

from sandboxrun.config import load_settings
from sandboxrun.dashboard.app import DashboardApp
from sandboxrun.store import SessionStore, Status
from sandboxrun.tmux import SOCKET_ENV

MARK = "CHILD-PANE-MARKER"


def tmux(socket: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["tmux", "-S", socket, *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout


def clients(socket: str) -> list[str]:
    """The sessions the clients of a server show."""
    out = tmux(socket, "list-clients", "-F", "#{client_session}", check=False)
    return out.split()


@pytest.fixture
def servers(monkeypatch):
    """Two tmux servers on private sockets; TMUX/TMUX_PANE unset; both killed afterwards."""
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TMUX_PANE", raising=False)
    d = tempfile.mkdtemp(prefix="sbr-tmux-", dir="/tmp")
    s = SimpleNamespace(yours=os.path.join(d, "yours"), kids=os.path.join(d, "kids"))
    monkeypatch.setenv(SOCKET_ENV, s.kids)
    try:
        yield s
    finally:
        for sock in (s.yours, s.kids):
            subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def tmux_child(store: SessionStore, proj: Path, socket: str, role: str) -> str:
    """A local child as `spawn` records it, its pane a real tmux session printing MARK."""
    name = f"t_child_{role}"
    tmux(socket, "new-session", "-d", "-s", name, "-x", "120", "-y", "30",
         "sh", "-c", f"echo {MARK}; exec cat")  # fmt: skip
    s = store.create_session(
        name=role,
        mode="local",
        backend="tmux",
        status=Status.RUNNING,
        repo=str(proj),
        branch=f"agent/{role}/active",
        role=role,
        tmux_session=name,
        started_at=time.time(),
        options={"socket": socket},
    )
    return s.id


def inside(socket: str, session: str) -> dict[str, str]:
    """$TMUX and $TMUX_PANE as a pane of ``session`` on ``socket`` has them."""
    pid = tmux(socket, "display-message", "-p", "-t", f"={session}", "#{pid}").strip()
    sid = tmux(socket, "display-message", "-p", "-t", f"={session}", "#{session_id}").strip()
    pane = tmux(socket, "display-message", "-p", "-t", f"={session}", "#{pane_id}").strip()
    return {"TMUX": f"{socket},{pid},{sid.lstrip('$')}", "TMUX_PANE": pane}


async def select(pilot, app: DashboardApp, name: str) -> None:
    await until(pilot, lambda: app.snap and name in [r.name for r in app.snap.sessions], name)
    while app.selected().name != name:  # the keys a person presses
        await pilot.press("down")
    assert app.selected().name == name


def test_outside_tmux_without_a_terminal_it_says_the_exact_attach_command(proj, store, servers):
    tmux_child(store, proj, servers.kids, "api")
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await select(pilot, app, "api")
        await pilot.press("o")  # headless: the terminal cannot be handed over
        await until(pilot, lambda: app.said, "what it did")

    run_app(app, script)
    said = app.said[-1]
    told = f"tmux -S {servers.kids} attach-session -t =t_child_api"
    assert said.endswith(told), said
    # the command, typed into a real terminal (a pane of your tmux), attaches to the child
    tmux(servers.yours, "new-session", "-d", "-s", "term", "-x", "100", "-y", "30",
         "env", "-u", "TMUX", *shlex.split(told))  # fmt: skip
    retry_until(lambda: clients(servers.kids) == ["t_child_api"], timeout=60)
    retry_until(lambda: MARK in tmux(servers.yours, "capture-pane", "-p", "-t", "=term:"))


def test_inside_another_tmux_it_opens_a_window_attached_to_the_child(
    proj, store, servers, monkeypatch
):
    tmux_child(store, proj, servers.kids, "api")
    tmux(servers.yours, "new-session", "-d", "-s", "desk", "-x", "120", "-y", "30")
    for key, value in inside(servers.yours, "desk").items():
        monkeypatch.setenv(key, value)
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await select(pilot, app, "api")
        await pilot.press("o")
        await until(pilot, lambda: app.said, "what it did", 120)

    run_app(app, script)
    assert app.said[-1].startswith("opened t_child_api in a new window of your tmux"), app.said
    assert f"tmux -S {servers.kids} attach-session -t =t_child_api" in app.said[-1]
    windows = tmux(servers.yours, "list-windows", "-t", "=desk", "-F", "#{window_name}")
    assert "t_child_api" in windows.split()
    retry_until(lambda: clients(servers.kids) == ["t_child_api"], timeout=60)
    retry_until(
        lambda: MARK in tmux(servers.yours, "capture-pane", "-p", "-t", "=desk:t_child_api")
    )


def test_inside_the_same_tmux_it_switches_this_client(proj, store, servers, monkeypatch):
    tmux_child(store, proj, servers.kids, "api")
    tmux(servers.kids, "new-session", "-d", "-s", "desk", "-x", "120", "-y", "30")
    # a real client (a terminal) showing "desk", where the dashboard runs
    tmux(servers.yours, "new-session", "-d", "-s", "term", "-x", "120", "-y", "30",
         "env", "-u", "TMUX", "tmux", "-S", servers.kids, "attach-session", "-t", "=desk")  # fmt: skip
    retry_until(lambda: clients(servers.kids) == ["desk"], timeout=60)
    for key, value in inside(servers.kids, "desk").items():
        monkeypatch.setenv(key, value)
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await select(pilot, app, "api")
        await pilot.press("o")
        await until(pilot, lambda: app.said, "what it did", 120)

    run_app(app, script)
    assert app.said[-1].startswith("switched this tmux client to t_child_api"), app.said
    assert "prefix + L" in app.said[-1]
    retry_until(lambda: clients(servers.kids) == ["t_child_api"], timeout=60)


def test_open_refuses_what_has_no_pane(proj, store, servers):
    sandbox_session(store, "run1", proj)
    tmux_child(store, proj, servers.kids, "gone")
    tmux(servers.kids, "kill-session", "-t", "=t_child_gone")
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await select(pilot, app, "run1")
        await pilot.press("o")
        await until(pilot, lambda: len(app.said) == 1, "the refusal")
        assert "run1 is not a tmux child" in app.said[-1]
        await select(pilot, app, "gone")
        await pilot.press("o")
        await until(pilot, lambda: len(app.said) == 2, "the refusal")
        assert "its tmux session t_child_gone is gone" in app.said[-1]
        await pilot.press("e", "enter")  # a local child has no time limit: said so
        await until(pilot, lambda: len(app.said) == 3, "the refusal")
        assert "gone is a local child: it has no time limit to extend" in app.said[-1]

    run_app(app, script)


@pytest.mark.slow
def test_in_a_real_terminal_o_hands_it_to_tmux_and_comes_back(proj, store, servers):
    """`sandboxrun dashboard` in a real terminal (a pane of your tmux, TMUX unset: not inside
    tmux): `o` attaches to the child in the foreground; detaching brings the dashboard back,
    which says so; a row changed meanwhile is drawn on the terminal."""
    tmux_child(store, proj, servers.kids, "api")
    run = sandbox_session(store, "run1", proj)
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    argv = [sys.executable, "-m", "sandboxrun", "dashboard", "--poll", "0.1"]
    tmux(servers.yours, "new-session", "-d", "-s", "term", "-x", "170", "-y", "45",
         "-c", str(proj), "env", "-u", "TMUX",
         *(f"{k}={v}" for k, v in env.items()), *argv)  # fmt: skip

    def screen() -> str:
        return tmux(servers.yours, "capture-pane", "-p", "-t", "=term:")

    retry_until(lambda: "run1" in screen() and "t_child_api" not in clients(servers.kids), 60)
    tmux(servers.yours, "send-keys", "-t", "=term:", "o")  # the cursor starts on api
    retry_until(lambda: clients(servers.kids) == ["t_child_api"], timeout=120)
    retry_until(lambda: MARK in screen(), timeout=120)
    tmux(servers.kids, "detach-client", "-s", "=t_child_api")
    retry_until(lambda: "back from t_child_api" in screen(), timeout=120)
    store.set_status(run, Status.COMPLETED)
    retry_until(
        lambda: any("run1" in line and "completed" in line for line in screen().splitlines()),
        timeout=120,
    )
    tmux(servers.yours, "send-keys", "-t", "=term:", "q")
    retry_until(lambda: "term" not in tmux(servers.yours, "ls", check=False), timeout=120)


def test_open_plan_picks_the_way_from_where_the_dashboard_runs(tmp_path):
    from sandboxrun.dashboard.actions import open_plan

    kids = str(tmp_path / "kids")
    args = ["-S", kids]
    told = f"tmux -S {kids} attach-session -t =t_child_api"
    outside = open_plan("t_child_api", args, kids, None)
    assert (outside.how, outside.attach) == ("attach", told)
    assert outside.argv == ["tmux", "-S", kids, "attach-session", "-t", "=t_child_api"]
    same = open_plan("t_child_api", args, kids, f"{kids},123,0")
    assert same.how == "switch" and same.argv[-3:] == ["switch-client", "-t", "=t_child_api"]
    other = open_plan("t_child_api", args, kids, "/tmp/tmux-0/default,99,2")
    assert other.how == "window" and other.attach == told
    assert other.argv[:4] == ["tmux", "-S", "/tmp/tmux-0/default", "new-window"]
    assert other.argv[-9:] == ["env", "-u", "TMUX", "tmux", "-S", kids, "attach-session",
                               "-t", "=t_child_api"]  # fmt: skip
    # a name with spaces or quotes is told shell-quoted, exactly as typed
    assert open_plan("a b'c", [], "/s", None).attach == "tmux attach-session -t '=a b'\"'\"'c'"


def _open_cli(proj: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "sandboxrun", "open", "api"],
        cwd=proj, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


def test_open_command_inside_another_tmux_opens_a_window_there(proj, store, servers):
    """`sandboxrun open` makes the same choice as the dashboard's `o` (it used to run
    `switch-client` against the children's server from a client of another one)."""
    tmux_child(store, proj, servers.kids, "api")
    tmux(servers.yours, "new-session", "-d", "-s", "desk", "-x", "120", "-y", "30")
    res = _open_cli(proj, inside(servers.yours, "desk"))
    assert res.returncode == 0, res.stderr
    assert "opened t_child_api in a new window of your tmux" in res.stdout
    windows = tmux(servers.yours, "list-windows", "-t", "=desk", "-F", "#{window_name}")
    assert "t_child_api" in windows.split()
    retry_until(lambda: clients(servers.kids) == ["t_child_api"], timeout=60)


def test_open_command_without_a_terminal_names_the_attach_command(proj, store, servers):
    tmux_child(store, proj, servers.kids, "api")
    res = _open_cli(proj, {})
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "needs a terminal" in res.stderr
    assert f"tmux -S {servers.kids} attach-session -t =t_child_api" in res.stderr
    assert clients(servers.kids) == []  # nothing attached behind the person's back
