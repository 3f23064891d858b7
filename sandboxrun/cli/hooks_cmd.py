"""``sandboxrun hooks install``: sandboxrun's hooks in Claude Code settings files."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sandboxrun.cli.common import Part, console, print_json, say
from sandboxrun.errors import SandboxrunError, UsageError
from sandboxrun.gitops import repo_root
from sandboxrun.local import hooks_install

hooks_app = typer.Typer(
    help=(
        "Claude Code hooks that tell sandboxrun what each session is doing (heartbeat, busy, "
        "idle, needs permission, usage limit), for sessions you start yourself.\n\n"
        "Example: sandboxrun hooks install --local"
    ),
    no_args_is_help=True,
)


def choose_scope(
    global_: bool, local: bool, shared: bool, *, action: str, interactive: bool
) -> str:
    """The one scope the flags name; ask on a terminal when none is given."""
    chosen = [s for s, on in zip(hooks_install.SCOPES, (global_, local, shared), strict=True) if on]
    if len(chosen) > 1:
        raise UsageError(
            f"pick one of --global, --local, --shared (got {', '.join('--' + c for c in chosen)})",
            "--global: every project (~/.claude); --local: this repository, for you only.",
        )
    if chosen:
        return chosen[0]
    if not interactive:
        raise UsageError(
            f"where should the hooks be {action}?",
            "Pass --global (~/.claude/settings.json, every repo), --local (this repo's "
            ".claude/settings.local.json, just you) or --shared (.claude/settings.json, tracked).",
        )
    console.print(
        "Where?\n  global  ~/.claude/settings.json (every repository)\n"
        "  local   .claude/settings.local.json in this repository (just you, untracked)\n"
        "  shared  .claude/settings.json in this repository (tracked, for the team)"
    )
    answer = str(typer.prompt("Scope", default="local")).strip().lower()
    if answer not in hooks_install.SCOPES:
        raise UsageError(f"unknown scope {answer!r}", "Answer global, local or shared.")
    return answer


def _repo_or_none(repo: Path) -> Path | None:
    try:
        return repo_root(repo)
    except SandboxrunError:
        return None


def print_status(entries: list[dict], json_out: bool) -> None:
    if json_out:
        print_json(entries)
        return
    for e in entries:
        if e["error"]:
            state: Part = (f"unreadable: {e['error']}", "red")
        elif e["installed"]:
            state = ("installed", "green")
        elif e["events"]:
            state = (f"partly installed ({', '.join(e['events'])})", "yellow")
        else:
            state = "not installed" if e["exists"] else "not installed (no file)"
        say(f"{e['scope']:<7} ", state, f"  {e['path']}")


@hooks_app.command("install")
def install_cmd(
    global_: bool = typer.Option(False, "--global", help="~/.claude/settings.json (every repo)."),
    local: bool = typer.Option(
        False, "--local", help="This repo's .claude/settings.local.json (untracked, just you)."
    ),
    shared: bool = typer.Option(
        False, "--shared", help="This repo's .claude/settings.json (tracked, for the team)."
    ),
    uninstall: bool = typer.Option(False, "--uninstall", help="Remove exactly our hooks."),
    status: bool = typer.Option(False, "--status", help="Say where our hooks are installed."),
    repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: here)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Merge sandboxrun's hooks into a Claude Code settings file (never overwrite).

    Other keys and hooks stay as they were; running it twice adds nothing; the previous file
    is kept as *.sandboxrun.bak; a file that is not valid JSON is refused and left unchanged.
    """
    root = _repo_or_none(repo)
    if status:
        if uninstall:
            raise UsageError(
                "--status and --uninstall exclude each other",
                "See where they are with --status, then remove them with --uninstall.",
            )
        print_status(hooks_install.status(root), json_out)
        return
    action = "removed from" if uninstall else "installed"
    scope = choose_scope(
        global_, local, shared, action=action, interactive=sys.stdin.isatty() and not json_out
    )
    if scope != "global" and root is None:
        raise UsageError(
            f"--{scope} needs a git repository: {repo.resolve()} is not in one",
            "Run it inside the repository, pass --repo PATH, or use --global.",
        )
    if uninstall:
        result = hooks_install.uninstall(scope, root)
        message = (
            f"removed {result.removed} sandboxrun hook(s) from {result.path}"
            if result.removed
            else f"no sandboxrun hooks in {result.path}: nothing changed"
        )
    else:
        result = hooks_install.install(scope, root)
        message = (
            f"installed sandboxrun hooks in {result.path}"
            if result.changed
            else f"sandboxrun hooks already installed in {result.path}: nothing changed"
        )
    if json_out:
        print_json(result.to_dict())
        return
    console.print(message)
    if result.backup:
        console.print(f"  previous version kept as {result.backup}")


def register(app: typer.Typer) -> None:
    app.add_typer(hooks_app, name="hooks")
