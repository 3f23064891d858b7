"""The producer: the agent's work as one git pack, made in the sandbox and brought here.

Inside the sandbox, a fixed script packs the agent's commits since the baseline, the tree of
whatever it left uncommitted, and the baseline's trees into one git pack
(:data:`COLLECT_SCRIPT`). The sandbox's repository is data, not configuration: the script never
reads its config, hooks, index extensions or attributes (a scratch git directory of ours
borrows only its objects), so an agent's ``core.fsmonitor`` or hook never runs. When the
sandbox's git is broken (``.git`` deleted, unborn or unreadable ``HEAD``, history rewritten past
the baseline) it packs the final tree instead, leaving out the objects we already hold from the
baseline.

The same producer makes the final collection, every checkpoint (incremental: given the head
and tree of the last checkpoint, it leaves out every object reachable from them) and
``download``'s snapshot. The pack comes out through :func:`~.transfer.fetch_file` (streamed,
retried, resumed) and is verified (``git index-pack``) before anything relies on it;
:mod:`sandboxrun.sync.replay` checks and rebuilds it, :mod:`sandboxrun.sandbox.apply` lands it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandboxrun.errors import BackendError, PatchRejectedError, SandboxrunError
from sandboxrun.sandbox.backends.base import Sandbox, control_dir
from sandboxrun.sandbox.transfer import fetch_file, retrying
from sandboxrun.store import Session
from sandboxrun.sync.quarantine import BASELINE_PACK, MANIFEST, WORK_PACK, Manifest

log = logging.getLogger(__name__)

# Arguments come in through "$@" only: repo, baseline commit, control dir, optionally a file
# listing object ids we already hold (left out of a tree-mode pack), and for a checkpoint after
# the first, the head commit and tree the last one brought back (everything reachable from them
# is left out; so are the baseline's trees, which the first one carried). Git runs with no
# system or global config, HOME in our control dir, and GIT_DIR a fresh scratch repository
# whose only link to the agent's is an alternates entry for its objects; HEAD is read from the
# files by hand. info/attributes (highest precedence) switches off every content conversion
# the tree's .gitattributes could ask for, so blobs are the bytes on disk.
COLLECT_SCRIPT = r"""
set -u
repo=$1; base=$2; ctl=$3; known=${4:-}; since=${5:-}; since_tree=${6:-}
S="$ctl/collect.git"
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES \
  GIT_CONFIG GIT_CONFIG_PARAMETERS GIT_CONFIG_COUNT GIT_NAMESPACE GIT_COMMON_DIR GIT_EXEC_PATH \
  GIT_TEMPLATE_DIR GIT_EXTERNAL_DIFF GIT_PAGER GIT_EDITOR GIT_SSH GIT_SSH_COMMAND GIT_ASKPASS
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_ATTR_NOSYSTEM=1 HOME="$ctl" \
  XDG_CONFIG_HOME="$ctl/no-config" GIT_TERMINAL_PROMPT=0 GIT_OPTIONAL_LOCKS=0 LC_ALL=C
# The files may belong to the agent's own user (an isolated sandbox): we read them as data
# through a git directory of ours, so git's ownership check has nothing to protect here.
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
mkdir -p -- "$ctl" || exit 70
rm -rf -- "$ctl/work.pack.tmp" "$ctl/collect.out.tmp"
if [ -n "$since" ] && [ ! -L "$S" ] && [ -d "$S/objects" ] && [ ! -L "$S/objects" ]; then
  # A later checkpoint: keep only the scratch objects (the last checkpoint's leftover tree is
  # among them, to be left out); config, hooks and the rest are made afresh, as always.
  find "$S" -mindepth 1 -maxdepth 1 ! -name objects -exec rm -rf -- {} + || exit 70
  rm -f -- "$S/objects/info/alternates"
else rm -rf -- "$S"; fi
git init -q --bare --template= "$S" || exit 70
export GIT_DIR="$S" GIT_WORK_TREE="$repo" GIT_INDEX_FILE="$S/collect.index"
# Our settings appended in one write (the shell's printf: no process; twenty `git config`
# calls were a third of the script's CPU): a later value of a key wins, so bare = false here
# overrides the bare = true git init wrote above it. (git init made the file just now.)
{ [ -f "$S/config" ] && [ ! -L "$S/config" ]; } || exit 70
printf '%s\n' '[core]' 'bare = false' 'hooksPath = /dev/null' 'fsmonitor = false' \
  'autocrlf = false' 'safecrlf = false' 'bigFileThreshold = 1m' 'untrackedCache = false' \
  'splitIndex = false' 'fileMode = true' 'symlinks = true' 'ignoreCase = false' \
  'precomposeUnicode = false' 'quotePath = false' 'packedGitWindowSize = 8m' \
  'packedGitLimit = 32m' 'excludesFile = /dev/null' 'attributesFile = /dev/null' \
  '[gc]' 'auto = 0' '[index]' 'threads = 1' '[pack]' 'compression = 1' >> "$S/config" || exit 70
mkdir -p "$S/info" && printf '* -text -crlf -eol -ident -filter -working-tree-encoding -diff -merge\n' > "$S/info/attributes"
hex40() { case "$1" in *[!0-9a-f]*|"") return 1;; esac; [ "${#1}" -eq 40 ]; }
dg="$repo/.git"; head=""; why=""
if [ -L "$dg" ] || [ ! -d "$dg" ]; then why="the sandbox's .git is missing or not a directory"
elif [ ! -d "$dg/objects" ]; then why="the sandbox's .git has no objects"
else
  printf '%s\n' "$dg/objects" > "$S/objects/info/alternates"
  h=$(head -c 4096 "$dg/HEAD" 2>/dev/null | head -n 1)
  case "$h" in
    "ref: refs/"*)
      r=${h#ref: }
      case "$r" in *..*|*//*) r="" ;; esac
      if [ -n "$r" ] && [ -f "$dg/$r" ]; then head=$(head -c 100 "$dg/$r" | head -n 1)
      elif [ -n "$r" ] && [ -f "$dg/packed-refs" ]; then
        head=$(awk -v r="$r" '$2 == r { print $1; exit }' "$dg/packed-refs")
      fi ;;
    *) head=$h ;;
  esac
  if ! hex40 "$head"; then head=""; why="the sandbox's HEAD does not name a commit (unborn or broken)"
  elif ! git cat-file -e "$head^{commit}" 2>/dev/null; then
    head=""; why="the sandbox's HEAD commit cannot be read"
  elif ! git merge-base --is-ancestor "$base" "$head" 2>/dev/null; then
    why="the sandbox's history no longer contains the baseline (reset or amended)"
  fi
fi
if [ -n "$head" ]; then
  if [ -f "$dg/index" ] && cp -- "$dg/index" "$GIT_INDEX_FILE" 2>/dev/null \
     && git read-tree --index-output="$GIT_INDEX_FILE.new" -m "$head" 2>/dev/null; then
    mv -f -- "$GIT_INDEX_FILE.new" "$GIT_INDEX_FILE"
  else rm -f -- "$GIT_INDEX_FILE" "$GIT_INDEX_FILE.new"; git read-tree "$head" || exit 71; fi
else git read-tree --empty || exit 71; fi
git add -A --ignore-errors -- . ':(exclude,icase,glob)**/.git' ':(exclude,icase,glob)**/.git/**' \
  2> "$ctl/collect.add.err" || addfail=1
tree=$(git write-tree) || exit 72
dotgit=$(find "$repo" -mindepth 1 -iname .git ! -path "$repo/.git" -print 2>/dev/null | head -n 20 | wc -l)
excl=""
for x in $since $since_tree; do
  if hex40 "$x" && git cat-file -e "$x" 2>/dev/null; then excl="$excl ^$x"; fi
done
{
  if [ -z "$why" ]; then git rev-list --objects --no-object-names "$head" "$tree" "^$base" $excl || exit 73
    if [ -z "$since" ]; then git rev-list --objects --no-object-names --filter=blob:none "$base" || exit 73; fi
  else git rev-list --objects --no-object-names "$tree" $excl || exit 73; fi
} > "$ctl/collect.objects" || exit 73
if [ -n "$why" ] && [ -n "$known" ] && [ -s "$known" ]; then
  awk 'NR == FNR { k[$1] = 1; next } !($1 in k)' "$known" "$ctl/collect.objects" > "$ctl/collect.objects.new" \
    && mv -f -- "$ctl/collect.objects.new" "$ctl/collect.objects"
fi
git pack-objects -q --stdout < "$ctl/collect.objects" > "$ctl/work.pack.tmp" || exit 74
{
  printf 'mode=%s\n' "$([ -z "$why" ] && echo history || echo tree)"
  printf 'base=%s\nhead=%s\ntree=%s\n' "$base" "$head" "$tree"
  printf 'commits=%s\n' "$([ -z "$why" ] && git rev-list --count "$head" "^$base" || echo 0)"
  printf 'dotgit=%s\n' "$dotgit"
  printf 'addfail=%s\n' "${addfail:-0}"
  printf 'why=%s\n' "$why"
} > "$ctl/collect.out.tmp"
# The report goes first and comes back last: a report found next to a pack is that pack's.
rm -f -- "$ctl/collect.out"
mv -f -- "$ctl/work.pack.tmp" "$ctl/work.pack" && mv -f -- "$ctl/collect.out.tmp" "$ctl/collect.out" || exit 75
rm -f -- "$ctl/collect.objects" "$GIT_INDEX_FILE"
cat -- "$ctl/collect.out"
"""

# The baseline's commit and trees (no blobs), packed right after the baseline is made, and the
# ids of all its objects: what lets a sandbox whose git the agent broke still be compared with
# what it was given, without sending back what we already hold.
BASELINE_PACK_SCRIPT = r"""
set -e
cd "$1"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
mkdir -p -- "$(dirname -- "$3")"
git rev-list --objects --no-object-names --filter=blob:none "$2" | git pack-objects -q --stdout > "$3.tmp"
git rev-list --objects --no-object-names "$2" > "$4.tmp"
mv -f "$3.tmp" "$3"; mv -f "$4.tmp" "$4"
"""


@dataclass
class Patches:
    """The agent's work as brought back from the sandbox: a pack and the script's report."""

    directory: Path  # a private staging directory holding work.pack and collect.out
    manifest: Manifest

    @property
    def agent_commits(self) -> int:
        """How many commits the agent made since the baseline (0 when unknown)."""
        return self.manifest.commits

    @property
    def size(self) -> int:
        """Bytes brought back."""
        pack = self.directory / f"{WORK_PACK}.pack"
        return pack.stat().st_size if pack.exists() else 0


def collect_patches(
    sandbox: Sandbox,
    session: Session,
    known: bytes | None = None,
    *,
    subdir: str = "",
    staging: Path | None = None,
    since: tuple[str, str] | None = None,
    reuse: bool = False,
) -> Patches:
    """Pack the agent's work inside the sandbox and bring it here, without disturbing it.

    The script works in ``subdir`` of the control directory (so a download never overwrites
    a collection in progress) and is retried when a try fails for a transient reason. The pack
    lands in ``staging`` (kept on failure, so a later call resumes the transfer) or in a fresh
    temporary directory. ``since`` (head, tree of the last checkpoint) leaves out everything
    reachable from them. With ``reuse`` (the agent has stopped, so the work no longer
    changes), a pack the script finished before in ``subdir`` is brought back as it is: the
    bytes of a transfer that broke off are still a prefix of it, so the download resumes.
    """
    root = control_dir(sandbox)
    ctl = f"{root}/{subdir}" if subdir else root
    base = session.sandbox_base
    if not base:
        raise BackendError("the sandbox has no baseline commit, so there is nothing to collect")
    tmp = staging is None
    target = Path(tempfile.mkdtemp(prefix="sandboxrun-collect-")) if staging is None else staging
    target.mkdir(parents=True, exist_ok=True)
    if reuse:
        try:
            return _bring_pack(sandbox, ctl, base, target, keep=not tmp)
        except FileNotFoundError:
            log.info("no finished collection in %s yet: packing the work", ctl)
    known_path = ""
    if known:
        known_path = f"{root}/known.objects"
        sandbox.write_file(known_path, known)
    head, tree = since or ("", "")

    def produce() -> None:
        res = sandbox.exec(
            ["sh", "-c", COLLECT_SCRIPT, "sh", sandbox.repo_dir, base, ctl, known_path, head, tree],
            timeout=900,
        )
        if not res.ok:
            raise BackendError(f"collecting the agent's changes failed: {res.error_text()[-2000:]}")

    try:
        retrying("packing the work in the sandbox", produce, sandbox)
    except BaseException:
        if tmp:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return _bring_pack(sandbox, ctl, base, target, keep=not tmp)


def _bring_pack(
    sandbox: Sandbox, ctl: str, base: str, staging: Path, keep: bool = False
) -> Patches:
    try:
        report = retrying(
            "reading the collection report",
            lambda: sandbox.read_file(f"{ctl}/{MANIFEST}"),
            sandbox,
        )
        manifest = Manifest.parse(report.decode(errors="replace"))
        if manifest.base != base:
            # Everything is compared with the baseline: it must be the one we recorded, not
            # whatever a report rewritten behind our back names.
            raise PatchRejectedError(
                f"the sandbox's collection report names another baseline ({manifest.base[:12]})",
                "Nothing was applied; the sandbox is kept.",
            )
        fetch_file(sandbox, f"{ctl}/{WORK_PACK}.pack", staging / f"{WORK_PACK}.pack")
        (staging / MANIFEST).write_bytes(report)
    except BaseException:
        if not keep:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return Patches(directory=staging, manifest=manifest)


def save_artifacts(directory: Path, patches: Patches) -> None:
    """Move the collection under ``directory``.

    Its report is written last, so whoever finds the report finds the whole collection.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pack_dir = directory / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    (pack_dir / f"{WORK_PACK}.idx").unlink(missing_ok=True)
    shutil.move(patches.directory / f"{WORK_PACK}.pack", pack_dir / f"{WORK_PACK}.pack")
    tmp = directory / f".{MANIFEST}.tmp"
    shutil.move(patches.directory / MANIFEST, tmp)
    tmp.replace(directory / MANIFEST)
    shutil.rmtree(patches.directory, ignore_errors=True)


def save_baseline(sandbox: Sandbox, base: str, artifacts: Path) -> None:
    """Keep the baseline's trees and object ids in the artifacts before the agent starts.

    A later collection from a sandbox whose git the agent broke is compared with them.
    """
    ctl = control_dir(sandbox)
    try:
        res = sandbox.exec(["sh", "-c", BASELINE_PACK_SCRIPT, "sh", sandbox.repo_dir, base,
                            f"{ctl}/baseline.pack", f"{ctl}/baseline.objects"],
                           timeout=600)  # fmt: skip
        if not res.ok:
            raise BackendError(res.error_text()[-500:])
        pack_dir = artifacts / "objects" / "pack"
        pack_dir.mkdir(parents=True, exist_ok=True)
        fetch_file(sandbox, f"{ctl}/baseline.pack", pack_dir / f"{BASELINE_PACK}.pack")
        fetch_file(sandbox, f"{ctl}/baseline.objects", artifacts / "baseline.objects")
    except (SandboxrunError, OSError) as exc:
        log.warning("could not keep the baseline in %s: %s", artifacts, exc)


def known_blobs(artifacts: Path) -> bytes | None:
    """The baseline's object ids, left out of a tree-mode collection (None if not kept)."""
    try:
        return (artifacts / "baseline.objects").read_bytes()
    except FileNotFoundError:
        return None


def verify_artifacts(worktree: Path, directory: Path) -> None:
    """Prove the collection in ``directory`` complete: every object there, every hash right."""
    from sandboxrun.sync.quarantine import Quarantine

    q = Quarantine(worktree, directory)
    q.add_pack(q.objects / "pack" / f"{WORK_PACK}.pack", WORK_PACK)
