"""Bringing the agent's work back at the end of a run, landing it, recording how it ended.

The final collection is :mod:`~.gitpack`'s pack (the same producer as checkpoints), brought
out by :mod:`~.transfer` after :mod:`~.lifetime` secured the sandbox's time for it, saved in
the session's artifacts and verified (``git index-pack``) before the sandbox is torn down;
:mod:`sandboxrun.sandbox.apply` then lands it on the branch. When the transfer fails for good
the sandbox is kept alive and the session stays ``collecting``: ``attach`` brings back the same
pack, resuming the bytes already on disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandboxrun.agent import AgentProgress
from sandboxrun.config import Settings, format_duration
from sandboxrun.errors import GitError, PatchRejectedError, SandboxLostError, SandboxrunError
from sandboxrun.redact import Redactor
from sandboxrun.sandbox.backends.base import Sandbox
from sandboxrun.sandbox.follow import FollowOutcome
from sandboxrun.sandbox.gitpack import (
    collect_patches,
    known_blobs,
    save_artifacts,
    verify_artifacts,
)
from sandboxrun.sandbox.journal import Journal, PhaseTimes
from sandboxrun.sandbox.lifetime import Run, secure_collection
from sandboxrun.sandbox.reporting import time_limit_message
from sandboxrun.sandbox.transfer import CollectionIncomplete, copy_logs
from sandboxrun.store import Session, Status
from sandboxrun.sync.replay import LEFTOVER_MESSAGE, MANIFEST, Manifest

log = logging.getLogger(__name__)

__all__ = ["LEFTOVER_MESSAGE", "CollectionIncomplete", "apply_and_record", "finish_with_patches"]


def bring_back_pack(run: Run) -> None:
    """The final collection: extend the sandbox, pack, stream, save and verify the work.

    On a failure that retries did not mend, the sandbox is left alive, the session stays
    ``collecting`` and :class:`~.transfer.CollectionIncomplete` says how to finish.
    """
    sb, s = run.sandbox, run.session()
    assert s.worktree is not None, "a sandbox session always has a worktree"
    secure_collection(run)
    try:
        # `reuse`: the agent has stopped, so a pack made by an earlier try (this run's, or the
        # one `attach` carries on) is still the work: its partial download resumes.
        patches = collect_patches(sb, s, known=known_blobs(run.artifacts), subdir="collect",
                                  staging=run.artifacts / "collect", reuse=True)  # fmt: skip
        save_artifacts(run.artifacts, patches)
        # Torn down only once the artifacts are proven to hold the whole collection.
        verify_artifacts(Path(s.worktree), run.artifacts)
    except (SandboxLostError, PatchRejectedError):
        raise
    except (SandboxrunError, OSError) as exc:
        raise incomplete(run, exc) from exc
    copy_logs(sb, run.artifacts)  # streamed and redacted


def incomplete(run: Run, exc: BaseException) -> CollectionIncomplete:
    """Record that the collection failed for good and say how to finish it (sandbox kept)."""
    s = run.session()
    message = getattr(exc, "message", str(exc))
    end = s.sandbox_end
    until = f" until {time.strftime('%H:%M:%S', time.localtime(end))}" if end else ""
    name = s.name
    run.store.add_event(s.id, "warning", {"mark": "collect", "message": message})
    run.store.update(s.id, error=f"collecting the work failed: {message}")
    return CollectionIncomplete(
        f"bringing the work of {name} back failed after retries: {message}; its sandbox "
        f"{run.sandbox.id} is kept alive{until}",
        f"Finish the job with `sandboxrun attach {name}` (resumes the download and applies "
        f"the work), fetch the files with `sandboxrun download {name}`, or end it with "
        f"`sandboxrun kill {name}`.",
    )


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
    (:mod:`sandboxrun.sandbox.transfer`); when that fails for good the sandbox is kept alive,
    the session stays ``collecting`` and :class:`~.transfer.CollectionIncomplete` goes up.
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
    return apply_and_record(journal, outcome, progress=progress, artifacts=artifacts, times=times,
                            stale_after=settings.stale_after)  # fmt: skip


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
    stale_after: float,
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
    held = hold_back_check(  # files other live sessions claimed exclusively
        store.conn, s.repo, sid, allow_claimed=bool(s.options.get("allow_claimed")),
        stale_after=stale_after,
    )  # fmt: skip
    try:
        applied = apply_collected(
            Path(s.worktree),
            s.branch,
            artifacts,
            expected_commit(s, artifacts),
            allow_sensitive=bool(s.options.get("allow_sensitive")),
            held=held,
        )
    except (GitError, PatchRejectedError, SandboxrunError) as exc:
        aside = ""
        if isinstance(exc, GitError):
            # A branch the user moved is never built on; the work also goes on a side ref.
            from sandboxrun.sandbox.checkpoint import keep_aside, side_ref

            ref, aside = keep_aside(s, artifacts, expected_commit(s, artifacts),
                                    side_ref(s, "work"), "work", held=held)  # fmt: skip
            if ref is not None:
                options["kept_on"] = ref
        store.set_status(
            sid,
            Status.FAILED,
            only_if_active=True,
            error=(
                f"{exc.message} The work is kept in {artifacts}; "
                f"`sandboxrun apply {s.name}` applies it once the cause is fixed.{aside}"
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
