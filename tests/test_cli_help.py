"""Every command's ``--help`` shows its whole text, wrapped to the terminal, markup-free."""

from __future__ import annotations

import re

import pytest
import typer
from rich.markup import render
from typer.testing import CliRunner

from sandboxrun.cli import app
from sandboxrun.cli.helptext import reflow


def test_reflow_joins_prose_keeps_examples_and_lists_and_escapes_markup():
    text = """First line.

    A paragraph wrapped
    at some width, with [[task]] and [bold]x[/bold].

    \b
    Examples:
      a --b
      c

    Examples without the marker:
      x
      y

    Kinds:
    - one, which goes on
      over two lines
    - two
    \f
    internal notes
    """
    out = reflow(text)
    paragraphs = out.split("\n\n")
    assert render(paragraphs[1]).plain == (
        "A paragraph wrapped at some width, with [[task]] and [bold]x[/bold]."
    )
    assert paragraphs[2] == "Examples:\n  a --b\n  c"
    assert paragraphs[3] == "Examples without the marker:\n  x\n  y"
    assert paragraphs[4].startswith("Kinds:\n- one, which goes on over two lines\n- two")
    assert "\f" in out  # click still cuts what follows


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
        for name, sub in sorted(cmd.commands.items()):
            if not getattr(sub, "hidden", False):
                yield from _commands(sub, (*path, name))


def _words(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize(
    "path,cmd", COMMANDS, ids=[" ".join(p) or "sandboxrun" for p, _ in COMMANDS]
)
def test_help_shows_the_whole_text_in_80_columns(path, cmd):
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    shown = _words(res.output)
    for para in (cmd.help or "").partition("\f")[0].split("\n\n"):
        plain = _words(render(para).plain)
        assert plain in shown, f"{' '.join(path)}: {plain!r} not shown as written"
    # prose is wrapped to the width, not line by line as the docstring was: no prose line of
    # the description ends far from the edge and is followed by more of the same paragraph
    description = res.output.split("╭", 1)[0].splitlines()
    for this, following in zip(description, description[1:], strict=False):
        nxt = following.strip()
        if this.strip() and nxt and not following.startswith("   ") and nxt[:2] != "- ":
            assert len(this.rstrip()) > 80 - 25 or this.rstrip().endswith((":", ".")), (
                f"{' '.join(path)}: ragged help line {this!r}"
            )
