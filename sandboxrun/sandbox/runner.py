"""The sandbox run pipeline: pack → sandbox → agent → follow → collect → commit.

``sandboxrun.sandbox.prepare.prepare_run`` has made the worktree and the session row. ``RunDriver``
drives the session to an end state; it only talks to
the sandbox through the :class:`~sandboxrun.sandbox.backends.base.Sandbox` primitives, so every
backend runs the same pipeline. The driver can also pick up a session whose driving process
died (``resume``), because all its state lives in the store and in the sandbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from sandboxrun.agent import AgentEvent, AgentProgress, build_claude_argv
from sandboxrun.config import CLAUDE_CODE_VERSION, Settings, format_duration
from sandboxrun.errors import (
    AgentError,
    BackendError,
    SandboxLostError,
    SandboxrunError,
    UsageError,
)
from sandboxrun.sandbox.apply import has_collection
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.backends.base import Backend, Sandbox, control_dir
from sandboxrun.sandbox.collect import (
    apply_and_record,
    collect_patches,
    finish_with_patches,
    record_branch_head,
    save_artifacts,
    save_baseline,
)
from sandboxrun.sandbox.follow import FollowOutcome, follow_agent, read_exit_code
from sandboxrun.sandbox.reporting import NullReporter, Reporter
from sandboxrun.store import Session, SessionStore

log = logging.getLogger(__name__)

#: extra lifetime asked for a sandbox while packing and uploading, before the agent's clock
#: starts (the limit is then reset to exactly --timeout when the agent starts)
PROVISION_MARGIN = 600.0
#: how long to wait after each stop signal before escalating (INT → TERM → KILL)
STOP_WAITS = (10.0, 5.0, 3.0)

# The baseline commit of the unpacked repository ("$1"), without a file per object: `git add`
# streams every blob over core.bigFileThreshold (1 byte) into one pack, and `git fast-import`
# writes the trees and the commit from the index's own listing (C-quoted paths, which it
# reads back as they are). `git write-tree` then proves the commit's tree is exactly the
# index's; those trees already exist, so it writes nothing. Level-0 deflate and no fsync: it is
# a scratch store in a throwaway sandbox. No hooks run (neither command has any).
BASELINE_SCRIPT = r"""
set -e
cd "$1"
git init -q
git config user.name "Claude (sandboxrun)"
git config user.email "agent@sandboxrun.invalid"
git config commit.gpgsign false
fast="-c core.fsync=none -c core.compression=0 -c pack.compression=0"
git $fast -c core.bigFileThreshold=1 add -A
ref=$(git symbolic-ref HEAD)
tab=$(printf '\t')
{
  printf 'commit %s\ncommitter Claude (sandboxrun) <agent@sandboxrun.invalid> now\ndata 20\nsandboxrun baseline\n\n' "$ref"
  git -c core.quotepath=on ls-files -s | sed "s/^\([0-7]*\) \([0-9a-f]*\) 0$tab/M \1 \2 /"
} | git $fast fast-import --quiet --date-format=now
tree=$(git write-tree)
[ "$(git rev-parse 'HEAD^{tree}')" = "$tree" ] || { echo "baseline tree differs from the index" >&2; exit 1; }
git rev-parse HEAD
"""


class RunDriver:
    """Drives one sandbox session to its end. One driver per session at a time."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        session: Session,
        reporter: Reporter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.session = session
        self.reporter = reporter or NullReporter()
        self.backend: Backend = get_backend(session.backend, settings)
        self.sandbox: Sandbox | None = None
        self.progress = AgentProgress()
        self.phase_times: dict[str, float] = {}
        self.artifacts = settings.session_artifacts(session.id)

    # -- helpers ---------------------------------------------------------------------------

    def _refresh(self) -> Session:
        self.session = self.store.get(self.session.id)
        return self.session

    def _phase(self, status: str, detail: str = "") -> None:
        self.store.set_status(self.session.id, status)
        self.store.add_event(self.session.id, "phase", {"phase": status, "detail": detail})
        self.reporter.phase(status, detail)

    def _event(self, kind: str, payload: Any) -> None:
        self.store.add_event(self.session.id, kind, payload)

    def _claim(self) -> None:
        self.store.update(
            self.session.id,
            owner_pid=os.getpid(),
            owner_host=os.uname().nodename,
            last_heartbeat=time.time(),
        )

    def _killed(self) -> bool:
        return bool(self._refresh().kill_requested)

    # -- the whole run -------------------------------------------------------------------------

    def execute(self) -> Session:
        """Run the session from its worktree to an end state; returns the final row."""
        self._claim()
        try:
            tarball, pack_result = self._pack()
            self._check_kill_before_agent()
            self._provision(tarball, pack_result)
            tarball.unlink(missing_ok=True)
            self._check_kill_before_agent()
            if self.session.options.get("dry_run"):
                return self._finish_dry_run(pack_result)
            self._start_agent()
            return self._follow_and_finish()
        except _KilledBeforeAgent:
            self._teardown()
            self.store.set_status(
                self.session.id,
                "killed",
                only_if_active=True,
                error="killed before the agent started",
            )
            return self._refresh()
        except SandboxLostError as exc:
            if self.sandbox is not None and has_collection(self.artifacts):
                return self._finish_from_snapshot(exc)
            self.store.set_status(self.session.id, "lost", only_if_active=True, error=exc.message)
            raise
        except KeyboardInterrupt:
            if self._agent_started():
                # A second Ctrl-C: leave the agent and its sandbox alone, nothing is lost.
                raise SandboxrunError(
                    f"interrupted; the agent of {self.session.name} may still be running "
                    f"in sandbox {self.session.sandbox_id}",
                    f"Carry on with `sandboxrun attach {self.session.name}`, or stop it and "
                    f"collect its work with `sandboxrun kill {self.session.name}`.",
                ) from None
            self._teardown()
            self.store.set_status(
                self.session.id, "failed", only_if_active=True,
                error="interrupted before the agent started",
            )  # fmt: skip
            raise
        except SandboxrunError as exc:
            self._fail(exc.message)
            raise
        except Exception as exc:
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}")
            raise

    def _agent_started(self) -> bool:
        return self._refresh().agent_pgid is not None and self.sandbox is not None

    def _fail(self, message: str) -> None:
        """Record a failure; keep the sandbox when it may still hold uncollected work."""
        if self._agent_started():
            try:
                alive = self.sandbox.is_alive()
            except SandboxrunError:
                alive = False
            if alive:
                message += (
                    f" (sandbox {self.session.sandbox_id} kept: `sandboxrun download "
                    f"{self.session.name}` fetches its work, `sandboxrun cleanup` removes it)"
                )
                self.store.set_status(self.session.id, "failed", only_if_active=True,
                                      error=message)  # fmt: skip
                return
        self._teardown()
        self.store.set_status(self.session.id, "failed", only_if_active=True, error=message)

    def resume(self) -> Session:
        """Carry on a session whose driver died: reconnect, follow, warn, collect."""
        s = self._refresh()
        if not s.sandbox_id or s.agent_pgid is None:
            raise UsageError(
                f"session {s.name} never started its agent, so there is nothing to attach to",
                "Start a new run.",
            )
        self._claim()
        try:
            self.sandbox = self.backend.connect(s.sandbox_id)
        except SandboxLostError as exc:
            if s.status == "collecting" and has_collection(self.artifacts):
                # Torn down only after its work was verified in the artifacts: a crash while
                # applying it is finished from there.
                self._replay_progress()
                return apply_and_record(self, FollowOutcome("exited", s.exit_code))
            self.store.set_status(s.id, "lost", only_if_active=True, error=exc.message)
            raise
        self.store.add_event(s.id, "phase", {"phase": "attached", "detail": f"pid {os.getpid()}"})
        self.reporter.phase("attached", s.sandbox_id)
        self._replay_progress()
        try:
            return self._follow_and_finish()
        except SandboxLostError as exc:
            if has_collection(self.artifacts):
                return self._finish_from_snapshot(exc)
            self.store.set_status(s.id, "lost", only_if_active=True, error=exc.message)
            raise

    def _finish_from_snapshot(self, exc: SandboxLostError) -> Session:
        """The sandbox is gone but its last snapshot is in the artifacts: apply that."""
        self.reporter.warning(f"{exc.message}; applying the last snapshot of the work")
        return apply_and_record(self, FollowOutcome("lost", None, detail=exc.message))

    def finish_orphan_kill(self) -> Session:
        """Stop and collect a session whose driver is gone (``kill`` from another terminal)."""
        s = self._refresh()
        if not s.sandbox_id or s.agent_pgid is None:
            if s.sandbox_id:
                with contextlib.suppress(SandboxLostError):
                    self.backend.connect(s.sandbox_id).destroy()
            self.store.set_status(
                s.id, "killed", only_if_active=True, error="killed before the agent started"
            )
            return self._refresh()
        try:
            self.sandbox = self.backend.connect(s.sandbox_id)
        except SandboxLostError as exc:
            self.store.set_status(s.id, "lost", only_if_active=True, error=exc.message)
            return self._refresh()
        self._claim()
        self.stop_agent()
        self._replay_progress()
        return finish_with_patches(self, FollowOutcome("killed", read_exit_code(self)))

    def _replay_progress(self) -> None:
        """Rebuild the agent's totals from the stored events (after a driver change)."""
        for ev in self.store.events(self.session.id, kinds=("agent",)):
            payload = dict(ev["payload"])
            self.progress.feed(AgentEvent(payload.pop("type"), payload))

    def _check_kill_before_agent(self) -> None:
        if self._killed():
            raise _KilledBeforeAgent()

    # -- phases ------------------------------------------------------------------------------

    def _pack(self):
        from sandboxrun.sync.pack import pack_worktree

        self._phase("packing", self.session.worktree)
        record_branch_head(self)
        t0 = time.monotonic()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        compression = self.session.options.get("compression", "gzip")
        suffix = ".tar.zst" if compression == "zstd" else ".tar.gz"
        tarball = self.artifacts / f"upload{suffix}"
        result = pack_worktree(Path(self.session.worktree), tarball, compression=compression)
        self.phase_times["pack"] = time.monotonic() - t0
        sel = result.selection
        self._event(
            "pack",
            {
                "files": result.file_count,
                "bytes_in": result.bytes_in,
                "bytes_out": result.bytes_out,
                "compression": result.compression,
                "excluded_secrets": list(sel.excluded_secrets),
                "excluded_by_ignorefile": len(sel.excluded_by_ignorefile),
                "seconds": round(self.phase_times["pack"], 3),
            },
        )
        if sel.excluded_secrets:
            self.reporter.warning(
                "kept out of the upload (secrets deny-list): " + ", ".join(sel.excluded_secrets)
            )
        return tarball, result

    def _provision(self, tarball: Path, pack_result) -> None:
        s = self.session
        self._phase("provisioning", f"backend {s.backend}")
        t0 = time.monotonic()
        env = self.backend.agent_env(dry_run=bool(s.options.get("dry_run")))
        metadata = {"sandboxrun_session": s.id, "repo": Path(s.repo).name}
        sandbox = self.backend.create(
            s.id,
            # Enough for the upload; the sandbox's lifetime is set to the run's limit when the
            # agent starts (never above it: E2B Hobby sandboxes live at most 1 h).
            timeout_s=PROVISION_MARGIN,
            env=env,
            metadata=metadata,
        )
        self.sandbox = sandbox
        self.store.update(s.id, sandbox_id=sandbox.id, sandbox_home=sandbox.home)
        self.phase_times["create"] = time.monotonic() - t0
        t0 = time.monotonic()
        sandbox.upload_and_unpack(tarball, pack_result.compression, sandbox.repo_dir)
        self.phase_times["upload"] = time.monotonic() - t0
        t0 = time.monotonic()
        base = self._baseline_commit()
        self.store.update(s.id, sandbox_base=base)
        self._refresh()
        save_baseline(self)
        self.phase_times["baseline"] = time.monotonic() - t0

    def _sh(self, script: str, *args: str, timeout: float = 300) -> bytes:
        """Run a fixed shell script (arguments only via "$@") in the sandbox; raise on failure."""
        assert self.sandbox is not None
        res = self.sandbox.exec(
            ["sh", "-c", script, "sh", *args], cwd=self.sandbox.home, timeout=timeout
        )
        if not res.ok:
            raise BackendError(f"command in the sandbox failed: {res.error_text()[-2000:]}")
        return res.stdout

    def _baseline_commit(self) -> str:
        out = self._sh(BASELINE_SCRIPT, self.sandbox.repo_dir)
        return out.decode().strip().splitlines()[-1]

    def _finish_dry_run(self, pack_result) -> Session:
        from sandboxrun.sync.unpack import manifest

        self._phase("collecting", "verifying the upload")
        t0 = time.monotonic()
        files = pack_result.selection.files
        local = manifest(Path(self.session.worktree), files)
        # Hash what arrived inside the sandbox, file by file, in the order we sent the names.
        names = b"\0".join(f.encode(errors="surrogateescape") for f in files)
        self.sandbox.write_file(f"{control_dir(self.sandbox)}/files.lst", names)
        remote_out = self._sh(
            'cd "$1" && { xargs -0 -r sha256sum -z -- < "$2" 2>/dev/null; true; }',
            self.sandbox.repo_dir,
            f"{control_dir(self.sandbox)}/files.lst",
        )
        remote = {}
        for entry in remote_out.split(b"\0"):
            if entry:
                digest, path = entry.split(b"  ", 1)
                remote[path.decode(errors="surrogateescape")] = digest.decode()
        missing = sorted(set(local) - set(remote))
        differ = sorted(p for p in local if p in remote and remote[p] != local[p])
        self.phase_times["verify"] = time.monotonic() - t0
        t0 = time.monotonic()
        patches = collect_patches(self.sandbox, self.session)
        self.phase_times["collect"] = time.monotonic() - t0
        save_artifacts(self.artifacts, patches)
        report = {
            "files": len(files),
            "verified": len(local) - len(missing) - len(differ),
            "missing": missing[:20],
            "differ": differ[:20],
            "bytes_in": pack_result.bytes_in,
            "bytes_out": pack_result.bytes_out,
            "compression": pack_result.compression,
            "collected_bytes": patches.size,
            "phases": {k: round(v, 3) for k, v in self.phase_times.items()},
        }
        self._event("dry_run", report)
        self._teardown()
        if missing or differ:
            bad = ", ".join((missing + differ)[:5])
            self.store.set_status(
                self.session.id, "failed", error=f"upload verification failed for {bad}"
            )
            raise BackendError(f"files did not arrive intact in the sandbox: {bad}")
        self.store.set_status(
            self.session.id, "completed_no_changes", result_commits=[], files_changed=0
        )
        return self._refresh()

    def _start_agent(self) -> None:
        s, sb = self.session, self.sandbox
        assert sb is not None
        ctl = control_dir(sb)
        sb.write_file(f"{ctl}/prompt.txt", (s.prompt or "").encode())
        claude = self._find_claude()
        argv = build_claude_argv(claude, model=s.model, max_turns=s.max_turns)
        env = self.backend.agent_env(dry_run=False)
        pgid = sb.start_detached(
            argv,
            cwd=sb.repo_dir,
            env=env,
            stdin_path=f"{ctl}/prompt.txt",
            log_path=f"{ctl}/agent.log",
            stderr_path=f"{ctl}/agent.stderr",
            exit_path=f"{ctl}/agent.exit",
            pid_path=f"{ctl}/agent.pid",
        )
        now = time.time()
        timeout = s.timeout_s or self.settings.timeout
        self.store.update(
            s.id, agent_pgid=pgid, started_at=now, deadline=now + timeout, log_offset=0
        )
        # The sandbox's own end is the hard limit; we stop the agent and collect a little
        # before it (follow.stop_margin), while the sandbox is still alive.
        sb.set_timeout(timeout)
        self._phase("running", f"agent pid {pgid}, limit {format_duration(timeout)}")

    def _find_claude(self) -> str:
        """The agent executable inside the sandbox; installs or updates it when asked."""
        sb, opts = self.sandbox, self.session.options
        # SANDBOXRUN_CLAUDE_BIN names a program on this machine; an isolated sandbox has its
        # own `claude` (from the template, or from --install-claude).
        claude = "claude" if self.backend.isolated else self.settings.claude_bin
        found = self._which(claude)
        if found is None and opts.get("install_claude"):
            found = self._install_claude()
        if found is None:
            where = "the sandbox" if self.backend.isolated else "this machine"
            raise AgentError(
                f"Claude Code ({claude!r}) is not installed in {where}",
                "Use a template with Claude Code (`sandboxrun template build`), or pass "
                "--install-claude to install it in the sandbox with npm."
                if self.backend.isolated
                else "Install it with `scripts/install.sh --with-claude` or `npm install -g "
                "@anthropic-ai/claude-code`, or set SANDBOXRUN_CLAUDE_BIN to the claude "
                "executable.",
            )
        if opts.get("update_claude"):
            self.reporter.phase("provisioning", "claude update")
            res = sb.exec([found, "update"], cwd=sb.home, timeout=600)
            detail = (res.text() or res.error_text()).strip()[-300:]
            self._event("phase", {"phase": "claude_update", "detail": detail, "ok": res.ok})
            if not res.ok:
                self.reporter.warning(f"`claude update` failed, going on with the current one: "
                                      f"{res.error_text()[-300:]}")  # fmt: skip
        return found

    def _which(self, program: str) -> str | None:
        res = self.sandbox.exec(["sh", "-c", 'command -v "$1"', "sh", program])
        return res.text().strip().splitlines()[-1] if res.ok and res.text().strip() else None

    def _install_claude(self) -> str | None:
        """Install the pinned Claude Code with npm into a prefix we own inside the sandbox."""
        if not self.backend.isolated:
            raise UsageError(
                "--install-claude installs into an isolated sandbox only (--backend e2b)",
                "On this machine, install it yourself: scripts/install.sh --with-claude.",
            )
        sb = self.sandbox
        prefix = f"{control_dir(sb)}/npm"
        package = f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
        self._phase("provisioning", f"installing {package} in the sandbox")
        if self._which("npm") is None:
            raise AgentError(
                "--install-claude needs npm in the sandbox, and this template has none",
                "Build the template with `sandboxrun template build` (Node, git, Claude Code).",
            )
        res = sb.exec(
            ["npm", "install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", package],
            cwd=sb.home, timeout=900,
        )  # fmt: skip
        if not res.ok:
            raise AgentError(
                f"installing {package} in the sandbox failed: {res.error_text()[-500:]}",
                "Use a template with Claude Code (`sandboxrun template build`).",
            )
        return self._which(f"{prefix}/bin/claude")

    # -- following -------------------------------------------------------------------------------

    def _follow_and_finish(self) -> Session:
        outcome = follow_agent(self)
        return finish_with_patches(self, outcome)

    def stop_agent(self) -> None:
        """Interrupt the agent: INT, then TERM, then KILL, waiting for it between each."""
        s, sb = self.session, self.sandbox
        if sb is None or s.agent_pgid is None:
            return
        for signame, wait in zip(("INT", "TERM", "KILL"), STOP_WAITS, strict=True):
            if not sb.signal_group(s.agent_pgid, signame):
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.agent_exited():
                    return
                time.sleep(0.1)

    def agent_exited(self) -> bool:
        """True once the agent has written its exit code or its process group is gone."""
        sb = self.sandbox
        try:
            sb.read_file(f"{control_dir(sb)}/agent.exit")
            return True
        except FileNotFoundError:
            return not sb.signal_group(self.session.agent_pgid, "0")

    def _teardown(self) -> None:
        if self.sandbox is None:
            return
        if self.session.options.get("keep"):
            self._event("phase", {"phase": "kept", "detail": self.sandbox.home})
            return
        try:
            self.sandbox.destroy()
        except SandboxrunError as exc:
            log.warning("could not tear down sandbox %s: %s", self.sandbox.id, exc)


class _KilledBeforeAgent(Exception):
    """`kill` arrived before the agent started: stop without collecting anything."""
