"""Following a running agent: its log, the clock, and requests to stop it.

The agent writes stream-json to a log file inside the sandbox; we read it by byte offset (kept
in the store after every complete line) so that a driver that reconnects neither loses nor
repeats lines. The same loop is the watchdog: warnings at the ``--warn-at`` marks, a graceful
stop shortly before the hard limit, and ``kill`` requests from other terminals.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Literal

from sandboxrun.agent import AgentEvent, AgentProgress, parse_line, stored_line
from sandboxrun.config import Settings, format_duration
from sandboxrun.errors import BackendError, SandboxLostError
from sandboxrun.redact import Redactor
from sandboxrun.sandbox.agentproc import AgentProcess
from sandboxrun.sandbox.checkpoint import read_checkpoint, take_checkpoint
from sandboxrun.sandbox.deadline import collection_seconds
from sandboxrun.sandbox.journal import Journal
from sandboxrun.sandbox.lifetime import Run, alive_within, begin_stop, stop_plan
from sandboxrun.sandbox.reporting import time_limit_message

log = logging.getLogger(__name__)

#: heartbeat writes at most this often when nothing else is written
HEARTBEAT_INTERVAL = 5.0


#: why following ends: the agent exited by itself, or we stopped it (kill request, time limit,
#: blocked by a usage limit)
#: "lost": the sandbox is gone and the work comes from the collection kept in the artifacts
EndReason = Literal["exited", "killed", "timeout", "quota", "lost"]
#: the reasons we stop an agent for, as stored in ``sessions.stop_reason``
_STOPPED: dict[str, EndReason] = {"killed": "killed", "timeout": "timeout", "quota": "quota"}


@dataclass
class FollowOutcome:
    """Why following ended."""

    reason: EndReason
    exit_code: int | None = None
    detail: str = ""


def follow_agent(
    journal: Journal,
    agent: AgentProcess,
    progress: AgentProgress,
    settings: Settings,
    run: Run,
) -> FollowOutcome:
    """Follow the agent until it exits or we stop it; returns why it ended.

    Agent events go to ``progress``, the journal and its reporter; ``settings`` give the
    defaults for the limits a session does not set itself. ``run`` is what checkpoints and
    stops need (sandbox.checkpoint): the work is checkpointed every ``checkpoint_every``, at
    each warning mark and after each of the agent's commits, and the stop is planned so that
    the collection fits in the sandbox's life.
    """
    store, sb, sid = journal.store, agent.sandbox, journal.session_id
    reporter = journal.reporter
    log_path = agent.files.log
    offset = journal.session().log_offset
    pending = b""
    warned = {
        ev["payload"].get("mark")
        for ev in store.events(sid, kinds=("warning",))
        if isinstance(ev["payload"], dict)
    }
    reason: EndReason | None = None
    last_beat = 0.0
    # Checkpoints: `known` is the size of the work so far (it sizes the collection).
    ckpt = _Checkpoints(run)
    rate_limited_since: float | None = None
    redactor = Redactor.from_env(os.environ)  # the agent's credentials never reach the store

    def drain(final: bool = False) -> None:
        """Store every complete new line; with ``final``, a last line without a newline too."""
        nonlocal offset, pending, last_beat, rate_limited_since
        try:
            chunk = sb.read_file(log_path, offset)
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        if final and pending.strip():
            lines, pending = [*lines, pending], b""
        if not lines:
            return
        items: list[tuple[str, object]] = []
        updates: dict[str, object] = {}
        for raw in lines:
            text = redactor.text(raw.decode("utf-8", errors="replace"))
            if not text.strip():
                continue
            items.append(("stdout", stored_line(text)))  # cut: agent.log keeps it whole
            for event in parse_line(text):
                items.append(("agent", event.to_dict()))
                progress.feed(event)
                reporter.agent_event(event)
                _row_updates(event, updates)
                ckpt.watch(event)
        store.add_events(sid, items)
        last_beat = time.monotonic()
        rate_limited_since = None  # the agent is still talking: restart the quota-stall clock
        store.update(sid, log_offset=offset - len(pending), last_heartbeat=time.time(), **updates)

    while True:
        try:
            drain()
            s = journal.session()
            now = time.time()
            timeout = s.timeout_s or settings.timeout
            started = s.started_at or now
            elapsed = now - started
            deadline = s.deadline or started + timeout
            remaining = deadline - now
            reporter.tick(progress, elapsed, remaining)

            if agent.exited():
                drain()
                reason = "exited"
                break
            if s.kill_requested:
                reporter.warning("kill requested: stopping the agent")
                begin_stop(run, "killed")
                agent.stop()
                reason = "killed"
                break
            plan = stop_plan(run, s, ckpt.known)
            if now >= plan.stop_at:
                limit = deadline - started
                msg = (
                    "stopping the agent " + time_limit_message(elapsed, limit)
                    if not plan.shortened
                    else "the sandbox is near the longest life the plan allows (max_lifetime "
                    f"{format_duration(settings.max_lifetime)}): stopping the agent now so "
                    "that its work can still be collected"
                )
                # elapsed and limit kept with the warning: the final status says them again
                journal.event(
                    "warning",
                    {"mark": "limit", "message": msg, "elapsed": elapsed, "limit": limit},
                )
                reporter.warning(msg)
                begin_stop(run, "timeout")
                agent.stop()
                reason = "timeout"
                break
            for mark in s.warn_at or []:
                if mark not in warned and elapsed >= mark:
                    warned.add(mark)
                    msg = (
                        f"{format_duration(elapsed)} elapsed; {format_duration(remaining)} "
                        "left before the time limit (extend with `sandboxrun extend`)"
                    )
                    journal.warn(msg, mark=mark)
                    ckpt.take(plan.stop_at)
            if progress.rate_limited_until and progress.result is None:
                rate_limited_since = rate_limited_since or time.monotonic()
                stall = s.options.get("quota_stall", settings.quota_stall)
                if time.monotonic() - rate_limited_since > stall:
                    reporter.warning("usage limit reached: stopping the waiting agent")
                    begin_stop(run, "quota")
                    agent.stop()
                    reason = "quota"
                    break
            else:
                rate_limited_since = None
            if ckpt.due():
                ckpt.take(plan.stop_at)
            if time.monotonic() - last_beat > HEARTBEAT_INTERVAL:
                store.update(sid, last_heartbeat=time.time())
                last_beat = time.monotonic()
            time.sleep(settings.poll_interval)
        except KeyboardInterrupt:
            if journal.session().kill_requested:
                raise  # a second Ctrl-C: the driver leaves the agent running
            msg = ("Ctrl-C: stopping the agent and collecting its work "
                   "(Ctrl-C again to leave it running in the background)")  # fmt: skip
            journal.warn(msg, mark="interrupt")
            store.request_kill(sid, discard=False)
            continue
        except SandboxLostError:
            raise
        except BackendError as exc:
            # Transient trouble reaching the sandbox: say so and keep trying until the limit.
            log.warning("following %s: %s", sid, exc)
            if not alive_within(sb):
                raise SandboxLostError(
                    f"the sandbox {sb.id} is gone", "The last checkpoint of the work is kept."
                ) from exc
            time.sleep(settings.poll_interval)

    drain(final=True)
    if reason == "exited":
        # we had stopped it ourselves before (a collection that `attach` resumed)
        reason = _STOPPED.get(journal.session().stop_reason or "", reason)
    return FollowOutcome(reason, agent.exit_code())


def _row_updates(event: AgentEvent, updates: dict[str, object]) -> None:
    """Session columns that an agent event sets."""
    d = event.data
    if event.type == "init":
        if d.get("session_id"):
            updates["agent_session_id"] = d["session_id"]
        if d.get("model"):
            updates["model"] = d["model"]
    elif event.type == "result":
        updates.update(
            {
                "cost_usd": d.get("total_cost_usd"),
                "num_turns": d.get("num_turns"),
                "duration_ms": d.get("duration_ms"),
                "result_subtype": d.get("subtype"),
            }
        )
        if d.get("session_id"):
            updates["agent_session_id"] = d["session_id"]


class _Checkpoints:
    """When to take the next checkpoint of a running agent's work, and its size so far."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.every = run.settings.checkpoint_every
        self.next = time.monotonic() + self.every
        self.commit_tools: set[str] = set()
        self.committed = False
        info = read_checkpoint(run.artifacts) or {}
        self.known = int(info.get("kept_bytes", 0))

    def watch(self, event: AgentEvent) -> None:
        """Note a finished `git commit` of the agent's: its work is worth a checkpoint."""
        d = event.data
        if event.type == "tool_use" and "git commit" in str(d.get("summary", "")):
            self.commit_tools.add(str(d.get("id")))
        elif event.type in ("tool_result", "tool_error") and d.get("tool_use_id") in (
            self.commit_tools
        ):
            self.commit_tools.discard(d.get("tool_use_id"))
            self.committed = True

    def due(self) -> bool:
        return self.committed or time.monotonic() >= self.next

    def take(self, stop_at: float) -> None:
        """Take a checkpoint, unless it could not finish before the agent must stop."""
        self.committed = False
        self.next = time.monotonic() + self.every
        if time.time() + collection_seconds(self.known, stop_budget=0, fixed=2) > stop_at:
            return
        info = take_checkpoint(self.run)
        if info is not None:
            self.known = int(info.get("kept_bytes", 0))
