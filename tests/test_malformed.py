"""Malformed agent output never breaks a run or a command afterwards.

The stand-in agent (tests/fake_claude.py, ``@garbage KIND``) emits each kind of garbage; the
parser must turn every line into bounded, well-typed events, and a real run through the CLI
must still collect the work, with ``status``/``logs`` working afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sbr_testlib import FAKE_CLAUDE, branch_files, git

from sandboxrun.agent import (
    STORED_LINE_LIMIT,
    TEXT_LIMIT,
    AgentProgress,
    as_epoch,
    as_int,
    as_number,
    parse_line,
    stored_line,
)

KINDS = ["numbers", "coststr", "resets", "huge 3", "utf8", "nonjson", "deep", "shapes"]


def fake_output(directives: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(FAKE_CLAUDE)], input=directives.encode(), capture_output=True
    ).stdout
    return [raw.decode("utf-8", errors="replace") for raw in out.split(b"\n")]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_garbage_parses_into_bounded_typed_events(kind: str) -> None:
    progress = AgentProgress()
    for line in fake_output(f"@garbage {kind}\n"):
        for event in parse_line(line):
            progress.feed(event)
            assert isinstance(event.summary, str) and len(event.summary) < 1000
            # what goes into the database is small and JSON-serializable
            assert len(json.dumps(event.to_dict())) < TEXT_LIMIT * 3
            d = event.data
            for key in ("num_turns", "duration_ms", "tools", "chars"):
                assert d.get(key) is None or type(d[key]) is int
            for key in ("total_cost_usd", "resets_at"):
                assert d.get(key) is None or type(d[key]) is float
        assert len(json.dumps(stored_line(line))) < STORED_LINE_LIMIT * 2
    assert progress.cost_usd is None or 0 <= progress.cost_usd <= 1e6
    assert progress.rate_limited_until is None or progress.rate_limited_until < 4e9
    assert isinstance(progress.turns, int)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), ("0.25", 0.25), ("$1.5", 1.5), ([1], None), ({"a": 1}, None), (True, None),
     (float("nan"), None), (float("inf"), None), (10**400, None), ("x" * 100, None), (-4, 0.0)],
)  # fmt: skip
def test_numbers_are_validated_and_clamped(value, expected) -> None:
    assert as_number(value) == expected


def test_counts_and_reset_times() -> None:
    assert as_int("7") == 7 and as_int([7]) is None and as_int(1e30) == 10**12
    assert as_epoch(1_700_000_000) == 1_700_000_000.0
    assert as_epoch(1_700_000_000_000) == 1_700_000_000.0  # milliseconds
    assert as_epoch(1e20) is None and as_epoch(-5) is None and as_epoch("soon") is None


# --------------------------------------------------------------------------- through the CLI


def _run(cli, repo: Path, name: str, plan: str) -> subprocess.CompletedProcess:
    (repo / "PLAN.md").write_text(plan)
    git(repo, "add", "PLAN.md")
    git(repo, "commit", "-q", "-m", f"plan {name}")
    return cli("run", "--backend", "local", "--prompt-file", "PLAN.md", "--name", name, timeout=300)


def _commands_still_work(cli, name: str) -> dict:
    for args in (
        ["status"],
        ["status", name],
        ["logs", name],
        ["logs", name, "--raw"],
        ["logs", name, "--json"],
    ):
        proc = cli(*args)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    return cli.status(name)


@pytest.mark.slow
def test_a_run_full_of_garbage_still_collects_its_work(cli, repo) -> None:
    """Every kind at once, ending on a result whose numbers are lists, objects and strings."""
    plan = "".join(f"@garbage {k}\n" for k in KINDS if k not in ("numbers", "coststr"))
    plan = "@write work.txt collected despite garbage\n" + plan + "@garbage numbers\n"
    proc = _run(cli, repo, "garbage", plan)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "work.txt" in branch_files(repo, "sandboxrun/garbage")
    st = _commands_still_work(cli, "garbage")
    assert st["status"] == "completed"
    assert st["cost_usd"] is None and st["num_turns"] is None  # nonsense is not recorded
    # the 3 MiB line is in the agent.log artifact whole, but not in the database
    home = Path(os.environ["SANDBOXRUN_HOME"])
    assert (home / "artifacts" / st["id"] / "agent.log").stat().st_size > 3 * 1024 * 1024
    db = sum(p.stat().st_size for p in home.glob("state.db*"))
    assert db < 2 * 1024 * 1024, db


@pytest.mark.slow
def test_costs_as_strings_are_read_as_numbers(cli, repo) -> None:
    proc = _run(cli, repo, "coststr", "@write a.txt a\n@garbage coststr\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = _commands_still_work(cli, "coststr")
    assert st["cost_usd"] == 0.25 and st["num_turns"] == 3 and st["duration_ms"] == 1200


@pytest.mark.slow
def test_a_50_mib_line_does_not_grow_the_database(cli, repo) -> None:
    proc = _run(cli, repo, "huge", "@write a.txt a\n@garbage huge 50\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = _commands_still_work(cli, "huge")
    assert st["status"] == "completed"
    home = Path(os.environ["SANDBOXRUN_HOME"])
    db = sum(p.stat().st_size for p in home.glob("state.db*"))
    assert db < 2 * 1024 * 1024, db
    raw = cli("logs", "huge", "--raw").stdout
    assert len(raw) < 1024 * 1024
