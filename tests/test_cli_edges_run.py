"""`sandboxrun run` with options that contradict each other or cannot be met: a usage error
(exit 2) naming the values, before any branch, worktree or session exists. Real processes on
a real repository."""

from __future__ import annotations

import json

import pytest
from sbr_testlib import db_rows, edge_error, git

LOCAL = ["run", "--backend", "local", "--dry-run", "--prompt", "x"]


def nothing_made(cli, repo, branches_before: str) -> None:
    assert git(repo, "branch", "--list") == branches_before
    assert not (repo / ".worktrees").exists() or not any((repo / ".worktrees").iterdir())
    assert json.loads(cli("status", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        # warning marks at or past the limit would never be reached
        (["--timeout", "10m", "--warn-at", "20m"],
         "--warn-at 20m has a mark at or after the time limit (--timeout 10m)", "before the limit"),
        (["--timeout", "10m", "--warn-at", "5m,10m"],
         "--warn-at 5m,10m has a mark at or after the time limit (--timeout 10m)", "--warn-at none"),
        (["--warn-at", "90m"], "--warn-at 90m has a mark at or after the time limit (1h00m without "
         "--timeout)", "before the limit"),
        (["--warn-at", ","], "--warn-at ',' names no warning mark", "30m,50m"),
        (["--warn-at", "0"], "'0' (duration '0' is zero)", "more than zero"),
        (["--warn-at", "5m,later"], "invalid value for 'warn_at' in --warn-at: '5m,later'", "20m"),
        # limits that are zero, negative, unparsable or beyond any clock
        (["--timeout", "0"], "invalid value for 'timeout' in --timeout: '0'", "more than zero"),
        (["--timeout", "-5m"], "invalid value for 'timeout' in --timeout: '-5m'", "20m"),
        (["--timeout", "soon"], "invalid value for 'timeout' in --timeout: 'soon'", "20m"),
        (["--timeout", "31d"], "'31d'", "1h30m"),
        (["--max-turns", "0"], "--max-turns", "sandboxrun run -h"),
        (["--max-turns", "-3"], "--max-turns", "sandboxrun run -h"),
        (["--compression", "lz4"], "--compression: 'lz4'", "gzip or zstd"),
        # flags only another backend uses
        (["--template", "mine"], "--template is for --backend e2b only (this run uses local)",
         "Drop --template"),
        (["--install-claude"], "--install-claude is for --backend e2b only", "--backend e2b"),
        (["--template", "t", "--install-claude"], "--template and --install-claude are for",
         "Drop --template and --install-claude"),
        # one task
        (["--prompt", "y"], "--prompt was given 2 times", "one run per task"),
        (["--prompt-file", "README.md"], "give --prompt or --prompt-file, not both", "PLAN.md"),
    ],
)  # fmt: skip
def test_contradicting_options_are_refused_before_anything_exists(cli, repo, args, message, hint):
    before = git(repo, "branch", "--list")
    proc = cli(*LOCAL, *args)
    assert proc.returncode == 2, proc.stderr
    got, got_hint = edge_error(proc.stderr)
    assert message in got
    assert got_hint and hint in got_hint
    nothing_made(cli, repo, before)


def test_e2b_limits_are_checked_before_anything_exists(cli, repo):
    before = git(repo, "branch", "--list")
    env = {"E2B_API_KEY": "e2b_test"}
    proc = cli("run", "--backend", "e2b", "--dry-run", "-p", "x", "--timeout", "2h", env=env)
    assert proc.returncode == 2
    message, hint = edge_error(proc.stderr)
    assert message == (
        "a time limit of 2h00m is longer than an E2B sandbox may live (max_lifetime 1h00m)"
    )
    assert hint and "SANDBOXRUN_MAX_LIFETIME" in hint
    proc = cli("run", "--backend", "e2b", "--dry-run", "-p", "x", "--no-isolation", env=env)
    assert proc.returncode == 2 and "--no-isolation is for --backend local only" in proc.stderr
    nothing_made(cli, repo, before)


def warn_marks(name: str) -> list[float]:
    (row,) = db_rows("SELECT warn_at FROM sessions WHERE name = ?", (name,))
    return json.loads(row["warn_at"])


def test_what_is_consistent_still_runs(cli, repo):
    """--warn-at none: no warnings; default marks past a short --timeout are dropped (they are
    defaults, not a request); marks from the repo's config likewise."""
    ok = cli(*LOCAL, "--timeout", "10m", "--warn-at", "none", "--name", "n1")
    assert ok.returncode == 0, ok.stderr
    assert warn_marks("n1") == []
    assert cli(*LOCAL, "--timeout", "10m", "--name", "n2").returncode == 0
    assert warn_marks("n2") == []
    (repo / ".sandboxrun.toml").write_text('warn_at = ["2m", "20m"]\n')
    assert cli(*LOCAL, "--timeout", "10m", "--name", "n3").returncode == 0
    assert warn_marks("n3") == [120.0]
