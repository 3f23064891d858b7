"""Warm starts: upload the repository once, start many E2B sandboxes from a snapshot of it.

(Making and deleting snapshots is ``sandbox/warm_build.py``.)

``sandboxrun warm`` (and ``fanout``, when it pays off) packs the repository at a base commit,
unpacks it in one sandbox, runs an optional setup command (``npm ci``), commits the baseline
there and snapshots that sandbox (``create_snapshot``). The snapshot id is cached under the
sandboxrun home per repository, base commit, template and setup, with the *manifest* of what it
holds: every uploaded path with its git mode and blob id.

A run started from the snapshot (:func:`warm_start`) compares that manifest with its own
worktree's (``git ls-files -s`` plus hashing only the files that differ from the index) and
uploads only the difference: the changed files through the same packer (so the same secret
checks), and the list of deleted ones. In the sandbox the baseline is made again exactly as a
cold start makes it, then checked against the local manifest (one digest of the index entries
of every uploaded path; files ignored there are hashed from disk). When anything does not hold
-- the snapshot is gone, too much changed since it was made, the check fails -- the run falls
back to a cold start (a full upload) and says so once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxrun import gitops
from sandboxrun.errors import SandboxrunError, TemplateNotFoundError
from sandboxrun.sandbox.backends.base import Sandbox
from sandboxrun.store import Session, Status

if TYPE_CHECKING:
    from sandboxrun.sandbox.provision import Provisioner

#: path -> (git mode, blob id), e.g. ``{"src/a.py": ("100644", "e69de29b...")}``
Manifest = dict[str, tuple[str, str]]

#: a snapshot whose difference to the run's files is above this share of their bytes is
#: stale: a full upload costs about the same, and `sandboxrun warm` should make a new one
STALE_FRACTION = 0.5
#: ...and above this many bytes: a small upload is cheap, however large a share it is
STALE_MIN_BYTES = 1 << 20
#: from this many tasks on, `fanout --warm auto` makes a snapshot when none is cached
WARM_MIN_TASKS = 3
#: where a warm snapshot keeps the list of the files it holds (outside the repository)
WARM_DIR = ".sandboxrun-warm"

# Apply a delta in a sandbox started from a snapshot: "$1" repo, "$2" deleted paths, "$3"
# changed paths (both NUL lists, already unpacked), "$4" where to write the run's file list,
# "$5" the snapshot's file list. Changed and deleted paths leave the index, so the baseline
# re-hashes them; the branch is deleted, so the baseline commit has no parent, as cold.
WARM_APPLY_SCRIPT = r"""
set -e
cd "$1"
export LC_ALL=C GIT_LITERAL_PATHSPECS=1
# Files the snapshot holds untouched keep their size and mtime but may get new inodes and
# ctimes (a copy): git then trusts size and whole-second mtime, and hashes only what changed
# (the changed and deleted paths leave the index below, so those are hashed whatever it sees).
git config core.checkStat minimal
git config core.trustctime false
if [ -s "$2" ]; then xargs -0 -r rm -f -- < "$2"; fi
cat -- "$2" "$3" > "$4.touched"
if [ -s "$4.touched" ]; then
  git rm -q -r --cached --ignore-unmatch --pathspec-from-file="$4.touched" --pathspec-file-nul >/dev/null
fi
git update-ref -d HEAD 2>/dev/null || true
sort -z -u -- "$2" > "$4.d"
sort -z -u -- "$3" > "$4.c"
sort -z -u -- "$5" | comm -z -23 - "$4.d" | sort -z -m -u - "$4.c" > "$4"
rm -f -- "$4.touched" "$4.d" "$4.c"
"""

# The check after the baseline: "$1" repo, "$2" the run's file list (sorted, NUL). Prints the
# digest of the index entries of those files (entries the run did not upload, e.g. made by the
# setup command and not ignored, are left out in a copy of the index), then "oid path\0" (or
# "MISSING path\0") for each listed file that is not in the index (a .gitignore there leaves it
# out), hashed from disk. Lists are joined with `comm` (index order is byte order): no pathspecs,
# whose matching would cost files x paths.
WARM_VERIFY_SCRIPT = r"""
set -e
cd "$1"
export LC_ALL=C GIT_LITERAL_PATHSPECS=1
git ls-files -z > "$2.all"
comm -z -23 -- "$2.all" "$2" > "$2.extra"
if [ -s "$2.extra" ]; then
  cp -- "$(git rev-parse --git-path index)" "$2.index"
  GIT_INDEX_FILE="$2.index" git rm -q --cached --pathspec-from-file="$2.extra" --pathspec-file-nul
  GIT_INDEX_FILE="$2.index" git ls-files -s -z > "$2.idx"
  rm -f -- "$2.index"
else
  git ls-files -s -z > "$2.idx"
fi
printf 'DIGEST %s\n' "$(sha256sum < "$2.idx" | cut -d' ' -f1)"
comm -z -13 -- "$2.all" "$2" | while IFS= read -r -d '' p; do
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    printf '%s %s\0' "$(git hash-object -- "$p")" "$p"
  else
    printf 'MISSING %s\0' "$p"
  fi
done
"""


# -- the cache ----------------------------------------------------------------------------------


@dataclass
class WarmEntry:
    """One cached snapshot: what it holds and where it came from."""

    key: str
    snapshot_id: str
    repo: str
    commit: str
    template: str
    setup: str | None
    created_at: float
    files: int
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def warm_key(repo: Path, commit: str, template: str, setup: str | None) -> str:
    """The cache key of a snapshot: repository, base commit, template and setup command."""
    text = json.dumps([str(repo), commit, template, setup or ""])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class WarmCache:
    """Snapshots made on this machine: ``<home>/warm/<key>.json`` and its manifest."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "warm"

    def get(self, key: str) -> WarmEntry | None:
        try:
            data = json.loads((self.dir / f"{key}.json").read_text())
            return WarmEntry(**data)
        except (OSError, ValueError, TypeError):
            return None

    def find(self, repo: Path, template: str, setup: str | None) -> WarmEntry | None:
        """The newest snapshot of ``repo`` for this template and setup (any base commit)."""
        found = [
            e
            for e in self.list()
            if e.repo == str(repo) and e.template == template and (e.setup or None) == setup
        ]
        return max(found, key=lambda e: e.created_at, default=None)

    def list(self) -> list[WarmEntry]:
        if not self.dir.is_dir():
            return []
        entries = (self.get(p.stem) for p in sorted(self.dir.glob("*.json")))
        return [e for e in entries if e is not None]

    def manifest(self, key: str) -> Manifest | None:
        try:
            raw = json.loads((self.dir / f"{key}.manifest.json").read_text())
        except (OSError, ValueError):
            return None
        return {p: (m, o) for p, (m, o) in raw.items()}

    def put(self, entry: WarmEntry, manifest: Manifest) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, data in (
            (f"{entry.key}.manifest.json", {p: list(v) for p, v in manifest.items()}),
            (f"{entry.key}.json", entry.to_dict()),  # last: the entry exists once complete
        ):
            tmp = self.dir / f".{name}.tmp"
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.dir / name)

    def forget(self, key: str) -> None:
        for name in (f"{key}.json", f"{key}.manifest.json"):
            (self.dir / name).unlink(missing_ok=True)


# -- manifests and decisions (pure, or plain git) --------------------------------------------


def parse_stage_listing(raw: bytes) -> Manifest:
    """``git ls-files -s -z`` / ``ls-tree -r -z`` output as a manifest (stage-0 / blobs only)."""
    out: Manifest = {}
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] in (b"blob",):  # ls-tree: mode type oid
            mode, oid = parts[0], parts[2]
        elif len(parts) == 3 and parts[2] == b"0":  # ls-files -s: mode oid stage
            mode, oid = parts[0], parts[1]
        else:
            continue
        out[path.decode(errors="surrogateescape")] = (mode.decode(), oid.decode())
    return out


def commit_manifest(repo: Path, commit: str, files: list[str]) -> Manifest:
    """Modes and blob ids of ``files`` as they are in ``commit``."""
    tree = parse_stage_listing(gitops.git_bytes(repo, "ls-tree", "-r", "-z", "--full-tree", commit))
    return {f: tree[f] for f in files if f in tree}


def worktree_manifest(worktree: Path, files: list[str]) -> Manifest:
    """Modes and blob ids of ``files`` as they are on disk in ``worktree``.

    The index has them for tracked files git sees unchanged (a stat check); only the others
    (changed, untracked) are hashed, with ``git hash-object`` so attributes apply as in ``add``.
    """
    index = parse_stage_listing(gitops.git_bytes(worktree, "ls-files", "-s", "-z"))
    dirty = {
        p.decode(errors="surrogateescape")
        for p in gitops.git_bytes(worktree, "diff-files", "--name-only", "-z").split(b"\0")
        if p
    }
    out: Manifest = {}
    to_hash: list[str] = []
    for f in files:
        if f in index and f not in dirty:
            out[f] = index[f]
        else:
            to_hash.append(f)
    listable = [f for f in to_hash if "\n" not in f and not f.startswith(('"', " "))]
    oids: dict[str, str] = {}
    if listable:
        text = "".join(f"{f}\n" for f in listable).encode(errors="surrogateescape")
        res = gitops.git(worktree, "hash-object", "--stdin-paths", input=text)
        oids.update(zip(listable, res.stdout.split(), strict=True))
    for f in to_hash:
        if f not in oids:
            oids[f] = gitops.git(worktree, "hash-object", "--", f).stdout.strip()
        st = os.lstat(worktree / f)
        out[f] = ("100755" if st.st_mode & stat.S_IXUSR else "100644", oids[f])
    return out


def stale_at(repo: Path, entry: WarmEntry, manifest: Manifest, commit: str) -> str | None:
    """Why the snapshot ``entry`` is too far behind ``commit`` (committed files only), or None.

    ``fanout --warm auto`` makes a new snapshot then, rather than have every task fall back.
    """
    if entry.commit == commit:
        return None
    changed_bytes = total_bytes = changed = total = 0
    out = gitops.git_bytes(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", commit)
    for record in out.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        parts = meta.split()
        if len(parts) != 4 or parts[1] != b"blob" or not parts[3].isdigit():
            continue
        size = int(parts[3])
        total, total_bytes = total + 1, total_bytes + size
        mode, oid = parts[0].decode(), parts[2].decode()
        if manifest.get(path.decode(errors="surrogateescape")) != (mode, oid):
            changed, changed_bytes = changed + 1, changed_bytes + size
    return stale_reason(changed_bytes, total_bytes, changed, total)


def plan_delta(snapshot: Manifest, wanted: Manifest) -> tuple[list[str], list[str]]:
    """(changed or new paths, deleted paths) that turn ``snapshot`` into ``wanted``."""
    changed = sorted(p for p, v in wanted.items() if snapshot.get(p) != v)
    deleted = sorted(p for p in snapshot if p not in wanted)
    return changed, deleted


def warm_plan(mode: str, backend: str, n_tasks: int, cached: bool) -> str:
    """How a fan-out group starts its sandboxes: ``cold`` (full uploads), ``use`` (the cached
    snapshot) or ``build`` (make one first). ``mode`` is ``--warm``: auto, on or off."""
    if backend != "e2b" or mode == "off":
        return "cold"
    if cached:
        return "use"
    return "build" if mode == "on" or n_tasks >= WARM_MIN_TASKS else "cold"


def stale_reason(changed_bytes: int, total_bytes: int, changed: int, total: int) -> str | None:
    """Why a snapshot is too far behind to be worth it (a cold start is), or None."""
    if changed_bytes > STALE_MIN_BYTES and changed_bytes > STALE_FRACTION * max(total_bytes, 1):
        return (
            f"the warm snapshot is stale ({changed} of {total} files, "
            f"{changed_bytes} of {total_bytes} bytes differ)"
        )
    return None


def listing_digest(manifest: Manifest, paths: list[str]) -> str:
    """sha256 of ``git ls-files -s -z`` as it prints ``paths`` (index order: bytes)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.encode(errors="surrogateescape")):
        mode, oid = manifest[p]
        h.update(f"{mode} {oid} 0\t".encode() + p.encode(errors="surrogateescape") + b"\0")
    return h.hexdigest()


def check_verify_output(out: bytes, manifest: Manifest) -> str | None:
    """Compare :data:`WARM_VERIFY_SCRIPT`'s output with ``manifest``; None when they match,
    else what differs (for the person, and for the fall-back message)."""
    head, _, rest = out.partition(b"\n")
    if not head.startswith(b"DIGEST "):
        return f"the sandbox's check printed {head[:200]!r}"
    not_indexed: dict[str, str] = {}
    for record in rest.split(b"\0"):
        if record:
            oid, _, path = record.partition(b" ")
            not_indexed[path.decode(errors="surrogateescape")] = oid.decode()
    bad = sorted(p for p, oid in not_indexed.items() if manifest.get(p, ("", ""))[1] != oid)
    if bad:
        return "files differ from this machine's: " + ", ".join(bad[:5])
    indexed = [p for p in manifest if p not in not_indexed]
    if head[7:].decode().strip() != listing_digest(manifest, indexed):
        return "the baseline's index differs from this machine's files"
    return None


# -- using a snapshot -----------------------------------------------------------------------


class _Fallback(Exception):
    """The warm start cannot be trusted or used: start cold, saying why."""


@dataclass
class Delta:
    """What a run uploads on top of a snapshot, and the files it must end up with."""

    changed: list[str]
    deleted: list[str]
    tarball: Path | None
    compression: str
    #: every file the run uploads (the snapshot's plus the changes), as on this machine
    wanted: Manifest


def warm_start(prov: Provisioner, session: Session, key: str) -> Sandbox | None:
    """Start the session's sandbox from the cached snapshot ``key``; None: start cold.

    Does what :meth:`Provisioner.pack`, ``create_sandbox`` and ``upload`` do for a cold start
    (same journal events and columns), uploading only the difference. Any reason to fall back
    is said once, as a warning in the session's log.
    """
    cache = WarmCache(prov.settings.home)
    entry = cache.get(key)
    manifest = cache.manifest(key) if entry else None
    if entry is None or manifest is None:
        prov.journal.warn("no warm snapshot is cached any more: full upload", mark="warm")
        return None
    sandbox: Sandbox | None = None
    delta: Delta | None = None
    try:
        delta = _pack_delta(prov, session, manifest)
        sandbox = _create_from(prov, session, entry)
        _apply(prov, sandbox, delta)
        prov.journal.event(
            "warm",
            {"snapshot": entry.snapshot_id, "commit": entry.commit,
             "changed": len(delta.changed), "deleted": len(delta.deleted),
             "bytes": delta.tarball.stat().st_size if delta.tarball else 0},
        )  # fmt: skip
        return sandbox
    except TemplateNotFoundError:
        cache.forget(key)
        prov.journal.warn(
            f"the warm snapshot {entry.snapshot_id} no longer exists on E2B: full upload "
            "(`sandboxrun warm` makes a new one)",
            mark="warm",
        )
    except _Fallback as exc:
        prov.journal.warn(f"{exc}: full upload", mark="warm")
    except BaseException:
        if sandbox is not None:  # not the run's yet: nobody else would remove it
            discard_sandbox(sandbox)
        raise
    finally:
        if delta is not None and delta.tarball is not None:
            delta.tarball.unlink(missing_ok=True)
    if sandbox is not None:
        discard_sandbox(sandbox)
        prov.journal.update(sandbox_id=None, sandbox_home=None, sandbox_created_at=None)
    return None


def discard_sandbox(sandbox: Sandbox) -> None:
    """Remove a sandbox that is nobody's (yet): best effort, it expires anyway."""
    with contextlib.suppress(SandboxrunError):  # else it expires on its own
        sandbox.destroy()


def _pack_delta(prov: Provisioner, session: Session, snapshot: Manifest) -> Delta:
    """Select the worktree's files, find what differs from the snapshot, pack only that."""
    from sandboxrun.sandbox.collect import record_branch_head
    from sandboxrun.sync.pack import SUFFIXES, pack_worktree, select_files

    assert session.worktree is not None
    worktree = Path(session.worktree)
    prov.journal.phase(Status.PACKING, f"{worktree} (warm: only what changed)")
    record_branch_head(prov.journal, worktree)
    scan_cache = prov.settings.home / "cache" / "clean-contents"
    compression = session.options.get("compression", prov.settings.compression)
    tarball: Path | None = None
    with prov.times.measure("pack"):
        sel = select_files(worktree, scan_cache=scan_cache)
        wanted = worktree_manifest(worktree, sel.files)
        changed, deleted = plan_delta(snapshot, wanted)
        sizes = {f: (worktree / f).stat().st_size for f in changed}
        reason = stale_reason(sum(sizes.values()), sel.total_bytes, len(changed), len(wanted))
        if reason:
            raise _Fallback(reason)
        bytes_out = 0
        if changed:
            prov.artifacts.mkdir(parents=True, exist_ok=True)
            tarball = prov.artifacts / f"warm-delta{SUFFIXES[compression]}"
            packed = pack_worktree(
                worktree,
                tarball,
                compression=compression,
                selection=replace(sel, files=changed, total_bytes=sum(sizes.values())),
                scan_cache=scan_cache,
            )
            bytes_out = packed.bytes_out
            # a changed file the content check kept out is not uploaded: it must not stay in
            # the sandbox either (the snapshot may hold an older copy)
            left_out = set(changed) - set(packed.selection.files)
            if left_out:
                changed = [f for f in changed if f not in left_out]
                deleted = sorted(set(deleted) | (left_out & set(snapshot)))
                for f in left_out:
                    wanted.pop(f, None)
            sel = replace(sel, excluded_secrets=packed.selection.excluded_secrets,
                          secret_reasons=packed.selection.secret_reasons)  # fmt: skip
    prov.journal.event(
        "pack",
        {"files": len(changed), "bytes_in": sum(sizes.get(f, 0) for f in changed),
         "bytes_out": bytes_out, "compression": compression, "warm": True,
         "deleted": len(deleted), "excluded_secrets": list(sel.excluded_secrets),
         "secret_reasons": dict(sel.secret_reasons),
         "excluded_by_ignorefile": len(sel.excluded_by_ignorefile),
         "seconds": round(prov.times["pack"], 3)},
    )  # fmt: skip
    if sel.excluded_secrets:
        why = (f"{p} ({sel.secret_reasons.get(p, 'secret')})" for p in sel.excluded_secrets)
        prov.journal.reporter.warning("kept out of the upload as secrets: " + ", ".join(why))
    return Delta(changed, deleted, tarball, compression, wanted)


def _create_from(prov: Provisioner, session: Session, entry: WarmEntry) -> Sandbox:
    """A sandbox started from the snapshot, recorded in the session's row."""
    from sandboxrun.sandbox.provision import PROVISION_MARGIN

    assert session.repo is not None
    prov.journal.phase(Status.PROVISIONING, f"backend {session.backend}, warm snapshot")
    rate = session.options.get("create_rate")
    if rate and hasattr(prov.backend, "create_rate"):
        prov.backend.create_rate = float(rate)
    with prov.times.measure("create"):
        created = time.time()
        sandbox = prov.backend.create(  # type: ignore[call-arg]
            session.id,
            timeout_s=PROVISION_MARGIN,
            env=prov.backend.agent_env(dry_run=bool(session.options.get("dry_run"))),
            metadata={"sandboxrun_session": session.id, "repo": Path(session.repo).name},
            template=entry.snapshot_id,
        )
        prov.journal.update(
            sandbox_id=sandbox.id, sandbox_home=sandbox.home, sandbox_created_at=created
        )
    return sandbox


def _apply(prov: Provisioner, sandbox: Sandbox, delta: Delta) -> None:
    """Bring the snapshot's repository to the session's files, commit the baseline, check it."""
    from sandboxrun.sandbox.gitpack import save_baseline
    from sandboxrun.sandbox.provision import BASELINE_SCRIPT, sh

    ctl = f"{sandbox.home}/{WARM_DIR}"

    def nul(paths: list[str]) -> bytes:
        return b"".join(p.encode(errors="surrogateescape") + b"\0" for p in paths)

    with prov.times.measure("upload"):
        sandbox.write_file(f"{ctl}/deleted.lst", nul(delta.deleted))
        sandbox.write_file(f"{ctl}/changed.lst", nul(delta.changed))
        if delta.tarball is not None:
            sandbox.upload_and_unpack(delta.tarball, delta.compression, sandbox.repo_dir)
        sh(sandbox, WARM_APPLY_SCRIPT, sandbox.repo_dir, f"{ctl}/deleted.lst",
           f"{ctl}/changed.lst", f"{ctl}/run.lst", f"{ctl}/files.lst")  # fmt: skip
    with prov.times.measure("baseline"):
        out = sh(sandbox, BASELINE_SCRIPT, sandbox.repo_dir)
        base = out.decode().strip().splitlines()[-1]
        res = sandbox.exec(
            ["bash", "-c", WARM_VERIFY_SCRIPT, "verify", sandbox.repo_dir, f"{ctl}/run.lst"],
            timeout=600,
        )
        if not res.ok:
            raise _Fallback(f"checking the warm start failed: {res.error_text()[-300:]}")
        problem = check_verify_output(res.stdout, delta.wanted)
        if problem:
            raise _Fallback(f"the warm start does not match a full upload ({problem})")
        prov.journal.update(sandbox_base=base)
        save_baseline(sandbox, base, prov.artifacts)
