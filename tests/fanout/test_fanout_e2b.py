"""Fan-out on E2B through the real SDK against the loopback emulator: the creation rate is
kept around every ``Sandbox.create`` (the emulator's own clock says so), 429s are retried with
backoff, and every task completes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sbr_testlib import branch_files

pytestmark = pytest.mark.slow


def _tasks(repo: Path, name: str, n: int) -> Path:
    path = repo.parent / f"{name}.toml"
    path.write_text(
        "".join(
            f'[[task]]\nname = "t{i}"\nprompt = "@write f{i}.txt {i}\\n@commit t{i}"\n'
            for i in range(n)
        )
    )
    return path


def test_ten_tasks_with_the_creation_rate_and_429s(cli, repo, e2b):
    path = _tasks(repo, "ten", 10)
    e2b.fail_control_plane(3, status=429, retry_after=1)
    proc = cli(
        "fanout", str(path), "--backend", "e2b", "--max-parallel", "10", "--start-rate", "2",
        "--warm", "off", "--json", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rep = json.loads(proc.stdout)
    assert rep["status"] == "completed"
    assert e2b.stats["injected_429"] == 3
    for i in range(10):
        assert f"f{i}.txt" in branch_files(repo, f"sandboxrun/ten-t{i}")
    # E2B's own clock: the ten creations arrived at 2/s on average, and never three within
    # half a second (one request may arrive a little late and bunch up with the next; the
    # drivers all wanted to create at once)
    created = e2b.create_times
    assert len(created) == 10
    assert created[-1] - created[0] >= 0.9 * 9 / 2
    assert all(c - a >= 0.5 for a, c in zip(created, created[2:], strict=False))
    # sandbox time is priced at E2B's rate by default
    assert all(r["cost_usd"] > (r["agent_cost_usd"] or 0) for r in rep["tasks"])


def test_creations_beyond_the_plan_limit_are_backed_off_and_all_complete(cli, repo, e2b):
    """Asked for more than E2B allows (20/s against its 0.25/s), the drivers get 429s, back off
    and retry until every sandbox is made.

    Each creation is made inside its limiter turn, so the next one arrives only when the
    previous create has answered: E2B's window (4 s) must be longer than a create takes on a
    loaded machine, or nothing is ever refused (a 0.5 s window was not, under load, and a 2 s
    one was borderline)."""
    e2b.create_rate_limit = 0.25
    path = _tasks(repo, "fast", 5)
    proc = cli(
        "fanout", str(path), "--backend", "e2b", "--max-parallel", "5", "--start-rate", "20",
        "--warm", "off", "--json", timeout=600,
        env={"SANDBOXRUN_E2B_RETRY_DELAYS": "0.3,0.6,1,2,2,2,2,2,2,2,2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert json.loads(proc.stdout)["status"] == "completed"
    assert e2b.refused_create_times, (
        "the drivers never went faster than E2B's limit",
        e2b.create_times,
    )
    assert len(e2b.create_times) == 5
