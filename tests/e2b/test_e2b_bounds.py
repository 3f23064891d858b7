"""The last unbounded E2B cases, through the CLI against the emulator's fault knobs.

A person's `extend` waits a bounded time for E2B; a hung provisioning command fails within a
bound sized from the upload (no ``SANDBOXRUN_E2B_COMMAND_TIMEOUT`` here: the production
default is what is tested); a create E2B carries out after we gave up on it is found by its
metadata and killed (by the failing run, or by `cleanup`). See docs/e2b.md, "Fault matrix".
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3

import pytest
from e2blib import (
    ENDS_WITHIN,
    FAST_RETRIES,
    STARTS_WITHIN,
    as_tarball,
    e2b_fixture,
    home,
    run,
    start,
    wait_running,
)
from sbr_testlib import branch_files, logs_json, retry_until

from sandboxrun.sandbox.lifetime import command_bound

pytestmark = pytest.mark.slow

# No SANDBOXRUN_E2B_COMMAND_TIMEOUT: the production bound of a provisioning command is tested.
e2b = e2b_fixture(
    "sk-ant-api03-e2b-bounds-secret",
    **FAST_RETRIES,
    SANDBOXRUN_E2B_REQUEST_TIMEOUT="2",
    SANDBOXRUN_E2B_STALL_TIMEOUT="2",
    SANDBOXRUN_E2B_COMMAND_TIMEOUT=None,
)


def sandbox_end(name: str) -> float:
    """The sandbox end sandboxrun recorded (only ends E2B confirmed are)."""
    with contextlib.closing(sqlite3.connect(home() / "state.db")) as conn:
        return conn.execute("SELECT sandbox_end FROM sessions WHERE name = ?", (name,)).fetchone()[
            0
        ]


# -- extend ----------------------------------------------------------------------------------


def test_hung_extend_gives_up_within_its_bound_and_changes_nothing(cli, repo, e2b):
    """E2B never answers the extension: `extend` gives up after its own bound (each call
    would be allowed 60 s, retried: minutes), says nothing changed, and when E2B applies it
    late after all, neither our limit nor the recorded sandbox end believe it."""
    runp = start(cli, "x1", "@write x.txt x\n@sleep 600", "--timeout", "120s")
    try:
        st = wait_running(cli, "x1")
        end = e2b.sandbox(st["sandbox_id"]).end_at
        fault = e2b.faults.add("timeout", "stall", seconds=None, times=1000)
        proc = cli("extend", "x1", "5m", timeout=ENDS_WITHIN, env={
            "SANDBOXRUN_E2B_REQUEST_TIMEOUT": "60", "SANDBOXRUN_E2B_EXTEND_TIMEOUT": "3"})  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert "did not extend" in proc.stderr and "unchanged" in proc.stderr
        assert "within 3s" in proc.stderr and "Traceback" not in proc.stderr
        assert fault.hits == 1
        recorded = sandbox_end("x1")
        assert cli.status("x1")["deadline"] == st["deadline"]
        # E2B applies it late (the held request is served now): nothing of ours moves
        e2b.faults.release()
        retry_until(lambda: e2b.sandbox(st["sandbox_id"]).end_at > end + 60, timeout=STARTS_WITHIN)
        later = cli.status("x1")
        assert later["status"] == "running" and later["deadline"] == st["deadline"]
        assert sandbox_end("x1") == recorded < end + 5
        assert not [e for e in logs_json(cli, "x1") if e["payload"].get("phase") == "extended"
                    and e["payload"].get("detail") == "+300s"]  # fmt: skip
        assert cli("kill", "x1").returncode == 0
        runp.communicate(timeout=ENDS_WITHIN)
    finally:
        runp.kill()
        runp.wait(timeout=30)
    assert "x.txt" in branch_files(repo, "sandboxrun/x1")


# -- provisioning commands -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tarball", "match", "what"),
    [(False, "sandboxrun-upload-", "checkout"), (True, "fast-import", "baseline")],
    ids=["checkout", "baseline"],
)
def test_hung_provisioning_command_fails_within_its_sized_bound(cli, repo, e2b, tarball, match,
                                                                what):  # fmt: skip
    """The command that checks the upload out (or commits the baseline) hangs: with no
    ceiling configured, it fails at the bound sized from the upload, not after 15 min."""
    if tarball:
        as_tarball(repo)
    fault = e2b.faults.add("command", "stall", seconds=None, match=match)
    runp = start(cli, f"p-{what}", "@write a a")
    try:
        retry_until(lambda: e2b.faults.stalled >= 1, timeout=STARTS_WITHIN)
        (sandbox_id,) = e2b.sandbox_ids()
        uploads = list(e2b.host_path(sandbox_id, "/tmp").glob("sandboxrun-upload-*"))
        if tarball:  # unpacked and removed: the tarball's size is in the session's directory
            uploads = list(home().rglob("upload.tar*"))
        (upload,) = uploads
        size = upload.stat().st_size
        _, err = runp.communicate(timeout=ENDS_WITHIN)
    finally:
        runp.kill()
        runp.wait(timeout=30)
    assert runp.returncode == 1, err
    assert fault.hits == 1
    found = re.search(r"did not finish within ([0-9.e+]+)s", err)
    assert found, err
    assert found.group(1) == f"{command_bound(size):g}"
    assert command_bound(size) < 60  # a small repository: the floor, not 15 minutes
    st = cli.status(f"p-{what}")
    assert st["status"] == "failed" and "did not finish within" in st["error"]
    assert e2b.sandbox_ids() == []


# -- a create carried out after we gave up ---------------------------------------------------


def test_create_whose_answer_is_lost_is_killed_by_the_failing_run(cli, repo, e2b):
    """E2B makes the sandbox each time but every answer is cut: the run gives up, finds the
    sandbox by its session metadata and kills it, and says so."""
    fault = e2b.faults.add("create", "drop", drop_after=0, times=1000)
    proc = run(cli, "o1", "@write a.txt a")
    assert proc.returncode == 1
    assert fault.hits >= 2 and e2b.stats["create_served"] >= 2
    assert "started without an answer" in proc.stderr, proc.stderr
    st = cli.status("o1")
    assert st["status"] == "failed" and "killed i" in st["error"], st
    assert e2b.sandbox_ids() == []


def test_create_carried_out_after_the_run_gave_up_is_killed_by_cleanup(cli, repo, e2b):
    """Every create is held until long after the run gave up; E2B then carries them out.
    `cleanup` finds the sandboxes by the session's metadata, kills them and records it."""
    fault = e2b.faults.add("create", "stall", seconds=None, times=1000)
    proc = run(cli, "o2", "@write a.txt a")
    assert proc.returncode == 1 and "creating the sandbox" in proc.stderr
    st = cli.status("o2")
    assert st["status"] == "failed" and st["sandbox_id"] is None
    e2b.faults.release()
    retry_until(lambda: e2b.stats["create_served"] == fault.hits, timeout=STARTS_WITHIN)
    late = e2b.sandbox_ids()
    assert late, "the released creates made no sandbox"
    assert {e2b.sandbox(i).metadata["sandboxrun_session"] for i in late} == {st["id"]}
    dry = cli("cleanup", "--dry-run", "--json")
    assert dry.returncode == 0 and "o2" in json.loads(dry.stdout)["sandboxes_removed"]
    assert sorted(e2b.sandbox_ids()) == sorted(late)
    done = cli("cleanup", "--json")
    assert done.returncode == 0, done.stderr
    assert "o2" in json.loads(done.stdout)["sandboxes_removed"]
    assert e2b.sandbox_ids() == []
    said = [e["payload"].get("message", "") for e in logs_json(cli, "o2") if e["kind"] == "warning"]
    assert any("E2B started it after the run gave up" in m for m in said), said
