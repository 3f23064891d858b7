"""Fixtures for the E2B tests: a loopback E2B emulator and the SDK pointed at it.

The emulator needs root and util-linux (unshare, nsenter, setpriv); without them these tests
are skipped rather than failed, since they say nothing about our code then.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# tests/e2b has no __init__.py (a package named `e2b` would shadow the SDK), so pytest puts
# this directory on sys.path, not the repository root (for `tests.e2b_emulator`) nor tests/
# (for the shared `sbr_testlib` helpers): add both.
ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.e2b_emulator import E2BEmulator  # noqa: E402

_MISSING = [p for p in ("unshare", "nsenter", "setpriv") if shutil.which(p) is None]
requires_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or bool(_MISSING),
    reason=f"the E2B emulator needs root and util-linux ({', '.join(_MISSING) or 'root'})",
)


@pytest.fixture(scope="session")
def emulator_session():
    """One emulator for the whole session (starting one costs ~0.1 s, sandboxes are cheap)."""
    if os.geteuid() != 0 or _MISSING:
        pytest.skip("the E2B emulator needs root and util-linux (unshare, nsenter, setpriv)")
    with E2BEmulator() as emu:
        yield emu


@pytest.fixture
def emulator(emulator_session, monkeypatch):
    """The session's emulator, reset, with this test's environment pointing the SDK at it."""
    emu = emulator_session
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_DOMAIN", raising=False)
    emu.reset()
    yield emu
    emu.reset()  # each test leaves no sandbox (and no process) behind for the next one
