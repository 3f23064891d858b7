"""Bringing the agent's work back: patches out of the sandbox, checked, committed on the branch.

Inside the sandbox the agent's own commits since the baseline become a ``format-patch`` mbox
(kept as separate commits) and whatever it left uncommitted becomes one binary-safe diff. We
stage with a private index file so collecting while the agent works never touches its index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxrun.agent import AgentProgress
from sandboxrun.config import Settings, format_duration
from sandboxrun.errors import BackendError, PatchRejectedError
from sandboxrun.redact import Redactor
from sandboxrun.sandbox.backends.base import Sandbox, control_dir
from sandboxrun.sandbox.follow import FollowOutcome
from sandboxrun.sandbox.journal import Journal, PhaseTimes
from sandboxrun.store import Session, Status

log = logging.getLogger(__name__)

# Arguments come in through "$@" only. GIT_INDEX_FILE points at a copy of the agent's index.
_COLLECT_SCRIPT = r"""
set -e
cd "$1"
ctl="$3"
rm -f "$ctl/collect.index"
if [ -f .git/index ]; then cp .git/index "$ctl/collect.index"; fi
export GIT_INDEX_FILE="$ctl/collect.index"
git -c core.quotepath=on format-patch --pretty=mboxrd --no-color --no-signature --binary --full-index --stdout "$2"..HEAD > "$ctl/commits.mbox.tmp"
git add -A
git -c core.quotepath=on diff --no-color --cached --binary --full-index HEAD > "$ctl/changes.diff.tmp"
mv "$ctl/commits.mbox.tmp" "$ctl/commits.mbox"
mv "$ctl/changes.diff.tmp" "$ctl/changes.diff"
rm -f "$ctl/collect.index"
git rev-list --count "$2"..HEAD
"""


@dataclass
class Patches:
    """The agent's work as brought back from the sandbox."""

    commits: bytes  # format-patch mbox of the agent's own commits
    leftover: bytes  # binary diff of uncommitted changes
    agent_commits: int

    @property
    def empty(self) -> bool:
        return not self.commits.strip() and not self.leftover.strip()


def collect_patches(sandbox: Sandbox, session: Session) -> Patches:
    """Produce and download the agent's patches without disturbing it."""
    ctl = control_dir(sandbox)
    base = session.sandbox_base
    if not base:
        raise BackendError("the sandbox has no baseline commit, so there is nothing to collect")
    res = sandbox.exec(
        ["sh", "-c", _COLLECT_SCRIPT, "sh", sandbox.repo_dir, base, ctl], timeout=600
    )
    if not res.ok:
        raise BackendError(f"collecting the agent's changes failed: {res.error_text()[-2000:]}")
    count = int((res.text().strip().splitlines() or ["0"])[-1] or 0)
    return Patches(
        commits=sandbox.read_file(f"{ctl}/commits.mbox"),
        leftover=sandbox.read_file(f"{ctl}/changes.diff"),
        agent_commits=count,
    )


def save_artifacts(directory: Path, patches: Patches) -> None:
    """Write the patches under ``directory`` (atomically: a reader never sees half a file).

    Credential values from our environment are redacted from what is saved (not from what is
    applied: the branch gets the agent's work as it is).
    """
    directory.mkdir(parents=True, exist_ok=True)
    redactor = Redactor.from_env(os.environ)
    for name, data in (("commits.mbox", patches.commits), ("changes.diff", patches.leftover)):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(redactor.bytes(data))
        tmp.replace(directory / name)


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
    """Collect, check and apply the work, tear down, and record how the session ended.

    ``progress`` holds the agent's result (or usage limit); the patches and logs are saved
    under ``artifacts``; ``teardown`` removes the sandbox (or keeps it, with ``--keep``) once
    everything needed is out of it. ``settings`` size the time the collection may take.
    """
    from sandboxrun.sandbox.checkpoint import Run, bring_back
    from sandboxrun.sync.patches import apply_changes

    store, sid = journal.store, journal.session_id
    s = journal.session()
    assert s.worktree is not None, "a sandbox session always has a worktree"
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
        # Streamed to disk, retried, resumable; on failure the sandbox is kept for `attach`
        # and CollectionIncomplete goes up (sandbox.checkpoint).
        manifest = bring_back(Run(journal, sandbox, settings, artifacts))
        work = artifacts / "collect"  # the files as they came (for applying)
        patches = Patches(
            commits=(work / "commits.mbox").read_bytes(),
            leftover=(work / "changes.diff").read_bytes(),
            agent_commits=manifest.commits,
        )
        save_artifacts(artifacts, patches)  # what is kept is redacted
        shutil.rmtree(work, ignore_errors=True)
    teardown()

    result = progress.result
    status, error = Status.COMPLETED, None
    if outcome.reason == "killed":
        status, error = Status.KILLED, "stopped on request; the work so far was collected"
    elif outcome.reason == "timeout":
        status = Status.TIMEOUT
        error = (
            f"stopped at the time limit ({format_duration(s.timeout_s or 0)}); "
            "the work so far was collected"
        )
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

    t0 = time.monotonic()
    fields: dict[str, Any] = {"exit_code": outcome.exit_code}
    if progress.rate_limited_until:
        fields["options"] = {**s.options, "quota_resets_at": progress.rate_limited_until}
    try:
        applied = apply_changes(
            Path(s.worktree),
            patches.commits,
            patches.leftover,
            allow_sensitive=bool(s.options.get("allow_sensitive")),
            artifacts_hint=str(artifacts),
        )
    except PatchRejectedError as exc:
        store.set_status(
            sid,
            Status.FAILED,
            only_if_active=True,
            error=f"{exc.message} (patches kept in {artifacts})",
            **fields,
        )
        raise
    times.record("apply", time.monotonic() - t0)
    if status == Status.COMPLETED and not applied.commits:
        status = Status.COMPLETED_NO_CHANGES
    store.set_status(
        sid,
        status,
        only_if_active=True,
        error=error,
        result_commits=applied.commits,
        files_changed=len(applied.files_changed),
        insertions=applied.insertions,
        deletions=applied.deletions,
        **fields,
    )
    summary = {
        "status": status,
        "branch": s.branch,
        "commits": applied.commits,
        "files_changed": applied.files_changed,
        "insertions": applied.insertions,
        "deletions": applied.deletions,
        "warnings": applied.warnings,
        "phases": times.rounded(),
    }
    summary = Redactor.from_env(os.environ).obj(summary)
    store.add_event(sid, "summary", summary)
    (artifacts / "summary.json").write_text(json.dumps(summary, indent=2))
    return journal.session()
