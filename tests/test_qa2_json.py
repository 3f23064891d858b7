"""`--json` where a new user reaches for it: `report GROUP --json` (the same as `--format
json`, and an error as a JSON object on stdout with either spelling), `shutdown --json` (what
was closed, what was not and why, as `close --json` says it); every child `shutdown` could not
close gets a Hint, and a closed child's line tells the truth about its worktree. Real git,
SQLite, tmux on its own socket, `sandboxrun` as a process."""

from __future__ import annotations

import json
import sys
import time

import test_qa2_local as _local
from sbr_testlib import CLI, edge_error

from sandboxrun.store import Status

tmux = _local.tmux
proj = _local.proj

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _child(proj, tmux, name: str) -> None:
    tmux.new_session(f"t_child_{name}", SLEEPER, cwd=proj)
    store = _local._store()
    store.create_session(
        name=name, mode="local", backend="tmux", status=Status.RUNNING, repo=str(proj),
        worktree=str(proj), role=name, tmux_session=f"t_child_{name}", started_at=time.time(),
        options={"socket": tmux.socket_path},
    )  # fmt: skip
    store.close()


def test_report_json_and_its_errors_as_json(cli):
    for args in (["--json"], ["--format", "json"], ["--format=json"]):
        proc = cli("report", "nosuch", *args)
        assert proc.returncode == 1, proc.stderr
        data = json.loads(proc.stdout)
        assert "nosuch" in data["error"] and data["hint"] and data["exit_code"] == 1
    proc = cli("report", "nosuch", "--json", "--format", "html")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["exit_code"] == 2
    message, hint = edge_error(proc.stderr)
    assert "two formats" in message and hint


def test_report_json_of_a_real_group(cli, tmp_path):
    tasks = tmp_path / "t.toml"
    tasks.write_text('[[task]]\nname = "a"\nprompt = "@write a.txt hi\\n@commit a"\n')
    assert cli("fanout", str(tasks), "--backend", "local").returncode == 0
    by_flag = json.loads(cli("report", "t", "--json").stdout)
    by_format = json.loads(cli("report", "t", "--format", "json").stdout)
    assert by_flag["tasks"][0]["status"] == "completed"
    assert by_flag["tasks"] == by_format["tasks"]


def test_shutdown_json_and_hints(proj, tmux):
    cli = CLI(proj)
    assert json.loads(cli("shutdown", "--json").stdout) == []
    _child(proj, tmux, "api")
    # a pane that never says it is idle counts as busy: refused without --force, with a hint
    proc = cli("shutdown", "--wait", "1s")
    assert proc.returncode == 1
    assert "api: not closed:" in proc.stderr and "  Hint: " in proc.stderr
    proc = cli("shutdown", "--wait", "1s", "--json")
    assert proc.returncode == 1
    (row,) = json.loads(proc.stdout)
    assert row["name"] == "api" and row["closed"] is False and row["hint"]
    proc = cli("shutdown", "--wait", "1s", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["closed"] is True and row["worktree_removed"] is False
    assert tmux.sessions() == []
