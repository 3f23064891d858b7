"""Checkpoints: the agent's work kept while it runs, so a sandbox lost at any moment loses little.

A checkpoint is the final collection's own producer (:mod:`~.gitpack`) run while the agent
works, incrementally: given the head and tree the last checkpoint brought back, the pack holds
only what is new since (the agent's new commits, the files it changed since). Each pack comes
out through :mod:`~.transfer` (streamed, retried, resumed, SHA-256 checked), is verified with
``git index-pack`` as it lands in ``artifacts/checkpoint/objects/pack/`` next to the earlier
ones, and only then is the checkpoint's report (``checkpoint/collect.out``) replaced. So
``artifacts/checkpoint/`` is always a whole collection, in the very format of the final one,
and lands through the same checked path (:func:`sandboxrun.sandbox.apply.apply_collected`:
every change checked, the branch-moved check, one ``update-ref``).

When the sandbox is lost, :func:`mark_lost` ends the session ``lost`` saying what was kept;
it writes nothing to the branch. Landing the checkpoint is a separate, explicit step,
:func:`land_checkpoint`, taken by the commands that carry a run to its end (``run`` itself,
``attach``, ``kill``), never by ``status``. A branch the user moved since the run started is
never built on: the checkpoint is then kept on a side ref, named in the session's error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxrun.errors import GitError, SandboxLostError, SandboxrunError
from sandboxrun.sandbox.gitpack import collect_patches, known_blobs
from sandboxrun.store import Status
from sandboxrun.sync.quarantine import BASELINE_PACK, MANIFEST, WORK_PACK, Quarantine

if TYPE_CHECKING:
    from sandboxrun.sandbox.lifetime import Run
    from sandboxrun.store import Session, SessionStore

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
#: the directory of the artifacts holding the checkpoints' packs and the last one's report
CHECKPOINT_DIR = "checkpoint"
#: the commit message of a lost run's uncommitted changes, applied from its last checkpoint
CHECKPOINT_MESSAGE = "sandboxrun: uncommitted changes left by the agent (last checkpoint)"


def checkpoint_dir(artifacts: Path) -> Path:
    """Where a session's checkpoints are kept (a collection directory, see module doc)."""
    return Path(artifacts) / CHECKPOINT_DIR


def read_checkpoint(artifacts: Path) -> dict[str, Any] | None:
    """The saved checkpoint's description, or None when there is none."""
    try:
        info: dict[str, Any] = json.loads((Path(artifacts) / CHECKPOINT_FILE).read_text())
        return info
    except (FileNotFoundError, ValueError):
        return None


def side_ref(session: Session, kind: str = "checkpoint") -> str:
    """The ref a session's work is kept on when its branch cannot take it (never a branch)."""
    return f"refs/sandboxrun/{kind}/{session.name}-{session.id[:6]}"


def take_checkpoint(run: Run) -> dict[str, Any] | None:
    """Bring back what changed since the last checkpoint and keep it; returns its description.

    Only objects the last checkpoint did not hold are packed and transferred; when nothing
    changed (same head, same tree) nothing is kept. Failures are logged and return None: a
    checkpoint is best effort, the run goes on.
    """
    sb, s = run.sandbox, run.session()
    art = run.artifacts
    last = read_checkpoint(art) or {}
    ck = checkpoint_dir(art)
    staging = ck / "incoming"
    since = (str(last["head"]), str(last["tree"])) if last.get("tree") else None
    pack_dir = ck / "objects" / "pack"
    number = int(last.get("number", 0)) + 1
    name = f"checkpoint-{number:04d}"
    reported = False
    try:
        patches = collect_patches(
            sb, s, known=None if since else known_blobs(art), subdir="checkpoint",
            staging=staging, since=since,
        )  # fmt: skip
        m = patches.manifest
        if since and (m.head, m.tree) == since:
            shutil.rmtree(staging, ignore_errors=True)
            return last  # nothing new since the last checkpoint
        pack_dir.mkdir(parents=True, exist_ok=True)
        _keep_baseline(art, pack_dir)
        (pack_dir / f"{name}.idx").unlink(missing_ok=True)  # a try a crash cut short
        fetched = (staging / f"{WORK_PACK}.pack").stat().st_size
        (staging / f"{WORK_PACK}.pack").replace(pack_dir / f"{name}.pack")
        assert s.worktree is not None, "a sandbox session always has a worktree"
        q = Quarantine(Path(s.worktree), ck)
        q.add_pack(pack_dir / f"{name}.pack", name)  # index-pack checks every object
        # The report last: whoever finds it finds every object it names.
        tmp = ck / f".{MANIFEST}.tmp"
        shutil.move(staging / MANIFEST, tmp)
        tmp.replace(ck / MANIFEST)
        reported = True
        uncommitted = m.mode == "tree" or q.tree_of(m.head) != m.tree
    except SandboxLostError:
        raise
    except (SandboxrunError, OSError) as exc:
        if not reported:  # a pack no report names yet: drop it, the next try makes it anew
            for ext in (".pack", ".idx"):
                (pack_dir / f"{name}{ext}").unlink(missing_ok=True)
        log.warning("checkpoint of %s failed: %s", s.id, exc)
        run.store.add_event(s.id, "phase", {"phase": "checkpoint_failed", "detail": str(exc)})
        return None
    shutil.rmtree(staging, ignore_errors=True)
    now = time.time()
    info = {
        "number": number,
        "at": now,
        "head": m.head,
        "tree": m.tree,
        "mode": m.mode,
        "commits": m.commits,
        "uncommitted": uncommitted,
        "fetched_bytes": fetched,
        "kept_bytes": sum(p.stat().st_size for p in pack_dir.glob("checkpoint-*.pack")),
    }
    _save_info(art, info)
    run.store.update(s.id, checkpoint_at=now)
    run.store.add_event(s.id, "phase", {"phase": "checkpoint", "detail": describe(info),
                                           **{k: info[k] for k in ("number", "commits")}})  # fmt: skip
    return info


def _keep_baseline(artifacts: Path, pack_dir: Path) -> None:
    """The baseline's trees next to the checkpoints (a hard link where the disk allows)."""
    src = Path(artifacts) / "objects" / "pack" / f"{BASELINE_PACK}.pack"
    dest = pack_dir / f"{BASELINE_PACK}.pack"
    if dest.exists() or not src.exists():
        return
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def describe(info: dict[str, Any]) -> str:
    """``checkpoint 3 from 18:40:12: 2 commit(s) and uncommitted changes``."""
    when = time.strftime("%H:%M:%S", time.localtime(info["at"]))
    left = " and uncommitted changes" if info.get("uncommitted") else ", nothing uncommitted"
    return f"checkpoint {info['number']} from {when}: {info['commits']} commit(s){left}"


def checkpoint_pending(artifacts: Path) -> bool:
    """True when a lost session's last checkpoint is kept but not landed anywhere yet."""
    from sandboxrun.sandbox.apply import has_collection, load_state

    info = read_checkpoint(artifacts) or {}
    ck = checkpoint_dir(artifacts)
    return has_collection(ck) and not load_state(ck).get("applied") and not info.get("side_ref")


#: what a session lost before its agent started says (there was no work to lose)
BEFORE_AGENT_NOTE = (
    "this was before the agent started, so nothing of its work was lost (the branch and "
    "worktree are as they were); start a new run to try again"
)


def mark_lost(
    store: SessionStore,
    session: Session,
    artifacts: Path,
    message: str,
    *,
    land: bool = False,
    stale_after: float | None = None,
) -> None:
    """End a session whose sandbox is gone, saying what of its work was kept.

    Writes only the session's record: the branch is untouched (``status`` calls this). With
    ``land`` (a command that carries the run to its end) the last checkpoint is then landed
    (:func:`land_checkpoint`, judging others' claims by ``stale_after``, required then).
    """
    info = read_checkpoint(artifacts)
    options = {**session.options, "lost_reason": message}
    if info is None or not checkpoint_pending(artifacts):
        note = (BEFORE_AGENT_NOTE if session.agent_pgid is None
                else "no checkpoint of the work had been saved yet, so nothing was kept")  # fmt: skip
    else:
        note = (f"kept the last {describe(info)}, not applied yet: `sandboxrun attach "
                f"{session.name}` applies it to branch {session.branch}")  # fmt: skip
    changed = store.set_status(
        session.id, Status.LOST, only_if_active=True, error=f"{message}; {note}", options=options
    )
    if land and changed and info is not None and checkpoint_pending(artifacts):
        if stale_after is None:
            raise TypeError("mark_lost(land=True) needs stale_after (Settings.stale_after)")
        land_checkpoint(store, store.get(session.id), artifacts, stale_after=stale_after)


def land_checkpoint(
    store: SessionStore, session: Session, artifacts: Path, *, stale_after: float
) -> str:
    """Land a lost session's last checkpoint on its branch, or beside it; returns the note.

    The checkpoint goes through the final collection's checked path (every change checked,
    refusals kept for ``sandboxrun apply``, one ``update-ref`` from the commit the run started
    from). When the branch cannot take it — the user moved it since the run started, or its
    worktree is busy — the branch is left alone and the work is put on :func:`side_ref`
    instead. The session's error says which, and from when.
    """
    from sandboxrun.coord.claims import hold_back_check
    from sandboxrun.sandbox.apply import apply_collected, expected_commit

    info = read_checkpoint(artifacts) or {}
    ck = checkpoint_dir(artifacts)
    reason = session.options.get("lost_reason") or "the sandbox was lost"
    note = f"kept the last {describe(info)}" if info else "kept the last checkpoint"
    fields: dict[str, Any] = {}
    assert session.worktree is not None and session.branch is not None
    worktree = Path(session.worktree)
    expected = expected_commit(session, artifacts)
    allow = bool(session.options.get("allow_sensitive"))
    try:
        # files other live sessions claimed exclusively are held back, as at a final collection
        held = hold_back_check(store.conn, session.repo, session.id, stale_after=stale_after,
                               allow_claimed=bool(session.options.get("allow_claimed")))  # fmt: skip
        applied = apply_collected(worktree, session.branch, ck, expected, allow_sensitive=allow,
                                  leftover_message=CHECKPOINT_MESSAGE, held=held)  # fmt: skip
        record = applied.record
        fields = {"result_commits": applied.commits,
                  "files_changed": len(record.get("files_changed") or []),
                  "insertions": record.get("insertions") or 0,
                  "deletions": record.get("deletions") or 0}  # fmt: skip
        note += f", applied to branch {session.branch} ({len(applied.commits)} commit(s))"
        refused = list(dict.fromkeys(p for p, _ in record.get("refused") or []))
        if refused:
            note += (f"; kept back {len(refused)} path(s) ({', '.join(refused[:5])}): "
                     f"`sandboxrun apply {session.name} --from {ck}` once reviewed")  # fmt: skip
    except GitError as exc:
        note += f"; not applied: {exc.message}"
        ref, told = keep_aside(session, ck, expected, side_ref(session), "checkpoint",
                               leftover_message=CHECKPOINT_MESSAGE, held=held)  # fmt: skip
        if ref is not None:
            info["side_ref"] = ref
            _save_info(artifacts, info)
        note += told or (f" It is kept in {ck}: `sandboxrun apply {session.name} --from {ck}` "
                         "applies it once the branch is back.")  # fmt: skip
    except (SandboxrunError, OSError) as exc:
        note += (f" in {ck} (not applied: {getattr(exc, 'message', exc)}); "
                 f"`sandboxrun apply {session.name} --from {ck}` applies it")  # fmt: skip
    store.update(session.id, error=f"{reason}; {note}", **fields)
    store.add_event(session.id, "phase", {"phase": "checkpoint_landed", "detail": note})
    return note


def keep_aside(
    session: Session,
    directory: Path,
    expected: str,
    ref: str,
    what: str,
    *,
    leftover_message: str | None = None,
    held: Callable[[Iterable[str]], Mapping[str, str]] | None = None,
) -> tuple[str | None, str]:
    """Keep work that its branch refused on ``ref``; returns (ref or None, a sentence).

    Only when the branch is what refused it (moved since the run started, or its worktree busy
    with uncommitted changes or another checkout): the work is then built on ``expected``,
    where the run started, and ``ref`` points at it; the branch and worktree stay as they are.
    Anything else (say, a worktree update that failed after the branch moved to the work)
    returns (None, "").
    """
    from sandboxrun.sandbox.apply import check_branch, keep_on_ref

    assert session.worktree is not None and session.branch is not None
    worktree = Path(session.worktree)
    try:
        check_branch(worktree, session.branch, expected, str(directory))
        return None, ""  # the branch is not what refused it
    except GitError:
        pass
    extra = {"leftover_message": leftover_message} if leftover_message else {}
    try:
        plan = keep_on_ref(worktree, directory, expected, ref,
                           allow_sensitive=bool(session.options.get("allow_sensitive")),
                           held=held, **extra)  # fmt: skip
    except (SandboxrunError, OSError) as exc:
        log.warning("could not keep the %s of %s on %s: %s", what, session.name, ref, exc)
        return None, ""
    if plan is None:
        return None, ""
    return ref, (
        f" The branch {session.branch} was left as it is; the {what} is kept on {ref} "
        f"({len(plan.commits)} commit(s) on {expected[:12]}, where the run started): "
        f"`git log {ref}`, then merge or cherry-pick it."
    )


def _save_info(artifacts: Path, info: dict[str, Any]) -> None:
    tmp = Path(artifacts) / (CHECKPOINT_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(Path(artifacts) / CHECKPOINT_FILE)
