"""Hangs, losses and expiries at the early phases, and network trouble while the agent works.

The other half of the fault matrix (tests/e2b/test_e2b_faults.py has the first): every test
runs the real CLI against the emulator with one fault scripted in it
(tests/e2b_emulator/faults.py), and checks what the issue asks: the run ends in a bounded
time in a state that tells the truth, the agent's work (up to its last checkpoint) is on the
branch, nothing is left behind (sandbox, upload tarball), and every command a message names
works in that state.

*Stalls* hold a request without an answer (``seconds=None``: until the test ends), or stop a
stream mid-way (``stall_after``): longer than any timeout of the SDK's. The bounds are made
short through our own settings (``SANDBOXRUN_E2B_REQUEST_TIMEOUT``, ``..._STALL_TIMEOUT``,
``..._COMMAND_TIMEOUT``), never by patching code.
"""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest
from e2blib import (
    ENDS_WITHIN,
    FAST_RETRIES,
    STARTS_WITHIN,
    artifacts,
    as_tarball,
    assert_nothing_left,
    checkpoint_holds_a_commit_and_work,
    clock_starts_once,
    e2b_fixture,
    home,
    phases,
    run,
    start,
    wait_running,
)
from sbr_testlib import branch_files, git, retry_until

pytestmark = pytest.mark.slow

#: how long a hung call may take here (production: 60 s a request, each command its own limit);
#: a run with every step hung still ends within ENDS_WITHIN (it is minutes without the bounds)
BOUNDS = {
    "SANDBOXRUN_E2B_REQUEST_TIMEOUT": "2",
    "SANDBOXRUN_E2B_STALL_TIMEOUT": "2",
    "SANDBOXRUN_E2B_COMMAND_TIMEOUT": "10",
}

# What identifies each phase's command in the emulator (its text is in the request body).
# A cold upload is a git pack checked out by one command (the default), or, for a tree git
# cannot take as it is (a tracked .gitattributes, say), a tarball unpacked, then committed.
UNPACK = "sandboxrun-upload-"  # the uploaded file's name: in the checkout or unpack command
BASELINE = "fast-import"  # the tarball's baseline commit
BASELINE_PACK = "--filter=blob:none"  # keeping the baseline's trees (both upload modes)
START = "NOAGENT"  # the launch script
POLL = "sandboxrun-read-"  # a follow poll of the agent's log
STOP = "-INT"
PRODUCE = ".sandboxrun/collect"  # producing the final collection's pack
CHECKPOINT = ".sandboxrun/checkpoint"  # producing a checkpoint's pack


e2b = e2b_fixture("sk-ant-api03-e2b-stalls-secret", **FAST_RETRIES, **BOUNDS)


def named_commands(text: str) -> list[str]:
    """Every `sandboxrun ...` command a message names (in backticks)."""
    return [c for c in re.findall(r"`(sandboxrun [^`]+)`", text) if "..." not in c]


def assert_hints_work(cli, name: str, stderr: str) -> None:
    """Every command the run's messages and `status` name works now: none refuses (exit 2).

    `kill` and `attach` would change what is checked next, so they are run last.
    """
    st = cli.status(name)
    commands = list(dict.fromkeys(named_commands(stderr) + named_commands(st.get("error") or "")
                                  + st["next"]))  # fmt: skip
    assert commands, (stderr, st)
    order = sorted(commands, key=lambda c: any(w in c for w in (" kill ", " attach ")))
    for command in order:
        argv = shlex.split(command)[1:]
        if argv[0] == "download":
            argv += ["--output", str(home() / f"dl-{name}")]
        proc = cli(*argv, timeout=ENDS_WITHIN)
        assert proc.returncode != 2, (command, proc.stderr)
        assert "Traceback" not in proc.stderr, (command, proc.stderr)


# -- stalls before the agent: create, upload, unpack, baseline, start -------------------------


def test_create_hung_once_is_retried_with_the_same_key(cli, repo, e2b):
    """A create with no answer is given up on after the request timeout and retried; the
    idempotency key makes sure the retry never starts a second sandbox."""
    fault = e2b.faults.add("create", "stall", seconds=None)
    proc = run(cli, "h1", "@write a.txt a")
    assert proc.returncode == 0, proc.stderr
    assert fault.hits == 1
    assert cli.status("h1")["status"] == "completed"
    assert "a.txt" in branch_files(repo, "sandboxrun/h1")
    assert_nothing_left(e2b)


def test_create_hung_for_good_fails_in_bounded_time(cli, repo, e2b):
    e2b.faults.add("create", "stall", seconds=None, times=1000)
    proc = run(cli, "h2", "@write a.txt a")
    assert proc.returncode == 1
    assert "creating the sandbox" in proc.stderr and "Traceback" not in proc.stderr
    st = cli.status("h2")
    assert st["status"] == "failed" and "creating the sandbox" in st["error"]
    assert_nothing_left(e2b)
    assert_hints_work(cli, "h2", proc.stderr)


@pytest.mark.parametrize(
    "stall",
    [{"seconds": None}, {"seconds": None, "stall_after": 200}],
    ids=["no-answer", "mid-body"],
)
def test_upload_hung_once_is_retried(cli, repo, e2b, stall):
    """The SDK puts no bound on a streamed upload: ours gives up on it (before any answer, or
    with the server no longer reading the body) and the retry completes the run."""
    (repo / "filler.bin").write_bytes(os.urandom(64 * 1024))  # more than one read's worth
    git(repo, "add", "filler.bin")
    git(repo, "commit", "-qm", "filler")
    fault = e2b.faults.add("upload", "stall", **stall)
    proc = run(cli, "h3", "@write a.txt a")
    assert proc.returncode == 0, proc.stderr
    assert fault.hits == 1
    assert {"a.txt", "filler.bin"} <= branch_files(repo, "sandboxrun/h3")
    assert_nothing_left(e2b)


def test_upload_hung_for_good_fails_cleanly(cli, repo, e2b):
    e2b.faults.add("upload", "stall", seconds=None, times=1000)
    proc = run(cli, "h4", "@write a.txt a")
    assert proc.returncode == 1
    assert "nothing moved" in proc.stderr, proc.stderr
    assert cli.status("h4")["status"] == "failed"
    assert_nothing_left(e2b)  # torn down, and the partial upload.tar.gz removed
    assert_hints_work(cli, "h4", proc.stderr)


@pytest.mark.parametrize(
    ("tar", "match", "after"),
    [(False, UNPACK, None), (True, UNPACK, None), (True, BASELINE, None),
     (False, START, None), (False, START, 0)],
    ids=["checkout", "unpack", "baseline", "start", "start-answer-lost"],
)  # fmt: skip
def test_a_hung_provisioning_command_fails_cleanly(cli, repo, e2b, tar, match, after):
    """Unpacking, the baseline commit and the agent's start are not safe to run twice: a hung
    one fails the run once its bound passed, and the sandbox goes (with an agent whose start
    went through but whose pid never came back: it has done nothing yet)."""
    if tar:
        as_tarball(repo)
    fault = e2b.faults.add("command", "stall", seconds=None, match=match, stall_after=after)
    proc = run(cli, "h5", "@write a.txt a")
    assert proc.returncode == 1, proc.stderr
    assert fault.hits == 1
    st = cli.status("h5")
    assert st["status"] == "failed" and "did not finish within" in st["error"], st
    assert st.get("started_at") is None  # the agent never ran
    assert_nothing_left(e2b)
    assert_hints_work(cli, "h5", proc.stderr)


def test_keeping_the_baseline_hung_is_skipped(cli, repo, e2b):
    """Keeping a copy of the baseline's trees is a help, not a step the run needs: when the
    command hangs, it is given up on and the run goes on to complete with the work."""
    fault = e2b.faults.add("command", "stall", seconds=None, match=BASELINE_PACK)
    proc = run(cli, "h6", "@write a.txt a")
    assert proc.returncode == 0, proc.stderr
    assert fault.hits == 1
    assert cli.status("h6")["status"] == "completed"
    assert "a.txt" in branch_files(repo, "sandboxrun/h6")
    assert_nothing_left(e2b)


# -- lost or expired before the agent ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tar", "kind", "action", "match"),
    [
        (False, "upload", "lose", ""),
        (False, "upload", "expire", ""),
        (False, "command", "lose", UNPACK),
        (True, "command", "lose", UNPACK),
        (True, "command", "lose", BASELINE),
        (True, "command", "expire", BASELINE),
        (False, "command", "expire", BASELINE_PACK),
        (False, "command", "lose", START),
    ],
    ids=["lost-upload", "expired-upload", "lost-checkout", "lost-unpack", "lost-baseline",
         "expired-baseline", "expired-baseline-pack", "lost-start"],
)  # fmt: skip
def test_sandbox_gone_before_the_agent_ran(cli, repo, e2b, tar, kind, action, match):
    """The sandbox disappears while it is being made ready: the run ends `lost` at once (no
    retries against a sandbox that is gone), saying the agent never ran so nothing of its was
    lost; nothing is left behind and every command named works."""
    if tar:
        as_tarball(repo)
    fault = e2b.faults.add(kind, action, match=match)
    proc = run(cli, "g1", "@write a.txt a")
    assert proc.returncode == 1
    assert fault.hits == 1
    st = cli.status("g1")
    assert st["status"] == "lost", st
    assert "before the agent started" in st["error"] and "nothing" in st["error"], st["error"]
    assert "Traceback" not in proc.stderr
    assert_nothing_left(e2b)
    assert_hints_work(cli, "g1", proc.stderr)
    assert cli("attach", "g1").returncode == 1  # nothing to attach to, and it says so


# -- the agent working: polls, checkpoints -------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "command", "action": "drop", "times": 3},
        {"kind": "command", "action": "stall", "seconds": None, "times": 2},
        {"kind": "command", "action": "stall", "seconds": None, "stall_after": 0},
        {"kind": "download", "action": "stall", "seconds": None, "match": "agent.exit",
         "times": 2},
    ],
    ids=["dropped", "no-answer", "stream-stopped", "exit-check-hung"],
)  # fmt: skip
def test_follow_polls_broken_the_run_carries_on(cli, repo, e2b, fault):
    """Polls of the agent's log (or the check whether it exited) dropped or hung: the
    follower tries again, the agent's whole output arrives once, and the run completes."""
    f = e2b.faults.add(**{"match": POLL, "after": 2, **fault})
    proc = run(cli, "f1", "@write a.txt a\n@sleep 2\n@write b.txt b\n@sleep 2\n@write c.txt c")
    assert proc.returncode == 0, proc.stderr
    assert f.hits == f.times
    st = cli.status("f1")
    assert st["status"] == "completed"
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, "sandboxrun/f1")
    lines = [json.loads(x) for x in cli("logs", "f1", "--json").stdout.splitlines() if x]
    tools = [e["payload"] for e in lines
             if e["kind"] == "agent" and e["payload"].get("type") == "tool_use"]  # fmt: skip
    writes = [t["summary"].rsplit("/", 1)[-1] for t in tools if t.get("name") == "Write"]
    assert writes == ["a.txt", "b.txt", "c.txt"], tools  # each once: no line lost or repeated


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "command", "action": "stall", "seconds": None, "match": CHECKPOINT},
        {"kind": "download", "action": "drop", "match": "checkpoint/work.pack"},
        {"kind": "download", "action": "stall", "seconds": None, "stall_after": 0,
         "match": "checkpoint/work.pack"},
    ],
    ids=["produce-hung", "fetch-dropped", "fetch-hung"],
)  # fmt: skip
def test_checkpoints_survive_network_trouble_then_loss(cli, repo, e2b, fault):
    """A checkpoint whose making or fetch breaks is taken again at the next one; when the
    sandbox is then lost, the last checkpoint that landed is on the branch."""
    f = e2b.faults.add(**fault)
    run_ = start(cli, "p1", "@write one.txt 1\n@commit agent: one\n@write two.txt 2\n@sleep 300",
                 env={"SANDBOXRUN_CHECKPOINT_EVERY": "1s"})  # fmt: skip
    try:
        st = wait_running(cli, "p1")
        retry_until(lambda: f.hits >= 1 and phases(cli, "p1", "checkpoint"), timeout=STARTS_WITHIN)
        art = artifacts(cli, "p1")
        retry_until(lambda: checkpoint_holds_a_commit_and_work(art), timeout=STARTS_WITHIN)
        e2b.lose(st["sandbox_id"])
        run_.communicate(timeout=ENDS_WITHIN)
    finally:
        run_.kill()
    assert run_.returncode == 1
    st = cli.status("p1")
    assert st["status"] == "lost" and "applied to branch" in st["error"], st
    assert {"one.txt", "two.txt"} <= branch_files(repo, "sandboxrun/p1")


# -- stop and collect, hung ------------------------------------------------------------------


def test_stop_signal_hung_is_sent_again(cli, repo, e2b):
    """The `kill -INT` command hangs: given up on at its bound, the next poll stops the agent
    again, and the run times out with its work collected."""
    fault = e2b.faults.add("command", "stall", seconds=None, match=STOP)
    clock_starts_once(e2b, lambda checkout: (checkout / "t.txt").exists())
    proc = run(cli, "s1", "@write t.txt t\n@sleep 600", "--timeout", "3s")
    assert fault.hits >= 1
    assert cli.status("s1")["status"] == "timeout", proc.stderr
    assert "t.txt" in branch_files(repo, "sandboxrun/s1")
    assert_nothing_left(e2b)


def test_extension_before_the_stop_hung_still_collects(cli, repo, e2b):
    """Pushing the sandbox's end before the stop gets no answer, ever: the run gives up on it
    within a part of the time left, says so, and collects in the time the sandbox has (its end
    was set with room to collect at the start). Each call is allowed 30 s here, so the
    backend's retries alone would outlast that room, and the sandbox with the work."""
    # Every extension after the first (the agent's start setting the sandbox's end) hangs:
    # scripted before the run, not once it runs, which a loaded machine can notice too late.
    fault = e2b.faults.add("timeout", "stall", seconds=None, after=1, times=1000)
    clock_starts_once(e2b, lambda checkout: (checkout / "t.txt").exists())
    proc = run(cli, "s2", "@write t.txt t\n@sleep 600", "--timeout", "4s",
               env={"SANDBOXRUN_E2B_REQUEST_TIMEOUT": "30"})  # fmt: skip
    out, err = proc.stdout, proc.stderr
    assert fault.hits >= 1
    assert "could not extend the sandbox for the collection" in out + err
    assert cli.status("s2")["status"] == "timeout", err
    assert "t.txt" in branch_files(repo, "sandboxrun/s2")
    assert_nothing_left(e2b)


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "command", "action": "stall", "seconds": None, "match": PRODUCE},
        {"kind": "download", "action": "stall", "seconds": None, "stall_after": 1 << 16,
         "match": "collect/work.pack"},
    ],
    ids=["produce-hung", "download-stopped"],
)  # fmt: skip
def test_collection_hung_once_is_retried_and_resumed(cli, repo, e2b, fault):
    """Producing the pack hangs, or its download stops mid-way: given up on, retried (the
    download from the bytes already on disk), and the run completes."""
    f = e2b.faults.add(**fault)
    proc = run(cli, "k1", "@binary big.bin 1500000\n@write x.txt x")
    assert proc.returncode == 0, proc.stderr
    assert f.hits == 1
    assert cli.status("k1")["status"] == "completed"
    assert {"big.bin", "x.txt"} <= branch_files(repo, "sandboxrun/k1")
    assert_nothing_left(e2b)


def test_collection_hung_for_good_keeps_the_sandbox_for_attach(cli, repo, e2b):
    e2b.faults.add("download", "stall", seconds=None, match="collect/work.pack", times=100_000)
    proc = run(cli, "k2", "@write q.txt q")
    assert proc.returncode == 1
    st = cli.status("k2")
    assert st["status"] == "collecting" and st["next"][0] == "sandboxrun attach k2", st
    assert e2b.sandbox_ids() == [st["sandbox_id"]]
    e2b.faults.clear()
    proc = cli("attach", "k2", timeout=ENDS_WITHIN)
    assert proc.returncode == 0, proc.stderr
    assert "q.txt" in branch_files(repo, "sandboxrun/k2")
    assert_nothing_left(e2b)
