"""Landing the agent's work on the session branch in one step, and finishing after a crash.

:func:`~sandboxrun.sync.replay.build_plan` has built the commits in the quarantine object store;
nothing the user sees has changed yet. Landing is:

1. refuse unless the branch is exactly where we left it (the commit we uploaded from, or the
   last one we applied) and its worktree is clean on it: otherwise name the unexpected commits
   and keep everything for ``sandboxrun apply``;
2. ``read-tree --dry-run`` the worktree update, so an untracked file in the way refuses now;
3. copy the new commits' objects into the repository (a pack: git ignores it until its index is
   in place, so a crash here leaves only unreferenced objects);
4. write the journal (``apply.json``: old and new commit), then **one** ``git update-ref`` with
   the expected old value — the only moment the branch changes;
5. update the worktree (edited files rewritten in place after a stat check, the rest with
   ``read-tree -m -u``: :mod:`~sandboxrun.sandbox.worktree_update`) and mark the journal done.

A SIGKILL anywhere leaves the branch at the old or the new commit. :func:`finish_pending`, run
before any other apply of the session (``attach``, ``sandboxrun apply``, the run itself), sees an
unfinished journal and either starts over (branch still old) or finishes the worktree update
(branch new), checking file by file that only our own half-written update is there to replace.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun.coord import claims
from sandboxrun.errors import GitError
from sandboxrun.process import Result, run, run_bytes
from sandboxrun.sandbox.worktree_update import FAULT_ENV as WORKTREE_FAULT_ENV
from sandboxrun.sandbox.worktree_update import tree_changes, update_worktree
from sandboxrun.sync.replay import (
    GIT_OPTS as _GIT_OPTS,
)
from sandboxrun.sync.replay import (
    LEFTOVER_MESSAGE,
    MANIFEST,
    Plan,
    Quarantine,
    build_plan,
    hooks_path_pattern,
)
from sandboxrun.sync.submodule_changes import SUBMODULE_REASON

log = logging.getLogger(__name__)

STATE = "apply.json"
#: Test hook: the name of a step at which the applier kills itself (SIGKILL), to prove that a
#: crash at that moment leaves the branch consistent. Never set outside tests.
FAULT_ENV = WORKTREE_FAULT_ENV


@dataclass
class Applied:
    """What one apply did: the plan's record (see :func:`plan_record`), and the plan if built."""

    record: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    resumed: bool = False  # finished an apply a crash had interrupted
    seconds: dict[str, float] = field(default_factory=dict)  # build / land / worktree

    @property
    def commits(self) -> list[str]:
        """New commits on the branch, oldest first."""
        return list(self.record.get("commits") or [])


def plan_record(plan: Plan) -> dict[str, Any]:
    """The JSON-safe facts of a plan, kept in the journal so a crash loses none of them."""
    return {
        "old": plan.old,
        "new": plan.new,
        "commits": plan.commits,
        "why_squashed": plan.why_squashed,
        "refused": [list(r) for r in plan.refused],
        "kept_patch": str(plan.kept_patch) if plan.kept_patch else None,
        "warnings": plan.warnings,
        "sensitive": plan.sensitive,
        "mode_changes": plan.mode_changes,
        "files_changed": plan.files_changed,
        "insertions": plan.insertions,
        "deletions": plan.deletions,
        "submodule_patches": plan.submodule_patches,
    }


def _complete(directory: Path, state: dict[str, Any], record: dict[str, Any]) -> None:
    state.pop("pending", None)
    state["expected"] = record["new"]
    state["applied"] = True
    state["last"] = record
    state["refused"] = record.get("refused") or []
    state.setdefault("history", []).append(record["commits"])
    save_state(directory, state)


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _git(worktree: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
         input: bytes | None = None) -> Result:  # fmt: skip
    return run(["git", *_GIT_OPTS, *args],
               cwd=worktree, check=check, env=env, input=input)  # fmt: skip


def load_state(directory: Path) -> dict[str, Any]:
    """The apply journal and record of a session's artifacts ({} when none)."""
    try:
        data = json.loads((Path(directory) / STATE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write the journal atomically (a crash leaves the old or the new one, never half)."""
    target = Path(directory) / STATE
    tmp = target.with_name(f".{STATE}.tmp")
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(target)


def has_collection(directory: Path) -> bool:
    """True when ``directory`` holds a complete collection (its report is written last)."""
    return (Path(directory) / MANIFEST).is_file()


def branch_tip(worktree: Path, branch: str) -> str | None:
    """The commit ``branch`` points at, or None when it does not exist."""
    res = _git(worktree, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}",
               check=False)  # fmt: skip
    return res.stdout.strip() if res.ok else None


def _unexpected(worktree: Path, expected: str, tip: str) -> str:
    res = _git(worktree, "log", "--format=%h %s", "-n", "10", f"{expected}..{tip}", check=False)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    if not _git(worktree, "merge-base", "--is-ancestor", expected, tip, check=False).ok:
        return f"the branch was rewritten (it no longer contains {expected[:12]})"
    return "unexpected commit(s): " + "; ".join(lines) if lines else "unexpected commits"


def check_branch(worktree: Path, branch: str, expected: str, where: str) -> None:
    """Refuse unless ``branch`` is at ``expected`` and its worktree is clean on it."""
    tip = branch_tip(worktree, branch)
    if tip is None:
        raise GitError(f"The branch {branch} no longer exists.",
                       f"Nothing was applied; the work is kept in {where}.")  # fmt: skip
    if tip != expected:
        raise GitError(
            f"The branch {branch} moved since sandboxrun last wrote to it: "
            f"{_unexpected(worktree, expected, tip)}. sandboxrun will not build on it.",
            f"Nothing was applied; the work is kept in {where}. Put the branch back with "
            f"`git -C {_q(worktree)} reset --keep {expected[:12]}` (after saving those commits "
            "elsewhere), then run `sandboxrun apply` on the session.",
        )
    head = _git(worktree, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip()
    if head != f"refs/heads/{branch}":
        raise GitError(
            f"The worktree {worktree} is not on {branch} (HEAD is {head or 'detached'}).",
            f"Check out {branch} there, then run `sandboxrun apply` on the session.",
        )
    # One git for the five paths (a process each cost more than the rest of the check).
    names = ("rebase-apply", "rebase-merge", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD")
    args = [a for name in names for a in ("--git-path", name)]
    rels = _git(worktree, "rev-parse", *args).stdout.splitlines()
    for name, rel in zip(names, rels, strict=True):
        if (worktree / rel).exists():
            raise GitError(
                f"The worktree {worktree} has a git operation in progress ({name}).",
                "Finish or abort it, then run `sandboxrun apply` on the session.",
            )
    res = _git(worktree, "status", "--porcelain", "-z", "--untracked-files=no")
    if res.stdout.strip("\0"):
        raise GitError(
            f"The worktree {worktree} has uncommitted changes; sandboxrun will not apply the "
            "agent's work over them.",
            f"Commit or stash them (`git -C {_q(worktree)} stash`), then run `sandboxrun apply` "
            "on the session.",
        )


def _q(path: Path | str) -> str:
    import shlex

    return shlex.quote(str(path))


def _move_objects(q: Quarantine, old: str, new: str) -> None:
    """Copy what ``new`` needs beyond ``old`` into the repository's object store, as a pack."""
    listing = q.git("rev-list", "--objects", "--no-object-names", new, f"^{old}").stdout
    landing = q.directory / "landing"
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir()
    name = q.git("pack-objects", "-q", str(landing / "pack"), input=listing).stdout.strip()
    dest = q.repo_objects / "pack"
    dest.mkdir(parents=True, exist_ok=True)
    # The .pack first, then the .idx: git only looks at a pack once its index exists.
    for ext in (".pack", ".idx"):
        src = landing / f"pack-{name}{ext}"
        tmp = dest / f".tmp-sandboxrun-{name}{ext}"
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(dest / f"pack-{name}{ext}")
    shutil.rmtree(landing, ignore_errors=True)


def land(worktree: Path, branch: str, plan: Plan, directory: Path) -> dict[str, float]:
    """Move ``branch`` from ``plan.old`` to ``plan.new`` in one step and update its worktree.

    Returns the seconds spent landing (checks, objects, ref) and updating the worktree.
    """
    t0 = time.monotonic()
    worktree, directory = Path(worktree), Path(directory)
    check_branch(worktree, branch, plan.old, str(directory))
    q = Quarantine(worktree, directory)
    plain_env = {k: v for k, v in q.env.items() if k != "GIT_INDEX_FILE"}
    dry = _git(worktree, "read-tree", "-m", "-u", "--dry-run", plan.old, plan.new,
               env=plain_env, check=False)  # fmt: skip
    if not dry.ok:
        raise GitError(
            f"The worktree {worktree} cannot take the agent's work: {dry.stderr.strip()[-500:]}",
            f"Nothing was applied; the work is kept in {directory}. Move the files named "
            "away, then run `sandboxrun apply` on the session.",
        )
    _fault("objects")
    _move_objects(q, plan.old, plan.new)
    _fault("journal")
    state = load_state(directory)
    record = plan_record(plan)
    state["pending"] = {"old": plan.old, "new": plan.new, "branch": branch, "record": record}
    save_state(directory, state)
    _fault("ref")
    res = _git(worktree, "update-ref", "-m", "sandboxrun: apply the agent's work",
               f"refs/heads/{branch}", plan.new, plan.old, check=False)  # fmt: skip
    if not res.ok:
        state.pop("pending", None)
        save_state(directory, state)
        raise GitError(
            f"The branch {branch} moved while sandboxrun was applying: {res.stderr.strip()}",
            f"Nothing was applied; the work is kept in {directory}.",
        )
    _fault("worktree")
    t1 = time.monotonic()
    _update_worktree(worktree, plan.old, plan.new)
    _fault("done")
    _complete(directory, state, record)
    return {"land": t1 - t0, "worktree": time.monotonic() - t1}


def _update_worktree(worktree: Path, old: str, new: str) -> None:
    # Edited files are rewritten in place after a stat check, the rest by git (see the module).
    update_worktree(worktree, old, new)


def finish_pending(worktree: Path, directory: Path) -> dict[str, Any] | None:
    """Finish or forget an apply a crash interrupted.

    Branch still at the old commit: the journal entry is dropped (the caller starts over) and
    None returned. Branch at the new commit: the worktree is brought to it, replacing only files
    that hold our own old or new version, and the finished apply's record is returned.
    """
    worktree, directory = Path(worktree), Path(directory)
    state = load_state(directory)
    pending = state.get("pending")
    if not isinstance(pending, dict):
        return None
    old, new, branch = pending["old"], pending["new"], pending["branch"]
    tip = branch_tip(worktree, branch)
    if tip == old:
        state.pop("pending", None)
        save_state(directory, state)
        return None
    if tip != new:
        raise GitError(
            f"An interrupted apply left {branch} at neither the old nor the new commit; it "
            "moved since.",
            f"The work is kept in {directory}.",
        )
    # Our own killed read-tree may have left the index lock behind.
    lock = worktree / _git(worktree, "rev-parse", "--git-path", "index.lock").stdout.strip()
    lock.unlink(missing_ok=True)
    index_tree = _git(worktree, "write-tree", check=False).stdout.strip()
    old_tree = _git(worktree, "rev-parse", f"{old}^{{tree}}").stdout.strip()
    new_tree = _git(worktree, "rev-parse", f"{new}^{{tree}}").stdout.strip()
    if index_tree == old_tree and _git(worktree, "read-tree", "-m", "-u", old, new,
                                        check=False).ok:  # fmt: skip
        pass
    else:
        _careful_reset(worktree, old, new, index_tree == new_tree)
    record = pending.get("record") or {"old": old, "new": new, "commits": []}
    _complete(directory, state, record)
    return record


def _disk_blobs(worktree: Path, paths: list[str]) -> dict[str, str | None]:
    """The blob id each path holds on disk (None: missing or not a file), hashed in one batch."""
    out: dict[str, str | None] = {}
    regular = []
    for path in paths:
        full = worktree / path
        if full.is_symlink():
            out[path] = _git(worktree, "hash-object", "--stdin",
                             input=os.fsencode(os.readlink(full))).stdout.strip()  # fmt: skip
        elif full.is_file() and "\n" not in path:
            regular.append(path)
        elif full.is_file():
            out[path] = _git(worktree, "hash-object", "--", path).stdout.strip()
        else:
            out[path] = None
    if regular:
        data = "".join(p + "\n" for p in regular).encode(errors="surrogateescape")
        shas = _git(worktree, "hash-object", "--stdin-paths", input=data).stdout.split()
        out.update(zip(regular, shas, strict=True))
    return out


def _careful_reset(worktree: Path, old: str, new: str, index_is_new: bool) -> None:
    """Bring files to ``new`` where they hold our old or new version; refuse anything else."""
    changes = tree_changes(worktree, old, new)
    on_disk = _disk_blobs(worktree, [c.path for c in changes])
    zero = "0" * len(changes[0].old_sha) if changes else ""
    foreign = []
    for c in changes:
        ours = {sha if sha != zero else None for sha in (c.old_sha, c.new_sha)}
        if on_disk[c.path] not in ours:
            foreign.append(c.path)
    _git(worktree, "update-index", "-q", "--refresh", check=False)
    dirty = run_bytes(["git", *_GIT_OPTS, "diff-index", "--name-only", "-z", "HEAD" if index_is_new else old],
                      cwd=worktree)  # fmt: skip
    changed_set = {c.path for c in changes}
    foreign += [
        os.fsdecode(n) for n in dirty.split(b"\0") if n and os.fsdecode(n) not in changed_set
    ]
    if foreign:
        raise GitError(
            f"The branch holds the agent's work, but files in {worktree} changed since the "
            f"interrupted apply: {', '.join(foreign[:10])}.",
            f"Save those changes, then `git -C {_q(worktree)} reset --hard` to finish.",
        )
    _git(worktree, "read-tree", "--reset", "-u", new)


def apply_collected(
    worktree: Path,
    branch: str,
    directory: Path,
    expected: str,
    *,
    allow_sensitive: bool = False,
    only_paths: set[str] | None = None,
    committer: tuple[str, str] | None = None,
    held: Callable[[Iterable[str]], Mapping[str, str]] | None = None,
    leftover_message: str = LEFTOVER_MESSAGE,
) -> Applied:
    """Check, rebuild and land the collection in ``directory`` on ``branch`` (at ``expected``);
    ``held`` holds back claimed paths (see :func:`~sandboxrun.sync.replay.build_plan`)."""
    worktree, directory = Path(worktree), Path(directory)
    record = finish_pending(worktree, directory)
    if record is not None:
        return Applied(record=record, resumed=True)
    check_branch(worktree, branch, expected, str(directory))
    t0 = time.monotonic()
    plan = build_plan(worktree, directory, expected, allow_sensitive=allow_sensitive,
                      only_paths=only_paths, extra_sensitive=hooks_path_pattern(worktree),
                      committer=committer, held=held,
                      leftover_message=leftover_message)  # fmt: skip
    seconds = {"build": time.monotonic() - t0}
    if plan.new != plan.old:
        seconds.update(land(worktree, branch, plan, directory))
    else:
        _complete(directory, load_state(directory), plan_record(plan))
    return Applied(record=plan_record(plan), plan=plan, seconds=seconds)


def refusal_text(record: dict[str, Any], session_name: str) -> tuple[str, str] | None:
    """(message, hint) about refused paths, or None when nothing was refused."""
    refused = [tuple(r) for r in record.get("refused") or []]
    if not refused:
        return None
    paths = list(dict.fromkeys(p for p, _ in refused))
    lines = [f"  {p}: {r}" for p, r in refused[:20]]
    if len(refused) > 20:
        lines.append(f"  ... and {len(refused) - 20} more")
    message = (f"Kept back the agent's changes to {len(paths)} path(s):\n"
               + "\n".join(lines))  # fmt: skip
    if record.get("kept_patch"):
        flags = " ".join(claims.allow_flags([r for _, r in refused]))
        hint = (f"Everything else was applied. Review {record['kept_patch']}, then apply it with "
                f"`sandboxrun apply {session_name} {flags}` (no rerun needed).")  # fmt: skip
    elif all(r.startswith(SUBMODULE_REASON) for _, r in refused):
        hint = "Everything else was applied."
    else:
        hint = "Everything else was applied; these changes are never allowed."
    subs = record.get("submodule_patches") or {}
    if subs:
        hint += (" Changes inside a submodule are never applied to this branch; apply each patch "
                 "in its submodule (from the repository's top): " + "; ".join(
                     f"git -C {_q(sub)} apply {_q(f)}" for sub, f in subs.items()))  # fmt: skip
    return message, hint


def expected_commit(session: Any, directory: Path) -> str:
    """The commit the session branch must be at before we apply: the last one we applied,
    else the one the upload was made from."""
    state = load_state(directory)
    return str(state.get("expected") or session.options.get("branch_head") or session.base_commit)


def apply_session(
    settings: Any,
    store: Any,
    session: Any,
    *,
    allow_sensitive: bool = False,
    source: Path | None = None,
    allow_claimed: bool = False,
) -> Applied:
    """``sandboxrun apply``: land a session's kept work on its branch without rerunning it.

    Applies whatever is not on the branch yet: the whole collection when it was never applied
    (the branch had moved, a crash, a snapshot from ``download``), else the changes kept back
    at collection (sensitive paths need ``allow_sensitive``; files another live session holds
    an exclusive claim on need ``allow_claimed`` while the claim lasts). Updates the record.
    """
    from sandboxrun.errors import SandboxrunError, UsageError
    from sandboxrun.store import Status

    artifacts = settings.session_artifacts(session.id)
    directory = Path(source) if source else artifacts
    if source is not None and not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise UsageError(
            f"--from {directory} {what}",
            f"Give the directory `sandboxrun download {session.name} -o DIR` wrote.",
        )
    # (the command checks the session's state first: ``statecheck.check_state("apply")``)
    if source is None and not (session.is_terminal and has_collection(directory)):
        raise SandboxrunError(
            f"session {session.name} has no collected work to apply ({session.status})",
            f"See `sandboxrun status {session.name}` for what works now.",
        )
    if source is not None and not has_collection(directory):
        raise UsageError(
            f"--from {directory} holds no collected work",
            f"Give the directory `sandboxrun download {session.name} -o DIR` wrote.",
        )
    worktree = Path(session.worktree)
    if not worktree.is_dir():
        raise UsageError(
            f"the worktree of session {session.name} ({worktree}) no longer exists",
            f"The work is kept in {directory}.",
        )
    state = load_state(directory)
    if source is not None and not state.get("expected"):
        state["expected"] = expected_commit(session, artifacts)
        save_state(directory, state)
    expected = expected_commit(session, directory)
    only: set[str] | None = None
    if state.get("applied") and not state.get("pending"):
        outstanding = [tuple(r) for r in state.get("refused") or []]
        if not outstanding:
            return Applied(record={"commits": [], "refused": []})
        only = {p for p, _ in outstanding}
    held = claims.hold_back_check(store.conn, session.repo, session.id,
                                  allow_claimed=allow_claimed, stale_after=settings.stale_after)  # fmt: skip
    applied = apply_collected(worktree, session.branch, directory, expected,
                              allow_sensitive=allow_sensitive, only_paths=only, held=held)  # fmt: skip
    record = applied.record
    if directory == artifacts:
        history = [c for batch in load_state(directory).get("history") or [] for c in batch]
        intended = state.get("intended_status")
        status = session.status
        if status in ("completed_with_refusals", "failed") or intended:
            base_status = intended or "completed"
            if base_status == "completed" and record.get("refused"):
                status = "completed_with_refusals"
            elif base_status == "completed" and not history:
                status = "completed_no_changes"
            else:
                status = base_status
        text = refusal_text(record, session.name)
        store.set_status(
            session.id,
            Status(status),
            result_commits=history,
            error=f"{text[0]}\n{text[1]}" if text else state.get("intended_error"),
        )
    return applied


def keep_on_ref(
    worktree: Path,
    directory: Path,
    expected: str,
    ref: str,
    *,
    allow_sensitive: bool = False,
    leftover_message: str = LEFTOVER_MESSAGE,
    held: Callable[[Iterable[str]], Mapping[str, str]] | None = None,
) -> Plan | None:
    """Keep the collection in ``directory`` on ``ref``, built on ``expected``; no branch moves.

    For work whose branch cannot take it (the user moved it): checked and rebuilt exactly as
    :func:`apply_collected` would, its objects copied into the repository, and ``ref`` (a name
    of ours, never a branch) pointed at the result. The worktree, its index and every branch
    stay as they are. Returns the plan, or None when there was nothing to keep.
    """
    worktree, directory = Path(worktree), Path(directory)
    plan = build_plan(worktree, directory, expected, allow_sensitive=allow_sensitive,
                      extra_sensitive=hooks_path_pattern(worktree),
                      leftover_message=leftover_message, held=held)  # fmt: skip
    if plan.new == plan.old:
        return None
    _move_objects(Quarantine(worktree, directory), plan.old, plan.new)
    _git(worktree, "update-ref", "-m", "sandboxrun: work kept beside its branch", ref, plan.new)
    return plan
