"""Submodules in a sandbox run: left out by default, included on request.

A run's worktree is a fresh ``git worktree``: its submodules are empty directories (gitlinks).
By default their contents are not uploaded and the run says so, naming the flag. With
``--include-submodules`` (or ``include_submodules = true`` in ``.sandboxrun.toml``) each
submodule's files *at the commit the base records* are written into the run's worktree under
its path (``git archive`` from the submodule checkout in the main repository; no ``.git``, so
the parent repository sees nothing new) and packed like any other file: the submodule's own
``.gitignore``, ``.sandboxrunignore`` and the secrets check apply to them.

What comes back: the parent branch records a submodule as a commit id, not as files, so the
agent's changes inside a submodule path are never applied to the branch. They are kept back at
collection (:mod:`sandboxrun.sync.replay`) and written as one patch per submodule, with paths
relative to the submodule (``git -C PATH apply FILE`` applies it there).
"""

from __future__ import annotations

import shlex
import tarfile
import tempfile
from pathlib import Path

from sandboxrun import gitops
from sandboxrun.errors import UsageError

#: how to include them, named in every message about submodules left out
FLAG = "--include-submodules"


def submodule_entries(repo: Path, commit: str) -> list[tuple[str, str]]:
    """``(path, commit)`` of each submodule (gitlink) in ``commit``'s tree."""
    out = gitops.git(repo, "ls-tree", "-r", "-z", "--full-tree", commit).stdout
    entries = []
    for entry in out.split("\0"):
        meta, _, path = entry.partition("\t")
        if meta.startswith("160000 "):
            entries.append((path, meta.split()[2]))
    return entries


def _shown(paths: list[str]) -> str:
    return ", ".join(paths[:5]) + (f" (+{len(paths) - 5} more)" if len(paths) > 5 else "")


def left_out_note(paths: list[str]) -> str:
    """What a run without the flag does not take along, and how to take it."""
    return (
        f"this repository has {len(paths)} submodule(s) ({_shown(paths)}); their contents are "
        "not uploaded, so the agent sees them as empty directories and cannot change them. "
        f"Pass {FLAG} (or set include_submodules = true in .sandboxrun.toml) to upload them; "
        "the agent's changes inside them then come back as a patch per submodule."
    )


def included_note(paths: list[str]) -> str:
    """What an including run does with the submodules."""
    return (
        f"{len(paths)} submodule(s) included ({_shown(paths)}) at the commits the base records; "
        "the agent's changes inside them are kept as a patch per submodule, not applied to the "
        "branch (the branch records a submodule as a commit, not as files)."
    )


def check_available(repo: Path, entries: list[tuple[str, str]]) -> None:
    """Refuse, before anything is created, submodules whose recorded commit is not here."""
    missing = []
    for path, commit in entries:
        sub = repo / path
        ok = (sub / ".git").exists() and gitops.git(
            sub, "cat-file", "-e", f"{commit}^{{commit}}", check=False
        ).ok
        if not ok:
            missing.append(f"{path} ({commit[:12]})")
    if missing:
        raise UsageError(
            f"cannot include submodule(s) not checked out at the recorded commit here: "
            f"{', '.join(missing)}",
            f"Run `git -C {shlex.quote(str(repo))} submodule update --init` first, or leave out "
            f"{FLAG}.",
        )


def materialize(repo: Path, worktree: Path, entries: list[tuple[str, str]]) -> None:
    """Write each submodule's files at its recorded commit into ``worktree`` under its path."""
    for path, commit in entries:
        dest = worktree / path
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sbr-submodule-") as tmp:
            archive = Path(tmp) / "sub.tar"
            gitops.git(repo / path, "archive", "--format=tar", "-o", str(archive), commit)
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter=_safe)


def _safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter (no links out of ``dest``, no devices, no absolute names), but
    a member it refuses is left out instead of failing the run (pack skips links anyway)."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None
