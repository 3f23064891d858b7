"""Bad input to the other sandbox-mode commands (extend, warm, template build, worktree list)
as a new user types it: each error names the argument and a next step that works for that
command; tables line up. Real processes, real repositories."""

from __future__ import annotations

import pytest
from sbr_testlib import edge_error

from sandboxrun.cli.worktree_cmd import aligned


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("abc", "invalid DURATION 'abc'"),
        ("0", "invalid DURATION '0' (duration '0' is zero)"),
        ("99999h", "invalid DURATION '99999h' (duration '99999h' is too long)"),
        ("5 parsecs", "invalid DURATION '5 parsecs'"),
    ],
)
def test_extend_names_its_bad_duration_before_looking_for_the_session(cli, duration, message):
    proc = cli("extend", "nosuch", duration)
    assert proc.returncode == 2
    got, hint = edge_error(proc.stderr)
    assert got == message and hint and "90s" in hint


@pytest.mark.parametrize(
    ("args", "names", "not_named"),
    [
        (["warm"], "runs start cold without a warm snapshot", "run on this machine with"),
        (["warm", "--setup", "npm ci"], "runs start cold", "run on this machine with"),
        (["template", "build"], "`sandboxrun run --backend local`", "or run on this machine"),
    ],
)
def test_e2b_only_commands_without_a_key_name_what_works_for_them(cli, args, names, not_named):
    """The run's hint ("run with `--backend local`") named a flag warm does not have."""
    proc = cli(*args)
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert message == "E2B_API_KEY is not set, so no E2B sandbox can be created"
    assert hint and names in hint and not_named not in hint
    assert "export E2B_API_KEY" in hint


def test_aligned_columns_are_as_wide_as_their_widest_cell():
    lines = aligned([["ROLE", "BRANCH"], ["be", "agent/be/active"], ["frontend-2", "x"]])
    assert lines == ["ROLE        BRANCH", "be          agent/be/active", "frontend-2  x"]


def test_worktree_list_lines_up_with_short_and_long_roles(cli):
    for role in ("be", "a-very-long-role-name"):
        assert cli("worktree", "setup", role).returncode == 0
    out = cli("worktree", "list").stdout.splitlines()
    starts = [line.index("agent/") for line in out[1:]]
    assert out[0].index("BRANCH") == starts[0] == starts[1], out
