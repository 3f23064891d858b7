"""Fixtures for the fan-out tests: the shared sandboxrun home, repo and CLI helpers."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/fanout has no __init__.py: put tests/ on sys.path for the shared `sbr_testlib`.
_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from sbr_testlib import cli, isolated_env, repo  # noqa: E402, F401
