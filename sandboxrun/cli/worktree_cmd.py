"""``sandboxrun worktree``: one git worktree, branch and identity per agent role."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from sandboxrun.cli.common import console, open_store, print_json, say, settings_for
from sandboxrun.errors import UsageError
from sandboxrun.gitops import repo_root
from sandboxrun.local import worktrees
from sandboxrun.local.identity import ROLE_RULES

worktree_app = typer.Typer(
    help=(
        "Agent worktrees for local mode: each role gets .worktrees/<role>/ on its own branch "
        "(agent/<role>/active) with its own git identity, so several Claude Code sessions can "
        "work side by side.\n\n"
        "Example: sandboxrun worktree setup backend && cd .worktrees/backend && claude"
    ),
    no_args_is_help=True,
)

REPO_OPTION = typer.Option(Path("."), "--repo", help="The git repository (default: here).")
ROLE_ARG = typer.Argument(None, help=f"The agent's role. {ROLE_RULES}", show_default=False)


def _root(repo: Path) -> Path:
    return repo_root(repo)


@worktree_app.command("setup")
def setup_cmd(
    role: str = ROLE_ARG,
    base: str = typer.Option(
        None, "--base", help="Start the branch here (default: the repo's default branch)."
    ),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create .worktrees/ROLE on branch agent/ROLE/active with the role's git identity.

    Running it again changes nothing and says "exists". Config (.sandboxrun.toml):
    branch_template, roles, identities.ROLE.name/email, copy_files, post_create.
    """
    root = _root(repo)
    settings = settings_for(root)
    result = worktrees.setup(root, role, settings, base=base)
    if json_out:
        print_json({**result.__dict__, "path": str(result.path)})
        return
    if not result.created:
        console.print(f"{result.role}: exists at {result.path} (branch {result.branch})")
        return
    console.print(f"{result.role}: created {result.path} on branch {result.branch}")
    if result.base:
        console.print(f"  from {result.base}")
    for name in result.copied:
        console.print(f"  copied {name}")
    for name in result.missing:
        say((f"  copy_files: {name} does not exist, not copied", "yellow"), err=True)
    console.print(f"  next: cd {shlex.quote(str(result.path))} && claude")


@worktree_app.command("list")
def list_cmd(
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
) -> None:
    """Role, branch, path, HEAD, dirty, ahead/behind the base branch and presence."""
    root = _root(repo)
    settings = settings_for(root)
    store = open_store(settings)
    infos = worktrees.list_worktrees(root, settings, store.conn)
    if json_out:
        print_json([i.to_dict() for i in infos])
        return
    if not infos:
        console.print("No agent worktrees. Create one with `sandboxrun worktree setup ROLE`.")
        return
    rows = [
        [i.role, i.branch, i.head[:9], "yes" if i.dirty else "no",
         f"+{i.ahead}/-{i.behind}" if i.ahead is not None else "-", i.presence or "-", str(i.path)]
        for i in infos
    ]  # fmt: skip
    header, *lines = aligned(
        [["ROLE", "BRANCH", "HEAD", "DIRTY", "+/-", "PRESENCE", "PATH"], *rows]
    )
    say((header, "bold"))
    for line in lines:
        console.print(line, highlight=False)


def aligned(rows: list[list[str]]) -> list[str]:
    """``rows`` as lines of columns two spaces apart, each as wide as its widest cell (the
    header's too). Pure."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


@worktree_app.command("teardown")
def teardown_cmd(
    role: str = ROLE_ARG,
    merge: bool = typer.Option(False, "--merge", help="Merge the branch into its base first."),
    abandon: bool = typer.Option(
        False,
        "--abandon",
        help="Discard the worktree's uncommitted changes, and its ignored files that are not "
        "clutter (a .env, notes; caches and build output never block a removal).",
    ),
    delete_branch: bool = typer.Option(
        False, "--delete-branch", help="Delete the branch too, when it is fully merged."
    ),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Remove ROLE's worktree. Uncommitted changes: refused unless --abandon (asked on a terminal).

    The branch is deleted only with --merge or --delete-branch, and only when fully merged.
    """
    role = worktrees.validate_role(role)
    root = _root(repo)
    settings = settings_for(root)
    if merge and abandon:
        raise UsageError("--merge and --abandon exclude each other", "Pick one.")
    _, path, _ = worktrees.find(root, role, settings)
    if not abandon and not merge and sys.stdin.isatty() and not _clean(path):
        abandon = typer.confirm(
            f"{path} has uncommitted changes. Discard them and remove the worktree?",
            default=False,
        )
        if not abandon:
            raise typer.Exit(1)
    store = open_store(settings)
    result = worktrees.teardown(
        root,
        role,
        settings,
        merge_first=merge,
        abandon=abandon,
        delete_branch=delete_branch,
        conn=store.conn,
    )
    if json_out:
        print_json(result.to_dict())
        return
    if result.merged:
        _print_merge(result.merged)
    console.print(f"{role}: removed {result.path}")
    if result.branch_deleted:
        console.print(f"  branch {result.branch} deleted (fully merged)")
    else:
        console.print(f"  branch {result.branch} {result.branch_kept_reason}")


def _clean(path: Path) -> bool:
    from sandboxrun.gitops import is_clean

    return is_clean(path)


def _print_merge(m: worktrees.MergeResult) -> None:
    if m.how == "up-to-date":
        console.print(f"{m.branch} is already merged into {m.into}")
        return
    where = f" in {m.where}" if m.where else " (ref updated; checked out nowhere)"
    console.print(f"merged {m.branch} into {m.into}: {m.how} {m.commit[:12]}{where}")


@worktree_app.command("merge")
def merge_cmd(
    role: str = ROLE_ARG,
    into: str = typer.Option(
        None, "--into", help="Target branch (default: the repo's default branch)."
    ),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Merge ROLE's branch: fast-forward when possible, else a merge commit.

    On conflict nothing changes: the merge is aborted, the files are listed, exit 1. The
    user's checkout is never switched; a dirty checkout of the target is refused.
    """
    role = worktrees.validate_role(role)
    root = _root(repo)
    result = worktrees.merge(root, role, settings_for(root), into=into)
    if json_out:
        print_json(result.to_dict())
    else:
        _print_merge(result)


def register(app: typer.Typer) -> None:
    app.add_typer(worktree_app, name="worktree")
