"""Fixtures for the fan-out tests: the shared sandboxrun home, repo and CLI helpers."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# tests/fanout has no __init__.py: put tests/ on sys.path for the shared `sbr_testlib`.
_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from sbr_testlib import FAKE_CLAUDE, cli, isolated_env, repo  # noqa: E402, F401

_ROOT = _TESTS.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

_MISSING = [p for p in ("unshare", "nsenter", "setpriv") if shutil.which(p) is None]


@pytest.fixture
def e2b(monkeypatch):
    if os.geteuid() != 0 or _MISSING:
        pytest.skip("the E2B emulator needs root and util-linux (unshare, nsenter, setpriv)")
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
