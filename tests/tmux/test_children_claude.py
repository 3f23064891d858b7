"""Children: the real interactive Claude Code CLI in tmux, driven by `sandboxrun` processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sbr_testlib import retry_until

from sandboxrun.local.states import prompt_hash
from tests.fake_anthropic import held, rate_limited, text, tool

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_spawn_writes_a_file_then_idle_then_send_a_second_task(children, proj):
    wt = proj / ".worktrees" / "api"
    children.api.script(
        tool("Write", file_path=str(wt / "one.txt"), content="one\n"),
        text("wrote one"),
        tool("Write", file_path=str(wt / "two.txt"), content="two\n"),
        text("wrote two"),
    )
    out = children("spawn", "api", "--prompt", "write one.txt", "--skip-permissions")
    assert out.returncode == 0, out.stderr
    row = children.row("api")
    assert (row["mode"], row["backend"], row["tmux_session"]) == ("local", "tmux", "t_child_api")
    assert row["worktree"] == str(wt)
    assert row["branch"] == "agent/api/active"
    wait = children("wait", "api", "--timeout", "60s")
    assert wait.returncode == 0, wait.stdout + wait.stderr
    assert "api: idle" in wait.stdout
    assert (wt / "one.txt").read_text() == "one\n"

    sent = children("send", "api", "now write two.txt", "--json")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert '"outcome": "delivered"' in sent.stdout
    assert children("wait", "api", "--timeout", "60s").returncode == 0
    assert (wt / "two.txt").read_text() == "two\n"
    # delivered exactly once: one UserPromptSubmit with that text, one request carrying it
    prompts = [e for e in children.events("api", "hook") if e["event"] == "UserPromptSubmit"]
    assert len(prompts) == 2
    assert children.prompts().count("now write two.txt") == 1

    read = children("read", "api", "--json")
    assert read.returncode == 0, read.stderr
    assert "now write two.txt" in read.stdout and "wrote two" in read.stdout
    assert '"name": "Write"' in read.stdout

    # the agent's files are uncommitted: removing the worktree is refused, nothing is closed
    refused = children("close", "api", "--remove-worktree")
    assert refused.returncode == 1
    assert "uncommitted changes" in refused.stderr
    assert children.tmux.has_session("t_child_api")
    closed = children("close", "api")
    assert closed.returncode == 0, closed.stderr
    assert not children.tmux.has_session("t_child_api")
    assert (wt / "two.txt").read_text() == "two\n"  # the worktree stays, work and all
    assert children.row("api")["status"] == "completed"
    assert children.row("api")["activity"] == "exited"


def test_four_children_at_once_get_their_prompts_intact(children, proj):
    import subprocess
    import sys

    names = ["w1", "w2", "w3", "w4"]
    prompts = {n: f"task for {n}: " + "détail ✓ " * 150 + f"end of {n};" for n in names}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandboxrun",
                "spawn",
                n,
                "--prompt",
                prompts[n],
                "--skip-permissions",
            ],
            cwd=proj,
            env=children.cli.env(children.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert children("wait", *names, "--all", "--timeout", "60s").returncode == 0
    got = children.prompts()
    for n in names:
        assert got.count(prompts[n]) == 1, n


def test_long_odd_messages_arrive_intact(children, proj):
    children.api.script(text("ready"), text("got it"), text("got it"), text("got it"))
    assert children("spawn", "m", "--prompt", "hello", "--skip-permissions").returncode == 0
    assert children("wait", "m", "--timeout", "60s").returncode == 0
    messages = [
        "/tmp/notes.txt is where the notes are — ünïcødé ✓ 日本語",
        "@app.txt please look\nat this file\n\n  indented line",
        "".join(f"line {i:04d} " + "y" * 70 + "\n" for i in range(110)),  # > 8 KB
    ]
    assert len(messages[2].encode()) > 8192
    for msg in messages:
        out = children("send", "m", msg)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "delivered" in out.stdout
        assert children("wait", "m", "--timeout", "60s").returncode == 0
    got = children.prompts()
    for msg in messages:
        assert got.count(msg.strip()) == 1, msg[:40]


def test_permission_prompt_then_sigkill_is_exited(children, proj):
    children.api.script(tool("Bash", command="echo hi > made.txt"), text("done"))
    out = children("spawn", "p", "--prompt", "run it", "--permission-mode", "default")
    assert out.returncode == 0, out.stderr
    wait = children("wait", "p", "--timeout", "60s")
    assert wait.returncode == 10, wait.stdout + wait.stderr
    assert "needs_permission" in wait.stdout
    assert not (proj / ".worktrees" / "p" / "made.txt").exists()
    # close refuses: the turn would be lost
    refused = children("close", "p")
    assert refused.returncode == 1 and "needs_permission" in refused.stderr
    assert children.tmux.has_session("t_child_p")
    pid = children.tmux.pane("t_child_p").pid
    os.kill(pid, signal.SIGKILL)
    wait = children("wait", "p", "--timeout", "90s")
    assert wait.returncode == 11, wait.stdout
    mon = children("monitor", "--once")
    assert mon.returncode == 0, mon.stderr
    assert children.row("p")["status"] == "completed"
    assert not children.tmux.has_session("t_child_p")


def test_not_logged_in_is_a_clear_error(children, proj):
    config = os.path.join(children.env["CLAUDE_CONFIG_DIR"], ".claude.json")
    os.remove(config)  # never set up: the onboarding/login screens
    # a hang would end at the CLI's timeout as a failure, not a pass
    out = children("spawn", "nl", "--prompt", "hi", "--skip-permissions", timeout=90)
    assert out.returncode == 1
    assert "not logged in" in out.stderr
    assert not children.tmux.has_session("t_child_nl")
    assert children.row("nl")["status"] == "failed"


class LimitedUntil:
    """Main requests get a usage-limit 429 until ``reset``, then the replies in order.

    ``reset`` is ``after`` seconds from the first request, not from the test's start: on a
    loaded machine the child's first request can come late, and a reset already past then
    meant no limit at all.
    """

    def __init__(self, after: int, *replies):
        self.after = after
        self.reset: int | None = None
        self.replies = list(replies)
        self.limited = 0

    def __call__(self, req):
        if self.reset is None:
            self.reset = int(time.time()) + self.after
        if time.time() < self.reset:
            self.limited += 1
            return rate_limited(self.reset, times=1)
        return self.replies.pop(0) if self.replies else text("done")


def test_usage_limit_waits_for_the_reset_then_continues_across_a_monitor_restart(
    children, proj, tmp_path
):
    import subprocess
    import sys

    children.use_gateway(tmp_path / "gw-home")
    wt = proj / ".worktrees" / "q"
    gate = LimitedUntil(
        25, tool("Write", file_path=str(wt / "after.txt"), content="later\n"), text("finished")
    )
    children.api.script(*[gate] * 10)
    (proj / ".sandboxrun").mkdir()
    (proj / ".sandboxrun" / "continue.txt").write_text("please continue where you stopped")

    def monitor():
        return subprocess.Popen(
            [sys.executable, "-m", "sandboxrun", "monitor", "--interval", "0.5"],
            cwd=proj,
            env=children.cli.env(children.env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    mon = monitor()
    try:
        out = children("spawn", "q", "--prompt", "write after.txt", "--skip-permissions")
        assert out.returncode == 0, out.stderr
        retry_until(
            lambda: any(e["state"] == "waiting_quota" for e in children.events("q", "state")),
            timeout=60,
        )
        assert gate.limited >= 1
        # the transcript's exact reset time (the screen and the hook only say the minute)
        retry_until(lambda: children.row("q")["resets_at"] == pytest.approx(gate.reset, abs=1))
        # the monitor dies and a new one takes over from the database and tmux
        mon.kill()
        mon.wait()
        mon = monitor()
        try:
            retry_until(lambda: (wt / "after.txt").exists(), timeout=90)
        except AssertionError:
            raise AssertionError(
                json.dumps(
                    {
                        "continues": children.events("q", "quota_continue"),
                        "states": children.events("q", "state"),
                        "row": {k: children.row("q")[k] for k in ("activity", "resets_at")},
                        "reset": gate.reset,
                        "limited": gate.limited,
                        "screen": children.tmux.capture("t_child_q"),
                    },
                    indent=1,
                    ensure_ascii=False,
                )
            ) from None
        assert children("wait", "q", "--timeout", "60s").returncode == 0
        cont = children.events("q", "quota_continue")
        assert [c["outcome"] for c in cont] == ["delivered"], (
            cont,
            children.events("q", "state"),
            children.tmux.capture("t_child_q"),
        )
        assert children.prompts().count("please continue where you stopped") == 1
    finally:
        mon.kill()
        mon.wait()


def test_rows_lost_then_adopted_then_shutdown(children, proj):
    children.api.script(text("a ready"), text("b ready"), text("got it"))
    for name in ("a", "b"):
        assert (
            children("spawn", name, "--prompt", f"hello {name}", "--skip-permissions").returncode
            == 0
        )
    assert children("wait", "a", "b", "--all", "--timeout", "60s").returncode == 0
    ids = {n: children.row(n)["id"] for n in ("a", "b")}
    import sqlite3

    conn = sqlite3.connect(os.path.join(os.environ["SANDBOXRUN_HOME"], "state.db"))
    conn.execute("DELETE FROM events")
    conn.execute("DELETE FROM sessions")
    conn.commit()
    conn.close()

    found = children("discover", "--json")
    assert found.returncode == 0, found.stderr
    assert '"name": "a"' in found.stdout and '"name": "b"' in found.stdout
    adopted = children("adopt", "--all")
    assert adopted.returncode == 0, adopted.stderr
    assert {n: children.row(n)["id"] for n in ("a", "b")} == ids  # the same sessions again
    assert children("discover", "--json").stdout.strip() == "[]"
    # the adopted child works as before: its hooks land in the restored row
    sent = children("send", "a", "are you there?")
    assert "delivered" in sent.stdout, sent.stdout + sent.stderr
    assert children("wait", "a", "--timeout", "60s").returncode == 0

    down = children("shutdown")
    assert down.returncode == 0, down.stdout + down.stderr
    assert children.tmux.sessions("t_child_") == []
    for name in ("a", "b"):
        assert children.row(name)["status"] == "completed"
        assert (proj / ".worktrees" / name).is_dir()


def test_trust_dialog_answered_in_the_pane_when_the_config_lost_the_race(children, proj, tmp_path):
    """Another running Claude Code can rewrite .claude.json without our trust entry: the
    dialog then shows, and wait_ready answers it (cursor to "Yes", Enter)."""
    from sandboxrun.local.spawn import SpawnRequest, claude_argv, wait_ready, write_settings
    from sandboxrun.store import SessionStore, Status
    from sandboxrun.tmux import child_env

    work = tmp_path / "untrusted"
    work.mkdir()
    home = Path(os.environ["SANDBOXRUN_HOME"])
    store = SessionStore(home / "state.db")
    row = store.create_session(
        name="u", mode="local", backend="tmux", status=Status.RUNNING, tmux_session="t_child_u"
    )
    env = child_env(children.env, SANDBOXRUN_SESSION=row.id)
    argv = claude_argv(
        env["SANDBOXRUN_CLAUDE_BIN"],
        write_settings(home, row.id),
        SpawnRequest(name="u", task="hi there", skip_permissions=True),
        "hi there",
    )
    children.tmux.new_session("t_child_u", argv, cwd=work, env=env)
    retry_until(lambda: "trust this folder" in children.tmux.capture("t_child_u"), timeout=120)
    wait_ready(store, children.tmux, row.id, "t_child_u", "hi there", timeout=60)
    assert "trust this folder" not in children.tmux.capture("t_child_u")


def test_master_start_status_stop_prompt_once_session_id_once(children, proj):
    (proj / ".sandboxrun").mkdir()
    (proj / ".sandboxrun" / "master.txt").write_text("You are the master of this repo.")
    children.api.script(text("ok, master"), text("hello again"))
    out = children("master", "start", "--skip-permissions", "--json")
    assert out.returncode == 0, out.stderr
    sid_file = proj / ".sandboxrun" / "session_id.txt"
    first = sid_file.read_text().strip()
    row = children.row("t_master")
    assert first and first == row["agent_session_id"]
    assert row["role"] == "pm" and row["worktree"] == str(proj)
    # start returns at the UserPromptSubmit hook; the API request comes just after
    retry_until(lambda: "You are the master of this repo." in children.prompts())
    assert children.prompts().count("You are the master of this repo.") == 1
    again = children("master", "start")
    assert again.returncode == 2 and "already running" in again.stderr
    st = children("master", "status", "--json")
    assert '"running": true' in st.stdout and '"monitor": true' in st.stdout, st.stdout
    assert '"base_branch": "main"' in st.stdout
    assert children("wait", "t_master", "--timeout", "60s").returncode == 0
    stopped = children("master", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not children.tmux.has_session("t_master")
    # a second master: no master.txt again, session_id.txt kept (written only when missing)
    out = children("master", "start", "--skip-permissions", "--no-monitor")
    assert out.returncode == 0, out.stderr
    assert children.prompts().count("You are the master of this repo.") == 1
    assert sid_file.read_text().strip() == first
    assert children.row("t_master")["agent_session_id"] != first
    children("master", "stop", "--force")


def test_read_follows_clear_into_the_new_transcript(children, proj):
    children.api.script(text("before clear"), text("after clear"))
    assert (
        children("spawn", "r", "--prompt", "first question", "--skip-permissions").returncode == 0
    )
    assert children("wait", "r", "--timeout", "60s").returncode == 0
    first_id = children.row("r")["agent_session_id"]
    # /clear is a command, not a prompt: no UserPromptSubmit, so type it and watch the hooks
    children.tmux.paste("t_child_r", "/clear")
    time.sleep(0.2)  # Enter as its own key, a moment later (in the same write it is pasted)

    def cleared() -> bool:
        # On a loaded machine the Enter can still be taken as part of the paste: press it
        # again until the new session's hook comes, as `send` does (on an empty composer an
        # Enter does nothing).
        if children.row("r")["agent_session_id"] != first_id:
            return True
        children.tmux.send_keys("t_child_r", "Enter")
        return False

    retry_until(cleared, timeout=90, interval=3)
    sent = children("send", "r", "second question")
    assert "delivered" in sent.stdout, sent.stdout + sent.stderr
    assert children("wait", "r", "--timeout", "60s").returncode == 0
    read = children("read", "r", "--json")
    entries = json.loads(read.stdout)
    texts = [e["text"] for e in entries]
    assert texts.index("first question") < texts.index("before clear")
    assert texts.index("before clear") < texts.index("second question") < texts.index("after clear")
    assert {e["claude_session_id"] for e in entries} >= {first_id}
    last = json.loads(children("read", "r", "--last", "1", "--json").stdout)
    assert [e["text"] for e in last] == ["after clear"]


def _tool_result(request) -> tuple[str, bool]:
    (block,) = request.tool_results()
    content = block["content"]
    if isinstance(content, list):
        content = "".join(c.get("text", "") for c in content)
    return content, bool(block.get("is_error"))


def test_child_calls_sandboxrun_mcp_and_the_repos_mcp_json_server(children, proj):
    """--mcp-config: our server (knowing the child's session) and the repo's .mcp.json
    servers, which Claude Code does not load in a worktree by itself."""
    import sys

    from sbr_testlib import git

    repo_server = {"command": sys.executable, "args": ["-m", "sandboxrun", "mcp"]}
    (proj / ".mcp.json").write_text(json.dumps({"mcpServers": {"repotools": repo_server}}))
    git(proj, "add", ".mcp.json")
    git(proj, "commit", "-q", "-m", "team MCP servers")
    wanted = ("mcp__sandboxrun__get_my_session", "mcp__repotools__list_sessions")

    class OnceAnnounced:
        """Like a model: call the MCP tools only once Claude Code has announced them (it
        connects its MCP servers while the first turn already runs)."""

        def __init__(self, *replies):
            self.replies, self.at, self.calls = list(replies), None, 0

        def __call__(self, req):  # (runs under the fake's lock: no api.* calls in here)
            self.calls += 1  # every main request is answered here: the index + 1
            if self.at is None and all(w in json.dumps(req.body) for w in wanted):
                self.at = self.calls - 1
            if self.at is None:
                return text("the tools are not there yet")
            return self.replies.pop(0) if self.replies else text("done")

    model = OnceAnnounced(
        tool("mcp__sandboxrun__get_my_session"),
        tool("mcp__repotools__list_sessions", state="active"),
        text("done"),
    )
    children.api.script(*[model] * 20)
    out = children("spawn", "m1", "--prompt", "who am i", "--skip-permissions")
    assert out.returncode == 0, out.stderr
    assert children("wait", "m1", "--timeout", "60s").returncode == 0
    for _ in range(10):  # a turn per message until both servers' tools are announced
        if model.at is not None:
            break
        assert "delivered" in children("send", "m1", "and now?").stdout
        assert children("wait", "m1", "--timeout", "60s").returncode == 0
    assert model.at is not None, "the MCP tools were never announced"
    row = children.row("m1")
    requests = children.api.main_requests[model.at :]
    assert len(requests) == 3, [r.tool_results() for r in requests]
    me, is_error = _tool_result(requests[1])
    assert not is_error, me
    me = json.loads(me)
    assert me["tracked"] is True and me["session"]["id"] == row["id"]
    assert me["role"] == "m1" and me["worktree"] == row["worktree"]
    listed, is_error = _tool_result(requests[2])
    assert not is_error, listed
    assert row["id"] in {s["id"] for s in json.loads(listed)["sessions"]}
    # the screen never showed an approval dialog for the project's servers
    assert "New MCP server" not in children.tmux.capture("t_child_m1", history=200)


@pytest.mark.parametrize("busy_in", ["model", "tool", "last_reply"])
def test_a_message_sent_while_busy_is_taken_once(children, proj, tmp_path, busy_in):
    """While the model streams (a held reply) or a tool runs, a message is accepted into the
    running turn: reported `queued`, and it reaches the model exactly once."""
    import threading

    gate_file, gate = tmp_path / "gate", threading.Event()
    if busy_in == "tool":
        first = tool("Bash", command=f"until [ -e {gate_file} ]; do sleep 0.1; done; echo ok")
        busy_mark = "PreToolUse"
    elif busy_in == "model":
        first = held(tool("Bash", command="echo ok"), gate)
        busy_mark = None
    else:
        first = held(text("first done"), gate)
        busy_mark = None
    children.api.script(first, text("first done"), text("second done"))
    try:
        out = children("spawn", "qd", "--prompt", "run the long command", "--skip-permissions")
        assert out.returncode == 0, out.stderr
        retry_until(lambda: children.api.main_requests, timeout=60)  # the turn is under way
        if busy_mark:
            retry_until(lambda: busy_mark in _hook_events(children, "qd"), timeout=60)
        sent = children("send", "qd", "a queued message", "--json")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        (result,) = json.loads(sent.stdout)
    finally:
        gate.set()
        gate_file.touch()
    # taken as the next turn (busy_in=last_reply), the child is idle for a moment between the
    # two turns: wait until the model has been sent the message, then for the idle after it
    retry_until(
        lambda: any(
            "a queued message" in t for r in children.api.main_requests for t in r.user_texts()
        ),
        timeout=60,
    )
    assert children("wait", "qd", "--timeout", "60s").returncode == 0
    assert (result["outcome"], result["confirmed"], result["enters"]) == ("queued", True, 1)
    # one UserPromptSubmit with its text, and the model saw it once (mid-turn wrapped in
    # Claude Code's "sent a new message while you were working", or as the next turn)
    digest = prompt_hash("a queued message")
    hooks = [e for e in children.events("qd", "hook") if e.get("prompt_sha256") == digest]
    assert len(hooks) == 1
    final = children.api.main_requests[-1]
    assert sum("a queued message" in t for t in final.user_texts()) == 1
    seen = {
        t for r in children.api.main_requests for t in r.user_texts() if "a queued message" in t
    }
    assert len(seen) == 1, seen


def _hook_events(children, name: str) -> list[str]:
    return [e.get("event", "") for e in children.events(name, "hook")]


@pytest.mark.parametrize("busy_in", ["tool", "model"])
def test_a_long_turn_stays_busy_past_the_grace_though_the_title_says_done(
    children, proj, tmp_path, busy_in
):
    """Claude Code 2.1.330 in tmux keeps its title at "✳ Claude Code" mid-turn: the state
    must come from the screen's status line, or a long tool call or a slow reply (no hook
    for longer than the grace) would read as idle."""
    import threading

    from sandboxrun.local.observe import observe
    from sandboxrun.local.states import derive_state
    from sandboxrun.store import SessionStore

    gate_file, gate = tmp_path / "gate", threading.Event()
    if busy_in == "tool":
        first = tool("Bash", command=f"until [ -e {gate_file} ]; do sleep 0.1; done; echo ok")
    else:
        first = held(text("slow answer"), gate)
    children.api.script(first, text("done"))
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    try:
        out = children("spawn", "lt", "--prompt", "take your time", "--skip-permissions")
        assert out.returncode == 0, out.stderr
        row = store.resolve("lt")
        if busy_in == "tool":
            retry_until(lambda: "PreToolUse" in _hook_events(children, "lt"), timeout=60)
        grace = 1.0

        def state():
            facts, _ = observe(children.tmux, store.get(row.id))
            if facts.activity_at is None or facts.now - facts.activity_at <= grace:
                return None  # still within the grace: nothing to learn yet
            return derive_state(facts, grace=grace)

        st = retry_until(state, timeout=120)
        assert st.name == "busy", (st, children.tmux.capture("t_child_lt"))
        assert children.tmux.pane("t_child_lt").title.startswith("\u2733")  # the title: "done"
    finally:
        gate.set()
        gate_file.touch()
    assert children("wait", "lt", "--timeout", "60s").returncode == 0
    # the Stop hook can come a moment before the screen is redrawn
    retry_until(lambda: observe(children.tmux, store.get(row.id))[0].pane_working is False)
