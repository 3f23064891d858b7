"""``sandboxrun apply``: land a session's kept work on its branch without rerunning the agent."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from sandboxrun.cli.common import console, open_store, print_json, settings_for

APPLY_HELP = (
    "Apply a session's collected work that is not on its branch yet, without running the "
    "agent again.\n\n"
    "The work of every run is kept in the session's artifacts. This applies:\n\n"
    "\b\n"
    "- changes kept back at collection: a sensitive file (.claude/settings.json,\n"
    "  a CI workflow, .sandboxrun.toml...) needs --allow-sensitive; a file another\n"
    "  live session holds an exclusive claim on needs --allow-claimed (or the claim\n"
    "  to end); read the kept patch first (the run and this command print its path);\n"
    "- the whole collection when it could not be applied (the branch had\n"
    "  moved, a crash), once the branch is back where the run left it;\n"
    "- with --from DIR, a snapshot written by `sandboxrun download`.\n\n"
    "Paths that are never allowed (outside the repository, inside .git, symlinks leaving the "
    "tree, submodule entries) stay refused. Exit code 1 while something is still kept back.\n\n"
    "Example: sandboxrun apply fix-login --allow-sensitive"
)


def register(app: typer.Typer) -> None:
    """Add the ``apply`` command to ``app``."""

    @app.command("apply", help=APPLY_HELP)
    def apply(
        session: str = typer.Argument(..., help="Session id, id prefix or name."),
        allow_sensitive: bool = typer.Option(
            False, "--allow-sensitive", help="Also apply kept-back changes to sensitive paths."
        ),
        allow_claimed: bool = typer.Option(
            False,
            "--allow-claimed",
            help="Also apply changes to files another live session holds an exclusive claim on.",
        ),
        source: Path | None = typer.Option(
            None, "--from", help="Apply a snapshot written by `sandboxrun download` instead."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
    ) -> None:
        from sandboxrun.sandbox.apply import apply_session, refusal_text
        from sandboxrun.sandbox.statecheck import check_state

        settings = settings_for(None)
        store = open_store(settings)
        s = store.resolve(session)
        if source is None:
            check_state("apply", settings, s)  # ended, with its work collected
        applied = apply_session(
            settings,
            store,
            s,
            allow_sensitive=allow_sensitive,
            source=source,
            allow_claimed=allow_claimed,
        )
        refusal = refusal_text(applied.record, s.name)
        if json_out:
            print_json(
                {
                    "session": s.id,
                    "branch": s.branch,
                    "commits": applied.commits,
                    "resumed": applied.resumed,
                    "refused": applied.record.get("refused") or [],
                    "kept_patch": applied.record.get("kept_patch"),
                }
            )
        else:
            if applied.resumed:
                console.print("Finished an apply that was interrupted.", highlight=False)
            if applied.commits:
                console.print(
                    f"Applied {len(applied.commits)} commit(s) on {s.branch}.", highlight=False
                )
                console.print(
                    f"  Review: git -C {shlex.quote(str(s.repo))} log --stat -n "
                    f"{len(applied.commits)} {shlex.quote(str(s.branch))}",
                    highlight=False,
                )
            elif not refusal:
                console.print(f"Nothing left to apply for {s.name}.", highlight=False)
            if refusal:
                console.print(f"{refusal[0]}\n{refusal[1]}", highlight=False, markup=False)
        if refusal:
            raise typer.Exit(1)
