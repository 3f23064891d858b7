"""``POST /msg/send`` types into the target's tmux pane (the master by default) through the
same path as ``sandboxrun send``, on a real ``sandboxrun mcp --http`` over loopback."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcptest_lib import Tools, http_server_process
from sbr_testlib import retry_until

from sandboxrun.mcp.common import Coord
from sandboxrun.store import SessionStore, Status
from sandboxrun.tmux import SOCKET_ENV
from tests.fake_anthropic import text

pytestmark = pytest.mark.slow

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_send_types_into_the_master_pane_by_default(proj: Path, tmux_server):
    """A pane with no Claude in it: the text is typed there once; with no prompt hook to
    confirm it while the pane looks busy, the outcome is 'queued', never a second paste."""
    env = {**os.environ, SOCKET_ENV: tmux_server.socket_path, "PROJECT_PREFIX": "t"}
    with http_server_process(proj, env) as (base, token):
        auth = {"Authorization": f"Bearer {token}"}
        missing = httpx.post(f"{base}/msg/send", headers=auth, json={"message": "hello"})
        assert missing.status_code == 404
        assert "sandboxrun master start" in missing.json()["hint"]

        tmux_server.new_session("t_master", SLEEPER, cwd=proj)
        store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
        store.create_session(
            name="t_master", mode="local", backend="tmux", status=Status.RUNNING, repo=str(proj),
            worktree=str(proj), role="pm", tmux_session="t_master", started_at=time.time(),
            options={"master": True, "socket": tmux_server.socket_path},
        )  # fmt: skip
        sent = httpx.post(
            f"{base}/msg/send", headers=auth, json={"message": "status please", "taskId": "T-7"},
            timeout=60,
        )  # fmt: skip
        assert sent.status_code == 202, sent.text
        body = sent.json()
        assert (body["to"], body["outcome"], body["taskId"]) == ("t_master", "queued", "T-7")
        screen = retry_until(
            lambda: "status please" in (s := tmux_server.capture("t_master")) and s
        )
        assert screen.count("status please") == 1
        rows = store.conn.execute(
            "SELECT payload FROM events WHERE kind = 'http_message'"
        ).fetchall()
        assert len(rows) == 1 and '"taskId": "T-7"' in rows[0][0]
        # a pane that is gone: 409 naming why, nothing typed anywhere
        tmux_server.kill_session("t_master")
        gone = httpx.post(f"{base}/msg/send", headers=auth, json={"message": "x"}, timeout=60)
        assert gone.status_code == 409 and "exited" in gone.json()["error"]
        store.close()


@pytest.mark.e2e
def test_send_to_a_real_worker_is_delivered_once(proj: Path, worker_env, fake_api, tmux_server):
    fake_api.default = text("ok", times=None)
    tools = Tools(Coord(env=worker_env, cwd=proj))
    started = tools(
        "spawn_workers", workers=[{"name": "api", "task": "get ready"}], skip_permissions=True
    )
    assert started["failed"] == []
    assert tools("wait_idle_workers", names=["api"], timeout=120)["finished"]
    with http_server_process(proj, worker_env) as (base, token):
        auth = {"Authorization": f"Bearer {token}"}
        sent = httpx.post(
            f"{base}/msg/send", headers=auth, json={"message": "from the web", "sessionId": "api"},
            timeout=60,
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
        assert sent.json()["outcome"] == "delivered"
        # the prompt hook confirmed it; the turn it starts reaches the API a moment later
        retry_until(lambda: any("ok" in m["text"] for m in
                    tools("read_worker_logs", name="api")["messages"][2:]), timeout=60)  # fmt: skip
        assert tools("wait_idle_workers", names=["api"], timeout=120)["finished"]
        carrying = [r for r in fake_api.main_requests if "from the web" in r.user_texts()[-1]]
        assert len(carrying) == 1
        assert tools("close_workers", names=["api"])["closed"] == 1
        ended = httpx.post(
            f"{base}/msg/send", headers=auth, json={"message": "late", "sessionId": "api"}
        )
        assert ended.status_code == 409 and "has ended" in ended.json()["error"]


def test_reports_by_name_only_from_the_projects_namespace(proj: Path, tmux_server):
    env = {**os.environ, SOCKET_ENV: tmux_server.socket_path, "PROJECT_PREFIX": "t"}
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    child = store.create_session(
        name="api", mode="local", backend="tmux", status=Status.RUNNING, repo=str(proj),
        role="api", tmux_session="t_child_api",
    )  # fmt: skip
    other = store.create_session(
        name="elsewhere", mode="local", backend="tmux", status=Status.RUNNING,
        repo=str(proj.parent / "other"), role="x", tmux_session="o_child_x",
    )  # fmt: skip
    with http_server_process(proj, env) as (base, token):
        auth = {"Authorization": f"Bearer {token}"}

        def report(**body):
            return httpx.post(f"{base}/msg/report", headers=auth, json={"state": "done", **body})

        ok = report(name="t_child_api", notes="tests pass")
        assert ok.status_code == 201 and ok.json()["session"] == child.id
        lost = report(name="t_child_gone")  # ours, though its row was lost: kept by name
        assert lost.status_code == 201 and lost.json()["session"] is None
        assert report(name="t_master").status_code == 201
        refused = {
            n: report(name=n).status_code
            for n in ("o_child_x", "t_child_", "t_child_../x", "t_childapi", "api", "t_master2",
                      "T_child_api", "prefix_t_child_api")
        }  # fmt: skip
        assert set(refused.values()) == {403}, refused
        assert "namespace" in report(name="api").json()["error"]
        # with a sessionId the name must still be in the namespace, and be that session's
        assert report(sessionId=child.id, name="t_child_web").status_code == 409
        assert report(sessionId=other.id, name="o_child_x").status_code == 403
    got = store.conn.execute("SELECT name, session_id FROM reports ORDER BY id").fetchall()
    assert [tuple(r) for r in got] == [
        ("api", child.id),
        ("t_child_gone", None),
        ("t_master", None),
    ]
    store.close()
