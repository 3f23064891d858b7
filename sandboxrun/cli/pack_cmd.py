"""`sandboxrun pack`: show (and write) exactly what would be uploaded to a sandbox."""

from __future__ import annotations

import enum
import functools
from pathlib import Path
from typing import Annotated

import typer

from sandboxrun.cli.common import console, err_console, print_json
from sandboxrun.sync.pack import SUFFIXES, PackResult, Selection, pack_worktree, select_files

# Paragraphs are single lines (the help renderer wraps them); \b blocks keep their layout.
PACK_HELP = (
    "Show exactly which files would be uploaded to a sandbox, and pack them into a tarball.\n\n"
    "Which files: in a git work tree, what `git ls-files -co --exclude-standard` lists "
    "(tracked files plus untracked files no .gitignore, .git/info/exclude or global excludes "
    "file ignores); in a plain directory, every file no .gitignore in it ignores. Then:\n\n"
    "\b\n"
    "- .sandboxrunignore (repo root, gitignore syntax) leaves out more files.\n"
    "- The secrets check leaves out, by name: environment files (.env, .env.*,\n"
    "  *.env, .envrc; not .env.example/.sample/.template), private keys and key\n"
    "  stores (*.pem, *.key, *.p12, *.jks, id_rsa*, deploy_key, also with backup\n"
    "  suffixes such as .bak or ~), credential files of cloud and developer tools\n"
    "  (.ssh/, .aws/, .azure/, .kube/, .config/gh/, .docker/config.json, .npmrc,\n"
    "  .netrc, .pypirc, ...), terraform *.tfvars/*.tfstate, secrets.* and\n"
    "  credentials.* data files; and, by content, text files holding a private\n"
    "  key block or a known token format (AWS, GitHub, GitLab, Slack, Stripe,\n"
    "  Google, Anthropic, OpenAI, npm, PyPI, E2B ...). Source files (env.py,\n"
    "  secrets.md) are never left out by name. See docs/security.md.\n"
    "- .sandboxruninclude (repo root, gitignore syntax) brings files back on\n"
    "  purpose, even if git ignores them or the deny-list matches them\n"
    "  (.sandboxrunignore still wins).\n\n"
    "Symlinks and special files are never uploaded; they are listed as skipped. Submodules "
    "are left out unless --include-submodules is given (as for `sandboxrun run`): then the "
    "files of each checked-out submodule are listed and packed under its path, with the same "
    "ignore and secret rules.\n\n"
    "By default the tarball is written to ./<directory name>.tar.gz (.tar.zst with zstd), or "
    "next to the packed directory when you are inside it (never into the tree it packs), and a "
    "summary is printed; --output may name a file or a directory. With --list only the file "
    "list is printed (on stdout; the files left out as secrets, with the reason, on stderr) and "
    "nothing is written.\n\n"
    "\b\n"
    "Examples:\n"
    "  sandboxrun pack --list        # what would be uploaded, one path per line\n"
    "  sandboxrun pack ~/src/app -o /tmp/app.tar.gz\n"
    "  sandboxrun pack --compression zstd --json\n"
)


class Compression(enum.StrEnum):
    """Tarball compression."""

    gzip = "gzip"
    zstd = "zstd"
    none = "none"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _names(paths: list[str], limit: int = 10) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f", ... (+{len(paths) - limit} more)" if len(paths) > limit else "")


def _summary(sel: Selection, result: PackResult | None) -> None:
    how = "git ls-files" if sel.source == "git" else "directory walk honouring .gitignore"
    # soft_wrap: long paths stay on one line (copyable, and greppable in scripts)
    out = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    out(f"{len(sel.files):,} files, {_mb(sel.total_bytes)} from {sel.root} ({how})")
    if sel.excluded_secrets:
        why = [f"{p} ({sel.secret_reasons.get(p, 'secret')})" for p in sel.excluded_secrets]
        out(f"  excluded as secrets ({len(sel.excluded_secrets)}): {_names(why)}")
        out("    (list them in .sandboxruninclude to upload them anyway)")
    if sel.excluded_by_ignorefile:
        out(f"  excluded by .sandboxrunignore: {len(sel.excluded_by_ignorefile):,} files")
    if sel.included_on_purpose:
        out(
            f"  included on purpose by .sandboxruninclude ({len(sel.included_on_purpose)}): "
            f"{_names(sel.included_on_purpose)}",
        )
    if sel.skipped:
        shown = [f"{p} ({why})" for p, why in sel.skipped]
        out(f"  skipped ({len(sel.skipped)}): {_names(shown, 5)}")
    if result is not None:
        out(
            f"wrote {result.path}: {_mb(result.bytes_out)} {result.compression} "
            f"in {result.seconds:.2f}s",
        )


def tarball_path(root: Path, output: Path | None, compression: str) -> Path:
    """Where the tarball goes: ``output`` (a file, or a directory to put it in), else the
    current directory, unless that is inside the packed tree (then next to the tree), so the
    tarball never lands in the repository it packs."""
    name = f"{root.name or 'root'}{SUFFIXES[compression]}"
    if output is not None:
        return output / name if output.is_dir() else output
    cwd = Path.cwd().resolve()
    if cwd == root or root in cwd.parents:
        return root.parent / name
    return cwd / name


def _submodule_paths(root: Path) -> list[str]:
    """The submodules of ``root``'s HEAD that are checked out (what --include-submodules adds)."""
    from sandboxrun.errors import UsageError
    from sandboxrun.gitops import git
    from sandboxrun.sandbox.submodules import submodule_entries

    top = git(root, "rev-parse", "--show-toplevel", check=False)
    if not top.ok or Path(top.stdout.strip()).resolve() != root:
        raise UsageError(
            f"--include-submodules needs the top of a git work tree; {root} is not one",
            "Pass the repository's top directory, or leave out --include-submodules.",
        )
    return [p for p, _ in submodule_entries(root, "HEAD") if (root / p / ".git").exists()]


def _pack(
    root: Path, output: Path, compression: str, show_progress: bool, submodules: list[str]
) -> PackResult:
    if not show_progress:
        # no selection given: pack_worktree selects while it packs, which is faster
        return pack_worktree(root, output, compression=compression, submodules=submodules)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    sel = select_files(root, submodules=submodules)  # a progress bar needs the total up front
    with Progress(
        "packing",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("pack", total=sel.total_bytes)
        return pack_worktree(
            root,
            output,
            compression=compression,
            selection=sel,
            submodules=submodules,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def pack(
    path: Annotated[Path, typer.Argument(help="Work tree (or plain directory) to pack.")] = Path(
        "."
    ),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Tarball (or directory) to write to. Default: ./<directory name>.tar.gz, "
            "or next to the directory when run inside it.",
        ),
    ] = None,
    compression: Annotated[
        Compression,
        typer.Option(
            "--compression",
            "-c",
            help="gzip (parallel, readable by any tar), zstd (needs the zstd program) or none.",
        ),
    ] = Compression.gzip,
    list_files: Annotated[
        bool,
        typer.Option("--list", help="Only print the files that would be uploaded, one per line."),
    ] = False,
    include_submodules: Annotated[
        bool,
        typer.Option(
            "--include-submodules",
            help="Also the files of checked-out submodules, as `run --include-submodules` "
            "uploads them.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
) -> None:
    submodules = _submodule_paths(path.resolve()) if include_submodules else []
    if list_files:
        sel = select_files(path, submodules=submodules)
        if as_json:
            print_json(sel.to_dict())
        else:
            for name in sel.files:
                console.print(name, markup=False, highlight=False, soft_wrap=True)
            for name in sel.excluded_secrets:  # stderr: stdout stays a clean file list
                reason = sel.secret_reasons.get(name, "secret")
                err_console.print(
                    f"excluded: {name} ({reason})", markup=False, highlight=False, soft_wrap=True
                )
        return
    root = path.resolve()
    target = tarball_path(root, output, compression.value)
    show_progress = not as_json and err_console.is_terminal
    result = _pack(root, target, compression.value, show_progress, submodules)
    if as_json:
        data = result.selection.to_dict()
        del data["files"]  # --list --json gives the full list; this stays readable
        data["output"] = result.to_dict()
        print_json(data)
    else:
        _summary(result.selection, result)


def register(app: typer.Typer) -> None:
    """Add the ``pack`` command to ``app``."""
    app.command("pack", help=PACK_HELP)(pack)
