"""Every MCP tool through fastmcp's in-memory client, over real sessions the hook created."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from fastmcp import Client
from mcptest_lib import Tools, add_worktree, coord_for, hook

from sandboxrun.mcp.common import Coord
from sandboxrun.mcp.server import DOMAINS, build_server


@pytest.fixture
def team(proj: Path):
    """Two local sessions (api, web) started through the hook, and a tool caller for each."""
    api_wt, web_wt = add_worktree(proj, "api"), add_worktree(proj, "web")
    hook("SessionStart", api_wt, "claude-api", "api", source="startup")
    hook("SessionStart", web_wt, "claude-web", "web", source="startup")
    return {
        "proj": proj,
        "api_wt": api_wt,
        "web_wt": web_wt,
        "api": Tools(coord_for(api_wt, "api")),
        "web": Tools(coord_for(web_wt, "web")),
    }


def test_every_tool_is_annotated_and_described(proj):
    tools = Tools(coord_for(proj))

    async def listing(client: Client):
        return (
            await client.list_tools(),
            await client.list_resources(),
            await client.list_resource_templates(),
        )

    found, resources, templates = tools.run(listing)
    names = {t.name for t in found}
    assert {
        "list_sessions", "get_my_session", "examine_session", "annotate_session",
        "register_presence", "deregister_presence", "heartbeat", "get_presence",
        "send_message", "check_messages", "get_notifications",
        "claim_files", "check_conflicts", "release_files", "list_claims",
        "run_in_sandbox", "sandbox_logs", "kill_sandbox", "download_sandbox", "extend_sandbox",
        "notify_when_merged", "check_merge_status", "get_merge_events", "rebase_assist",
        "spawn_workers", "message_workers", "wait_idle_workers", "read_worker_logs",
        "close_workers", "discover_workers", "adopt_worker",
    } <= names  # fmt: skip
    for t in found:
        a = t.annotations
        assert a is not None and None not in (
            a.read_only_hint,
            a.destructive_hint,
            a.idempotent_hint,
        ), t.name
        assert t.description and len(t.description) > 40, t.name
    assert {t.name for t in found if t.annotations.destructive_hint} == {
        "kill_sandbox",
        "close_workers",
    }
    assert {str(r.uri) for r in resources} >= {"sandboxrun://sessions", "sandboxrun://presence"}
    assert [t.uri_template for t in templates] == ["sandboxrun://sessions/{session_id}"]
    assert len(DOMAINS) == 7  # sessions presence messages claims sandbox merges workers


def test_sessions_tools_and_resources(team):
    api, web = team["api"], team["web"]
    me = api("get_my_session")
    assert me["tracked"] and me["role"] == "api" and me["session"]["role"] == "api"
    assert me["worktree"] == str(team["api_wt"]) and me["branch"] == "agent/api/active"
    assert me["in_main_checkout"] is False and me["other_active_sessions"] == 1

    listed = api("list_sessions", mode="local", state="active")
    assert listed["total"] == 2 and {s["role"] for s in listed["sessions"]} == {"api", "web"}
    assert api("list_sessions", mode="sandbox")["total"] == 0
    assert api("list_sessions", state="ended")["total"] == 0
    assert api("list_sessions", repo=str(team["proj"]), limit=1)["returned"] == 1

    web_id = web("get_my_session")["session"]["id"]
    noted = api("annotate_session", note="owns the web UI", session="web@proj")
    assert noted["session"] == web_id
    full = api("examine_session", session=web_id[:6])
    assert full["role"] == "web" and full["presence"] == "active"
    assert full["notes"][0]["text"] == "owns the web UI" and full["notes"][0]["by"] == "api@proj"
    assert any(e["kind"] == "note" for e in full["events"])

    async def read(client: Client):
        everything = await client.read_resource("sandboxrun://sessions")
        one = await client.read_resource(f"sandboxrun://sessions/{web_id}")
        present = await client.read_resource("sandboxrun://presence")
        return [json.loads(r[0].text) for r in (everything, one, present)]

    everything, one, present = api.run(read)
    assert everything["total"] == 2 and one["id"] == web_id
    assert {p["role"] for p in present} == {"api", "web"}


def test_presence_tools(team):
    api = team["api"]
    found = api("get_presence")["presence"]
    assert {(p["role"], p["state"]) for p in found} == {("api", "active"), ("web", "active")}
    beat = api("heartbeat")
    assert beat["role"] == "api" and beat["last_heartbeat"] <= time.time()
    assert api("deregister_presence", role="web")["status"] == "inactive"
    assert api("get_presence", role="web")["presence"][0]["state"] == "inactive"
    again = api("register_presence", role="web", worktree=str(team["web_wt"]))
    assert again["state"] == "active" and again["worktree"] == str(team["web_wt"])
    assert len(api("get_presence", all_repos=True)["presence"]) == 2


def test_messages_tools_and_hook_delivery(team):
    api, web = team["api"], team["web"]
    sent = api("send_message", to="web", body="please review src/web.py", type="QUESTION")
    assert sent["to"] == ["web"] and sent["from"] == "api"
    everyone = api("send_message", to="all", body="tests pass")
    assert everyone["to"] == ["web"]  # everyone present except the sender
    # The running web session sees both on its next tool call, without polling.
    reply = hook("PostToolUse", team["web_wt"], "claude-web", "web", tool_name="Bash")
    context = reply["hookSpecificOutput"]["additionalContext"]
    assert "Session 'api' says (QUESTION): please review src/web.py" in context
    assert "Session 'api' says: tests pass" in context
    assert reply["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    # Delivered means read: neither the hook nor check_messages shows them again.
    assert hook("UserPromptSubmit", team["web_wt"], "claude-web", "web") == {}
    assert web("check_messages")["messages"] == []
    # check_messages marks read (unless asked not to).
    by_session = api("send_message", to=web("get_my_session")["session"]["id"], body="ping")
    assert by_session["to"] == ["web"]
    peek = web("check_messages", mark_read=False)["messages"]
    assert [m["body"]["text"] for m in peek] == ["ping"]
    assert [m["body"]["text"] for m in web("check_messages")["messages"]] == ["ping"]
    assert web("check_messages")["messages"] == []
    notes = web("get_notifications")
    kinds = [n["type"] for n in notes["notifications"]]
    assert kinds.count("SESSION_START") == 2
    assert web("get_notifications", after_id=notes["last_id"])["notifications"] == []


def test_claims_tools(team):
    api, web = team["api"], team["web"]
    got = api("claim_files", paths=["src/api.py", "docs/"], mode="exclusive", note="refactor")
    assert [c["path"] for c in got["claimed"]] == ["src/api.py", "docs/"]
    # The same file seen from the other worktree, by absolute path, is the same claim.
    other = str(team["web_wt"] / "src" / "api.py")
    seen = web("check_conflicts", paths=[other, "docs/guide.md", "src/web.py"])
    assert seen["blocked"] == ["docs/", "src/api.py"]
    assert {c["role"] for c in seen["conflicts"]} == {"api"}
    refused = web.error("claim_files", paths=["src/api.py"], mode="advisory")
    assert (
        "src/api.py (exclusive) by session 'api@proj' (role api)" in refused and "Fix:" in refused
    )
    # advisory claims coexist, and are reported to the second claimer
    web("claim_files", paths=["src/web.py"], mode="advisory")
    both = api("claim_files", paths=["src/web.py"], mode="advisory")
    assert [c["role"] for c in both["conflicts"]] == ["web"]
    assert len(api("list_claims")["claims"]) == 4
    assert len(web("list_claims", mine=True)["claims"]) == 1
    assert api("release_files", paths=["docs/"])["released"] == 1
    assert api("release_files")["released"] == 2
    assert [c["role"] for c in api("list_claims")["claims"]] == ["web"]
    assert len(api("list_claims", include_ended=True)["claims"]) == 4
    # a claim with an expiry lapses by itself
    web("claim_files", paths=["README.md"], expires_in="1s")
    time.sleep(1.1)  # the expiry itself is what is tested: a 1 s claim must be gone after 1.1 s
    assert api("check_conflicts", paths=["README.md"])["conflicts"] == []


def test_claims_of_ended_and_stale_sessions_lapse(team):
    api, web = team["api"], team["web"]
    web("claim_files", paths=["src/web.py"])
    assert api("check_conflicts", paths=["src/web.py"])["blocked"] == ["src/web.py"]
    db = sqlite3.connect(api.coord.settings.db_path)
    with db:  # web's last heartbeat was 10 minutes ago: stale
        db.execute(
            "UPDATE sessions SET last_heartbeat = ? WHERE role = 'web'", (time.time() - 600,)
        )
    assert api("check_conflicts", paths=["src/web.py"])["conflicts"] == []
    assert api("list_claims", include_ended=True)["claims"][0]["state"] == "lapsed"
    hook("PostToolUse", team["web_wt"], "claude-web", "web", tool_name="Bash")  # alive again
    assert api("check_conflicts", paths=["src/web.py"])["blocked"] == ["src/web.py"]
    hook("SessionEnd", team["web_wt"], "claude-web", "web", reason="exit")
    assert api("check_conflicts", paths=["src/web.py"])["conflicts"] == []
    db.close()


#: (tool, arguments, what the fix must say): bad input to every tool
BAD_INPUT = [
    ("list_sessions", {"state": "sleeping"}, "Use 'active', 'ended'"),
    ("list_sessions", {"limit": 0}, "limit=50"),
    ("examine_session", {"session": "nope"}, "Call list_sessions"),
    ("examine_session", {"session": "api@proj", "events": -1}, "events=20"),
    ("annotate_session", {"note": "  "}, "Pass the text"),
    ("annotate_session", {"note": "x", "session": "nope"}, "list_sessions"),
    ("register_presence", {"role": "bad role"}, "A role is 1-64"),
    ("deregister_presence", {"role": "ghost"}, "get_presence"),
    ("heartbeat", {"role": "ghost"}, "register_presence"),
    ("get_presence", {"role": "ghost"}, "without role"),
    ("get_presence", {"repo": "/"}, "git checkout"),
    ("send_message", {"to": "ghost", "body": "hi"}, "Known roles: api, web"),
    ("send_message", {"to": "web", "body": " "}, "Pass the text"),
    ("send_message", {"to": "web", "body": "x", "type": "lower"}, "upper-case"),
    ("send_message", {"to": "", "body": "x"}, "to='all'"),
    ("get_notifications", {"after_id": -1}, "after_id=0"),
    ("claim_files", {"paths": []}, "paths=["),
    ("claim_files", {"paths": ["README.md"], "expires_in": "0s"}, "90s"),
    ("claim_files", {"paths": ["../outside.txt"]}, "Name files inside"),
    ("claim_files", {"paths": ["/etc/passwd"]}, "Name files inside"),
    ("claim_files", {"paths": ["src/api.py"], "expires_in": "soon"}, "90s, 20m"),
    ("claim_files", {"paths": ["src/api.py"], "session": "nope"}, "list_sessions"),
    ("check_conflicts", {"paths": []}, "paths=["),
    ("release_files", {"paths": ["src/web.py"]}, "list_claims"),
    ("list_claims", {"repo": "/"}, "git checkout"),
    ("run_in_sandbox", {}, "exactly one"),
    ("run_in_sandbox", {"prompt": "x", "plan_file": "nope.md"}, "exactly one"),
    ("run_in_sandbox", {"plan_file": "missing.md"}, "Check the path"),
    ("run_in_sandbox", {"prompt": "x", "timeout": "forever"}, "90s, 20m"),
    ("sandbox_logs", {"session": "api@proj"}, "Sandbox tools work on"),
    ("sandbox_logs", {"session": "nope"}, "list_sessions"),
    ("kill_sandbox", {"session": "api@proj"}, "Sandbox tools work on"),
    ("download_sandbox", {"session": "nope"}, "list_sessions"),
    ("extend_sandbox", {"session": "api@proj", "by": "-5m"}, "90s, 20m"),
]


def test_bad_input_is_a_tool_error_naming_the_fix(team):
    # One server for every case (the team's sessions are the expensive part).
    wrong = []
    for tool, args, fix in BAD_INPUT:
        text = team["api"].error(tool, **args)
        if "Fix:" not in text or fix not in text:
            wrong.append((tool, args, text))
    assert not wrong


def test_unknown_caller_is_told_how_to_be_known(proj):
    anon = Tools(coord_for(proj))
    me = anon("get_my_session")
    assert me["tracked"] is False and "sandboxrun hooks install" in me["hint"]
    text = anon.error("claim_files", paths=["README.md"])
    assert "Pass session=" in text
    assert "Pass role=" in anon.error("check_messages")
    # a bad mode is refused by the schema before the tool runs, naming the allowed values
    assert "exclusive" in anon.error("claim_files", paths=["README.md"], mode="mine")


def test_server_refuses_to_start_without_git(proj, monkeypatch):
    monkeypatch.setenv("PATH", str(proj))  # no git there
    server = build_server(coord_for(proj))

    async def start():
        async with Client(server):
            pass

    import asyncio

    with pytest.raises(Exception, match="git is not installed"):
        asyncio.run(start())


def test_report_namespace_rule():
    from sandboxrun.coord.reports import in_namespace

    assert in_namespace("proj_master", "proj") and in_namespace("proj_child_api", "proj")
    assert in_namespace("p-1_child_a.b", "p-1")
    for name, prefix in [("proj_child_", "proj"), ("proj_child_..", "proj"),
                         ("proj_child_a/b", "proj"), ("proj_master", "pro"), ("x", ""),
                         ("proj_child_api", "proj_child"), ("other_child_api", "proj"),
                         ("proj_child_-x", "proj"), ("", "proj")]:  # fmt: skip
        assert not in_namespace(name, prefix), (name, prefix)


def test_only_the_master_binds_web_port(proj: Path):
    import os

    from sandboxrun.mcp.server import DEFAULT_PORT, caller_is_master, http_port
    from sandboxrun.store import SessionStore, Status

    assert http_port(9100, "9200", True) == 9100  # --port always wins
    assert http_port(None, "9200", True) == 9200
    assert http_port(None, "9200", False) == DEFAULT_PORT  # a child inheriting WEB_PORT
    assert http_port(None, None, True) == http_port(None, "x1", True) == DEFAULT_PORT
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    master = store.create_session(
        name="proj_master", mode="local", backend="tmux", status=Status.RUNNING,
        repo=str(proj), role="pm", tmux_session="proj_master", options={"master": True},
    )  # fmt: skip
    child = store.create_session(
        name="api", mode="local", backend="tmux", status=Status.RUNNING, repo=str(proj),
        role="api", tmux_session="proj_child_api",
    )  # fmt: skip
    env = dict(os.environ)
    assert caller_is_master(Coord(env={**env, "SANDBOXRUN_SESSION": master.id}, cwd=proj))
    assert not caller_is_master(Coord(env={**env, "SANDBOXRUN_SESSION": child.id}, cwd=proj))
    store.close()
