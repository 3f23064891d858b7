"""The tmux wrapper on a real, private tmux server."""

from __future__ import annotations

import sys

from sbr_testlib import retry_until


def test_session_runs_argv_as_the_panes_own_process(tmux_server, tmp_path):
    info = tmux_server.new_session(
        "t_child_a",
        [sys.executable, "-c", "import os,time; print('pid', os.getpid()); time.sleep(60)"],
        cwd=tmp_path,
    )
    assert tmux_server.has_session("t_child_a")
    assert not tmux_server.has_session("t_child")  # exact names, no prefix matching
    # the pane's own pid printed by the program: no shell in between (polled: under load tmux
    # may show the line half drawn)
    retry_until(lambda: f"pid {info.pid}\n" in tmux_server.capture("t_child_a"))
    assert tmux_server.sessions("t_child_") == ["t_child_a"]
    assert tmux_server.kill_session("t_child_a")
    assert tmux_server.pane("t_child_a") is None
    assert not tmux_server.kill_session("t_child_a")


def test_env_is_given_and_tmux_variables_are_not(tmux_server, tmp_path):
    out = tmp_path / "env.txt"
    code = (
        f"import os; open({str(out)!r}, 'w').write("
        "repr((os.environ.get('SBR_X'), os.environ.get('TMUX_PANE'))))"
    )
    tmux_server.new_session(
        "envtest",
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"SBR_X": "ünïcode value", "TMUX_PANE": "%99"},
    )
    retry_until(out.exists)
    sbr_x, pane_var = eval(retry_until(lambda: out.read_text()))  # noqa: S307 - our own repr
    assert sbr_x == "ünïcode value"
    assert pane_var != "%99"  # tmux sets the child's own TMUX_PANE; the caller's is not passed
    # remain-on-exit: the ended pane is still there to read, marked dead with its status
    # (its exit status too, when tmux caught it: not for a program that ends at once)
    info = retry_until(lambda: (p := tmux_server.pane("envtest")) and p.dead and p)
    assert info.dead_status in (0, None)
    assert tmux_server.session_env("envtest", "SBR_X") == "ünïcode value"
    assert tmux_server.session_env("envtest", "NOPE") is None


def test_paste_is_bracketed_and_exact(tmux_server, tmp_path):
    """8 KB, non-ASCII, a leading '/' and newlines arrive byte for byte; Enter is separate."""
    out = tmp_path / "got.bin"
    # A raw-mode reader that records everything up to a lone CR (the Enter key).
    reader = (
        "import sys, tty\n"
        "fd = sys.stdin.fileno(); tty.setraw(fd)\n"
        "sys.stdout.write('\\x1b[?2004hREADY'); sys.stdout.flush()\n"
        "data = b''\n"
        "while not data.endswith(b'\\r'):\n"
        "    data += sys.stdin.buffer.raw.read(1)\n"
        f"open({str(out)!r}, 'wb').write(data)\n"
    )
    tmux_server.new_session("paste", [sys.executable, "-c", reader], cwd=tmp_path)
    retry_until(lambda: "READY" in tmux_server.capture("paste"))
    text = "/review @src/app.py\nzweite Zeile — ✓ 日本語\n" + ("x" * 80 + "\n") * 100
    assert len(text.encode()) > 8000
    tmux_server.paste("paste", text)
    tmux_server.send_keys("paste", "Enter")
    data = retry_until(lambda: out.exists() and out.read_bytes())
    # one bracketed paste (the program asked for it), then Enter as its own key
    assert data == b"\x1b[200~" + text.encode() + b"\x1b[201~\r"
    assert tmux_server.cmd("list-buffers") == []  # the named buffer was deleted by the paste


def test_snapshot_is_pane_and_capture_in_one_call(tmux_server, tmp_path):
    code = "print('first line;'); print('x ; y'); import time; time.sleep(60)"
    tmux_server.new_session("t_snap", [sys.executable, "-c", code], cwd=tmp_path)
    retry_until(lambda: "x ; y" in tmux_server.capture("t_snap"))
    info, text = tmux_server.snapshot("t_snap")
    assert info == tmux_server.pane("t_snap")
    assert text == tmux_server.capture("t_snap")
    assert text.startswith("first line;\nx ; y\n")
    assert tmux_server.snapshot("t_snap_other") == (None, "")
    tmux_server.kill_server()
    assert tmux_server.snapshot("t_snap") == (None, "")
