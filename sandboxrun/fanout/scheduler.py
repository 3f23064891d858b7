"""The fan-out scheduler: starts a group's tasks in dependency order, within its limits.

Each task is an ordinary sandbox session (``prepare_run``) driven by its own detached process,
exactly as ``run --detach`` does; the scheduler only decides and records. Its whole state is in
the database (``groups``, ``group_tasks``, the sessions), written before it acts, so a new
driver (``attach GROUP``) picks up where a dead one stopped and never starts a task twice:
session names are deterministic (``<group>-<task>``) and a task's driver claims its session
atomically before running it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun.config import Settings
from sandboxrun.errors import SandboxrunError
from sandboxrun.fanout import groups as G
from sandboxrun.fanout.forkserver import DriverServer
from sandboxrun.fanout.merge import merge_all
from sandboxrun.fanout.taskmain import claim_session as claim_session  # re-exported
from sandboxrun.sandbox.backends import get_backend
from sandboxrun.sandbox.detach import start_driver_process
from sandboxrun.sandbox.prepare import RunRequest, prepare_run
from sandboxrun.store import SUCCESS, Session, SessionStore, Status, owner_alive

log = logging.getLogger(__name__)

#: E2B sandbox price per second for the default 2 vCPU / 512 MiB sandbox (configurable:
#: --price-per-second); the local backend costs nothing by default
E2B_PRICE_PER_SECOND = 0.000028 + 0.5 * 0.0000045
#: sandbox creations per second: E2B Hobby allows 1/s, Pro 5/s (kept around each
#: ``Sandbox.create`` by the E2B backend, across the task drivers: sandbox/ratelimit.py)
DEFAULT_START_RATE = {"e2b": 1.0, "local": 5.0}
#: running tasks are stopped at this multiple of a budget (new ones stop at the budget itself)
DEFAULT_HARD_FACTOR = 1.25


# -- pure decisions -------------------------------------------------------------------------------


def session_seconds(s: Session, now: float) -> float:
    """How long the session's sandbox has existed (from creation of the agent run)."""
    if s.started_at is None:
        return 0.0
    return max(0.0, (s.ended_at or now) - s.started_at)


def session_cost(s: Session, price_per_second: float, now: float) -> float:
    """Agent dollars plus sandbox time at ``price_per_second``."""
    agent = s.cost_usd if isinstance(s.cost_usd, int | float) else 0.0
    return float(agent) + price_per_second * session_seconds(s, now)


def budget_level(options: dict[str, Any], spent_usd: float, elapsed_s: float) -> str:
    """``ok``; ``soft`` (start nothing new); ``hard`` (stop running tasks, collecting)."""
    factor = float(options.get("hard_factor") or DEFAULT_HARD_FACTOR)
    level = "ok"
    for limit, value in (
        (options.get("budget_usd"), spent_usd),
        ((options.get("budget_minutes") or 0) * 60 or None, elapsed_s),
    ):
        if limit is None:
            continue
        if value >= limit * factor:
            return "hard"
        if value >= limit:
            level = "soft"
    return level


def task_outcome(task: G.GroupTask, sessions: dict[str, Session]) -> str:
    """``pending``, ``running``, ``success`` or ``failed`` (skipped/blocked count as failed)."""
    if task.state == "pending":
        return "pending"
    if task.state != "started" or task.session_id not in sessions:
        return "failed"
    s = sessions[task.session_id]
    if s.is_active:
        return "running"
    return "success" if s.status in SUCCESS else "failed"


# -- the driver -----------------------------------------------------------------------------------


@dataclass
class Step:
    """What one scheduling pass did (for the live display)."""

    started: list[str]
    running: int
    group: G.Group
    #: (task, outcome) of tasks that reached an outcome since the previous pass
    ended: list[tuple[str, str]] = field(default_factory=list)
    #: what the group has spent so far: agent dollars plus sandbox time
    spent_usd: float = 0.0


class GroupScheduler:
    """Drives one group until every task has an outcome. One live driver per group."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        group_id: str,
        *,
        spawn: Callable[[Session, bool], int] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.gid = group_id
        self.spawn = spawn or self._start_driver
        #: while :meth:`run` schedules: the fork server task drivers start from (forkserver.py)
        self._server: DriverServer | None = None
        self._ended: set[str] = set()
        self._agent_checked = False
        #: task driver pids this scheduler started, by session id
        self._spawned: dict[str, int] = {}

    # the loop ---------------------------------------------------------------------------------

    def run(self, on_step: Callable[[Step], None] | None = None) -> G.Group:
        """Claim the group and schedule until it ends; returns the final group."""
        group = G.get_group(self.store, self.gid)
        if group.is_terminal:
            return group
        host = os.uname().nodename
        if not G.claim_group(self.store, self.gid, os.getpid(), host, alive=group_driver_alive):
            raise SandboxrunError(
                f"group {group.name} is already driven by process {group.owner_pid}",
                f"Follow it with `sandboxrun logs {group.name}`.",
            )
        self._server = DriverServer(self.settings)
        self._server.start()  # it imports the run pipeline while the first task is prepared
        try:
            while True:
                step = self.step()
                if on_step:
                    on_step(step)
                if step.group.is_terminal:
                    return step.group
                time.sleep(self.settings.poll_interval)
        finally:
            self._server.close()
            self._server = None

    def _start_driver(self, s: Session, attach: bool) -> int:
        """A task's driver: forked by the group's server when there is one, else started anew."""
        if self._server is not None:
            log = self.settings.session_artifacts(s.id) / "driver.log"
            pid = self._server.spawn(s.id, attach, log)
            if pid is not None:
                return pid
        return spawn_task_driver(s, attach, self.settings)

    def step(self) -> Step:
        """One pass: react to kills, budgets and dead drivers; start what may start."""
        g = G.get_group(self.store, self.gid)
        tasks = G.tasks(self.store, self.gid)
        sessions = G.sessions(self.store, self.gid)
        now = time.time()
        opts = g.options
        price = float(opts.get("price_per_second") or 0.0)
        spent = sum(session_cost(s, price, now) for s in sessions.values())
        level = budget_level(opts, spent, now - g.created_at)
        outcome = {t.name: task_outcome(t, sessions) for t in tasks}
        running = [sessions[t.session_id or ""] for t in tasks if outcome[t.name] == "running"]

        if g.kill_requested or level == "hard":
            why = "group killed" if g.kill_requested else "budget hard limit reached"
            for s in running:
                if not s.kill_requested:
                    self.store.request_kill(s.id, discard=False)
                    G.add_event(self.store, g.id, "stop", {"session": s.name, "reason": why})
            self._skip_pending(g, tasks, outcome, why)
        elif level == "soft":
            self._skip_pending(g, tasks, outcome, "budget reached: no new tasks")

        for s in running:
            self._keep_driven(s)

        started: list[str] = []
        if not g.kill_requested and level == "ok":
            started = self._start_ready(g, tasks, sessions, outcome, len(running), spent)
        tasks = G.tasks(self.store, self.gid)
        sessions = G.sessions(self.store, self.gid)
        outcome = {t.name: task_outcome(t, sessions) for t in tasks}
        if not g.is_terminal and all(o in ("success", "failed") for o in outcome.values()):
            self._finish(g, tasks, outcome, level)
        n_running = sum(1 for o in outcome.values() if o == "running")
        ended = [
            (name, str(_label(t, sessions)))
            for t in tasks
            if (name := t.name) not in self._ended and outcome[name] in ("success", "failed")
        ]
        self._ended.update(name for name, _ in ended)
        return Step(started, n_running, G.get_group(self.store, self.gid), ended, spent)

    # decisions --------------------------------------------------------------------------------

    def _skip_pending(
        self, g: G.Group, tasks: list[G.GroupTask], outcome: dict[str, str], why: str
    ) -> None:
        for t in tasks:
            if outcome[t.name] == "pending":
                G.update_task(self.store, g.id, t.name, state="skipped", reason=why)
                outcome[t.name] = "failed"

    def _start_ready(
        self,
        g: G.Group,
        tasks: list[G.GroupTask],
        sessions: dict[str, Session],
        outcome: dict[str, str],
        running: int,
        spent: float,
    ) -> list[str]:
        started: list[str] = []
        by_name = {t.name: t for t in tasks}
        keep_going = bool(g.options.get("keep_going"))
        max_parallel = int(g.options.get("max_parallel") or 4)
        for t in tasks:
            if outcome[t.name] != "pending":
                continue
            deps = [by_name[d] for d in t.spec.depends_on]
            dep_outcomes = [outcome[d.name] for d in deps]
            if any(o in ("pending", "running") for o in dep_outcomes):
                continue
            failed = [d.name for d in deps if outcome[d.name] == "failed"]
            if failed and not keep_going:
                G.update_task(
                    self.store,
                    g.id,
                    t.name,
                    state="skipped",
                    reason=f"dependency {', '.join(failed)} did not complete",
                )
                outcome[t.name] = "failed"
                continue
            if running >= max_parallel:
                break
            ok_deps = [sessions[d.session_id or ""] for d in deps if outcome[d.name] == "success"]
            if self._start(g, t, ok_deps, spent):
                started.append(t.name)
                running += 1
                outcome[t.name] = "running"
            else:
                outcome[t.name] = "failed"
        return started

    def _start(self, g: G.Group, t: G.GroupTask, deps: list[Session], spent: float) -> bool:
        repo = Path(g.repo)
        name = f"{g.name}-{t.name}"
        if deps:
            branches = [s.branch or "" for s in deps]
            try:
                merged = merge_all(repo, branches[0], branches[1:], f"sandboxrun {g.name}/{t.name}")
            except SandboxrunError as exc:
                G.update_task(self.store, g.id, t.name, state="error", reason=exc.message)
                return False
            if not merged.ok:
                G.update_task(
                    self.store,
                    g.id,
                    t.name,
                    state="blocked",
                    reason=f"merging {merged.conflict_with} into its other dependencies "
                    f"conflicts in: {', '.join(merged.conflicts)}",
                )
                return False
            base = merged.commit
        else:
            base = t.spec.base or g.base_commit or "HEAD"
        session = self._adopt(g, name)
        if session is None:
            options: dict[str, Any] = {"fanout_group": g.id, "fanout_task": t.name}
            if g.backend == "e2b":
                # the rate is kept around the sandbox creation itself, in the task's driver
                options["create_rate"] = float(
                    g.options.get("start_rate") or DEFAULT_START_RATE["e2b"]
                )
            if g.options.get("warm_key"):
                options["warm_key"] = g.options["warm_key"]
            budget = g.options.get("budget_usd")
            if budget is not None:
                # Claude Code stops itself at what is left of the group's budget
                options["max_budget_usd"] = round(max(0.01, float(budget) - spent), 4)
            settings = self.settings.with_overrides(
                model=t.spec.model, timeout=t.spec.timeout, max_turns=t.spec.max_turns
            )
            try:
                session = prepare_run(
                    settings,
                    self.store,
                    RunRequest(
                        repo=repo,
                        prompt=t.spec.prompt,
                        name=name,
                        base=base,
                        backend=g.backend,
                        extra_options=options,
                        agent_checked=self._agent_checked,
                    ),
                )
                # the agent's readiness (credentials, `claude auth status`) holds for the
                # group: checked before its first task, not again before each of the others
                self._agent_checked = True
            except SandboxrunError as exc:
                G.update_task(self.store, g.id, t.name, state="error", reason=exc.message)
                return False
            self.store.update(session.id, group_id=g.id)
        G.update_task(
            self.store, g.id, t.name, state="started", session_id=session.id, base_commit=base
        )
        if session.status == Status.CREATED and not owner_alive(session):
            self._spawn(session, attach=False)
        return True

    def _adopt(self, g: G.Group, name: str) -> Session | None:
        """The session a previous driver created for this task before it died, if any."""
        row = self.store.conn.execute("SELECT * FROM sessions WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        s = Session.from_row(row)
        if s.options.get("fanout_group") != g.id:
            return None
        if s.group_id != g.id:
            s = self.store.update(s.id, group_id=g.id)
        return s

    def _keep_driven(self, s: Session) -> None:
        """A running task whose driver died: start another one for it (it claims atomically)."""
        if owner_alive(s) or self._spawned_alive(s.id):
            return
        if s.status == Status.CREATED:
            self._spawn(s, attach=False)
        elif s.agent_pgid is not None and s.sandbox_id:
            self._spawn(s, attach=True)
        else:
            # died between creating a sandbox and starting the agent: nothing to collect
            if s.sandbox_id:
                try:
                    get_backend(s.backend, self.settings).connect(s.sandbox_id).destroy()
                except SandboxrunError as exc:
                    log.warning("could not remove sandbox %s: %s", s.sandbox_id, exc)
            self.store.set_status(
                s.id,
                Status.FAILED,
                only_if_active=True,
                error="its driver died before the agent started",
            )

    def _spawned_alive(self, session_id: str) -> bool:
        """A driver this scheduler started for the session may still be claiming it."""
        pid = self._spawned.get(session_id)
        return pid is not None and owner_alive(
            Session(
                id=session_id,
                name="",
                mode="sandbox",
                backend="",
                status=Status.CREATED,
                created_at=0.0,
                owner_pid=pid,
            )
        )

    def _spawn(self, s: Session, *, attach: bool) -> None:
        # The driver records itself as the owner when it claims the session (claim_session);
        # writing its pid here could overwrite the claim of another driver that won.
        pid = self.spawn(s, attach)
        self._spawned[s.id] = pid
        G.add_event(
            self.store, self.gid, "spawn", {"session": s.name, "pid": pid, "attach": attach}
        )

    def _finish(
        self, g: G.Group, tasks: list[G.GroupTask], outcome: dict[str, str], level: str
    ) -> None:
        if g.kill_requested:
            status, error = "killed", "killed"
        elif all(o == "success" for o in outcome.values()):
            status, error = "completed", None
        elif level != "ok":
            status, error = "stopped", "budget reached"
        else:
            bad = [t.name for t in tasks if outcome[t.name] != "success"]
            status, error = "failed", f"not completed: {', '.join(bad)}"
        G.update_group(self.store, g.id, status=status, error=error, ended_at=time.time())


def _label(t: G.GroupTask, sessions: dict[str, Session]) -> str:
    """A task's status for people: its session's status, or skipped/blocked/error + why."""
    s = sessions.get(t.session_id or "")
    if s is not None:
        return str(s.status) + (f" ({s.error})" if s.error else "")
    return t.state + (f" ({t.reason})" if t.reason else "")


def _as_owner(g: G.Group) -> Session:
    """A stand-in session carrying the group's owner, for :func:`owner_alive`."""
    return Session(
        id=g.id,
        name=g.name,
        mode="group",
        backend=g.backend,
        status=Status.RUNNING,
        created_at=g.created_at,
        owner_pid=g.owner_pid,
        owner_host=g.owner_host,
    )


def group_driver_alive(g: G.Group) -> bool:
    """True when a live process drives the group."""
    return owner_alive(_as_owner(g))


def spawn_task_driver(session: Session, attach: bool, settings: Settings | None = None) -> int:
    """Start the task's driver (``fanout/taskmain.py``) detached; it claims the session first.

    It runs with ``settings``' home (default: this process's settings for the task's repo).
    """
    if settings is None:
        from sandboxrun.config import load_settings

        settings = load_settings(Path(session.repo) if session.repo else None)
    return start_driver_process(
        [session.id, "--attach"] if attach else [session.id],
        module="sandboxrun.fanout.taskmain",
        log=settings.session_artifacts(session.id) / "driver.log",
        home=settings.home,
    )
