"""`send` on a loaded machine: the child's UserPromptSubmit hook comes after the last Enter."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from sbr_testlib import hook_argv, retry_until

from sandboxrun.config import load_settings
from sandboxrun.local import send as send_mod
from sandboxrun.store import SessionStore, Status

# A child standing in for Claude Code: it takes the pasted line, lets every Enter of `send`
# go by (empty lines), then, slower than the Enter presses' windows, runs the real hook.
CHILD = r"""
import json, subprocess, sys, time
hook, home, enters = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompt = sys.stdin.readline().rstrip("\n")
for _ in range(enters - 1):
    sys.stdin.readline()
time.sleep(5)  # the slow part: longer than send's wait after its last Enter used to be
payload = {"session_id": "c-late", "transcript_path": "/t/x.jsonl", "cwd": home,
           "hook_event_name": "UserPromptSubmit", "prompt": prompt}
subprocess.run([hook, "UserPromptSubmit"], input=json.dumps(payload).encode(), check=True)
print("hook ran", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_hook_later_than_every_enter_is_still_delivered(tmux_server, tmp_path):
    settings = load_settings(None)
    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    row = store.create_session(
        name="late", mode="local", backend="tmux", status=Status.RUNNING,
        tmux_session="t_child_late", started_at=time.time(),
    )  # fmt: skip
    store.update(row.id, activity="idle", activity_at=time.time())
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    retries = 3
    tmux_server.new_session(
        "t_child_late",
        [sys.executable, str(script), *hook_argv(), str(tmp_path), str(1 + retries)],
        cwd=tmp_path,
        env={"SANDBOXRUN_SESSION": row.id, "SANDBOXRUN_HOME": str(settings.home)},
    )
    result = send_mod.send(
        store, tmux_server, store.get(row.id), "hello, later", home=settings.home,
        confirm_after=0.5, enter_retries=retries,
    )  # fmt: skip
    assert (result.outcome, result.enters) == ("delivered", 1 + retries), result
    retry_until(lambda: "hook ran" in tmux_server.capture("t_child_late"))
    store.close()
