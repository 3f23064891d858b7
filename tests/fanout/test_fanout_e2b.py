"""Fan-out on E2B: ten tasks through the real SDK against the loopback emulator, which answers
429 to some sandbox creations; the scheduler's creation rate holds and every task completes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from sbr_testlib import FAKE_CLAUDE, branch_files

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.slow

_MISSING = [p for p in ("unshare", "nsenter", "setpriv") if shutil.which(p) is None]


@pytest.fixture
def e2b(monkeypatch):
    # As tests/e2b: it runs as root or not (user namespaces); on Linux it must, so a machine
    # that cannot start it fails here instead of passing without the test.
    if not sys.platform.startswith("linux"):
        pytest.skip("the E2B emulator needs Linux namespaces")
    if _MISSING:
        pytest.fail(f"the E2B emulator needs {', '.join(_MISSING)} (util-linux)", pytrace=False)
    from tests.e2b_emulator import E2BEmulator

    with E2BEmulator() as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("E2B_DEBUG", raising=False)
        monkeypatch.delenv("E2B_DOMAIN", raising=False)
        emu.set_claude(FAKE_CLAUDE)
        monkeypatch.setenv("SANDBOXRUN_CLAUDE_BIN", "claude")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-fanout-test-value")
        yield emu
        emu.reset()


def test_ten_tasks_with_the_creation_rate_and_429s(cli, repo, e2b):
    path = repo.parent / "ten.toml"
    path.write_text(
        "".join(
            f'[[task]]\nname = "t{i}"\nprompt = "@write f{i}.txt {i}\\n@commit t{i}"\n'
            for i in range(10)
        )
    )
    e2b.fail_control_plane(3, status=429, retry_after=1)
    proc = cli(
        "fanout",
        str(path),
        "--backend",
        "e2b",
        "--max-parallel",
        "10",
        "--start-rate",
        "4",
        "--json",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rep = json.loads(proc.stdout)
    assert rep["status"] == "completed"
    assert e2b.stats["injected_429"] == 3
    for i in range(10):
        assert f"f{i}.txt" in branch_files(repo, f"sandboxrun/ten-t{i}")
    # the scheduler never started two tasks closer together than 1 / --start-rate
    created = sorted(s["created_at"] for s in cli.json("status") if s["name"].startswith("ten-"))
    assert len(created) == 10
    assert min(b - a for a, b in zip(created, created[1:], strict=False)) >= 0.25
    # sandbox time is priced at E2B's rate by default
    assert all(r["cost_usd"] > (r["agent_cost_usd"] or 0) for r in rep["tasks"])
