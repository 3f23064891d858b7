"""Durations and the settings layers: defaults < repo file < env < flags."""

from __future__ import annotations

import pytest

from sandboxrun.config import format_duration, load_settings, parse_duration, parse_durations
from sandboxrun.errors import ConfigError, UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("20m", 1200),
        ("1h", 3600),
        ("1h30m", 5400),
        ("45", 45),
        ("0.5s", 0.5),
        (" 2M ", 120),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "m", "-5m", "0s", "1h 2x"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError, match="invalid duration|must be positive|is zero"):
        parse_duration(text)


def test_durations_list_and_format():
    assert parse_durations("50m, 30m") == [1800, 3000]
    assert format_duration(59) == "59s" and format_duration(61) == "1m01s"
    assert format_duration(3725) == "1h02m"


def test_layers(tmp_path):
    (tmp_path / ".sandboxrun.toml").write_text(
        'timeout = "20m"\nmodel = "sonnet"\nwarn_at = ["5m", "10m"]\n'
    )
    s = load_settings(tmp_path, env={})
    assert s.timeout == 1200 and s.model == "sonnet" and s.warn_at == (300, 600)
    s = load_settings(tmp_path, env={"SANDBOXRUN_TIMEOUT": "30m", "SANDBOXRUN_HOME": "/x/y"})
    assert s.timeout == 1800 and str(s.db_path) == "/x/y/state.db"
    assert s.with_overrides(timeout=60.0, model=None).timeout == 60.0
    assert s.with_overrides(model=None).model == "sonnet"


def test_pyproject_section(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.sandboxrun]\nmax_turns = 7\n")
    assert load_settings(tmp_path, env={}).max_turns == 7


def test_bad_config_names_the_problem(tmp_path):
    (tmp_path / ".sandboxrun.toml").write_text("timout = '20m'\n")
    with pytest.raises(ConfigError, match="unknown setting 'timout'"):
        load_settings(tmp_path, env={})
    (tmp_path / ".sandboxrun.toml").write_text("timeout = [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_settings(tmp_path, env={})
    (tmp_path / ".sandboxrun.toml").write_text("timeout = 'forever'\n")
    with pytest.raises(ConfigError, match="invalid value for 'timeout'"):
        load_settings(tmp_path, env={}).check()


@pytest.mark.parametrize(
    ("key", "value"),
    [("compression", "bz2"), ("compression", "none"), ("max_turns", "0"), ("grace", "soon")],
)
def test_every_source_of_a_setting_is_checked_the_same_way(tmp_path, key, value):
    """A bad value is a config error in the file or env, a usage error as a flag."""
    (tmp_path / ".sandboxrun.toml").write_text(f"{key} = {value!r}\n")
    with pytest.raises(ConfigError, match=f"invalid value for '{key}' in the repo config"):
        load_settings(tmp_path, env={}).check()
    env = {f"SANDBOXRUN_{key.upper()}": value}
    with pytest.raises(ConfigError, match=f"invalid value for '{key}' in SANDBOXRUN_"):
        getattr(load_settings(None, env=env), key)
    flag = key.replace("_", "-")
    with pytest.raises(UsageError, match=f"invalid value for '{key}' in --{flag}") as info:
        load_settings(None, env={}).with_overrides(**{key: value})
    assert info.value.hint


def test_flags_are_converted_like_the_file(tmp_path):
    s = load_settings(None, env={}).with_overrides(
        timeout="20m", warn_at=("5m", 60), compression="zstd", max_turns="3"
    )
    assert (s.timeout, s.warn_at, s.compression, s.max_turns) == (1200, (60, 300), "zstd", 3)


@pytest.mark.parametrize(
    "text", ["721h", "9" * 400 + "h", "99999999999h", 1e400, float("nan"), 30 * 24 * 3600 + 1]
)
def test_too_long_or_infinite_durations_are_usage_errors(text):
    """An infinite timeout once failed a run mid-way (OverflowError): refused at the flag."""
    with pytest.raises(UsageError, match="too long|must be positive"):
        parse_duration(text)


def test_the_longest_duration_is_accepted():
    assert parse_duration("720h") == parse_duration(30 * 24 * 3600) == 30 * 24 * 3600


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("max_turns = [1]\n", "whole number"),
        ("max_turns = 1.5\n", "whole number"),
        ('max_turns = "x"\n', "whole number"),
        ("timeout = [1]\n", "number with a unit"),
        ("timeout = true\n", "number with a unit"),
        ('warn_at = ["30m", true]\n', "number with a unit"),
        ("timeout = 1e999\n", "at most 720h"),
    ],
)
def test_wrong_types_in_the_repo_file_are_config_errors(tmp_path, text, needle):
    """Values of the wrong TOML type used to escape as TypeError/AttributeError tracebacks."""
    (tmp_path / ".sandboxrun.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path).check()
    assert needle in (info.value.hint or "")


def test_unreadable_repo_files_are_config_errors(tmp_path):
    own = tmp_path / ".sandboxrun.toml"
    own.write_bytes(b"\xff\xfe timeout")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(tmp_path)
    own.unlink()
    own.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path)
    own.rmdir()
    (tmp_path / "pyproject.toml").write_text("[tool]\nsandboxrun = 5\n")
    with pytest.raises(ConfigError, match="not a table"):
        load_settings(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.sandboxrun]\nmax_turns = "7"\n')
    assert load_settings(tmp_path).max_turns == 7
