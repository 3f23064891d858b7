"""`sandboxrun mcp` as a person types it: an HTTP-only option without --http is refused
(it silently served stdio), and started by hand in a terminal it says what it is waiting for
instead of showing a silent screen. Real processes, a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

import pytest
from sbr_testlib import CLI, edge_error


@pytest.mark.parametrize("args", [["--port", "9000"], ["--host", "0.0.0.0"]])
def test_an_http_option_without_http_is_refused(cli: CLI, args):
    proc = cli("mcp", *args)
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert args[0] in message and "HTTP" in message
    assert hint and "sandboxrun mcp --http" in hint


def test_stdio_started_in_a_terminal_says_it_waits_for_a_client(cli: CLI):
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandboxrun", "mcp"],
        cwd=cli.cwd, env=cli.env(), stdin=follower, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(follower)
    try:
        os.set_blocking(proc.stderr.fileno(), False)
        seen = b""
        deadline = time.monotonic() + 60
        while b"waiting for an MCP client" not in seen and time.monotonic() < deadline:
            assert proc.poll() is None, seen.decode()
            chunk = proc.stderr.read() or b""
            seen += chunk
            time.sleep(0.05)
        assert b"waiting for an MCP client" in seen
        assert b"sandboxrun mcp install" in seen
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        os.close(leader)


def test_stdio_from_a_pipe_prints_no_note(cli: CLI):
    """Claude Code starts it on pipes: nothing extra on stderr but the server's own log."""
    proc = subprocess.run(
        [sys.executable, "-m", "sandboxrun", "mcp"], cwd=cli.cwd, env=cli.env(),
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0
    assert b"waiting for an MCP client" not in proc.stderr


def test_merges_watch_once_says_when_there_is_nothing(cli: CLI):
    """A one-shot check that finds nothing says so (it printed nothing at all); --json stays
    one line per merge, so none."""
    proc = cli("merges", "watch", "--once")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no new merges"
    proc = cli("merges", "watch", "--once", "--json")
    assert proc.returncode == 0 and proc.stdout == ""
