"""Every command's ``--help`` text made fit for any terminal width, in one place.

Typer (rich mode) keeps the single line breaks of a docstring's later paragraphs and reads
the text as Rich markup. So a docstring wrapped at 95 columns came out ragged in an 80-column
terminal (each long line wrapped on its own), and ``[[task]]`` printed as ``[]``. :func:`reflow`
joins each prose paragraph into one line (Rich then wraps it to the terminal) and escapes
markup; a paragraph that starts with click's ``\\b`` marker, or whose later lines are indented
or list items (examples, lists), keeps its lines.
:func:`apply` does this to every command and group of the app, once, at import.
"""

from __future__ import annotations

import inspect

import typer
from rich.markup import escape

#: click's "do not rewrap the next paragraph" marker (also honoured in plain-text mode)
NO_REWRAP = "\b"


def reflow(text: str) -> str:
    """``text`` with prose paragraphs on one line each, ``\\b`` blocks kept line by line
    (without the marker), and Rich markup escaped. Pure."""
    text = inspect.cleandoc(text)
    text, cut, rest = text.partition("\f")  # click: what follows \f is not shown
    paragraphs = []
    for para in text.split("\n\n"):
        if para.startswith(NO_REWRAP):
            body = para[len(NO_REWRAP) :].lstrip("\n")
            paragraphs.append("\n".join(escape(line) for line in _items(body.splitlines())))
        elif _laid_out(para):
            paragraphs.append("\n".join(escape(line) for line in _items(para.splitlines())))
        else:
            paragraphs.append(escape(" ".join(line.strip() for line in para.splitlines())))
    return "\n\n".join(paragraphs) + (cut + rest if cut else "")


def _laid_out(paragraph: str) -> bool:
    """A paragraph whose lines are its layout: examples (indented lines) or a list."""
    lines = paragraph.splitlines()
    return any(line[:1].isspace() or line.startswith(_ITEMS) for line in lines[1:])


def _items(lines: list[str]) -> list[str]:
    """A list's items each on one line (an item's indented continuation lines joined to it);
    lines that are not a list (examples) as they are."""
    if not any(line.startswith(_ITEMS) for line in lines):
        return lines
    out: list[str] = []
    for line in lines:
        if out and out[-1].startswith(_ITEMS) and line[:1].isspace():
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


#: how a list item starts
_ITEMS = ("- ", "* ", "• ")


def apply(app: typer.Typer) -> None:
    """Reflow the help of every command and sub-group of ``app`` (recursively), in place."""
    info = app.registered_callback
    if app.info.help and isinstance(app.info.help, str):
        app.info.help = reflow(app.info.help)
    elif info is not None and info.callback is not None and info.callback.__doc__:
        info.help = reflow(info.callback.__doc__)
    for command in app.registered_commands:
        text = command.help or (command.callback.__doc__ if command.callback else None)
        if isinstance(text, str) and text:
            command.help = reflow(text)
    for group in app.registered_groups:
        if isinstance(group.help, str) and group.help:
            group.help = reflow(group.help)
        if group.typer_instance is not None:
            apply(group.typer_instance)
