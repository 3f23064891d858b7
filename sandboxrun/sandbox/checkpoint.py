"""Getting the agent's work out of the sandbox: in time, piece by piece, resumably, and as
checkpoints while it works.

Three steps, with a clean boundary between them (the applier, ``sandboxrun.sync.patches``, only
ever sees local files):

1. **produce** (in the sandbox): the agent's commits since a given commit as a
   ``format-patch`` mbox, its uncommitted changes as a binary diff, and a manifest (head,
   sizes, SHA-256) — staged with a private index so the agent's own index is never touched.
2. **fetch** (sandbox → local file): each file streamed to disk in pieces (never whole in
   memory); a piece that fails is retried with backoff and the transfer resumes where it
   stopped (the ``.part`` file and the manifest it belongs to are kept on disk); the result is
   checked against the manifest's SHA-256.
3. the caller applies the files.

Checkpoints run the same steps while the agent works, incrementally: only the commits made
since the last checkpoint come back (appended to the saved mbox), and the uncommitted diff is
fetched only when it changed. A sandbox lost at any moment leaves the last checkpoint in the
artifacts, and :func:`mark_lost` applies it to the branch (or says how to).

Before a collection, :func:`secure_collection` pushes the sandbox's end far enough for it
(sized from what is to come back, see ``sandbox.deadline``); the collection itself never
extends anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from sandboxrun.config import format_duration
from sandboxrun.errors import BackendError, SandboxLostError, SandboxrunError
from sandboxrun.redact import Redactor
from sandboxrun.sandbox.backends.base import control_dir
from sandboxrun.sandbox.deadline import (
    StopPlan,
    backoff,
    collection_seconds,
    extension_target,
    plan_stop,
)
from sandboxrun.store import Status

if TYPE_CHECKING:
    from sandboxrun.config import Settings
    from sandboxrun.sandbox.backends.base import Sandbox
    from sandboxrun.sandbox.journal import Journal
    from sandboxrun.store import Session, SessionStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: bytes per resumable piece of a download
PIECE = 64 << 20
#: tries per step (produce, each piece) before a collection gives up, with backoff between
ATTEMPTS = 6
FILES = ("commits.mbox", "changes.diff")
CHECKPOINT_FILE = "checkpoint.json"
#: the commit message of a lost run's uncommitted changes, applied from its last checkpoint
CHECKPOINT_MESSAGE = "sandboxrun: uncommitted changes left by the agent (last checkpoint)"

# "$1" repo, "$2" baseline, "$3" since (a commit the patches start from), "$4" output dir.
# The patches start at "$3" only if it is still an ancestor of HEAD (the agent may have
# rewritten history); otherwise at the baseline. A private index (a copy of the agent's) is
# used for `git add -A`, so the agent's own staging is untouched.
PRODUCE_SCRIPT = r"""
set -e
cd "$1"; base="$2"; since="$3"; out="$4"
mkdir -p "$out"
rm -f "$out/index"
if [ -f .git/index ]; then cp .git/index "$out/index"; fi
export GIT_INDEX_FILE="$out/index"
head=$(git rev-parse HEAD)
if [ "$since" != "$base" ] && ! git merge-base --is-ancestor "$since" HEAD 2>/dev/null; then
  since="$base"
fi
git -c core.quotepath=on format-patch --pretty=mboxrd --no-color --no-signature --binary --full-index --stdout "$since"..HEAD > "$out/commits.mbox"
git add -A
git -c core.quotepath=on diff --no-color --cached --binary --full-index HEAD > "$out/changes.diff"
rm -f "$out/index"
printf 'head %s\nsince %s\ncommits %s\n' "$head" "$since" "$(git rev-list --count "$base"..HEAD)"
for f in commits.mbox changes.diff; do
  printf 'file %s %s %s\n' "$f" "$(stat -c %s -- "$out/$f")" "$(sha256sum < "$out/$f" | cut -d' ' -f1)"
done
"""

# "$1" repo, "$2" baseline: bytes a collection would bring back now (changed and new files,
# plus the objects of the agent's commits). Reads only; cheap.
SIZE_SCRIPT = r"""
cd "$1" || exit 1
a=$(git ls-files -z -m -o --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s+=$1} END {print s+0}')
b=$(git rev-list --objects "$2"..HEAD 2>/dev/null | cut -d' ' -f1 | git cat-file --batch-check='%(objectsize)' 2>/dev/null | awk '{s+=$1} END {print s+0}')
echo $((a + b))
"""


@dataclass(frozen=True)
class Run:
    """What collecting and checkpointing need of a run: its record, sandbox and places."""

    journal: Journal
    sandbox: Sandbox
    settings: Settings
    artifacts: Path

    def session(self) -> Session:
        return self.journal.session()

    @property
    def store(self) -> SessionStore:
        return self.journal.store


class CollectionIncomplete(BackendError):
    """Bringing the work back failed after retries; the sandbox is kept for a later try."""


@dataclass
class Manifest:
    """What ``produce`` made in the sandbox."""

    head: str
    since: str
    commits: int  # the agent's commits since the baseline
    files: dict[str, tuple[int, str]]  # name -> (size, sha256)

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head, "since": self.since, "commits": self.commits,
                "files": {k: list(v) for k, v in self.files.items()}}  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> Manifest:
        fields: dict[str, str] = {}
        files: dict[str, tuple[int, str]] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "file":
                files[parts[1]] = (int(parts[2]), parts[3])
            elif len(parts) == 2:
                fields[parts[0]] = parts[1]
        if set(files) != set(FILES) or "head" not in fields:
            raise BackendError(f"the sandbox produced no usable manifest: {text[-500:]!r}")
        return cls(fields["head"], fields["since"], int(fields.get("commits", 0)), files)


def _retrying(what: str, fn: Callable[[], T], sandbox: Sandbox, *, attempts: int = ATTEMPTS) -> T:
    """Call ``fn``; retry transient failures with backoff, but not once the sandbox is gone.

    A failure that might be the sandbox's end is checked with ``is_alive`` (which answers
    "alive" while E2B cannot be reached), so a lost sandbox is reported at once instead of
    after every retry.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except SandboxLostError:
            raise
        except (BackendError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or attempt == attempts - 1:
                raise
            if not sandbox.is_alive():
                raise SandboxLostError(
                    f"the sandbox {sandbox.id} is gone (while {what})",
                    "The last checkpoint of the work is kept.",
                ) from exc
            delay = backoff(attempt)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def produce(sandbox: Sandbox, session: Session, since: str | None, name: str) -> Manifest:
    """Make the patches (commits after ``since``, or the baseline) in the sandbox."""
    base = session.sandbox_base
    if not base:
        raise BackendError("the sandbox has no baseline commit, so there is nothing to collect")
    out = f"{control_dir(sandbox)}/{name}"

    def run() -> Manifest:
        res = sandbox.exec(
            ["sh", "-c", PRODUCE_SCRIPT, "sh", sandbox.repo_dir, base, since or base, out],
            timeout=900,
        )
        if not res.ok:
            raise BackendError(f"collecting the agent's changes failed: {res.error_text()[-2000:]}")
        return Manifest.parse(res.text())

    return _retrying("producing the patches in the sandbox", run, sandbox)


def measure(sandbox: Sandbox, session: Session) -> int | None:
    """Bytes a collection would bring back now (None when the sandbox cannot say)."""
    if not session.sandbox_base:
        return 0
    try:
        res = sandbox.exec(
            ["sh", "-c", SIZE_SCRIPT, "sh", sandbox.repo_dir, session.sandbox_base], timeout=120
        )
        return int(res.text().strip().splitlines()[-1]) if res.ok else None
    except (SandboxrunError, ValueError, IndexError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(sandbox: Sandbox, remote: str, dest: Path, size: int, sha: str) -> None:
    """Stream ``remote`` (``size`` bytes, ``sha``) to ``dest``: pieces, retries, resume.

    Bytes land in ``dest.part`` as they arrive; its sidecar ``dest.part.sha`` names the file
    version they belong to, so a later call (after a crash or a failed try) carries on from
    the bytes already there, and a changed file starts over.
    """
    part = dest.with_name(dest.name + ".part")
    want = dest.with_name(dest.name + ".part.sha")
    if not (want.exists() and want.read_text() == sha):
        part.unlink(missing_ok=True)
        want.write_text(sha)
    part.touch()
    with open(part, "r+b") as fh:

        def piece() -> int:
            # Every try starts from the bytes already on disk: a transfer broken halfway
            # goes on from there (what arrived before the break is a true prefix).
            have = fh.seek(0, 2)
            try:
                _download_piece(sandbox, remote, fh, have, min(PIECE, size - have), size)
            finally:
                fh.flush()
            return fh.seek(0, 2)

        while (have := fh.seek(0, 2)) < size:
            if _retrying(f"downloading {remote}", piece, sandbox) <= have:
                raise BackendError(f"{remote} in the sandbox is shorter than its manifest says")
        fh.truncate(size)
    if _sha256(part) != sha:
        part.unlink(missing_ok=True)
        raise BackendError(f"{remote} arrived damaged (SHA-256 differs); it will be fetched again")
    part.replace(dest)
    want.unlink(missing_ok=True)


def _download_piece(
    sandbox: Sandbox, remote: str, fh: BinaryIO, offset: int, length: int | None, size: int
) -> None:
    """``length`` bytes of ``remote`` from ``offset`` into ``fh`` (None: to the end)."""
    if offset == 0 and length == size:
        length = None
    download_to = getattr(sandbox, "download_to", None)
    if download_to is not None:
        download_to(remote, fh, offset=offset, length=length)
    else:  # backends without streaming (local: a file on this machine) read the rest at once
        data = sandbox.read_file(remote, offset)
        fh.write(data if length is None else data[:length])


# -- the final collection ------------------------------------------------------------------


def bring_back(run: Run) -> Manifest:
    """Produce and fetch the agent's work into ``artifacts/collect/`` (``commits.mbox``,
    ``changes.diff``, as they are, for applying); returns the manifest.

    Files are saved as they arrive and checked against the manifest; the caller keeps a
    redacted copy in the artifacts and removes this directory once the work is applied. On failure the sandbox is left alive, the session stays
    ``collecting`` and :class:`CollectionIncomplete` says how to finish (``attach``,
    ``download``, ``kill``).
    """
    sb, s = run.sandbox, run.session()
    assert sb is not None
    secure_collection(run)
    work = run.artifacts / "collect"
    work.mkdir(parents=True, exist_ok=True)
    try:
        manifest = produce(sb, s, None, "collect")
        (work / "manifest.json").write_text(json.dumps(manifest.to_dict()))
        for name in FILES:
            size, sha = manifest.files[name]
            fetch(sb, f"{control_dir(sb)}/collect/{name}", work / name, size, sha)
    except SandboxLostError:
        raise
    except (SandboxrunError, OSError) as exc:
        raise incomplete(run, exc) from exc
    _copy_logs(run)
    return manifest


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


def _copy_logs(run: Run) -> None:
    ctl = control_dir(run.sandbox)
    for name in ("agent.log", "agent.stderr"):
        dest = run.artifacts / name
        with contextlib.suppress(FileNotFoundError, SandboxrunError, OSError):
            with open(dest.with_name(name + ".tmp"), "wb") as fh:
                _download_piece(run.sandbox, f"{ctl}/{name}", fh, 0, None, -1)
            redact_file(dest.with_name(name + ".tmp"))
            dest.with_name(name + ".tmp").replace(dest)


def download_live(sandbox: Sandbox, session: Session, output: Path) -> Manifest:
    """``download``: the current work of a live sandbox into ``output`` (streamed)."""
    output.mkdir(parents=True, exist_ok=True)
    manifest = produce(sandbox, session, None, "download")
    for name in FILES:
        size, sha = manifest.files[name]
        fetch(sandbox, f"{control_dir(sandbox)}/download/{name}", output / name, size, sha)
        redact_file(output / name)
    return manifest


def redact_file(path: Path, redactor: Redactor | None = None) -> None:
    """Replace our credentials' values in ``path`` (``sandboxrun.redact``), in bounded memory.

    The file is read in 1 MiB chunks; a tail as long as the longest secret is carried over,
    so a value split across two chunks is still found.
    """
    redactor = redactor if redactor is not None else Redactor.from_env(os.environ)
    if not redactor:
        return
    values = sorted((v.encode("utf-8", "surrogateescape") for v in redactor.values), key=len)
    pattern = re.compile(b"|".join(re.escape(v) for v in reversed(values)))
    keep = len(values[-1]) - 1
    tmp = path.with_name(path.name + ".redacting")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        carry = b""
        while chunk := src.read(1 << 20):
            buf = carry + chunk
            cut = max(0, len(buf) - keep)
            # never cut through a value: move the cut before any that straddles it
            for m in pattern.finditer(buf):
                if m.start() < cut < m.end():
                    cut = m.start()
            dst.write(redactor.bytes(buf[:cut]))
            carry = buf[cut:]
        dst.write(redactor.bytes(carry))
    tmp.replace(path)


# -- securing time for a collection -----------------------------------------------------------


def lifetime_cap(run: Run, session: Session) -> float:
    """The latest end the plan allows this sandbox (inf where sandboxes have no end)."""
    if session.sandbox_end is None or session.sandbox_created_at is None:
        return math.inf
    return session.sandbox_created_at + run.settings.max_lifetime


def extend_sandbox(sandbox: Sandbox, end: float) -> float | None:
    """Ask for the sandbox to live until ``end``; returns the end the backend confirms.

    The confirmed end is read back from the backend, so an answer lost on the way (or an
    SDK that swallowed an error) cannot make us believe in an end E2B never accepted.
    Raises BackendError when the end is not accepted; None: this backend has no end.
    """
    sandbox.set_timeout(max(1.0, end - time.time()))
    left = sandbox.time_left()
    if left is None:
        return None
    confirmed = time.time() + left
    if confirmed < end - 5:
        raise BackendError(
            f"E2B did not keep the sandbox until {time.strftime('%H:%M:%S', time.localtime(end))}"
            f" (it ends in {format_duration(left)})"
        )
    return confirmed


def secure_collection(run: Run, nbytes: int | None = None) -> bool:
    """Make the sandbox live long enough to stop the agent and bring ``nbytes`` back.

    ``nbytes`` None: measured in the sandbox now. Returns False (after saying so) when the
    end could not be pushed: the collection then has whatever time is left.
    """
    s = run.session()
    sb = run.sandbox
    if sb is None or s.sandbox_end is None:
        return True  # no end to worry about (local), or the agent never started
    if nbytes is None:
        nbytes = measure(sb, s) or 0
    now = time.time()
    needed = collection_seconds(nbytes, minimum=run.settings.grace)
    target = extension_target(
        now=now, needed=needed, current_end=s.sandbox_end, cap=lifetime_cap(run, s)
    )
    if target is None:
        return True
    try:
        confirmed = extend_sandbox(sb, target)
    except SandboxLostError:
        raise
    except SandboxrunError as exc:
        msg = (f"could not extend the sandbox for the collection ({exc.message}); it has "
               f"{format_duration(max(0.0, s.sandbox_end - now))} left")  # fmt: skip
        run.store.add_event(s.id, "warning", {"mark": "extend", "message": msg})
        run.journal.reporter.warning(msg)
        return False
    if confirmed is not None:
        run.store.update(s.id, sandbox_end=confirmed)
        run.store.add_event(
            s.id, "phase",
            {"phase": "extended", "detail": f"sandbox kept {format_duration(confirmed - now)} "
             f"for collecting {nbytes:,} bytes", "sandbox_end": confirmed},
        )  # fmt: skip
    return True


def start_clock(run: Run, timeout: float) -> None:
    """Set a fresh agent's sandbox end: its limit plus room to collect, within the cap.

    The end is recorded only as the backend confirms it. If E2B does not take it, the run goes
    on with the end the sandbox has (and says so); the stop is then planned inside that.
    """
    s, sb = run.session(), run.sandbox
    now = time.time()
    cap = (s.sandbox_created_at or now) + run.settings.max_lifetime
    end = min(cap, now + timeout + collection_seconds(0, minimum=run.settings.grace))
    try:
        confirmed = extend_sandbox(sb, end)
    except SandboxLostError:
        raise
    except SandboxrunError as exc:
        msg = f"could not set the sandbox's lifetime ({exc.message}); keeping its current end"
        run.store.add_event(s.id, "warning", {"mark": "extend", "message": msg})
        run.journal.reporter.warning(msg)
        left = None
        with contextlib.suppress(SandboxrunError):
            left = sb.time_left()
        confirmed = None if left is None else time.time() + left
    if confirmed is not None:
        run.store.update(s.id, sandbox_end=confirmed)


def stop_plan(run: Run, session: Session, known_bytes: int) -> StopPlan:
    """When to stop the agent, given its deadline, the sandbox's cap and the work's size."""
    now = time.time()
    deadline = session.deadline or now + (session.timeout_s or run.settings.timeout)
    needed = collection_seconds(known_bytes, minimum=run.settings.grace)
    return plan_stop(deadline=deadline, needed=needed, cap=lifetime_cap(run, session))


def begin_stop(run: Run, reason: str) -> None:
    """Before stopping the agent: remember why, and secure the sandbox's time to collect."""
    run.store.update(run.journal.session_id, stop_reason=reason)
    secure_collection(run)


# -- checkpoints -------------------------------------------------------------------------------


def read_checkpoint(artifacts: Path) -> dict[str, Any] | None:
    """The saved checkpoint's description, or None when there is none."""
    try:
        info: dict[str, Any] = json.loads((artifacts / CHECKPOINT_FILE).read_text())
        return info
    except (FileNotFoundError, ValueError):
        return None


def take_checkpoint(run: Run) -> dict[str, Any] | None:
    """Fetch what changed since the last checkpoint and save it; returns its description.

    Only the commits made since the last checkpoint are transferred (appended to the saved
    mbox); the uncommitted diff only when it differs from the saved one. Failures are logged
    and return None: a checkpoint is best effort, the run goes on.
    """
    sb, s = run.sandbox, run.session()
    art = run.artifacts
    last = read_checkpoint(art) or {}
    try:
        manifest = produce(sb, s, last.get("head"), "checkpoint")
        stage = art / ".checkpoint"
        stage.mkdir(parents=True, exist_ok=True)
        ctl = f"{control_dir(sb)}/checkpoint"
        size, sha = manifest.files["commits.mbox"]
        appended = bool(last) and manifest.since == last.get("head")
        fetch(sb, f"{ctl}/commits.mbox", stage / "new.mbox", size, sha)
        dsize, dsha = manifest.files["changes.diff"]
        diff_same = last.get("diff_sha") == dsha and (art / "changes.diff").exists()
        if not diff_same:
            fetch(sb, f"{ctl}/changes.diff", stage / "changes.diff", dsize, dsha)
        mbox_same = appended and size == 0 and (art / "commits.mbox").exists()
        if mbox_same and diff_same:
            (stage / "new.mbox").unlink(missing_ok=True)
            return last
        if not mbox_same:
            with open(stage / "commits.mbox", "wb") as out:
                if appended and (art / "commits.mbox").exists():
                    with open(art / "commits.mbox", "rb") as old:
                        shutil.copyfileobj(old, out, 1 << 20)
                with open(stage / "new.mbox", "rb") as new:
                    shutil.copyfileobj(new, out, 1 << 20)
            (stage / "commits.mbox").replace(art / "commits.mbox")
        (stage / "new.mbox").unlink(missing_ok=True)
        if not diff_same:
            (stage / "changes.diff").replace(art / "changes.diff")
    except SandboxLostError:
        raise
    except (SandboxrunError, OSError) as exc:
        log.warning("checkpoint of %s failed: %s", s.id, exc)
        run.store.add_event(s.id, "phase", {"phase": "checkpoint_failed", "detail": str(exc)})
        return None
    now = time.time()
    info = {
        "number": int(last.get("number", 0)) + 1,
        "at": now,
        "head": manifest.head,
        "commits": manifest.commits,
        "leftover_bytes": dsize,
        "diff_sha": dsha,
        "fetched_bytes": size + (0 if diff_same else dsize),
    }
    for name in FILES:
        if (art / name).exists():
            redact_file(art / name)  # the saved checkpoint is what is kept: redacted
    tmp = art / (CHECKPOINT_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(art / CHECKPOINT_FILE)
    run.store.update(s.id, checkpoint_at=now)
    run.store.add_event(s.id, "phase", {"phase": "checkpoint", "detail": describe(info),
                                           **{k: info[k] for k in ("number", "commits")}})  # fmt: skip
    return info


def describe(info: dict[str, Any]) -> str:
    """``checkpoint 3 from 18:40:12: 2 commit(s), 1,234 bytes uncommitted``."""
    when = time.strftime("%H:%M:%S", time.localtime(info["at"]))
    return (f"checkpoint {info['number']} from {when}: {info['commits']} commit(s), "
            f"{info['leftover_bytes']:,} bytes of uncommitted changes")  # fmt: skip


def apply_command(session: Session, artifacts: Path, info: dict[str, Any] | None = None) -> str:
    """A shell command that applies the saved patches on the session's branch."""
    wt = session.worktree
    steps = []
    if info is None or info.get("commits"):
        steps.append(f"git -C {wt} am --patch-format=mboxrd {artifacts}/commits.mbox")
    if info is None or info.get("leftover_bytes"):
        steps.append(f"git -C {wt} apply --index {artifacts}/changes.diff")
        steps.append(f"git -C {wt} commit -m 'sandboxrun: last checkpoint of {session.name}'")
    return " && ".join(steps) or "(nothing to apply)"


def mark_lost(store: SessionStore, session: Session, artifacts: Path, message: str) -> None:
    """End a session whose sandbox is gone, saying what of its work was kept.

    The last checkpoint (if any) is applied to the session's branch, all or nothing; when it
    cannot be, it stays in the artifacts and the message gives the command that applies it.
    """
    info = read_checkpoint(artifacts)
    fields: dict[str, Any] = {}
    if info is None:
        note = "no checkpoint of the work had been saved yet, so nothing was kept"
    else:
        note = f"kept the last {describe(info)}"
        try:
            from sandboxrun.sync.patches import apply_changes

            assert session.worktree is not None
            applied = apply_changes(
                Path(session.worktree),
                (artifacts / "commits.mbox").read_bytes(),
                (artifacts / "changes.diff").read_bytes(),
                allow_sensitive=bool(session.options.get("allow_sensitive")),
                leftover_message=CHECKPOINT_MESSAGE,
                artifacts_hint=str(artifacts),
            )
            fields = {"result_commits": applied.commits,
                      "files_changed": len(applied.files_changed),
                      "insertions": applied.insertions, "deletions": applied.deletions}  # fmt: skip
            note += f", applied to branch {session.branch} ({len(applied.commits)} commit(s))"
        except (SandboxrunError, OSError) as exc:
            note += (f" in {artifacts} (not applied: {getattr(exc, 'message', exc)}); apply it "
                     f"with: {apply_command(session, artifacts, info)}")  # fmt: skip
    store.set_status(
        session.id, Status.LOST, only_if_active=True, error=f"{message}; {note}", **fields
    )
