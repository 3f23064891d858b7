"""The pure parts of warm starts and of the creation rate limit, on real git and real files."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from sbr_testlib import git

from sandboxrun.errors import ConfigError
from sandboxrun.sandbox.ratelimit import CreateLimiter, default_rate, limiter_path, next_slot
from sandboxrun.sandbox.warm import (
    WarmCache,
    WarmEntry,
    check_verify_output,
    commit_manifest,
    listing_digest,
    parse_stage_listing,
    plan_delta,
    stale_reason,
    warm_plan,
    worktree_manifest,
)

# -- rate limit ------------------------------------------------------------------------------


def test_next_slot_spaces_by_the_rate():
    assert next_slot(0.0, 100.0, 1.0) == 100.0
    assert next_slot(100.0, 100.2, 5.0) == 100.2  # 1/5 s already passed... exactly
    assert next_slot(100.0, 100.1, 2.0) == 100.5


def test_default_rate_from_the_environment():
    assert default_rate({}) == 1.0
    assert default_rate({"SANDBOXRUN_E2B_CREATE_RATE": "5"}) == 5.0
    assert default_rate({"SANDBOXRUN_E2B_CREATE_RATE": " "}) == 1.0
    for bad in ("fast", "-1", "0", "inf"):  # an error naming it, not the default
        with pytest.raises(ConfigError) as err:
            default_rate({"SANDBOXRUN_E2B_CREATE_RATE": bad})
        assert err.value.message == f"invalid value for SANDBOXRUN_E2B_CREATE_RATE: {bad!r}"
        assert "unset SANDBOXRUN_E2B_CREATE_RATE" in (err.value.hint or "")


def test_limiter_paths_differ_per_account_and_endpoint(tmp_path):
    a = limiter_path(tmp_path, "https://api.e2b.app", "key1")
    assert a != limiter_path(tmp_path, "https://api.e2b.app", "key2")
    assert a != limiter_path(tmp_path, "http://127.0.0.1:1", "key1")
    assert "key1" not in str(a)  # the key itself is never written anywhere


def test_the_limiter_waits_for_the_previous_creation(tmp_path):
    clock = [1000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    lim = CreateLimiter(tmp_path / "slot", 4.0, clock=lambda: clock[0], sleep=sleep)
    with lim.turn() as waited:
        assert waited == 0.0
    clock[0] += 0.1
    with lim.turn() as waited:
        assert abs(waited - 0.15) < 1e-6
    assert slept and abs(slept[0] - 0.15) < 1e-6


def _take_turns(path: str, rate: float, n: int, out) -> None:
    lim = CreateLimiter(Path(path), rate)
    for _ in range(n):
        with lim.turn():
            enter = time.monotonic()
            went = float(Path(path).read_text())  # what the limiter recorded for this turn
            time.sleep(0.01)  # the creation request
            out.put((went, enter, time.monotonic()))


def test_processes_share_the_limit(tmp_path):
    """Three processes creating as fast as they can go: one at a time, 1/rate apart."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_take_turns, args=(str(tmp_path / "slot"), 20.0, 3, out))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    turns = sorted(out.get(timeout=120) for _ in range(9))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    went = [t[0] for t in turns]
    assert all(b - a >= 0.05 - 1e-6 for a, b in zip(went, went[1:], strict=False))
    # no turn began before the previous one ended (the creation is inside the turn)
    assert all(b[1] >= a[2] for a, b in zip(turns, turns[1:], strict=False))


# -- warm decisions --------------------------------------------------------------------------


def test_plan_delta():
    snap = {"a": ("100644", "1"), "b": ("100644", "2"), "c": ("100755", "3")}
    want = {"a": ("100644", "1"), "b": ("100644", "9"), "c": ("100644", "3"), "d": ("1", "4")}
    changed, deleted = plan_delta(snap, want)
    assert changed == ["b", "c", "d"]  # content, mode, new
    assert deleted == []
    assert plan_delta(snap, {"a": ("100644", "1")}) == ([], ["b", "c"])


def test_stale_reason():
    assert stale_reason(10, 100, 1, 10) is None  # small, however large a share
    assert stale_reason(3 << 20, 4 << 20, 5, 10) is not None
    assert stale_reason(3 << 20, 100 << 20, 5, 10) is None


def test_warm_plan():
    assert warm_plan("auto", "local", 10, True) == "cold"
    assert warm_plan("off", "e2b", 10, True) == "cold"
    assert warm_plan("auto", "e2b", 1, True) == "use"
    assert warm_plan("auto", "e2b", 2, False) == "cold"
    assert warm_plan("auto", "e2b", 3, False) == "build"
    assert warm_plan("on", "e2b", 1, False) == "build"


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("a\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "sp ace\tand tab.txt").write_text("odd\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    return root


def test_manifests_agree_with_git(tmp_path):
    root = _repo(tmp_path)
    files = ["a.txt", "run.sh", "sp ace\tand tab.txt"]
    head = git(root, "rev-parse", "HEAD").strip()
    at_commit = commit_manifest(root, head, files)
    assert at_commit == worktree_manifest(root, files)
    assert at_commit["run.sh"][0] == "100755"
    # a change on disk and a new untracked file are hashed as git would
    (root / "a.txt").write_text("changed\n")
    (root / "new.txt").write_text("new\n")
    now = worktree_manifest(root, [*files, "new.txt"])
    assert now["a.txt"][1] == git(root, "hash-object", "a.txt").strip()
    assert now["new.txt"] == ("100644", git(root, "hash-object", "new.txt").strip())
    assert plan_delta(at_commit, now) == (["a.txt", "new.txt"], [])


def test_listing_digest_is_the_digest_of_git_ls_files(tmp_path):
    root = _repo(tmp_path)
    raw = git(root, "ls-files", "-s", "-z").encode()
    manifest = parse_stage_listing(raw)
    assert listing_digest(manifest, list(manifest)) == hashlib.sha256(raw).hexdigest()


def test_check_verify_output(tmp_path):
    root = _repo(tmp_path)
    raw = git(root, "ls-files", "-s", "-z").encode()
    manifest = parse_stage_listing(raw)
    good = f"DIGEST {hashlib.sha256(raw).hexdigest()}\n".encode()
    assert check_verify_output(good, manifest) is None
    assert "differs" in (check_verify_output(b"DIGEST 00\n", manifest) or "")
    # a file the sandbox's .gitignore leaves out of its index is checked from disk
    extra = {**manifest, "ignored.log": ("100644", "abc")}
    assert check_verify_output(good + b"abc ignored.log\0", extra) is None
    assert "ignored.log" in (check_verify_output(good + b"MISSING ignored.log\0", extra) or "")
    assert check_verify_output(b"oops", manifest) is not None


def test_the_cache_finds_the_newest_snapshot_of_a_repository(tmp_path):
    cache = WarmCache(tmp_path)
    old = WarmEntry("k1", "s1:default", "/r", "c1", "t", None, 1.0, 1, 1)
    new = WarmEntry("k2", "s2:default", "/r", "c2", "t", None, 2.0, 1, 1)
    other = WarmEntry("k3", "s3:default", "/r", "c2", "t", "npm ci", 3.0, 1, 1)
    for e in (old, new, other):
        cache.put(e, {"a": ("100644", "1")})
    assert cache.find(Path("/r"), "t", None) == new
    assert cache.find(Path("/r"), "t", "npm ci") == other
    assert cache.find(Path("/r"), "other-template", None) is None
    assert cache.manifest("k1") == {"a": ("100644", "1")}
    cache.forget("k2")
    assert cache.find(Path("/r"), "t", None) == old
