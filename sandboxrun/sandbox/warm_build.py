"""Making and deleting warm snapshots (``sandboxrun warm``); using them is ``sandbox/warm.py``.

One sandbox gets the repository at a commit, packed by the same packer as every upload (same
secret checks), runs the optional setup command with no credentials, commits the baseline (so
the index is ready for every run) and is snapshotted; the snapshot id and its manifest are
cached by :class:`~sandboxrun.sandbox.warm.WarmCache`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxrun import gitops
from sandboxrun.errors import BackendError, SandboxrunError
from sandboxrun.sandbox.warm import (
    WARM_DIR,
    WarmCache,
    WarmEntry,
    commit_manifest,
    discard_sandbox,
    warm_key,
)

if TYPE_CHECKING:
    from sandboxrun.config import Settings


#: what works without E2B when a warm snapshot cannot be made or deleted
_NO_WARM = (
    "or do without: runs start cold without a warm snapshot (and `--backend local` runs need none)"
)


def build_snapshot(
    settings: Settings,
    repo: Path,
    *,
    base: str = "HEAD",
    setup: str | None = None,
    say: Callable[[str], None] | None = None,
) -> WarmEntry:
    """Upload ``repo`` at ``base`` into one sandbox, run ``setup``, snapshot it; cache it.

    A snapshot already cached for the same repository, commit, template and setup is reused.
    ``say(text)`` reports progress to a person.
    """
    from sandboxrun.sandbox.backends import get_backend
    from sandboxrun.sandbox.backends.e2b import require_key
    from sandboxrun.sandbox.provision import BASELINE_SCRIPT, sh
    from sandboxrun.sync.pack import SUFFIXES, pack_worktree

    say = say or (lambda _text: None)
    root = gitops.main_worktree(gitops.repo_root(repo))
    commit = gitops.resolve_commit(root, base)
    key = warm_key(root, commit, settings.template, setup)
    cache = WarmCache(settings.home)
    if (old := cache.get(key)) is not None and cache.manifest(key) is not None:
        return old
    require_key(_NO_WARM)
    backend = get_backend("e2b", settings)
    backend.check_ready(dry_run=True)
    work = cache.dir / f"tree-{key}-{os.getpid()}"
    cache.dir.mkdir(parents=True, exist_ok=True)
    compression = settings.compression
    tarball = cache.dir / f"upload-{key}-{os.getpid()}{SUFFIXES[compression]}"
    gitops.git(root, "worktree", "add", "--detach", "-q", str(work), commit)
    sandbox = None
    try:
        say(f"packing {root.name} at {commit[:12]}")
        packed = pack_worktree(
            work, tarball, compression=compression,
            scan_cache=settings.home / "cache" / "clean-contents",
        )  # fmt: skip
        files = packed.selection.files
        manifest = commit_manifest(root, commit, files)
        say(f"uploading {len(files)} files ({packed.bytes_out} bytes) to one sandbox")
        sandbox = backend.create(
            f"warm-{key[:8]}", timeout_s=3600, env={},
            metadata={"sandboxrun_warm": key, "repo": root.name},
        )  # fmt: skip
        sandbox.upload_and_unpack(tarball, compression, sandbox.repo_dir)
        if setup:
            say(f"running the setup command: {setup}")
            res = sandbox.exec(["bash", "-lc", setup], cwd=sandbox.repo_dir, timeout=3600)
            if not res.ok:
                raise BackendError(
                    f"the setup command failed (exit {res.exit_code}): {res.error_text()[-800:]}",
                    "Fix the command (it runs in the repository, in the sandbox) and try again.",
                )
        sh(sandbox, BASELINE_SCRIPT, sandbox.repo_dir)  # the index, ready for every run
        listing = b"".join(f.encode(errors="surrogateescape") + b"\0" for f in manifest)
        sandbox.write_file(f"{sandbox.home}/{WARM_DIR}/files.lst", listing)
        say("snapshotting it")
        snapshot_id = sandbox.snapshot()  # type: ignore[attr-defined]
    except SandboxrunError as exc:
        if exc.hint is None:  # a backend or transfer failure says what, not what next
            exc.hint = (
                "Nothing was cached and its sandbox is removed: run `sandboxrun warm` again "
                "(runs start cold meanwhile, which only takes longer)."
            )
        raise
    finally:
        if sandbox is not None:
            discard_sandbox(sandbox)
        tarball.unlink(missing_ok=True)
        gitops.git(root, "worktree", "remove", "--force", str(work), check=False)
    entry = WarmEntry(
        key=key, snapshot_id=snapshot_id, repo=str(root), commit=commit,
        template=settings.template, setup=setup, created_at=time.time(),
        files=len(manifest), bytes=packed.bytes_in,
    )  # fmt: skip
    # older snapshots of the same repository, template and setup are replaced by this one
    for other in cache.list():
        if (
            other.repo == entry.repo
            and other.template == entry.template
            and ((other.setup or None) == setup)
        ):
            with contextlib.suppress(SandboxrunError):
                backend.delete_snapshot(other.snapshot_id)  # type: ignore[attr-defined]
            cache.forget(other.key)
    cache.put(entry, manifest)
    return entry


def delete_snapshots(settings: Settings, repo: Path) -> list[str]:
    """Delete every cached snapshot of ``repo`` on E2B and forget it; returns their ids.

    A snapshot holds the repository's files on E2B until it is deleted.
    """
    from sandboxrun.sandbox.backends import get_backend
    from sandboxrun.sandbox.backends.e2b import require_key

    root = gitops.main_worktree(gitops.repo_root(repo))
    cache = WarmCache(settings.home)
    mine = [e for e in cache.list() if e.repo == str(root)]
    if not mine:
        return []
    require_key(_NO_WARM)
    backend = get_backend("e2b", settings)
    backend.check_ready(dry_run=True)
    for entry in mine:
        backend.delete_snapshot(entry.snapshot_id)  # type: ignore[attr-defined]
        cache.forget(entry.key)
    return [e.snapshot_id for e in mine]
