"""Every refusal of the HTTP control plane (``sandboxrun mcp --http`` / ``serve``) is a JSON
object with an ``error`` and a ``hint`` that says what to send instead: a wrong token, a body
that is empty, not JSON, not an object, a field missing or of the wrong type, a GET of a POST
route, an unknown session. A real server process on loopback, a real git repo and SQLite."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
from sbr_testlib import git_project

sys.path.insert(0, str(Path(__file__).parent / "mcp"))
from mcptest_lib import http_server_process  # noqa: E402

from sandboxrun.store import SessionStore, Status  # noqa: E402

#: (method, path, body, status, words the error holds)
BAD = [
    ("POST", "/msg/send", b"", 400, "empty"),
    ("POST", "/msg/send", b"garbage", 400, "not JSON"),
    ("POST", "/msg/send", b"[1, 2]", 400, "JSON object"),
    ("POST", "/msg/send", b"{}", 400, "'message'"),
    ("POST", "/msg/send", b'{"message": 5}', 400, "'message' must be a string"),
    ("POST", "/msg/send", b'{"message": "   "}', 400, "empty"),
    ("POST", "/msg/send", b'{"message": "hi", "sessionId": "nosuch"}', 404, "nosuch"),
    ("POST", "/msg/send", b'{"message": "hi", "sessionId": "ended"}', 409, "ended"),
    ("POST", "/msg/health", b"", 400, "empty"),
    ("POST", "/msg/health", b'{"sessionId": "ended", "isIdle": "yes"}', 400, "true or false"),
    ("POST", "/msg/report", b"{}", 400, "sessionId or name"),
    ("POST", "/msg/report", b'{"sessionId": "ended"}', 400, "'state'"),
    ("POST", "/msg/report", b'{"sessionId": "ended", "state": "x", "artifacts": [1]}', 400, "artifacts"),
    ("POST", "/msg/report", b'{"name": "someone_else", "state": "x"}', 403, "namespace"),
    ("GET", "/msg/send", None, 405, "POST"),
    ("GET", "/msg/health", None, 405, "POST"),
    ("GET", "/msg/report", None, 405, "POST"),
]  # fmt: skip


def test_every_refusal_is_json_with_an_error_and_a_hint(tmp_path: Path):
    proj = git_project(tmp_path / "proj", {"a.txt": "a\n"})
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    store.create_session(
        name="ended", mode="local", backend="tmux", status=Status.COMPLETED, repo=str(proj),
        worktree=str(proj), role="dev", started_at=time.time(),
    )  # fmt: skip
    store.close()
    env = {**os.environ, "PROJECT_PREFIX": "t"}
    with http_server_process(proj, env) as (base, token):
        auth = {"Authorization": f"Bearer {token}"}
        wrong = httpx.post(f"{base}/msg/send", headers={"Authorization": "Bearer nope"}, json={})
        assert wrong.status_code == 401 and "http.token" in wrong.json()["hint"]
        for method, path, body, status, words in BAD:
            got = httpx.request(method, f"{base}{path}", headers=auth, content=body, timeout=60)
            what = f"{method} {path} {body!r}: {got.status_code} {got.text}"
            assert got.status_code == status, what
            data = got.json()
            assert words in data["error"], what
            assert isinstance(data["hint"], str) and len(data["hint"]) > 10, what
            if path in ("/msg/send", "/msg/health", "/msg/report") and status in (400, 405):
                # the hint shows a body that works
                assert "{" in data["hint"] or "'" in data["hint"] or '"' in data["hint"], what
        # the example a hint gives is accepted (here: a report by a session that exists)
        ok = httpx.post(
            f"{base}/msg/report", headers=auth,
            json={"sessionId": "ended", "state": "done", "notes": "tests pass"},
        )  # fmt: skip
        assert ok.status_code == 201, ok.text
