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
import typing
from typing import Any

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


def metavar(hint: Any, *, argument: str | None = None) -> str | None:
    """What ``--help`` shows for a parameter's value, where typer's own label reads badly.
    Pure; None keeps typer's.

    A flag takes no value, so it shows none (not ``<bool>``); a repeatable option shows its
    element (``<str>``, not ``<list[str]>``); an argument is named in capitals in the usage
    line (``SESSION``, not ``{session}``)."""
    if argument is not None:
        return argument.upper()
    if hint is bool:
        return ""
    if typing.get_origin(hint) is list and len(typing.get_args(hint)) == 1:
        (element,) = typing.get_args(hint)
        return f"<{getattr(element, '__name__', str(element)).lower()}>"
    return None


def _tidy_metavars(callback: Any) -> None:
    """Give the parameters of a command's function the metavars of :func:`metavar`."""
    try:
        hints = typing.get_type_hints(callback, include_extras=True)
    except (NameError, TypeError):  # an annotation not resolvable here: leave typer's
        return
    for name, param in inspect.signature(callback).parameters.items():
        hint = hints.get(name)
        info = param.default
        if typing.get_origin(hint) is typing.Annotated:  # x: Annotated[T, typer.Option()]
            hint, *extras = typing.get_args(hint)
            info = next((e for e in extras if isinstance(e, typer.models.ParameterInfo)), info)
            # a string annotation is evaluated anew by typer (a new Option()): keep this one
            callback.__annotations__[name] = typing.Annotated[(hint, *extras)]
        if not isinstance(info, typer.models.ParameterInfo) or info.metavar is not None:
            continue
        argument = name if isinstance(info, typer.models.ArgumentInfo) else None
        if argument is None and hint is int and (info.min is not None or info.max is not None):
            info.metavar = "<int>"  # not "<int range>": the range itself is shown next to it
            continue
        info.metavar = metavar(hint, argument=argument)


def _flag_help_option(option: Any) -> Any:
    """The ``-h/--help`` option shown as the flag it is (no ``<bool>``)."""
    if option is not None and option.metavar is None:
        option.metavar = ""
    return option


class Command(typer.core.TyperCommand):
    """A command whose ``--help`` option shows no value."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help_option(super().get_help_option(ctx))


class Group(typer.core.TyperGroup):
    """A group whose ``--help`` option shows no value."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help_option(super().get_help_option(ctx))


def _plain(cls: Any, default: type) -> bool:
    """Whether a command (or group) uses typer's own class (not one chosen on purpose)."""
    return cls is None or cls is default or isinstance(cls, typer.models.DefaultPlaceholder)


def apply(app: typer.Typer) -> None:
    """Reflow the help of every command and sub-group of ``app`` (recursively), in place;
    give their parameters readable metavars (:func:`metavar`)."""
    info = app.registered_callback
    if info is not None and info.callback is not None:
        _tidy_metavars(info.callback)  # the group's own options (--version, mcp --http)
    if app.info.help and isinstance(app.info.help, str):
        app.info.help = reflow(app.info.help)
    elif info is not None and info.callback is not None and info.callback.__doc__:
        info.help = reflow(info.callback.__doc__)
    for command in app.registered_commands:
        text = command.help or (command.callback.__doc__ if command.callback else None)
        if isinstance(text, str) and text:
            command.help = reflow(text)
        if command.callback is not None:
            _tidy_metavars(command.callback)
        if _plain(command.cls, typer.core.TyperCommand):
            command.cls = Command
    if _plain(app.info.cls, typer.core.TyperGroup):
        app.info.cls = Group
    for group in app.registered_groups:
        if isinstance(group.help, str) and group.help:
            group.help = reflow(group.help)
        if group.typer_instance is not None:
            apply(group.typer_instance)
