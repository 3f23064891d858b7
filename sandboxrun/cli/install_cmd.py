"""``sandboxrun install``: everything a user needs for local mode, in one go."""

from __future__ import annotations

from pathlib import Path

import typer

from sandboxrun import process
from sandboxrun.cli.common import Part, console, print_json, say
from sandboxrun.cli.hooks_cmd import _repo_or_none, print_status
from sandboxrun.errors import UsageError
from sandboxrun.local import hooks_install
from sandboxrun.mcp import install as mcp_install


def _report(root: Path | None) -> dict:
    exe = hooks_install.hook_executable()
    return {
        "hook_executable": exe,
        "hook_executable_found": process.which(exe) is not None,
        "hooks": hooks_install.status(root),
        "mcp": _mcp_status(root),
    }


def _mcp_status(root: Path | None) -> list[dict]:
    """Where the MCP server entry is: the repository's .mcp.json (in a repository) and your
    ~/.claude.json; ``installed`` is None for a file that is not valid JSON."""
    scopes = (["local"] if root is not None else []) + ["global"]
    out = []
    for scope in scopes:
        path = mcp_install.config_path(scope, root)
        out.append({"scope": scope, "path": str(path), "installed": mcp_install.installed(path)})
    return out


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
        """Install what local mode needs (the hooks), or report it (hooks and MCP server).

        --all merges the hooks into your user settings (see `sandboxrun hooks install` for
        per-repository scopes); --status says what is installed where, the MCP server entry
        included (add it with `sandboxrun mcp install`).

        Example: sandboxrun install --all && sandboxrun mcp install --local
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
        for entry in report["mcp"]:
            state = {True: "installed", False: "not installed", None: "unreadable (not JSON)"}
            console.print(
                f"mcp {entry['scope']:<7} {state[entry['installed']]:<23} {entry['path']}"
            )
        if not any(entry["installed"] for entry in report["mcp"]):
            console.print(
                "  Add the MCP server with `sandboxrun mcp install --local` (or --global)."
            )
