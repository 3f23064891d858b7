"""Named points where a test can hold a real process, to kill it at an exact moment.

``SANDBOXRUN_TEST_HOLD=POINT:GATE`` makes the process that reaches ``POINT`` create
``GATE.reached`` and wait there until ``GATE`` exists. A test polls for ``GATE.reached``, then
does what it needs at that moment (SIGKILL the run at each phase of its start) instead of
racing a sleep. Unset (always, outside tests), :func:`hold` is one environment lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "SANDBOXRUN_TEST_HOLD"


def hold(point: str) -> None:
    """Wait at ``point`` if ``SANDBOXRUN_TEST_HOLD`` names it (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, gate = spec.partition(":")
    if name != point or not gate:
        return
    gate_path = Path(gate)
    # written whole, then renamed: a test that sees ``.reached`` always reads the pid in it
    tmp = Path(f"{gate}.reached.{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, f"{gate}.reached")
    while not gate_path.exists():
        time.sleep(0.02)
