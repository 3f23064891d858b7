"""``sandboxrun install``: everything a user needs for local mode, in one go."""

from __future__ import annotations

from pathlib import Path

import typer

from sandboxrun import process
from sandboxrun.cli.common import Part, console, print_json, say
from sandboxrun.cli.hooks_cmd import _repo_or_none, print_status
from sandboxrun.errors import UsageError
from sandboxrun.local import hooks_install


def _report(root: Path | None) -> dict:
    exe = hooks_install.hook_executable()
    return {
        "hook_executable": exe,
        "hook_executable_found": process.which(exe) is not None,
        "hooks": hooks_install.status(root),
        "mcp": {"installed": False, "note": "the MCP server is not part of sandboxrun yet"},
    }


def register(app: typer.Typer) -> None:
    @app.command("install")
    def install(
        all_: bool = typer.Option(
            False, "--all", help="Install everything: the hooks in ~/.claude/settings.json."
        ),
        status: bool = typer.Option(False, "--status", help="Report what is installed."),
        repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: here)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Install what local mode needs (the hooks; later the MCP server entry), or report it.

        --all merges the hooks into your user settings (see `sandboxrun hooks install` for
        per-repository scopes); --status says what is installed where.
        """
        if all_ == status:
            raise UsageError(
                "pass exactly one of --all or --status", "e.g. sandboxrun install --all"
            )
        root = _repo_or_none(repo)
        done = hooks_install.install("global", None) if all_ else None
        report = _report(root)
        if done is not None:
            report["installed_now"] = done.to_dict()
        if json_out:
            print_json(report)
            return
        if done is not None:
            console.print(
                f"hooks: installed in {done.path}"
                if done.changed
                else f"hooks: already installed in {done.path}"
            )
            if done.backup:
                console.print(f"  previous version kept as {done.backup}")
        found: Part = "found" if report["hook_executable_found"] else ("NOT FOUND", "red")
        say(f"hook program: {report['hook_executable']} (", found, ")")
        print_status(report["hooks"], False)
        console.print(f"mcp     not installed ({report['mcp']['note']})")
