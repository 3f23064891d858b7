"""Ctrl-C ends every long-running command with exit 130, SIGINT's convention, not 1 or 0:
`fanout` in the foreground (its started tasks keep running, the hint says how to resume),
`mcp --http`, `serve` (uvicorn swallowed the interrupt after its graceful shutdown) and
`monitor`. Real processes, real git and SQLite, the fake claude on the local backend."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest
from sbr_testlib import edge_error, retry_until

from sandboxrun.local import monitor_pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _interrupt(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, (proc.returncode, err)
    return out, err


@pytest.mark.parametrize("command", [["mcp", "--http"], ["serve"]])
def test_http_servers_exit_130_on_ctrl_c(cli, command):
    port = _free_port()
    proc = cli.popen(*command, "--port", str(port))
    retry_until(lambda: _healthy(port) or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.communicate()
    _interrupt(proc)


def test_monitor_exits_130_on_ctrl_c(cli):
    proc = cli.popen("monitor")
    home = Path(cli.env()["SANDBOXRUN_HOME"])
    ok = retry_until(
        lambda: monitor_pid.status(home, None).running or proc.poll() is not None,
        timeout=60,
    )
    assert ok and proc.poll() is None, proc.communicate()
    _interrupt(proc)


@pytest.mark.slow
def test_fanout_exits_130_on_ctrl_c_and_says_how_to_resume(cli, tmp_path: Path):
    tasks = tmp_path / "t.toml"
    tasks.write_text('[[task]]\nname = "slow"\nprompt = "@write s.txt s\\n@sleep 120"\n')
    proc = cli.popen("fanout", str(tasks), "--backend", "local", "--name", "grp")
    try:
        cli.wait_status("grp-slow", lambda s: s["status"] == "running", timeout=90)
        _, err = _interrupt(proc)
        message, hint = edge_error(err)
        assert "interrupted" in message and "sandboxrun attach grp" in (hint or "")
    finally:
        cli("kill", "grp")
