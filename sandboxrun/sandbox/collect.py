"""Bringing the agent's work back: git objects out of the sandbox, checked, landed on the branch.

Inside the sandbox, a fixed script packs the agent's commits since the baseline, the tree of
whatever it left uncommitted, and the baseline's trees into one git pack
(:data:`COLLECT_SCRIPT`). The sandbox's repository is data, not configuration: the script never
reads its config, hooks, index extensions or attributes (a scratch git directory of ours
borrows only its objects), so an agent's ``core.fsmonitor`` or hook never runs. When the
sandbox's git is broken (``.git`` deleted, unborn or unreadable ``HEAD``, history rewritten past
the baseline) it packs the final tree instead, leaving out the objects we already hold from the
baseline. The pack and its report land in the session's artifacts and are verified
(``git index-pack``) before the sandbox is torn down; :mod:`sandboxrun.sandbox.apply` then
lands them on the branch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxrun.agent import AgentProgress
from sandboxrun.config import Settings, format_duration
from sandboxrun.errors import (
    BackendError,
    GitError,
    PatchRejectedError,
    SandboxLostError,
    SandboxrunError,
)
from sandboxrun.redact import Redactor
from sandboxrun.sandbox.backends.base import Sandbox, control_dir
from sandboxrun.sandbox.checkpoint import (
    Run,
    _copy_logs,
    _retrying,
    fetch,
    incomplete,
    secure_collection,
)
from sandboxrun.sandbox.follow import FollowOutcome
from sandboxrun.sandbox.journal import Journal, PhaseTimes
from sandboxrun.sandbox.reporting import time_limit_message
from sandboxrun.store import Session, Status
from sandboxrun.sync.replay import BASELINE_PACK, LEFTOVER_MESSAGE, MANIFEST, WORK_PACK, Manifest

log = logging.getLogger(__name__)

__all__ = ["LEFTOVER_MESSAGE", "Patches", "collect_patches", "save_artifacts"]

# Arguments come in through "$@" only: repo, baseline commit, control dir, and optionally a
# file listing object ids we already hold (left out of a tree-mode pack). Git runs with no
# system or global config, HOME in our control dir, and GIT_DIR a fresh scratch repository
# whose only link to the agent's is an alternates entry for its objects; HEAD is read from the
# files by hand. info/attributes (highest precedence) switches off every content conversion
# the tree's .gitattributes could ask for, so blobs are the bytes on disk.
COLLECT_SCRIPT = r"""
set -u
repo=$1; base=$2; ctl=$3; known=${4:-}
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
rm -rf -- "$S" "$ctl/work.pack.tmp" "$ctl/collect.out.tmp"
git init -q --bare --template= "$S" || exit 70
export GIT_DIR="$S" GIT_WORK_TREE="$repo" GIT_INDEX_FILE="$S/collect.index"
c() { git config "$1" "$2" || exit 70; }
c core.bare false; c core.hooksPath /dev/null; c core.fsmonitor false; c core.autocrlf false
c core.safecrlf false; c core.bigFileThreshold 1m; c core.untrackedCache false
c core.splitIndex false; c core.fileMode true; c core.symlinks true; c core.ignoreCase false
c core.precomposeUnicode false; c core.quotePath false; c gc.auto 0; c index.threads 1
c core.packedGitWindowSize 8m; c core.packedGitLimit 32m
c pack.compression 1; c core.excludesFile /dev/null; c core.attributesFile /dev/null
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
{
  if [ -z "$why" ]; then git rev-list --objects --no-object-names "$head" "$tree" "^$base" || exit 73
    git rev-list --objects --no-object-names --filter=blob:none "$base" || exit 73
  else git rev-list --objects --no-object-names "$tree" || exit 73; fi
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


#: Files bigger than this come out of a remote sandbox in pieces of this size, so the client
#: never holds a whole pack in memory.
FETCH_CHUNK = 32 << 20

# Cut "$1" into numbered pieces of "$2" bytes next to it; print how many.
_SPLIT_SCRIPT = r"""
set -e
rm -f -- "$1".part.*
split -b "$2" -d -a 5 -- "$1" "$1.part."
ls -- "$1".part.* | wc -l
"""


def _fetch(sandbox: Sandbox, src: str, dest: Path) -> None:
    """Copy a file out of the sandbox to ``dest`` without holding it all in memory.

    From E2B it is streamed in pieces, retried, resumed from the bytes already in
    ``dest.part`` and checked against its SHA-256 (:func:`~.checkpoint.fetch`).
    """
    copy_out = getattr(sandbox, "copy_out", None)
    if copy_out is not None:  # the local backend: a streamed copy that follows no link
        copy_out(src, dest)
        return
    if getattr(sandbox, "download_to", None) is not None:
        res = _retrying(
            f"measuring {src}",
            lambda: sandbox.exec(["sh", "-c", _SIZE_SHA_SCRIPT, "sh", src], timeout=600),
            sandbox,
        )
        parts = res.text().split() if res.ok else []
        if len(parts) < 2 or not parts[0].isdigit():
            raise BackendError(f"cannot measure {src} in the sandbox: {res.error_text()[-300:]}")
        fetch(sandbox, src, dest, int(parts[0]), parts[1])
        return
    fetch_in_pieces(sandbox, src, dest)


# "$1": print its size and SHA-256 (what a streamed, resumable fetch checks against).
_SIZE_SHA_SCRIPT = r"""stat -c %s -- "$1" && sha256sum < "$1" | cut -d' ' -f1"""


def fetch_in_pieces(sandbox: Sandbox, src: str, dest: Path, chunk: int = FETCH_CHUNK) -> None:
    """Copy ``src`` out of any sandbox, ``chunk`` bytes at a time when it is big."""
    res = sandbox.exec(["stat", "-c", "%s", "--", src])
    size = int(res.text().strip() or 0) if res.ok else 0
    if size <= chunk:
        dest.write_bytes(sandbox.read_file(src))
        return
    res = sandbox.exec(["sh", "-c", _SPLIT_SCRIPT, "sh", src, str(chunk)], timeout=600)
    if not res.ok:
        raise BackendError(f"cannot cut {src} into pieces: {res.error_text()[-300:]}")
    pieces = int(res.text().strip().splitlines()[-1])
    try:
        with open(dest, "wb") as out:
            for i in range(pieces):
                out.write(sandbox.read_file(f"{src}.part.{i:05d}"))
    finally:
        sandbox.exec(["sh", "-c", 'rm -f -- "$1".part.*', "sh", src])
    if dest.stat().st_size != size:
        raise BackendError(f"{src} came out of the sandbox incomplete")


def collect_patches(
    sandbox: Sandbox,
    session: Session,
    known: bytes | None = None,
    *,
    subdir: str = "",
    staging: Path | None = None,
) -> Patches:
    """Pack the agent's work inside the sandbox and bring it here, without disturbing it.

    The script works in ``subdir`` of the control directory (so a download never overwrites
    a collection in progress) and is retried when a try fails for a transient reason. The pack
    lands in ``staging`` (kept on failure, so a later call resumes the transfer) or in a fresh
    temporary directory.
    """
    root = control_dir(sandbox)
    ctl = f"{root}/{subdir}" if subdir else root
    base = session.sandbox_base
    if not base:
        raise BackendError("the sandbox has no baseline commit, so there is nothing to collect")
    known_path = ""
    if known:
        known_path = f"{root}/known.objects"
        sandbox.write_file(known_path, known)

    def produce() -> None:
        res = sandbox.exec(
            ["sh", "-c", COLLECT_SCRIPT, "sh", sandbox.repo_dir, base, ctl, known_path],
            timeout=900,
        )
        if not res.ok:
            raise BackendError(f"collecting the agent's changes failed: {res.error_text()[-2000:]}")

    _retrying("packing the work in the sandbox", produce, sandbox)
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
        return _bring_pack(sandbox, ctl, base, staging, keep=True)
    return _bring_pack(sandbox, ctl, base, Path(tempfile.mkdtemp(prefix="sandboxrun-collect-")))


def _bring_pack(
    sandbox: Sandbox, ctl: str, base: str, staging: Path, keep: bool = False
) -> Patches:
    try:
        report = _retrying(
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
        _fetch(sandbox, f"{ctl}/{WORK_PACK}.pack", staging / f"{WORK_PACK}.pack")
        (staging / MANIFEST).write_bytes(report)
    except BaseException:
        if not keep:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return Patches(directory=staging, manifest=manifest)


def bring_back_pack(run: Run) -> None:
    """The final collection: extend the sandbox, pack, stream, save and verify the work.

    On a failure that retries did not mend, the sandbox is left alive, the session stays
    ``collecting`` and :class:`~.checkpoint.CollectionIncomplete` says how to finish.
    """
    sb, s = run.sandbox, run.session()
    assert s.worktree is not None, "a sandbox session always has a worktree"
    secure_collection(run)
    try:
        patches = collect_patches(sb, s, known=known_blobs(run.artifacts), subdir="collect",
                                  staging=run.artifacts / "collect")  # fmt: skip
        save_artifacts(run.artifacts, patches)
        # Torn down only once the artifacts are proven to hold the whole collection.
        verify_artifacts(Path(s.worktree), run.artifacts)
    except (SandboxLostError, PatchRejectedError):
        raise
    except (SandboxrunError, OSError) as exc:
        raise incomplete(run, exc) from exc
    _copy_logs(run)  # streamed and redacted


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
        _fetch(sandbox, f"{ctl}/baseline.pack", pack_dir / f"{BASELINE_PACK}.pack")
        _fetch(sandbox, f"{ctl}/baseline.objects", artifacts / "baseline.objects")
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
    from sandboxrun.sync.replay import Quarantine

    q = Quarantine(worktree, directory)
    q.add_pack(q.objects / "pack" / f"{WORK_PACK}.pack", WORK_PACK)


def describe_failure(
    result: dict[str, Any] | None, exit_code: int | None, stderr: str, max_turns: int | None
) -> str:
    """One sentence saying why the agent did not succeed."""
    if result:
        subtype = result.get("subtype") or "error"
        if subtype == "success" and result.get("is_error"):
            # API failures end as subtype "success" + is_error; say what actually happened.
            status = result.get("api_error_status")
            subtype = f"{result.get('terminal_reason') or 'error'}" + (
                f" {status}" if status else ""
            )
        if subtype == "error_max_turns":
            limit = f" (--max-turns {max_turns})" if max_turns else ""
            return f"the agent reached its turn limit{limit} before finishing (error_max_turns)"
        text = " ".join(str(result.get("result") or "").split())
        if text:
            return f"the agent failed ({subtype}): {text[:500]}"
        return f"the agent failed ({subtype})"
    tail = " ".join(stderr.strip().splitlines()[-3:])[:500]
    code = "an unknown code" if exit_code is None else f"code {exit_code}"
    return f"the agent exited with {code} without a result" + (f": {tail}" if tail else "")


def record_branch_head(journal: Journal, worktree: Path) -> None:
    """Remember which commit of the branch the upload is made from (before packing)."""
    from sandboxrun.process import run

    res = run(["git", "rev-parse", "--verify", "HEAD^{commit}"], cwd=worktree, check=False)
    if res.ok:
        options = journal.session().options
        journal.update(options={**options, "branch_head": res.stdout.strip()})


def finish_with_patches(
    journal: Journal,
    sandbox: Sandbox,
    outcome: FollowOutcome,
    *,
    progress: AgentProgress,
    artifacts: Path,
    times: PhaseTimes,
    teardown: Callable[[], None],
    settings: Settings,
) -> Session:
    """Collect and verify the work, tear down, land it on the branch, record how it ended.

    ``progress`` holds the agent's result (or usage limit); the collection and logs are saved
    under ``artifacts`` and verified there before ``teardown`` removes the sandbox (or keeps it,
    with ``--keep``). ``settings`` size the time the collection may take: the sandbox is
    extended first, and the pack comes out streamed, retried and resumable
    (:mod:`sandboxrun.sandbox.checkpoint`); when that fails for good the sandbox is kept alive,
    the session stays ``collecting`` and :class:`~.checkpoint.CollectionIncomplete` goes up.
    """
    store, sid = journal.store, journal.session_id
    s = journal.session()
    store.set_status(sid, Status.COLLECTING, only_if_active=True)
    journal.reporter.phase(Status.COLLECTING, "bringing the work back")
    if outcome.reason == "killed" and s.discard:
        teardown()
        journal.end(
            Status.KILLED,
            exit_code=outcome.exit_code,
            error="killed by `sandboxrun kill --discard`; the work was discarded",
        )
        return journal.session()

    with times.measure("collect"):
        bring_back_pack(Run(journal, sandbox, settings, artifacts))
    teardown()
    return apply_and_record(journal, outcome, progress=progress, artifacts=artifacts, times=times)


def _end_status(
    s: Session,
    outcome: FollowOutcome,
    progress: AgentProgress,
    artifacts: Path,
    stop_marks: list[dict[str, Any]],
) -> tuple[Status, str | None]:
    result = progress.result
    status, error = Status.COMPLETED, None
    if outcome.reason == "lost":
        status = Status.FAILED
        error = (
            f"the sandbox ended before the run did ({outcome.detail}); the work up to its last "
            "snapshot was applied, anything the agent did after that is lost"
        )
    elif outcome.reason == "killed":
        status, error = Status.KILLED, "stopped on request; the work so far was collected"
    elif outcome.reason == "timeout":
        status = Status.TIMEOUT
        # the follower recorded when it stopped the agent, and the limit it stopped before
        when = (
            time_limit_message(stop_marks[-1]["elapsed"], stop_marks[-1]["limit"])
            if stop_marks
            else f"at the time limit ({format_duration(s.timeout_s or 0)})"
        )
        error = f"stopped {when}; the work so far was collected"
    elif outcome.reason == "quota" or (
        progress.rate_limited_until and (result is None or result.get("is_error"))
    ):
        status = Status.WAITING_QUOTA
        reset = progress.rate_limited_until
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(reset)) if reset else "unknown"
        error = f"Claude usage limit reached; it resets at {when}. The work so far was collected."
    elif result is None or result.get("is_error") or outcome.exit_code not in (0, None):
        status = Status.FAILED
        stderr = artifacts / "agent.stderr"
        error = describe_failure(
            result,
            outcome.exit_code,
            stderr.read_text(errors="replace") if stderr.exists() else "",
            s.max_turns,
        )
    return status, error


def apply_and_record(
    journal: Journal,
    outcome: FollowOutcome,
    *,
    progress: AgentProgress,
    artifacts: Path,
    times: PhaseTimes,
) -> Session:
    """Land the collection kept in the artifacts and record how the session ended.

    Also what ``attach`` runs when a crash interrupted a run after its work was collected.
    """
    from sandboxrun.coord.claims import hold_back_check
    from sandboxrun.sandbox.apply import (
        apply_collected,
        expected_commit,
        load_state,
        refusal_text,
        save_state,
    )

    store, sid = journal.store, journal.session_id
    s = journal.session()
    stop_marks = [
        e["payload"]
        for e in store.events(sid, kinds=("warning",))
        if e["payload"].get("mark") == "limit" and "elapsed" in e["payload"]
    ]
    status, error = _end_status(s, outcome, progress, artifacts, stop_marks)
    t0 = time.monotonic()
    fields: dict[str, Any] = {"exit_code": outcome.exit_code}
    options = dict(s.options)
    if progress.rate_limited_until:
        options["quota_resets_at"] = progress.rate_limited_until
    # What the session ends as once applied: kept so `sandboxrun apply` can finish the job.
    state = load_state(artifacts)
    state["intended_status"], state["intended_error"] = str(status), error
    save_state(artifacts, state)
    assert s.worktree is not None and s.branch is not None
    try:
        applied = apply_collected(
            Path(s.worktree),
            s.branch,
            artifacts,
            expected_commit(s, artifacts),
            allow_sensitive=bool(s.options.get("allow_sensitive")),
            held=hold_back_check(  # files other live sessions claimed exclusively
                store.conn, s.repo, sid, allow_claimed=bool(s.options.get("allow_claimed"))
            ),
        )
    except (GitError, PatchRejectedError, SandboxrunError) as exc:
        store.set_status(
            sid,
            Status.FAILED,
            only_if_active=True,
            error=(
                f"{exc.message} The work is kept in {artifacts}; "
                f"`sandboxrun apply {s.name}` applies it once the cause is fixed."
            ),
            options=options,
            **fields,
        )
        raise
    times.record("apply", time.monotonic() - t0)
    record = applied.record
    notes = [*record.get("mode_changes", [])]
    notes += [w for w in record.get("warnings") or [] if "executable" in w and w not in notes]
    if record.get("why_squashed"):
        notes.append(f"one commit instead of the agent's own history: {record['why_squashed']}")
    manifest = Manifest.parse((artifacts / MANIFEST).read_text(errors="replace"))
    if manifest.dotgit:
        notes.append(f"{manifest.dotgit} '.git'-like name(s) in the sandbox's tree were left out")
    if manifest.addfail:
        notes.append("some files in the sandbox could not be read and were left out")
    for note in notes:
        journal.reporter.warning(note)
    refusal = refusal_text(record, s.name)
    if refusal:
        text = f"{refusal[0]}\n{refusal[1]}"
        if status == Status.COMPLETED:
            status, error = Status.COMPLETED_WITH_REFUSALS, text
        else:
            error = f"{error}\n{text}" if error else text
    elif status == Status.COMPLETED and not applied.commits:
        status = Status.COMPLETED_NO_CHANGES
    options["collect_notes"] = notes
    all_commits = [c for batch in load_history(artifacts) for c in batch]
    store.set_status(
        sid,
        status,
        only_if_active=True,
        error=error,
        result_commits=all_commits,
        files_changed=len(record.get("files_changed") or []),
        insertions=record.get("insertions") or 0,
        deletions=record.get("deletions") or 0,
        options=options,
        **fields,
    )
    summary = {
        "status": status,
        "branch": s.branch,
        "commits": applied.commits,
        "agent_commits": manifest.commits,
        "files_changed": record.get("files_changed") or [],
        "insertions": record.get("insertions") or 0,
        "deletions": record.get("deletions") or 0,
        "warnings": record.get("warnings") or [],
        "mode_changes": record.get("mode_changes") or [],
        "refused": record.get("refused") or [],
        "kept_patch": record.get("kept_patch"),
        "one_commit_because": record.get("why_squashed"),
        "phases": times.rounded(),
    }
    summary = Redactor.from_env(os.environ).obj(summary)
    store.add_event(sid, "summary", summary)
    (artifacts / "summary.json").write_text(json.dumps(summary, indent=2))
    return journal.session()


def load_history(artifacts: Path) -> list[list[str]]:
    """Every batch of commits applied for the session, oldest first."""
    from sandboxrun.sandbox.apply import load_state

    return [list(b) for b in load_state(artifacts).get("history") or []]
