"""`sandboxrun warm`: upload the repository once into a snapshot that runs start from."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sandboxrun.cli.common import console, err_console, print_json, settings_for
from sandboxrun.errors import UsageError

WARM_HELP = """Make a warm snapshot: the repository uploaded once, for many runs to start from.

One E2B sandbox gets the repository at BASE (plus an optional --setup command such as
`npm ci`), commits it as the baseline and is snapshotted. The snapshot id is cached per
repository, base commit, template and setup. `fanout` then starts its tasks from it, uploading
only what differs from it (changed and deleted files); each run checks that what it starts
from matches a full upload. A snapshot that is gone or too far behind falls back to a full
upload, and the run says so once. `fanout` makes one itself when it pays off (--warm).

\b
Examples:
  sandboxrun warm
  sandboxrun warm --setup "npm ci" && sandboxrun fanout tasks.toml --warm on
  sandboxrun warm --list --json
  sandboxrun warm --delete          # snapshots hold your files on E2B until deleted
"""


def register(app: typer.Typer) -> None:
    @app.command("warm", help=WARM_HELP)
    def warm(
        repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: here)."),
        base: str = typer.Option("HEAD", "--base", help="The commit the snapshot holds."),
        setup: str | None = typer.Option(
            None, "--setup", help="Shell command run in the repository before the snapshot."
        ),
        list_: bool = typer.Option(False, "--list", help="List the cached snapshots instead."),
        delete: bool = typer.Option(
            False, "--delete", help="Delete this repository's snapshots (on E2B and here)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        from sandboxrun.sandbox.warm import WarmCache
        from sandboxrun.sandbox.warm_build import build_snapshot, delete_snapshots

        if delete and (list_ or setup is not None):
            # `--delete` is destructive: never the side effect of a flag combination that
            # also reads like a listing or a build
            raise UsageError(
                "--delete cannot be combined with --list or --setup",
                "List first with `sandboxrun warm --list`, then delete with "
                "`sandboxrun warm --delete`.",
            )
        settings = settings_for(repo)
        if delete:
            deleted = delete_snapshots(settings, repo)
            if json_out:
                print_json({"deleted": deleted})
            else:
                console.print(f"Deleted {len(deleted)} warm snapshot(s).", highlight=False)
            return
        if list_:
            entries = [e.to_dict() for e in WarmCache(settings.home).list()]
            if json_out:
                print_json(entries)
                return
            if not entries:
                console.print("No warm snapshots yet. Make one with `sandboxrun warm`.")
            for e in entries:
                setup_text = f"  setup {e['setup']!r}" if e["setup"] else ""
                console.print(
                    f"{e['snapshot_id']}  {Path(e['repo']).name} @ {e['commit'][:12]}  "
                    f"{e['files']} files{setup_text}",
                    highlight=False,
                )
            return
        t0 = time.monotonic()
        entry = build_snapshot(
            settings,
            repo,
            base=base,
            setup=setup,
            say=lambda text: err_console.print(f"warm: {text}", highlight=False),
        )
        seconds = round(time.monotonic() - t0, 2)
        if json_out:
            print_json({**entry.to_dict(), "seconds": seconds})
            return
        console.print(
            f"Warm snapshot {entry.snapshot_id}: {entry.files} files of "
            f"{Path(entry.repo).name} at {entry.commit[:12]} ({seconds:g}s).\n"
            f"  Runs of `sandboxrun fanout` on this repository start from it.",
            highlight=False,
        )
