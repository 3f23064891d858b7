"""The tuning variables (``SANDBOXRUN_DB_LOCK_TIMEOUT``, ``SANDBOXRUN_E2B_*``) are checked like
the settings: a bad value fails the commands that read it, naming the variable, the value and
the accepted form, never a silent default; the Claude Code hook logs one line and goes on with
the default. Real processes, real repositories, real SQLite."""

from __future__ import annotations

import json

import pytest
from sbr_testlib import db_rows, edge_error, git, hook_log, run_hook

LOCK = "SANDBOXRUN_DB_LOCK_TIMEOUT"


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan", "1e9"])
def test_a_bad_lock_timeout_fails_commands_that_open_the_database(cli, value):
    assert cli("run", "--backend", "local", "--dry-run", "-p", "x", "--name", "ok").returncode == 0
    proc = cli("status", env={LOCK: value})
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert message == f"invalid value for {LOCK}: {value!r}"
    assert hint and "number of seconds, 0 or more" in hint and f"unset {LOCK}" in hint
    as_json = cli("status", "--json", env={LOCK: value})
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"] == message
    # a command that does not open the database is not affected
    assert cli("--help", env={LOCK: value}).returncode == 0


@pytest.mark.parametrize("value", ["0", "2.5", " "])
def test_a_good_or_blank_lock_timeout_is_used(cli, value):
    assert cli("run", "--backend", "local", "--dry-run", "-p", "x", "--name", "ok").returncode == 0
    proc = cli("status", "--json", env={LOCK: value})
    assert proc.returncode == 0, proc.stderr
    assert [s["name"] for s in json.loads(proc.stdout)] == ["ok"]


@pytest.mark.parametrize("var", [LOCK, "SANDBOXRUN_HOOK_LOCK_TIMEOUT"])
def test_the_hook_logs_a_bad_lock_timeout_and_records_the_event_anyway(cli, var):
    # no state.db yet: the hook creates it (through the store, which reads LOCK)
    payload = {"session_id": "c-1", "cwd": str(cli.cwd), "hook_event_name": "SessionStart"}
    proc = run_hook("SessionStart", payload, env={var: "soon"})
    assert proc.returncode == 0, proc.stderr  # a hook never fails its agent
    lines = [line for line in hook_log().splitlines() if var in line]
    assert len(lines) == 1, hook_log()
    assert f"invalid value for {var}: 'soon'; the default is used" in lines[0]
    assert db_rows("SELECT id FROM sessions WHERE agent_session_id = 'c-1'"), hook_log()


#: every E2B tuning variable a run reads, with bad values and a word of the accepted form
E2B_BAD = [
    ("SANDBOXRUN_E2B_REQUEST_TIMEOUT", "soon", "number of seconds"),
    ("SANDBOXRUN_E2B_STALL_TIMEOUT", "0", "more than 0"),
    ("SANDBOXRUN_E2B_COMMAND_TIMEOUT", "-5", "more than 0"),
    ("SANDBOXRUN_E2B_CREATE_RATE", "fast", "per second more than 0"),
    ("SANDBOXRUN_E2B_CREATE_RATE", "0", "per second more than 0"),
    ("SANDBOXRUN_E2B_RETRY_DELAYS", "1,2,later", "separated by commas"),
    ("SANDBOXRUN_E2B_RETRY_DELAYS", ",", "separated by commas"),
]


@pytest.mark.parametrize(("var", "value", "accepted"), E2B_BAD)
def test_a_bad_e2b_variable_fails_an_e2b_run_naming_it(cli, repo, var, value, accepted):
    branches = git(repo, "branch", "--list")
    bad = {var: value, "E2B_API_KEY": "e2b_test"}
    proc = cli("run", "--backend", "e2b", "--dry-run", "-p", "x", "--name", "e", env=bad)
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert message == f"invalid value for {var}: {value!r}"
    assert hint and accepted in hint and f"unset {var}" in hint
    assert git(repo, "branch", "--list") == branches  # refused before anything was made
    # a run that does not use E2B does not read it
    local = cli("run", "--backend", "local", "--dry-run", "-p", "x", "--name", "l", env=bad)
    assert local.returncode == 0, local.stderr
