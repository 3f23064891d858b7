"""``--help`` reads well for every command: a flag shows no value (no ``<bool>``), a
repeatable option its element (``<str>``, not ``<list[str]>``), a bounded number ``<int>``
with its range, and arguments are named in capitals (``SESSION``) in the usage line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sandboxrun.cli import app
from sandboxrun.cli.helptext import metavar


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_metavar_reads_well():
    assert metavar(bool) == ""
    assert metavar(list[str]) == "<str>" and metavar(list[Path]) == "<path>"
    assert metavar(str) is None and metavar(int) is None  # typer's own <str>, <int>
    assert metavar(str, argument="session") == "SESSION"


@pytest.mark.parametrize(
    "path,cmd", COMMANDS, ids=[" ".join(p) or "sandboxrun" for p, _ in COMMANDS]
)
def test_every_help_shows_flags_as_flags(path, cmd):
    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert out.exit_code == 0, out.output
    rows = [re.sub(r"^│\s+(\*\s+)?", "│ ", line) for line in out.output.splitlines()
            if re.match(r"│\s+(\*\s+)?--", line)]  # fmt: skip
    assert rows, out.output  # at least --help
    for line in rows:
        assert "<bool>" not in line, line
        assert "<int range>" not in line and "<float range>" not in line, line
        assert not re.search(r"<list\[", line), line
    flags = {p.opts[0] for p in cmd.params if getattr(p, "is_flag", False)}
    for line in rows:
        name = line.split()[1]
        if name in flags:  # name, maybe a short form, then the help text: no <type>
            assert not re.match(r"│ --\S+\s+(-\w\s+)?<", line), line
    usage = next(line for line in out.output.splitlines() if "Usage:" in line)
    assert not re.search(r"[\[{][a-z_]+[\]}]", usage.split("[OPTIONS]")[-1]), usage


def test_help_of_a_session_command_names_its_arguments(cli):
    proc = cli("extend", "--help", env={"COLUMNS": "100"})
    assert "extend [OPTIONS] {SESSION} {DURATION}" in proc.stdout
    missing = cli("extend", "s1")
    assert missing.returncode == 2 and "Missing argument 'DURATION'" in missing.stderr
