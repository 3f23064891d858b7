"""The dashboard page's HTTP side against a real server process: login, cookie, scope, the
session log, and the server-sent events stream following real store writes."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from dashlib import make_group, sandbox_session

from sandboxrun.web.page import COOKIE, cookie_value

pytestmark = pytest.mark.slow


def test_login_sets_an_httponly_cookie_and_the_token_never_travels_in_a_url(server):
    base = server.base
    first = httpx.get(f"{base}/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login"
    form = httpx.get(f"{base}/login")
    assert form.status_code == 200 and 'method="post"' in form.text
    assert "script-src 'self'" in form.headers["content-security-policy"]
    wrong = httpx.post(f"{base}/login", data={"token": "nope"}, follow_redirects=False)
    assert (
        wrong.status_code == 401
        and "not right" in wrong.text
        and COOKIE not in wrong.headers.get("set-cookie", "")
    )
    ok = httpx.post(f"{base}/login", data={"token": server.token}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert server.token not in cookie  # a keyed hash of it, not the token
    jar = {COOKIE: cookie_value(server.token.encode())}
    page = httpx.get(f"{base}/", cookies=jar)
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{base}/api/snapshot", cookies=jar).status_code == 200
    # the cookie opens the page's GETs only: no API write, no MCP
    assert httpx.post(f"{base}/msg/send", cookies=jar, json={"message": "x"}).status_code == 401
    assert httpx.get(f"{base}/mcp", cookies=jar).status_code == 401
    assert httpx.get(f"{base}/api/snapshot", cookies={COOKIE: "0" * 64}).status_code == 401
    # the bearer token still works for the API
    auth = {"Authorization": f"Bearer {server.token}"}
    assert httpx.get(f"{base}/api/snapshot", headers=auth).status_code == 200
    out = httpx.post(f"{base}/logout", cookies=jar, follow_redirects=False)
    assert out.status_code == 303 and f"{COOKIE}=" in out.headers["set-cookie"]


def test_snapshot_log_and_stream_follow_store_writes(server, store, proj, tmp_path):
    sid = sandbox_session(store, "run1", proj)
    sandbox_session(store, "far", tmp_path / "other")
    make_group(store, proj)
    store.add_event(sid, "agent", {"type": "text", "text": "<b>hello</b>", "message_id": "m"})
    auth = {"Authorization": f"Bearer {server.token}"}
    snap = httpx.get(f"{server.base}/api/snapshot", headers=auth).json()
    assert [s["name"] for s in snap["sessions"]] == ["run1"]  # the server's repository
    assert [g["name"] for g in snap["groups"]] == ["feat"]
    every = httpx.get(f"{server.base}/api/snapshot?all=1", headers=auth).json()
    assert {s["name"] for s in every["sessions"]} == {"run1", "far"}
    log = httpx.get(f"{server.base}/api/sessions/{sid}/events", headers=auth).json()
    assert "<b>hello</b>" in [e["text"] for e in log]

    got: list[tuple[str, object]] = []
    with httpx.stream("GET", f"{server.base}/events", headers=auth, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        wrote = False
        deadline = time.monotonic() + 120
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                got.append((kind, json.loads(line[6:])))
                if kind == "snapshot" and not wrote:
                    store.add_event(
                        sid, "agent", {"type": "tool_use", "name": "Edit", "summary": "x.py"}
                    )
                    store.set_status(sid, "completed", cost_usd=1.5)
                    wrote = True
                done = [
                    d
                    for k, d in got
                    if k == "snapshot" and d["sessions"][0]["state"] == "completed"
                ]
                texts = [e["text"] for k, d in got if k == "events" for e in d]
                if done and "Edit: x.py" in texts:
                    break
            assert time.monotonic() < deadline, got
    assert done[0]["cost_usd"] == 1.5
