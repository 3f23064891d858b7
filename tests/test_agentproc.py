"""The detached-launch contract (Launch + DETACH_WRAPPER) and AgentProcess, on the local backend.

Real processes in a real local sandbox directory; every process started here is stopped or
has exited before the test ends.
"""

from __future__ import annotations

import time

import pytest

from sandboxrun.config import Settings
from sandboxrun.sandbox.agentproc import AgentFiles, AgentProcess
from sandboxrun.sandbox.backends.local import LocalBackend


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def sandbox(tmp_path):
    sb = LocalBackend(Settings(home=tmp_path)).create("s1", timeout_s=60, env={}, metadata={})
    yield sb
    sb.destroy()


def _log(agent: AgentProcess) -> bytes:
    try:
        return agent.sandbox.read_file(agent.files.log)
    except FileNotFoundError:
        return b""  # the wrapper has not opened it yet


def _start(sandbox, script: str) -> AgentProcess:
    files = AgentFiles.of(sandbox)
    sandbox.write_file(files.prompt, b"the prompt\n")
    launch = files.launch(["sh", "-c", script], cwd=sandbox.home, env={"SBR_TEST": "yes"})
    return AgentProcess(sandbox, sandbox.start_detached(launch))


def test_a_launched_program_records_its_output_and_exit_code(sandbox):
    agent = _start(sandbox, 'cat; echo "env=$SBR_TEST"; echo oops >&2; exit 3')
    _wait_for(agent.exited)
    files = agent.files
    assert sandbox.read_file(files.log) == b"the prompt\nenv=yes\n"
    assert sandbox.read_file(files.stderr) == b"oops\n"
    assert agent.exit_code() == 3
    assert sandbox.read_file(files.pid).strip() == str(agent.pgid).encode()


def test_stop_interrupts_a_running_program_and_it_may_clean_up(sandbox):
    agent = _start(sandbox, "trap 'echo bye; exit 130' INT; echo up; while :; do sleep 0.05; done")
    _wait_for(lambda: _log(agent) == b"up\n")
    assert not agent.exited() and agent.exit_code() is None
    agent.stop()
    assert agent.exited()
    assert agent.exit_code() == 130
    assert sandbox.read_file(agent.files.log) == b"up\nbye\n"
