"""The sandbox run pipeline: pack → sandbox → agent → follow → collect → commit.

``sandboxrun.sandbox.prepare.prepare_run`` has made the worktree and the session row.
``RunDriver`` drives the session to an end state: the :class:`~.provision.Provisioner` gets the
agent running, :func:`~.follow.follow_agent` watches it, :func:`~.collect.finish_with_patches`
brings its work back. They share a :class:`~.journal.Journal` (the session's record) and the
driver's :class:`~.agentproc.AgentProcess`, and reach the sandbox only through the
:class:`~sandboxrun.sandbox.backends.base.Sandbox` primitives, so every backend runs the same
pipeline. The driver can also pick up a session whose driving process died (``resume``),
because all its state lives in the store and in the sandbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from sandboxrun import testhold
from sandboxrun.agent import AgentEvent, AgentProgress
from sandboxrun.config import Settings
from sandboxrun.errors import BackendError, Interrupted, SandboxLostError, SandboxrunError
from sandboxrun.faults import disk_fault
from sandboxrun.sandbox.agentproc import AgentProcess
from sandboxrun.sandbox.apply import has_collection
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.backends.base import Backend, Sandbox
from sandboxrun.sandbox.checkpoint import mark_lost
from sandboxrun.sandbox.collect import apply_and_record, finish_with_patches
from sandboxrun.sandbox.follow import FollowOutcome, follow_agent
from sandboxrun.sandbox.gitpack import collect_patches, save_artifacts
from sandboxrun.sandbox.journal import Journal, PhaseTimes
from sandboxrun.sandbox.lifetime import Run, begin_stop
from sandboxrun.sandbox.provision import Provisioner
from sandboxrun.sandbox.reporting import Reporter
from sandboxrun.sandbox.transfer import CollectionIncomplete
from sandboxrun.store import Session, SessionStore, Status
from sandboxrun.sync.pack import PackResult

log = logging.getLogger(__name__)


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
        self.session = session
        self.journal = Journal(store, session.id, reporter)
        self.backend: Backend = get_backend(
            session.backend, settings, no_isolation=bool(session.options.get("no_isolation"))
        )
        self.sandbox: Sandbox | None = None
        self.agent: AgentProcess | None = None
        self.progress = AgentProgress()
        self.times = PhaseTimes()
        self.artifacts = settings.session_artifacts(session.id)

    def _refresh(self) -> Session:
        self.session = self.journal.session()
        return self.session

    def _claim(self) -> None:
        """Record this process as the session's driver (``owner_alive`` checks it)."""
        self.journal.update(
            owner_pid=os.getpid(), owner_host=os.uname().nodename, last_heartbeat=time.time()
        )

    # -- the whole run -------------------------------------------------------------------------

    def execute(self) -> Session:
        """Run the session from its worktree to an end state; returns the final row."""
        from sandboxrun.sandbox.statecheck import next_step_on_error

        try:
            with next_step_on_error(self.settings, self.journal.store, self.session.id):
                return self._execute()
        finally:
            self.record_timings()

    def record_timings(self) -> None:
        """Store how long each phase took (every run's summary shows them, however it ended)."""
        s = self._refresh()
        times = self.times.rounded()
        if s.started_at and "agent" not in times:
            end = s.ended_at or time.time()
            after = times.get("collect", 0.0) + times.get("apply", 0.0)
            self.times.record("agent", max(0.0, end - s.started_at - after))
        if self.times.rounded():
            with contextlib.suppress(SandboxrunError):
                self.journal.event("timings", self.times.rounded())

    def _execute(self) -> Session:
        testhold.hold("created")  # tests kill a run here: the row exists, nothing else yet
        self._claim()
        prov = Provisioner(self.settings, self.backend, self.journal, self.artifacts, self.times)
        try:
            packed: PackResult | None = None
            self.sandbox = self._warm_start(prov)  # None: a cold start, a full upload
            if self.sandbox is None:
                packed = prov.pack(self.session)
                try:
                    self._check_kill_before_agent()
                    self.sandbox = prov.create_sandbox(self._refresh())
                    testhold.hold("sandbox-created")
                    prov.upload(self.sandbox, packed)
                finally:
                    # Never leave a partial or used upload behind (failed, killed or done).
                    packed.path.unlink(missing_ok=True)
            self._check_kill_before_agent()
            if self.session.options.get("dry_run"):
                assert packed is not None  # dry runs never start warm
                return self._finish_dry_run(prov, self.sandbox, packed)
            self.agent = prov.start_agent(self.sandbox, self._refresh())
            return self._follow_and_finish(self.agent)
        except _KilledBeforeAgent:
            self._teardown()
            self.journal.end(Status.KILLED, error="killed before the agent started")
            return self._refresh()
        except SandboxLostError as exc:
            if self.sandbox is not None and has_collection(self.artifacts):
                return self._finish_from_snapshot(exc)
            self._mark_lost(exc.message)
            raise
        except CollectionIncomplete:
            raise  # the session stays `collecting`, its sandbox alive: `attach` finishes it
        except KeyboardInterrupt:
            if self._agent_started():
                s = self.session
                # A second Ctrl-C: leave the agent and its sandbox alone, nothing is lost.
                # Exit 130, as for any program SIGINT ends (a script can tell it from a failure).
                raise Interrupted(
                    f"interrupted; the agent of {s.name} may still be running "
                    f"in sandbox {s.sandbox_id}",
                    f"Carry on with `sandboxrun attach {s.name}`, or stop it and "
                    f"collect its work with `sandboxrun kill {s.name}`.",
                ) from None
            self._teardown()
            self.journal.end(Status.FAILED, error="interrupted before the agent started")
            raise
        except SandboxrunError as exc:
            self._fail(exc.message)
            raise
        except OSError as exc:
            fault = disk_fault(exc)  # a full or read-only disk (an upload tarball, artifacts)
            if fault is None:
                self._fail(f"unexpected error: {type(exc).__name__}: {exc}")
                raise
            self._fail(fault.message)
            raise fault from exc
        except Exception as exc:
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}")
            raise

    def _warm_start(self, prov: Provisioner) -> Sandbox | None:
        """The sandbox from the session's warm snapshot (``fanout``), or None to start cold."""
        key = self.session.options.get("warm_key")
        if not key or self.session.options.get("dry_run"):
            return None
        from sandboxrun.sandbox.warm import warm_start

        self._check_kill_before_agent()
        return warm_start(prov, self._refresh(), str(key))

    def _agent_started(self) -> bool:
        return self.sandbox is not None and self._refresh().agent_pgid is not None

    def _fail(self, message: str) -> None:
        """Record a failure; keep the sandbox when it may still hold uncollected work."""
        if self._agent_started():
            assert self.sandbox is not None
            try:
                alive = self.sandbox.is_alive()
            except SandboxrunError:
                alive = False
            if alive:
                s = self.session
                message += (
                    f" (sandbox {s.sandbox_id} kept with the work in it: `sandboxrun download "
                    f"{s.name}` tries collecting it again, `sandboxrun cleanup` removes it)"
                )
                self.journal.end(Status.FAILED, error=message)
                return
        self._teardown()
        self.journal.end(Status.FAILED, error=message)

    def resume(self) -> Session:
        """Carry on a session whose driver died: reconnect, follow, warn, collect."""
        s = self._refresh()
        if not s.sandbox_id or s.agent_pgid is None:
            raise not_started_error(s)
        self._claim()
        try:
            self.sandbox = self.backend.connect(s.sandbox_id)
        except SandboxLostError as exc:
            if has_collection(self.artifacts):
                return self._finish_from_snapshot(exc)
            self._mark_lost(exc.message)
            raise
        try:
            self.agent = AgentProcess(self.sandbox, s.agent_pgid)
            self.journal.event("phase", {"phase": "attached", "detail": f"pid {os.getpid()}"})
            self.journal.reporter.phase("attached", s.sandbox_id)
            self._replay_progress()
            return self._follow_and_finish(self.agent)
        except SandboxLostError as exc:
            if has_collection(self.artifacts):
                return self._finish_from_snapshot(exc)
            self._mark_lost(exc.message)
            raise
        finally:
            self.record_timings()

    def _mark_lost(self, message: str) -> None:
        """End the session ``lost`` and land its last checkpoint (others' claims judged by the
        configured ``stale_after``)."""
        mark_lost(self.journal.store, self._refresh(), self.artifacts, message, land=True,
                  stale_after=self.settings.stale_after)  # fmt: skip

    def _finish_from_snapshot(self, exc: SandboxLostError) -> Session:
        """The sandbox is gone but the artifacts hold its collection: apply that, not `lost`.

        A session already collecting was torn down only after its whole collection was verified
        (a crash while applying it). Without a collection, a lost sandbox ends `lost` with its
        last checkpoint landed (``checkpoint.mark_lost`` with ``land``).
        """
        s = self._refresh()
        self.progress = AgentProgress()  # rebuilt from the stored events, whoever fed it before
        self._replay_progress()
        if s.status == Status.COLLECTING:
            outcome = FollowOutcome("exited", s.exit_code)
        else:
            self.journal.reporter.warning(f"{exc.message}; applying the last snapshot of the work")
            outcome = FollowOutcome("lost", None, detail=exc.message)
        self.session = apply_and_record(
            self.journal, outcome, progress=self.progress, artifacts=self.artifacts,
            times=self.times, stale_after=self.settings.stale_after,
        )  # fmt: skip
        return self.session

    def finish_orphan_kill(self) -> Session:
        """Stop and collect a session whose driver is gone (``kill`` from another terminal)."""
        s = self._refresh()
        if not s.sandbox_id or s.agent_pgid is None:
            if s.sandbox_id:
                with contextlib.suppress(SandboxLostError):
                    self.backend.connect(s.sandbox_id).destroy()
            self.journal.end(Status.KILLED, error="killed before the agent started")
            return self._refresh()
        try:
            self.sandbox = self.backend.connect(s.sandbox_id)
            self.agent = AgentProcess(self.sandbox, s.agent_pgid)
            self._claim()
            begin_stop(self._run(), "killed")
            self.agent.stop()
            self._replay_progress()
            return self._finish(self.agent, FollowOutcome("killed", self.agent.exit_code()))
        except SandboxLostError as exc:
            if has_collection(self.artifacts):
                self._claim()
                return self._finish_from_snapshot(exc)
            self._mark_lost(exc.message)
            return self._refresh()

    def _replay_progress(self) -> None:
        """Rebuild the agent's totals from the stored events (after a driver change)."""
        for ev in self.journal.store.events(self.session.id, kinds=("agent",)):
            payload = dict(ev["payload"])
            self.progress.feed(AgentEvent(payload.pop("type"), payload))

    def _check_kill_before_agent(self) -> None:
        if self._refresh().kill_requested:
            raise _KilledBeforeAgent()

    # -- ends ------------------------------------------------------------------------------------

    def _finish_dry_run(self, prov: Provisioner, sandbox: Sandbox, packed: PackResult) -> Session:
        """``--dry-run``: check the upload arrived intact and the collector works; no agent."""
        report = prov.verify_upload(sandbox, self.session, packed)
        with self.times.measure("collect"):
            patches = collect_patches(sandbox, self._refresh())
        save_artifacts(self.artifacts, patches)
        report.update(
            {
                "bytes_in": packed.bytes_in,
                "bytes_out": packed.bytes_out,
                "compression": packed.compression,
                "collected_bytes": patches.size,
                "phases": self.times.rounded(),
            }
        )
        self.journal.event("dry_run", report)
        self._teardown()
        if report["missing"] or report["differ"]:
            bad = ", ".join((report["missing"] + report["differ"])[:5])
            self.journal.store.set_status(
                self.session.id, Status.FAILED, error=f"upload verification failed for {bad}"
            )
            raise BackendError(f"files did not arrive intact in the sandbox: {bad}")
        self.journal.store.set_status(
            self.session.id, Status.COMPLETED_NO_CHANGES, result_commits=[], files_changed=0
        )
        return self._refresh()

    def _run(self) -> Run:
        """What checkpoints and collection need (sandbox.checkpoint)."""
        assert self.sandbox is not None
        return Run(self.journal, self.sandbox, self.settings, self.artifacts)

    def _follow_and_finish(self, agent: AgentProcess) -> Session:
        outcome = follow_agent(self.journal, agent, self.progress, self.settings, self._run())
        return self._finish(agent, outcome)

    def _finish(self, agent: AgentProcess, outcome: FollowOutcome) -> Session:
        self.session = finish_with_patches(
            self.journal,
            agent.sandbox,
            outcome,
            progress=self.progress,
            artifacts=self.artifacts,
            times=self.times,
            teardown=self._teardown,
            settings=self.settings,
        )
        return self.session

    def _teardown(self) -> None:
        """Remove the sandbox, unless the session asked to keep it (``--keep``)."""
        if self.sandbox is None:
            return
        if self.session.options.get("keep"):
            self.journal.event("phase", {"phase": "kept", "detail": self.sandbox.home})
            return
        try:
            self.sandbox.destroy()
        except SandboxrunError as exc:
            log.warning("could not tear down sandbox %s: %s", self.sandbox.id, exc)


def not_started_error(s: Session) -> SandboxrunError:
    """Why a session has no agent to attach to: it is still starting, or it never will."""
    from sandboxrun.sandbox.interrupted import still_starting
    from sandboxrun.sandbox.nextstep import SessionFacts, next_step_hint
    from sandboxrun.store import owner_alive

    starting = not s.is_terminal and (still_starting(s) or owner_alive(s))
    facts = SessionFacts(name=s.name, status=str(s.status), driver_alive=starting,
                         agent_started=False, has_commits=False, has_patches=False)  # fmt: skip
    if starting:
        # Its run process is still making the sandbox ready: attach works once the agent
        # runs; until then the run can be watched or stopped.
        return SandboxrunError(
            f"session {s.name} is still starting ({s.status}): its agent is not running yet, "
            "so there is nothing to attach to yet",
            next_step_hint(facts) + " `attach` works once the agent runs.",
        )
    return SandboxrunError(
        f"session {s.name} never started its agent, so there is nothing to attach to",
        next_step_hint(facts) + " Start a new run to try again.",
    )


class _KilledBeforeAgent(Exception):
    """`kill` arrived before the agent started: stop without collecting anything."""
