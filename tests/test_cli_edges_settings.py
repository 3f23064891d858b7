"""A bad setting (``SANDBOXRUN_*`` or the repo's config file) fails only the commands that
read it, with an error naming where it came from, the bad value and the accepted form; every
other command keeps working. Real processes, real repositories, real SQLite."""

from __future__ import annotations

import json

import pytest
from sbr_testlib import edge_error, git

from sandboxrun.config import SANDBOX_KEYS, load_settings
from sandboxrun.errors import ConfigError

#: a bad value for every setting that can have one, and a word of the accepted form
BAD = {
    "timeout": ("soon", "90s, 20m, 1h"),
    "warn_at": ("30m,later", "90s, 20m, 1h"),
    "grace": ("-1", "90s, 20m, 1h"),
    "poll_interval": ("0", "more than zero"),
    "quota_stall": ("forever", "90s, 20m, 1h"),
    "checkpoint_every": ("0s", "more than zero"),
    "max_lifetime": ("31d", "90s, 20m, 1h"),
    "stale_after": ("100000h", "at most 720h"),
    "max_turns": ("0", "at least 1"),
    "include_submodules": ("maybe", "true or false"),
    "compression": ("lz4", "gzip or zstd"),
    "backend": ("docker", "e2b or local"),
}


def test_every_checked_sandbox_setting_has_a_bad_value_here():
    """Each setting a run reads that is more than free text is tried below."""
    free_text = {"claude_bin", "model", "template", "worktree_dir", "branch_prefix"}
    assert set(BAD) == SANDBOX_KEYS - free_text


@pytest.mark.parametrize("key", sorted(BAD))
def test_a_bad_setting_fails_only_when_it_is_read(key):
    value, accepted = BAD[key]
    var = f"SANDBOXRUN_{key.upper()}"
    settings = load_settings(None, env={var: value})
    assert settings.db_path.name == "state.db"  # what status and logs need still works
    for other in sorted(SANDBOX_KEYS - {key}):
        getattr(settings, other)
    with pytest.raises(ConfigError) as err:
        getattr(settings, key)
    assert var in err.value.message and repr(value) in err.value.message
    assert accepted in (err.value.hint or "") and f"unset {var}" in (err.value.hint or "")
    # a flag replaces the bad value, and the rest of the settings come along intact
    if key in ("timeout", "max_turns", "compression"):
        good = {"timeout": "20m", "max_turns": 3, "compression": "zstd"}[key]
        assert getattr(settings.with_overrides(**{key: good}), key)


@pytest.mark.parametrize("key", sorted(BAD))
def test_status_and_logs_work_and_run_refuses_naming_the_variable(cli, repo, key):
    value, accepted = BAD[key]
    var = f"SANDBOXRUN_{key.upper()}"
    assert cli("run", "--backend", "local", "--dry-run", "-p", "x", "--name", "ok").returncode == 0
    bad = {var: value}
    status = cli("status", "--json", env=bad)
    assert status.returncode == 0, status.stderr
    assert [s["name"] for s in json.loads(status.stdout)] == ["ok"]
    assert cli("status", "ok", env=bad).returncode == 0
    assert cli("logs", "ok", env=bad).returncode == 0
    assert cli("cleanup", "--dry-run", env=bad).returncode == 0
    branches = git(repo, "branch", "--list")
    # (a --backend flag would win over a bad SANDBOXRUN_BACKEND: leave it out for that one)
    flag = [] if key == "backend" else ["--backend", "local"]
    proc = cli("run", *flag, "--dry-run", "-p", "x", "--name", "bad", env=bad)
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert message.startswith(f"invalid value for '{key}' in {var}: {value!r}")
    assert hint and accepted in hint
    assert git(repo, "branch", "--list") == branches  # refused before anything was made
    as_json = cli("run", *flag, "--dry-run", "-p", "x", "--json", env=bad)
    assert json.loads(as_json.stdout)["error"] == message


@pytest.mark.parametrize(
    ("var", "value", "flag"),
    [("SANDBOXRUN_TIMEOUT", "soon", ["--timeout", "5m"]),
     ("SANDBOXRUN_BACKEND", "docker", []),  # --backend local is given below
     ("SANDBOXRUN_MAX_TURNS", "0", ["--max-turns", "3"]),
     ("SANDBOXRUN_COMPRESSION", "lz4", ["--compression", "zstd"])],
)  # fmt: skip
def test_a_flag_overrides_a_bad_environment_value(cli, var, value, flag):
    proc = cli("run", "--backend", "local", "--dry-run", "-p", "x", *flag, env={var: value})
    assert proc.returncode == 0, proc.stderr


def test_a_bad_value_in_the_repo_file_names_the_file(cli, repo):
    (repo / ".sandboxrun.toml").write_text('grace = "soon"\n')
    assert cli("status").returncode == 0
    proc = cli("run", "--backend", "local", "--dry-run", "-p", "x")
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert message == "invalid value for 'grace' in the repo config (.sandboxrun.toml): 'soon'"
    assert hint and "90s, 20m, 1h" in hint
