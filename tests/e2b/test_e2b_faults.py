"""Faults injected at every phase of an E2B run, through the CLI: the work is never lost.

Each test scripts one failure in the emulator (tests/e2b_emulator/faults.py) at one phase —
create, upload, agent, stop, collect — or around `extend` and a run nobody follows, and checks
what the issue asks: the agent's work (up to the last checkpoint) is on the branch or in the
artifacts with a command that applies it, and the session's state says what happened. The
matrix in docs/e2b.md is these tests.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from e2blib import (
    ENDS_WITHIN,
    FAST_RETRIES,
    STARTS_WITHIN,
    artifacts,
    assert_nothing_left,
    checkpoint_holds_a_commit_and_work,
    clock_starts_once,
    e2b_fixture,
    home,
    no_uploads_left,
    phases,
    run,
    start,
    wait_running,
)
from sbr_testlib import branch_files, git, logs_json, retry_until

pytestmark = pytest.mark.slow

e2b = e2b_fixture("sk-ant-api03-e2b-faults-secret", **FAST_RETRIES)


# -- create ----------------------------------------------------------------------------------


def test_create_failing_twice_is_retried(cli, repo, e2b):
    fault = e2b.faults.add("create", "status", status=503, times=2)
    proc = run(cli, "c1", "@write a.txt a")
    assert proc.returncode == 0, proc.stderr
    assert fault.hits == 2
    assert "a.txt" in branch_files(repo, "sandboxrun/c1")
    assert_nothing_left(e2b)


def test_create_failing_for_good_fails_cleanly(cli, repo, e2b):
    e2b.faults.add("create", "drop", times=1000)
    proc = run(cli, "c2", "@write a.txt a")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Hint:" in proc.stderr
    st = cli.status("c2")
    assert st["status"] == "failed" and "next" in st
    assert_nothing_left(e2b)


# -- upload ----------------------------------------------------------------------------------


def test_upload_dropped_once_is_retried(cli, repo, e2b):
    fault = e2b.faults.add("upload", "drop")
    proc = run(cli, "u1", "@write a.txt a")
    assert proc.returncode == 0, proc.stderr
    assert fault.hits == 1
    assert "a.txt" in branch_files(repo, "sandboxrun/u1")
    assert no_uploads_left()


def test_upload_failing_for_good_leaves_nothing_behind(cli, repo, e2b):
    e2b.faults.add("upload", "status", status=507, times=1000)
    proc = run(cli, "u2", "@write a.txt a")
    assert proc.returncode == 1
    assert "disk space" in proc.stderr
    assert cli.status("u2")["status"] == "failed"
    assert e2b.sandbox_ids() == []  # torn down: the agent never started
    assert no_uploads_left()  # the partial upload.tar.gz is gone too


# -- agent: checkpoints, loss ----------------------------------------------------------------


def test_lost_mid_run_keeps_the_last_checkpoint_on_the_branch(cli, repo, e2b):
    runp = start(cli, "a1", "@write one.txt 1\n@commit agent: one\n@write two.txt 2\n@sleep 120",
                 env={"SANDBOXRUN_CHECKPOINT_EVERY": "1s"})  # fmt: skip
    try:
        wait_running(cli, "a1")
        art = artifacts(cli, "a1")
        retry_until(lambda: checkpoint_holds_a_commit_and_work(art), timeout=STARTS_WITHIN)
        e2b.lose(cli.status("a1")["sandbox_id"])
        out, err = runp.communicate(timeout=180)
    finally:
        runp.kill()
    assert runp.returncode == 1
    st = cli.status("a1")
    assert st["status"] == "lost", (out, err)
    assert "kept the last checkpoint" in st["error"] and "applied to branch" in st["error"]
    assert {"one.txt", "two.txt"} <= branch_files(repo, "sandboxrun/a1")
    log = git(repo, "log", "--format=%s", "main..sandboxrun/a1").splitlines()
    assert log[-1] == "agent: one" and "last checkpoint" in log[0]


def test_lost_before_any_checkpoint_says_nothing_was_kept(cli, repo, e2b):
    runp = start(cli, "a2", "@sleep 120")
    try:
        wait_running(cli, "a2")
        e2b.lose(cli.status("a2")["sandbox_id"])
        runp.communicate(timeout=180)
    finally:
        runp.kill()
    st = cli.status("a2")
    assert st["status"] == "lost" and "nothing was kept" in st["error"]
    # every hint names a command that works now: no attach, no branch that is empty
    proc = cli("attach", "a2")
    assert proc.returncode == 1
    assert "Next:" in proc.stderr and "on branch" not in proc.stderr
    assert "sandboxrun logs a2" in proc.stderr
    assert cli("logs", "a2").returncode == 0


#: a directive that makes the stand-in agent wait until the test touches GATE_PATH
GATE_PATH = "/home/user/go"
GATE = f"@bash while [ ! -e {GATE_PATH} ]; do sleep 0.05; done"


def checkpoint_with_commits(cli, name: str, commits: int) -> bool:
    """A checkpoint of session ``name`` holds ``commits`` of the agent's commits."""
    return any(p.get("commits") == commits for p in phases(cli, name, "checkpoint"))


def test_commits_trigger_incremental_checkpoints(cli, repo, e2b):
    """A finished `git commit` is checkpointed at once; the second fetches only the new commit."""
    # The agent waits at a gate between its commits (not a sleep: a follower slower than it on
    # a loaded machine would see both commits before it took the first checkpoint).
    plan = (f"@write c.txt c\n@commit agent: c\n{GATE}\n@write d.txt d\n@commit agent: d\n"
            "@sleep 120")  # fmt: skip
    runp = start(cli, "a3", plan)
    try:
        st = wait_running(cli, "a3")
        retry_until(lambda: checkpoint_with_commits(cli, "a3", 1), timeout=STARTS_WITHIN)
        e2b.host_path(st["sandbox_id"], GATE_PATH).touch()
        retry_until(lambda: checkpoint_with_commits(cli, "a3", 2), timeout=STARTS_WITHIN)
        art = artifacts(cli, "a3")
        info = json.loads((art / "checkpoint.json").read_text())
        assert cli("kill", "a3").returncode == 0
        runp.communicate(timeout=180)
    finally:
        runp.kill()
    assert info["commits"] == 2 and info["number"] >= 2
    # every checkpoint is a git pack of what the ones before it did not hold
    packs = sorted((art / "checkpoint" / "objects" / "pack").glob("checkpoint-*.pack"))
    assert len(packs) == info["number"] >= 2
    assert 0 < info["fetched_bytes"] < info["kept_bytes"] == sum(p.stat().st_size for p in packs)
    assert {"c.txt", "d.txt"} <= branch_files(repo, "sandboxrun/a3")


def _run_until_checkpointed(cli, name: str, plan: str):
    """Start a run checkpointing every second; return it once a checkpoint holds a commit and
    uncommitted work."""
    runp = start(cli, name, plan, env={"SANDBOXRUN_CHECKPOINT_EVERY": "1s"})
    wait_running(cli, name)
    art = artifacts(cli, name)
    retry_until(lambda: checkpoint_holds_a_commit_and_work(art), timeout=STARTS_WITHIN)
    return runp


def test_a_branch_moved_while_the_run_was_lost_is_left_alone(cli, repo, e2b):
    """The user committed on the session's branch; then the sandbox is lost. The branch keeps
    the user's commit and nothing else; the checkpoint is kept on a side ref, named."""
    plan = "@write one.txt 1\n@commit agent: one\n@write two.txt 2\n@sleep 120"
    runp = _run_until_checkpointed(cli, "m1", plan)
    try:
        st = cli.status("m1")
        wt = Path(st["worktree"])
        (wt / "mine.txt").write_text("user work\n")
        git(wt, "add", "mine.txt")
        git(wt, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-q", "-m", "user: mine")
        mine = git(wt, "rev-parse", "HEAD").strip()
        e2b.lose(st["sandbox_id"])
        runp.communicate(timeout=180)
    finally:
        runp.kill()
    assert runp.returncode == 1
    st = cli.status("m1")
    assert st["status"] == "lost"
    assert git(repo, "rev-parse", "sandboxrun/m1").strip() == mine  # untouched
    assert git(wt, "status", "--porcelain").strip() == ""
    ref = re.search(r"refs/sandboxrun/checkpoint/\S+", st["error"]).group(0).rstrip(".:,)")
    assert "user: mine" in st["error"] and "left as it is" in st["error"], st["error"]
    assert {"one.txt", "two.txt"} <= branch_files(repo, ref)
    assert "mine.txt" not in branch_files(repo, ref)
    log = git(repo, "log", "--format=%s", f"sandboxrun/m1~1..{ref}").splitlines()
    assert log[-1] == "agent: one" and "last checkpoint" in log[0]


def test_status_never_lands_a_checkpoint_attach_does(cli, repo, e2b):
    """Nobody follows the run when its sandbox is lost: `status` says `lost` and names
    `attach`, the branch untouched; `attach` then lands the last checkpoint."""
    runp = _run_until_checkpointed(cli, "m2", "@write one.txt 1\n@commit agent: one\n"
                                              "@write two.txt 2\n@sleep 120")  # fmt: skip
    runp.send_signal(signal.SIGKILL)
    runp.wait(timeout=10)
    st = cli.status("m2")
    e2b.lose(st["sandbox_id"])
    before = git(repo, "rev-parse", "sandboxrun/m2").strip()
    st = cli.status("m2")
    assert st["status"] == "lost" and "not applied yet" in st["error"], st
    assert st["next"][0] == "sandboxrun attach m2"
    assert git(repo, "rev-parse", "sandboxrun/m2").strip() == before  # status wrote nothing
    assert cli("status").returncode == 0  # the table too
    assert git(repo, "rev-parse", "sandboxrun/m2").strip() == before
    # the kept checkpoint can be looked at (and applied by hand) before anything lands
    out = repo.parent / "dl-m2"
    proc = cli("download", "m2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    diff = (out / "changes.diff").read_bytes()
    assert b"one.txt" in diff and b"two.txt" in diff
    assert "agent: one" in (out / "commits.txt").read_text()
    proc = cli("attach", "m2")
    assert proc.returncode == 1, proc.stderr  # lost is not a success, but the work is kept
    st = cli.status("m2")
    assert st["status"] == "lost" and "applied to branch sandboxrun/m2" in st["error"], st
    assert {"one.txt", "two.txt"} <= branch_files(repo, "sandboxrun/m2")
    assert st["next"][0] != "sandboxrun attach m2"
    assert cli("attach", "m2").returncode == 1  # nothing left to do


# -- stop ----------------------------------------------------------------------------------


def test_agent_ignoring_sigint_and_sigterm_is_stopped_within_the_budget(cli, repo, e2b):
    """INT, TERM and KILL go out on one schedule: the collection still happens, with the work."""
    clock_starts_once(e2b, lambda checkout: (checkout / "s.txt").exists())
    proc = run(cli, "s1", "@slowstop 600\n@write s.txt stubborn\n@sleep 600", "--timeout", "4s",
               timeout=180)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    st = cli.status("s1")
    assert st["status"] == "timeout", st
    assert "s.txt" in branch_files(repo, "sandboxrun/s1")
    assert e2b.sandbox_ids() == []


def test_network_drop_on_the_stop_signal_is_retried(cli, repo, e2b):
    fault = e2b.faults.add("command", "drop", match="-INT")
    clock_starts_once(e2b, lambda checkout: (checkout / "t.txt").exists())
    proc = run(cli, "s2", "@write t.txt t\n@sleep 600", "--timeout", "3s", timeout=180)
    assert fault.hits == 1
    assert cli.status("s2")["status"] == "timeout", proc.stderr
    assert "t.txt" in branch_files(repo, "sandboxrun/s2")


def test_sandbox_lost_while_stopping_keeps_the_checkpoint(cli, repo, e2b):
    e2b.faults.add("command", "lose", match="-INT")
    clock_starts_once(e2b, lambda checkout: (checkout / "w.txt").exists())
    proc = run(cli, "s3", "@write w.txt w\n@sleep 600", "--timeout", "8s", timeout=180,
               env={"SANDBOXRUN_CHECKPOINT_EVERY": "1s"})  # fmt: skip
    assert proc.returncode == 1
    st = cli.status("s3")
    assert st["status"] == "lost" and "checkpoint" in st["error"], st
    assert "w.txt" in branch_files(repo, "sandboxrun/s3")


# -- collect ---------------------------------------------------------------------------------


def test_network_drop_during_collection_resumes_and_completes(cli, repo, e2b):
    """A transfer cut halfway goes on from where it stopped; the run ends `completed`."""
    drop = e2b.faults.add("download", "drop", match="collect/work.pack", drop_after=1 << 16)
    pieces = e2b.faults.add("command", "stall", match="sandboxrun-piece", times=1000)  # a probe
    proc = run(cli, "k1", "@binary big.bin 1500000\n@write x.txt x")
    assert proc.returncode == 0, proc.stderr
    assert drop.hits == 1 and pieces.hits >= 1  # resumed with a piece from the offset
    assert cli.status("k1")["status"] == "completed"
    size = git(repo, "cat-file", "-s", "sandboxrun/k1:big.bin").strip()
    assert int(size) == 1500003
    # housekeeping: retries are logged to the file, not into the terminal; phases are shown
    assert "retrying" not in proc.stderr + proc.stdout
    assert "retrying" in (home() / "sandboxrun.log").read_text()
    assert "phases:" in proc.stdout and "collect" in proc.stdout


def test_producing_the_patches_dropped_once_is_retried(cli, repo, e2b):
    fault = e2b.faults.add("command", "drop", match=".sandboxrun/collect")
    proc = run(cli, "k2", "@write p.txt p")
    assert proc.returncode == 0, proc.stderr
    assert fault.hits == 1
    assert "p.txt" in branch_files(repo, "sandboxrun/k2")


def test_collection_failing_for_good_keeps_the_sandbox_for_attach(cli, repo, e2b):
    """After retries the run stops with the sandbox alive; `attach` then finishes the job."""
    e2b.faults.add("download", "status", status=503, match="collect/", times=100_000)
    proc = run(cli, "k3", "@write q.txt q", timeout=180)
    assert proc.returncode == 1
    assert "sandboxrun attach k3" in proc.stderr, proc.stderr
    st = cli.status("k3")
    assert st["status"] == "collecting" and not st["driver_alive"]
    assert st["next"][0] == "sandboxrun attach k3"
    assert e2b.sandbox_ids() == [st["sandbox_id"]]  # kept alive
    # download works in this state (another path than the broken one)
    out = repo.parent / "dl-k3"
    assert cli("download", "k3", "--output", str(out)).returncode == 0
    assert b"q.txt" in (out / "changes.diff").read_bytes()
    e2b.faults.clear()
    proc = cli("attach", "k3", timeout=ENDS_WITHIN)
    assert proc.returncode == 0, proc.stderr
    assert cli.status("k3")["status"] == "completed"
    assert "q.txt" in branch_files(repo, "sandboxrun/k3")
    assert e2b.sandbox_ids() == []


def test_attach_resumes_a_collection_download_that_broke_off(cli, repo, e2b):
    """The transfer is cut halfway and then refused until the run gives up (session
    `collecting`, sandbox kept). `attach` brings back the same pack, not a new one: it asks
    only for the bytes not on disk yet, and the run completes."""
    e2b.faults.add("download", "drop", match="collect/work.pack", drop_after=1 << 20)
    # the retries ask for the rest as pieces cut in the sandbox: refuse those
    e2b.faults.add("download", "status", status=503, match="sandboxrun-piece", times=100_000)
    proc = run(cli, "r1", "@bash head -c 3000000 /dev/urandom > big.bin\n@write r.txt r",
               timeout=180)  # fmt: skip
    assert proc.returncode == 1 and "sandboxrun attach r1" in proc.stderr, proc.stderr
    st = cli.status("r1")
    assert st["status"] == "collecting"
    part = artifacts(cli, "r1") / "collect" / "work.pack.part"
    have = part.stat().st_size
    assert have >= 1 << 20
    e2b.faults.clear()
    repack = e2b.faults.add("command", "stall", match="collect.git", times=1000)  # a probe
    sent = e2b.stats["bytes_downloaded"]
    proc = cli("attach", "r1", timeout=ENDS_WITHIN)
    assert proc.returncode == 0, proc.stderr
    assert repack.hits == 0  # the pack made before was brought back as it is
    pack = artifacts(cli, "r1") / "objects" / "pack" / "work.pack"
    assert e2b.stats["bytes_downloaded"] - sent < pack.stat().st_size - have + 200_000
    assert cli.status("r1")["status"] == "completed"
    assert int(git(repo, "cat-file", "-s", "sandboxrun/r1:big.bin").strip()) == 3_000_000
    assert e2b.sandbox_ids() == []


def test_sandbox_lost_during_collection_keeps_the_checkpoint(cli, repo, e2b):
    e2b.faults.add("command", "lose", match=".sandboxrun/collect")
    proc = run(cli, "k4", "@write k.txt k\n@sleep 3", env={"SANDBOXRUN_CHECKPOINT_EVERY": "1s"})
    assert proc.returncode == 1
    st = cli.status("k4")
    assert st["status"] == "lost" and "applied to branch" in st["error"], st
    assert "k.txt" in branch_files(repo, "sandboxrun/k4")


def test_big_leftover_extends_the_sandbox_for_its_collection(cli, repo, e2b):
    """The sandbox's end is pushed by what is to come back (measured), before stopping."""
    big = 40_000_000
    clock_starts_once(e2b, lambda checkout: (checkout / "big.bin").stat().st_size == big)
    proc = run(cli, "k5", "@bash head -c 40000000 /dev/urandom > big.bin\n@sleep 600",
               "--timeout", "4s", timeout=300)  # fmt: skip
    assert cli.status("k5")["status"] == "timeout", proc.stderr
    extended = [p for p in phases(cli, "k5", "extended") if "collecting" in p.get("detail", "")]
    assert extended, logs_json(cli, "k5")
    assert "40,000,000 bytes" in extended[-1]["detail"]
    assert int(git(repo, "cat-file", "-s", "sandboxrun/k5:big.bin").strip()) == 40_000_000


# -- extend ----------------------------------------------------------------------------------


def test_failed_extend_changes_nothing(cli, repo, e2b):
    runp = start(cli, "e1", "@write e.txt e\n@sleep 600", "--timeout", "60s")
    try:
        st = wait_running(cli, "e1")
        end = e2b.sandbox(st["sandbox_id"]).end_at
        e2b.faults.add("timeout", "status", status=503, times=100_000)
        proc = cli("extend", "e1", "5m")
        assert proc.returncode == 1
        assert "did not extend" in proc.stderr and "unchanged" in proc.stderr
        assert cli.status("e1")["deadline"] == st["deadline"]
        assert e2b.sandbox(st["sandbox_id"]).end_at == end
        e2b.faults.clear()
        proc = cli("extend", "e1", "5m", env={"E2B_API_KEY": "e2b_wrong_key_for_extend"})
        assert proc.returncode == 1 and "E2B_API_KEY" in proc.stderr
        assert "e2b_wrong_key_for_extend" not in proc.stderr
        assert cli.status("e1")["deadline"] == st["deadline"]
        proc = cli("extend", "e1", "5m")
        assert proc.returncode == 0, proc.stderr
        assert cli.status("e1")["deadline"] == pytest.approx(st["deadline"] + 300)
        assert e2b.sandbox(st["sandbox_id"]).end_at >= end + 299
        assert cli("kill", "e1").returncode == 0
        runp.communicate(timeout=180)
    finally:
        runp.kill()
    assert "e.txt" in branch_files(repo, "sandboxrun/e1")


# -- nobody following ------------------------------------------------------------------------


def test_orphan_whose_sandbox_is_gone_shows_lost(cli, repo, e2b):
    runp = start(cli, "o1", "@sleep 600")
    st = wait_running(cli, "o1")
    runp.send_signal(signal.SIGKILL)
    runp.wait(timeout=10)
    assert cli.status("o1")["next"][0] == "sandboxrun attach o1"
    e2b.lose(st["sandbox_id"])
    st = cli.status("o1")
    assert st["status"] == "lost" and st["time_left_s"] is None, st
    follow = cli("logs", "o1", "--follow", timeout=ENDS_WITHIN)
    assert follow.returncode == 1
    proc = cli("attach", "o1")
    assert proc.returncode == 1 and "Next:" in proc.stderr
