"""Warm starts through the real e2b SDK against the loopback emulator (which snapshots a
sandbox by copying its home): `sandboxrun warm`, then fan-out tasks that upload only what
changed and start from exactly what a full upload gives; a deleted, stale or tampered snapshot
falls back to a full upload, said once per run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sbr_testlib import git

pytestmark = pytest.mark.slow

#: the stand-in agent records what it found in the sandbox, then commits it
LOOK = (
    "@bash find . -type f -not -path './.git/*' -not -name seen.txt | sort > seen.txt"
    "; cat src/app.py >> seen.txt\\n@commit look"
)


def _tasks(repo: Path, name: str, n: int) -> Path:
    path = repo.parent / f"{name}.toml"
    path.write_text("".join(f'[[task]]\nname = "t{i}"\nprompt = "{LOOK}"\n' for i in range(n)))
    return path


def _seen(repo: Path, branch: str) -> list[str]:
    return git(repo, "show", f"{branch}:seen.txt").splitlines()


def _events(cli, name: str, kind: str) -> list[dict]:
    out = cli("logs", name, "--json")
    assert out.returncode == 0, out.stderr
    evs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [e for e in evs if e.get("kind") == kind]


def _warm(cli) -> dict:
    proc = cli("warm", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def _change(repo: Path) -> None:
    """Move the repository on after the snapshot: one file changed, one deleted, one added."""
    (repo / "src" / "app.py").write_text("print('changed since the snapshot')\n")
    git(repo, "rm", "-q", "src/old.py")
    (repo / "src" / "new.py").write_text("NEW = 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "move on")


def _fanout(cli, path: Path, *extra: str) -> dict:
    proc = cli(
        "fanout", str(path), "--backend", "e2b", "--max-parallel", "2", "--start-rate", "20",
        *extra, "--json", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def test_warm_then_tasks_upload_only_the_delta_and_match_a_cold_start(cli, repo, e2b):
    lib = repo / "lib"
    lib.mkdir()
    for i in range(200):  # something worth not uploading twice
        (lib / f"m{i}.py").write_text(os.urandom(1500).hex())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "lib")
    entry = _warm(cli)
    assert entry["snapshot_id"] in e2b.snapshots
    assert entry["commit"] == git(repo, "rev-parse", "HEAD").strip()
    _change(repo)
    e2b.stats["bytes_uploaded"] = 0  # the snapshot's one upload is behind us
    rep = _fanout(cli, _tasks(repo, "w", 2), "--warm", "on")
    assert rep["status"] == "completed"
    for i in range(2):
        warm = _events(cli, f"w-t{i}", "warm")
        assert len(warm) == 1, _events(cli, f"w-t{i}", "warning")
        assert warm[0]["payload"]["changed"] == 2  # app.py, new.py
        assert warm[0]["payload"]["deleted"] == 1  # old.py
        assert not _events(cli, f"w-t{i}", "warning")
        # what the agent found is what a cold start gives: the moved-on files, no secret
        seen = _seen(repo, f"sandboxrun/w-t{i}")
        assert "./src/new.py" in seen and "./src/old.py" not in seen
        assert "./deploy/server.pem" not in seen
        assert seen[-1] == "print('changed since the snapshot')"

    # the same two tasks cold, for the files they see and the bytes they upload
    sent_warm = e2b.stats["bytes_uploaded"]
    e2b.stats["bytes_uploaded"] = 0
    rep = _fanout(cli, _tasks(repo, "c", 2), "--warm", "off")
    assert rep["status"] == "completed"
    for i in range(2):
        assert _seen(repo, f"sandboxrun/c-t{i}") == _seen(repo, f"sandboxrun/w-t{i}")
    assert sent_warm * 20 < e2b.stats["bytes_uploaded"]

    # snapshots hold the files on E2B until deleted: `warm --delete` removes them there too
    proc = cli("warm", "--delete", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["deleted"] == [entry["snapshot_id"]]
    assert e2b.snapshots == {}
    assert json.loads(cli("warm", "--list", "--json").stdout) == []


def test_a_deleted_snapshot_falls_back_to_a_full_upload_said_once(cli, repo, e2b):
    entry = _warm(cli)
    e2b.drop_snapshot(entry["snapshot_id"])  # expired, or deleted on E2B's side
    rep = _fanout(cli, _tasks(repo, "gone", 1), "--warm", "on")
    assert rep["status"] == "completed"
    warnings = [e["payload"]["message"] for e in _events(cli, "gone-t0", "warning")]
    assert len(warnings) == 1 and "no longer exists" in warnings[0], warnings
    assert "full upload" in warnings[0]
    assert not _events(cli, "gone-t0", "warm")
    assert "./src/app.py" in _seen(repo, "sandboxrun/gone-t0")
    listed = cli("warm", "--list", "--json")
    assert json.loads(listed.stdout) == []  # the dead entry is forgotten


def test_a_snapshot_that_differs_from_a_full_upload_is_not_used(cli, repo, e2b):
    """The check after a warm start can fail: a snapshot whose files were altered (here on
    the emulator's side) is refused, and the run starts cold with the right files."""
    entry = _warm(cli)
    home = e2b.snapshots[entry["snapshot_id"]]
    (home / "repo" / "README.md").write_text("# tampered\n")
    rep = _fanout(cli, _tasks(repo, "bad", 1), "--warm", "on")
    assert rep["status"] == "completed"
    warnings = [e["payload"]["message"] for e in _events(cli, "bad-t0", "warning")]
    assert len(warnings) == 1 and "does not match a full upload" in warnings[0], warnings
    assert not _events(cli, "bad-t0", "warm")
    assert git(repo, "show", "sandboxrun/bad-t0:README.md") == "# project\n"


def test_a_stale_snapshot_falls_back_to_a_full_upload(cli, repo, e2b):
    """A task whose base is far from the snapshot (here its own `base`) starts cold."""
    _warm(cli)
    git(repo, "checkout", "-q", "-b", "big")
    (repo / "big.bin").write_bytes(b"x" * 1_500_000)  # most of the bytes are new
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    git(repo, "checkout", "-q", "main")
    path = repo.parent / "stale.toml"
    path.write_text(f'[[task]]\nname = "t0"\nbase = "big"\nprompt = "{LOOK}"\n')
    rep = _fanout(cli, path, "--warm", "auto")
    assert rep["status"] == "completed"
    warnings = [e["payload"]["message"] for e in _events(cli, "stale-t0", "warning")]
    assert len(warnings) == 1 and "stale" in warnings[0], warnings
    assert "./big.bin" in _seen(repo, "sandboxrun/stale-t0")


def test_fanout_makes_a_new_snapshot_when_the_repository_moved_far(cli, repo, e2b):
    old = _warm(cli)
    (repo / "big.bin").write_bytes(b"x" * 1_500_000)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    proc = cli(
        "fanout", str(_tasks(repo, "moved", 1)), "--backend", "e2b", "--warm", "auto", "--json",
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "stale" in proc.stderr and "making a new one" in proc.stderr
    assert len(_events(cli, "moved-t0", "warm")) == 1  # started from the new one
    listed = json.loads(cli("warm", "--list", "--json").stdout)
    assert [e["commit"] for e in listed] == [git(repo, "rev-parse", "HEAD").strip()]
    assert old["snapshot_id"] not in e2b.snapshots  # the old one was deleted


def test_a_setup_command_runs_once_and_its_files_are_in_every_task(cli, repo, e2b):
    setup = "mkdir -p build && echo built > build/out.txt && echo made > made.txt"
    proc = cli("warm", "--setup", setup, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert json.loads(proc.stdout)["setup"] == setup
    rep = _fanout(cli, _tasks(repo, "set", 1), "--warm", "on", "--setup", setup)
    assert rep["status"] == "completed"
    assert len(_events(cli, "set-t0", "warm")) == 1, _events(cli, "set-t0", "warning")
    seen = _seen(repo, "sandboxrun/set-t0")
    # build/ is ignored (.gitignore), made.txt is not: both were there for the agent, and
    # neither is part of the task's branch (the setup's output is in the baseline)
    assert "./build/out.txt" in seen and "./made.txt" in seen
    assert "made.txt" not in git(repo, "ls-tree", "-r", "--name-only", "sandboxrun/set-t0")
