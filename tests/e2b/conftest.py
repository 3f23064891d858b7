"""Fixtures for the E2B tests: a loopback E2B emulator and the SDK pointed at it.

The emulator runs as root or as an ordinary user (each sandbox then gets its own user
namespace). On Linux it must start: when it cannot (util-linux missing, unprivileged user
namespaces switched off), every test here fails with the reason and the fix, instead of
skipping and letting the suite pass without them. Only on a system that has no Linux
namespaces at all are they skipped.
"""

from __future__ import annotations

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

_TOOLS = ("unshare", "nsenter", "setpriv")
_USERNS_HINT = (
    "Unprivileged user namespaces look disabled on this machine; enable them "
    "(`sysctl kernel.unprivileged_userns_clone=1`, or on Ubuntu 24.04+ "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`) or run the tests as root."
)


@pytest.fixture(scope="session")
def emulator_session():
    """One emulator for the whole session (starting one costs ~0.1 s, sandboxes are cheap).

    Fails (never skips) on Linux when it cannot start a sandbox.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("the E2B emulator needs Linux namespaces")
    missing = [p for p in _TOOLS if shutil.which(p) is None]
    if missing:
        pytest.fail(f"the E2B emulator needs {', '.join(missing)} (util-linux)", pytrace=False)
    emu = E2BEmulator()
    try:
        emu.start()
        emu.check()
    except Exception as exc:
        emu.stop()
        hint = f" {_USERNS_HINT}" if emu.userns else ""
        pytest.fail(f"the E2B emulator cannot start a sandbox here: {exc}.{hint}", pytrace=False)
    try:
        yield emu
    finally:
        emu.stop()


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
