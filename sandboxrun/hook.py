"""``sandboxrun-hook EVENT``: the entry point Claude Code runs on every hook event.

The hot path: it runs on every tool call of every agent, so it imports only the standard
library and ``sqlite3`` (the identity, presence and config helpers it needs at SessionStart are
standard-library modules too, imported only then). It reads the hook payload on stdin and
records, in one ``BEGIN IMMEDIATE`` transaction of the one database:

- which sandboxrun session the Claude session belongs to: ``SANDBOXRUN_SESSION`` in the
  environment, else a session already bound to this Claude ``session_id``, else the role
  (``CLAUDE_INSTANCE_ID``, then the worktree's ``user.email``) or, without a role, the worktree
  of ``cwd``; a local session row is created on first sight;
- a heartbeat (``sessions.last_heartbeat`` and the role's presence), the event (kind ``hook``,
  with the tool name; never tool inputs or prompts, which may hold secrets: UserPromptSubmit
  records only the prompt's hash, by which ``sandboxrun send`` confirms delivery), and the session's
  activity: busy after UserPromptSubmit/PreToolUse/PostToolUse, idle after Stop,
  needs_permission on a ``permission_prompt`` Notification, usage_limited (with the reset
  time when the message gives one) on a StopFailure ``rate_limit``, error on other
  StopFailures, exited on SessionEnd.

Two replies reach the agent on the hot path (issue 11): on PreToolUse of Edit, Write, MultiEdit
or NotebookEdit the claim gate (:mod:`sandboxrun.coord.gate`, imported for those tools only)
denies an edit of a file another live session claimed exclusively, naming the holder, and warns
on an advisory claim; on UserPromptSubmit and PostToolUse the role's pending addressed messages
are added to the agent's context ("Session 'backend' says: ...") and marked read.

SessionStart also validates the identity, warns about a role in the wrong checkout, registers
presence, records SESSION_START and shows the role's pending messages to the agent; SessionEnd
deregisters presence and records SESSION_END.

It never breaks the agent: any failure (a payload that is not JSON, a database locked for longer
than ``SANDBOXRUN_HOOK_LOCK_TIMEOUT`` seconds, default 20) costs one line in
``$SANDBOXRUN_HOME/logs/hook.log`` and the hook exits 0; a bad lock-timeout setting is logged
there too and its default used. A database that does not exist yet or
lacks this version's tables is created/migrated once through :mod:`sandboxrun.store` (the only
time the hook imports sqlite-utils), so the schema has one definition.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from sandboxrun.home import hook_home
from sandboxrun.local.states import EVENTS, activity_for

__all__ = ["EVENTS", "activity_for", "cli", "handle", "main"]

# Not `from typing import ...`: importing typing costs a few ms on every call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Twenty agents' hooks on two busy cores queue for SQLite's write lock for seconds (each
#: transaction is a few ms of CPU, but a holder waits its turn for a core): 5 s lost events
#: there. A wait past this is only ever a pathological case, and losing the event is worse.
#: Below hooks_install.HOOK_TIMEOUT, so the hook logs the fault rather than being killed.
DEFAULT_LOCK_TIMEOUT = 20.0
#: the tools the claim gate checks (``coord.claims.EDIT_TOOLS``; repeated so that other tools
#: never import it)
_EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
_ROW = "id, repo, role, worktree, status, mode"


def resets_at(payload: dict[str, Any], now: float | None = None) -> float | None:
    """When a usage limit resets, from a StopFailure payload (None when it does not say)."""
    for key in ("resets_at", "resetsAt"):
        if isinstance(payload.get(key), int | float):
            return float(payload[key])
    text = " ".join(
        str(payload.get(k) or "") for k in ("last_assistant_message", "message", "error_details")
    )
    if "reset" not in text and "|" not in text:
        return None
    from sandboxrun.agent import parse_limit_message  # stdlib-only; rare path

    reset = parse_limit_message(text, now)
    now = time.time() if now is None else now
    if reset is not None and 0 <= now - (reset - 86400) < 60:
        # "resets 7:27pm" said at 7:27:30: minute precision, not tomorrow.
        reset -= 86400
    return reset


def home_dir(env: dict[str, str] | os._Environ[str]) -> Path:
    """``$SANDBOXRUN_HOME`` (absolute; a relative value from where Claude Code was started,
    not from the agent's current directory) or the default: :func:`sandboxrun.home.hook_home`."""
    return hook_home(env)


def log(home: Path, message: str) -> None:
    """Append one line to ``logs/hook.log``; never raises."""
    try:
        logs = home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with open(logs / "hook.log", "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} pid={os.getpid()} {message}\n")
    except Exception:  # noqa: S110 - the hook must not fail; nowhere left to report
        pass


#: ``store.ACTIVE`` by value (the hot path imports only the standard library)
_ACTIVE = frozenset({"created", "preparing", "packing", "provisioning", "running", "collecting"})


def _event_payload(event: str, payload: dict[str, Any], claude_id: str | None) -> dict[str, Any]:
    """What the ``hook`` event stores: names and kinds (and a file tool's file), never other
    inputs or prompt text."""
    data: dict[str, Any] = {"event": event, "claude_session_id": claude_id}
    for key in ("tool_name", "tool_use_id", "source", "reason", "notification_type", "error"):
        if payload.get(key) is not None:
            data["tool" if key == "tool_name" else key] = payload[key]
    if event == "PreToolUse" and isinstance(payload.get("tool_input"), dict):
        # The file a file tool works on (the dashboard's "last action"), not the rest of the input.
        path = payload["tool_input"].get("file_path") or payload["tool_input"].get("notebook_path")
        if isinstance(path, str):
            data["file"] = path[:500]
    if event == "UserPromptSubmit" and isinstance(payload.get("prompt"), str):
        # Never the text (it may hold secrets): its hash, so `sandboxrun send` can confirm
        # delivery of exactly what it pasted.
        from sandboxrun.local.states import prompt_hash

        data["prompt_sha256"] = prompt_hash(payload["prompt"])
        if payload["prompt"].lstrip().startswith("/"):
            data["slash"] = True  # a command: its transcript record is not the prompt text
    return data


class Hook:
    """One hook call: the payload, the environment, and a connection to the database."""

    def __init__(self, event: str, payload: dict[str, Any], env: Any, conn: sqlite3.Connection):
        self.event = event
        self.payload = payload
        self.env = env
        self.conn = conn
        self.now = time.time()
        self.claude_id = (
            payload.get("session_id") if isinstance(payload.get("session_id"), str) else None
        )
        self.cwd = str(payload.get("cwd") or os.getcwd())
        self.notes: list[str] = []  # shown to the agent and the user at SessionStart
        self.checkout: Any = None
        self.settings: Any = None
        self.role_ok = True

    # -- before the write lock: everything slow (imports, files, config) ------------------

    def prepare(self) -> None:
        """Work out who this is without holding the database's write lock.

        Under load (twenty agents, two cores) importing the config code and reading files
        inside ``BEGIN IMMEDIATE`` made other hooks wait past their bound; only SQL runs
        under the lock.
        """
        self.activity = activity_for(self.event, self.payload)
        self.resets = (
            resets_at(self.payload, self.now) if self.activity == "usage_limited" else None
        )
        self.explicit = self.env.get("SANDBOXRUN_SESSION") or None
        self.known: str | None = None  # a session already bound to this Claude session
        if not self.explicit and self.event != "SessionStart" and self.claude_id:
            row = self._one(
                "SELECT id FROM sessions WHERE agent_session_id = ? AND mode = 'local' "
                "ORDER BY created_at DESC LIMIT 1",
                (self.claude_id,),
            )
            self.known = row["id"] if row else None
        self.target: tuple[str, str, str | None] | None = None  # (repo, worktree, role)
        if self.known is None and (self.event == "SessionStart" or not self.explicit):
            self._identify()
        if self.event == "SessionStart":
            from sandboxrun.coord import messages, presence  # noqa: F401  (imported now)
            from sandboxrun.local.identity import find_checkout

            if self.checkout is None:
                self.checkout = find_checkout(self.cwd)
            if self.settings is None:
                self._load_settings(self.checkout.main if self.checkout else None)

    def _load_settings(self, repo: Path | None) -> None:
        from sandboxrun.config import load_settings

        try:
            self.settings = load_settings(repo, env=dict(self.env))
        except Exception as exc:  # a broken config must not stop the session
            self.notes.append(f"sandboxrun config problem: {getattr(exc, 'message', exc)}")
            self.settings = load_settings(None, env=dict(self.env))

    def _identify(self) -> None:
        """The role and worktree of this session (``self.target``), with identity notes."""
        from sandboxrun.errors import SandboxrunError
        from sandboxrun.local.identity import (
            check_allowed,
            find_checkout,
            resolve_identity,
            validate_role,
        )

        self.checkout = checkout = find_checkout(self.cwd)
        self._load_settings(checkout.main if checkout else None)
        identity = resolve_identity(self.env, checkout, self.settings.identities)
        role = identity.role
        if role is not None:
            try:
                validate_role(role)
            except SandboxrunError as exc:
                self.notes.append(
                    f"{identity.source}={role!r} is not a valid role name: {exc.hint} "
                    "Fix: set CLAUDE_INSTANCE_ID to a valid role name and restart Claude Code."
                )
                role, self.role_ok = None, False
        if role is not None:
            problem = check_allowed(role, self.settings.roles)
            if problem:
                self.role_ok = False
                self.notes.append(
                    f"Unknown identity: {problem} (from {identity.source}). Fix: restart Claude "
                    "Code with CLAUDE_INSTANCE_ID set to one of them, or add the role to `roles` "
                    "in .sandboxrun.toml."
                )
        if checkout is None and role is None:
            return  # not in a git checkout and no identity: nothing to bind to
        repo = str(checkout.main) if checkout else self.cwd
        self.target = (repo, str(checkout.top) if checkout else self.cwd, role)

    # -- under the write lock: which session ----------------------------------------------

    def bind(self) -> dict[str, Any] | None:
        """The session row this call belongs to (created for a new local session)."""
        for sid in (self.explicit, self.known):
            if sid:
                row = self._one(f"SELECT {_ROW} FROM sessions WHERE id = ?", (sid,))
                if row:
                    return row
                if sid == self.explicit:
                    self.notes.append(f"SANDBOXRUN_SESSION={sid} names no sandboxrun session.")
        if self.target is None:
            if self.explicit and self.known is None and self.event != "SessionStart":
                self._identify()  # SANDBOXRUN_SESSION named nothing: fall back (rare)
            if self.target is None:
                return None
        repo, worktree, role = self.target
        if role is not None:
            row = self._one(
                f"SELECT {_ROW} FROM sessions WHERE mode = 'local' AND repo = ? AND role = ? "
                "ORDER BY created_at DESC LIMIT 1",
                (repo, role),
            )
        else:
            row = self._one(
                f"SELECT {_ROW} FROM sessions WHERE mode = 'local' AND worktree = ? "
                "AND role IS NULL ORDER BY created_at DESC LIMIT 1",
                (worktree,),
            )
        if row is None:
            return self._create(repo, worktree, role)
        if row["worktree"] != worktree:
            self.conn.execute(
                "UPDATE sessions SET worktree = ? WHERE id = ?", (worktree, row["id"])
            )
            row["worktree"] = worktree
        return row

    def _one(self, sql: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
        cur = self.conn.execute(sql, args)
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def _create(self, repo: str, worktree: str, role: str | None) -> dict[str, Any]:
        base = f"{role or Path(worktree).name}@{Path(repo).name}"
        name, n = base, 1
        while self._one("SELECT id FROM sessions WHERE name = ?", (name,)):
            n += 1
            name = f"{base}-{n}"
        sid = os.urandom(6).hex()
        branch = self.checkout.branch() if self.checkout else None
        self.conn.execute(
            "INSERT INTO sessions (id, name, mode, backend, status, repo, worktree, branch, role, "
            "created_at, started_at) VALUES (?, ?, 'local', 'interactive', 'running', ?, ?, ?, ?, "
            "?, ?)",
            (sid, name, repo, worktree, branch, role, self.now, self.now),
        )
        self.add_event(sid, "status", {"status": "running", "previous": None})
        return {
            "id": sid,
            "repo": repo,
            "role": role,
            "worktree": worktree,
            "status": "running",
            "mode": "local",
        }

    # -- what happened --------------------------------------------------------------------

    def add_event(self, sid: str, kind: str, payload: dict[str, Any]) -> None:
        """One row in ``events`` for ``sid``, stamped with this call's time."""
        self.conn.execute(
            "INSERT INTO events (session_id, ts, kind, payload) VALUES (?, ?, ?, ?)",
            (sid, self.now, kind, json.dumps(payload)),
        )

    def record(self) -> dict[str, Any] | None:
        """Everything this event means, in one transaction; the hook's stdout reply, if any."""
        self.prepare()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            reply = self._record()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return reply

    def _record(self) -> dict[str, Any] | None:
        row = self.bind()
        if row is None:
            return None
        sid, repo, role = row["id"], row["repo"], row["role"]
        sets = ["last_heartbeat = ?"]
        args: list[Any] = [self.now]
        if self.claude_id:
            sets.append("agent_session_id = ?")
            args.append(self.claude_id)
        if isinstance(self.payload.get("transcript_path"), str):
            sets.append("transcript_path = ?")
            args.append(self.payload["transcript_path"])
        activity = self.activity
        if row["status"] == "completed" and self.event != "SessionStart" and activity:
            # A late event of an ended session (a StopFailure hook runs detached and can land
            # after SessionEnd): keep "exited", but still record when a usage limit resets.
            activity = None
        if activity:
            sets += ["activity = ?", "activity_at = ?"]
            args += [activity, self.now]
        if self.activity == "usage_limited":
            sets.append("resets_at = ?")
            args.append(self.resets)
        status = None
        if row["mode"] != "local":
            pass  # a sandbox run's status belongs to its driver, never to a hook
        elif self.event == "SessionStart":
            status = "running"
            sets += ["ended_at = NULL"]
        elif self.event == "SessionEnd" and row["status"] in _ACTIVE:
            # only a live row: a failed/killed one (a late SessionEnd) keeps why it ended
            status = "completed"
            sets += ["ended_at = ?"]
            args.append(self.now)
        if status:
            sets.append("status = ?")
            args.append(status)
            if status != row["status"]:
                self.add_event(sid, "status", {"status": status, "previous": row["status"]})
        self.conn.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id = ?", (*args, sid))
        self.add_event(sid, "hook", _event_payload(self.event, self.payload, self.claude_id))
        if self.event == "SessionStart":
            return session_start_reply(self, sid, repo, role)
        reply = None
        if self.event == "PreToolUse" and self.payload.get("tool_name") in _EDIT_TOOLS:
            reply = gate_reply(self, sid, repo, row["worktree"])
        elif role and self.event in ("UserPromptSubmit", "PostToolUse"):
            reply = deliver_messages(self, repo, role)
        if role:
            record_presence(self, sid, repo, role)
        return reply


# -- coordination between roles (issue 11): the claim gate, messages, presence ----------
#
# What one session's hook call means for the others. `Hook` above decides which session this
# is and records what happened to it; these functions run inside its transaction.


def session_start_reply(hook: Hook, sid: str, repo: str, role: str | None) -> dict[str, Any] | None:
    """A role's presence and SESSION_START at SessionStart; identity notes and pending messages
    for the agent."""
    from sandboxrun.coord import messages, presence
    from sandboxrun.local.identity import placement_warning

    warning = hook.role_ok and placement_warning(
        role, hook.checkout, hook.settings.pm_role, hook.settings.worktree_dir
    )
    if warning:
        hook.notes.append(f"Warning: {warning}")
    context: list[str] = []
    if role and hook.role_ok:
        presence.register(
            hook.conn,
            repo,
            role,
            worktree=str(hook.checkout.top) if hook.checkout else hook.cwd,
            session_id=sid,
            claude_session_id=hook.claude_id,
            now=hook.now,
        )
        _announce(hook, sid, repo, role, messages.SESSION_START, "source")
        counts = messages.pending_counts(hook.conn, repo, role)
        if counts:
            total = sum(counts.values())
            kinds = ", ".join(f"{k} ({v})" for k, v in counts.items())
            context.append(
                f"sandboxrun: {total} pending message{'s' if total != 1 else ''} for role "
                f"{role!r}: {kinds}. Read them before starting work."
            )
    if not (hook.notes or context):
        return None
    reply: dict[str, Any] = {
        "hookSpecificOutput": {
            "hookEventName": "SessionStart",
            "additionalContext": "\n".join(["sandboxrun: " + n for n in hook.notes] + context),
        }
    }
    if hook.notes:
        reply["systemMessage"] = "sandboxrun: " + " ".join(hook.notes)
    return reply


def _announce(hook: Hook, sid: str, repo: str, role: str, kind: str, field: str) -> None:
    """Tell the other roles that this one started or ended (with the payload's ``field``)."""
    from sandboxrun.coord import messages

    body = {"claude_session_id": hook.claude_id, field: hook.payload.get(field)}
    messages.send(hook.conn, repo, kind, sender=role, session_id=sid, body=body, now=hook.now)


def record_presence(hook: Hook, sid: str, repo: str, role: str) -> None:
    """The role's presence: deregistered (and SESSION_END sent) at SessionEnd, else the
    heartbeat of an active registration."""
    if hook.event == "SessionEnd":
        from sandboxrun.coord import messages, presence

        presence.deregister(hook.conn, repo, role, now=hook.now)
        _announce(hook, sid, repo, role, messages.SESSION_END, "reason")
    else:  # the heartbeat: only the timestamp of an active registration
        hook.conn.execute(
            "UPDATE presence SET last_heartbeat = ? WHERE repo = ? AND role = ? "
            "AND status = 'active'",
            (hook.now, repo, role),
        )


def gate_reply(hook: Hook, sid: str, repo: str, worktree: str | None) -> dict[str, Any] | None:
    """Deny an edit of a file another live session claimed exclusively; warn on advisory."""
    from sandboxrun.coord import gate  # os/time only; imported for edit tools alone

    tool_input = hook.payload.get("tool_input")
    key = gate.EDIT_TOOLS[hook.payload["tool_name"]]
    path = tool_input.get(key) if isinstance(tool_input, dict) else None
    if not isinstance(path, str) or not path:
        return None
    rel = gate.relative_path(path, worktree or hook.cwd, repo)
    if rel is None:
        return None  # outside the repository: not ours to gate
    stale_after = gate.stale_after_for(hook.settings, hook.env)
    found = gate.check(hook.conn, repo, rel, sid, hook.now, stale_after=stale_after)
    if found is None:
        return None
    verdict, text, ids = found
    hook.add_event(sid, "claim_gate", {"decision": verdict, "path": rel, "claims": ids})
    out: dict[str, Any] = {"hookEventName": "PreToolUse"}
    if verdict == "deny":
        out.update(permissionDecision="deny", permissionDecisionReason=text)
    else:
        out["additionalContext"] = text
    return {"hookSpecificOutput": out}


def deliver_messages(hook: Hook, repo: str, role: str) -> dict[str, Any] | None:
    """The role's pending addressed messages into the agent's context (marked read)."""
    rows = hook.conn.execute(
        "SELECT id, sender, type, body FROM messages WHERE repo = ? AND recipient = ? "
        "AND read_at IS NULL AND type NOT IN ('SESSION_START', 'SESSION_END', 'HEARTBEAT') "
        "ORDER BY id LIMIT 20",
        (repo, role),
    ).fetchall()
    if not rows:
        return None
    lines = []
    for _mid, sender, kind, body in rows:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        text = data.get("text") if isinstance(data, dict) else None
        label = "" if kind == "MESSAGE" else f" ({kind})"
        lines.append(f"Session '{sender or 'sandboxrun'}' says{label}: {text or body}")
    marks = ", ".join("?" for _ in rows)
    hook.conn.execute(
        f"UPDATE messages SET read_at = ? WHERE id IN ({marks})",
        (hook.now, *(r[0] for r in rows)),
    )
    return {
        "hookSpecificOutput": {
            "hookEventName": hook.event,
            "additionalContext": "sandboxrun messages:\n" + "\n".join(lines),
        }
    }


def _lenient(home: Path) -> Any:
    """A bad tuning variable never fails the agent: one line in hook.log, then the default."""
    return lambda exc: log(home, f"{exc.message}; the default is used ({exc.hint})")


def _connect(db: Path, env: Any) -> sqlite3.Connection:
    from sandboxrun.tuning import env_seconds  # standard library only

    wait = env_seconds("SANDBOXRUN_HOOK_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT, zero_ok=True,
                       env=env, on_bad=_lenient(db.parent))  # fmt: skip
    conn = sqlite3.connect(db, timeout=wait or 0.0, isolation_level=None)  # (never None)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _migrate(db: Path) -> None:
    """Create or migrate the database once, through the store (the schema's one definition)."""
    from sandboxrun.store import SessionStore, busy_timeout

    SessionStore(db, timeout=busy_timeout(on_bad=_lenient(db.parent))).close()


def handle(
    event: str, payload: dict[str, Any], env: Any, *, close: bool = True
) -> dict[str, Any] | None:
    """Record one hook event; returns the JSON reply for stdout (or None).

    ``close=False`` leaves the connection to die with the process: closing the last
    connection to a WAL database checkpoints it, which costs more than everything else here.
    """
    db = home_dir(env) / "state.db"
    if not db.exists():
        _migrate(db)
    conn = _connect(db, env)
    try:
        try:
            return Hook(event, payload, env, conn).record()
        except sqlite3.OperationalError as exc:
            if "no such" not in str(exc):  # table/column: an older schema
                raise
        _migrate(db)
        return Hook(event, payload, env, conn).record()
    finally:
        if close:
            conn.close()


def cli() -> None:
    """The ``sandboxrun-hook`` console script: :func:`main`, then exit at once.

    ``os._exit`` skips the interpreter's teardown and SQLite's checkpoint-on-close (the
    transaction is committed; the WAL is checkpointed by a later writer), halving the cost of
    a call. Output is flushed first.
    """
    code = main(fast_exit=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None, *, fast_exit: bool = False) -> int:
    """``sandboxrun-hook EVENT`` with the payload on stdin. Always returns 0."""
    argv = sys.argv if argv is None else argv
    env = os.environ
    home = home_dir(env)
    event = argv[1] if len(argv) > 1 else ""
    try:
        raw = sys.stdin.buffer.read()
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            log(home, f"event={event or '?'} payload is not JSON ({len(raw)} bytes); ignored")
            return 0
        if not isinstance(payload, dict):
            log(home, f"event={event or '?'} payload is not a JSON object; ignored")
            return 0
        event = str(payload.get("hook_event_name") or event)
        if not event:
            log(home, "no event name (argument or hook_event_name); ignored")
            return 0
        reply = handle(event, payload, env, close=not fast_exit)
        if reply:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    except Exception as exc:  # never break the agent: one log line, exit 0
        from sandboxrun.faults import db_fault

        # a broken state.db or a full disk: the same words (and next step) as the CLI's
        fault = db_fault(exc, home / "state.db")
        said = f"{fault.message} ({fault.hint})" if fault else f"{type(exc).__name__}: {exc}"
        log(home, f"event={event or '?'} {said}")
    return 0


if __name__ == "__main__":
    cli()
