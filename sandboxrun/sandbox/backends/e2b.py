"""The ``e2b`` backend: each session in its own E2B cloud sandbox, through the ``e2b`` SDK.

Every primitive of :class:`~sandboxrun.sandbox.backends.base.Sandbox` is one or two SDK
calls: commands go through ``commands.run`` (``/bin/bash -l -c`` as user ``user`` in
``/home/user``), files through ``files.read`` / ``files.write``. Argv lists become shell text
only through ``shlex.join`` after a fixed script's ``set --``, so no user text is ever
interpreted by a shell. Command output comes back base64-encoded, because the SDK hands it over as decoded text
and patches are bytes.

SDK exceptions are translated here into our error hierarchy, with the next step in the hint.
Rate limits and network hiccups are retried with backoff for calls that are safe to repeat
(creating is: it carries an idempotency key). Secrets (the E2B key, Claude credentials) are
never put in metadata, messages or logs: they reach the sandbox only as environment
variables of the create call or of the agent's command.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import random
import shlex
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from e2b import (
    CommandExitException,
    FileNotFoundException,
    RateLimitException,
    SandboxException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    TimeoutException,
)
from e2b import Sandbox as SDKSandbox

from sandboxrun.config import CLAUDE_CODE_VERSION, DEFAULT_TEMPLATE, Settings
from sandboxrun.errors import (
    AgentError,
    AuthError,
    BackendError,
    SandboxLostError,
    SandboxrunError,
    TemplateNotFoundError,
    UnsafeArchiveError,
)
from sandboxrun.sandbox.backends.base import DETACH_WRAPPER, ExecResult, Launch, Sandbox
from sandboxrun.sandbox.backends.e2b_env import (
    CREDENTIAL_VARS,
    PASSTHROUGH_VARS,
    SECRET_VARS,
    scrub,
)
from sandboxrun.sandbox.backends.e2b_errors import is_transient, translate
from sandboxrun.sandbox.backends.e2b_orphans import sweep
from sandboxrun.sandbox.backends.e2b_scripts import (
    _EXEC_SCRIPT,
    _LAUNCH_SCRIPT,
    _PIECE_SCRIPT,
    _READ_SCRIPT,
    _UNPACK_SCRIPT,
)
from sandboxrun.sandbox.backends.e2b_scripts import MARK as _MARK
from sandboxrun.sandbox.backends.e2b_template import build_template, claude_template
from sandboxrun.sandbox.backends.e2b_watch import (
    DEFAULT_STALL_TIMEOUT,
    Progress,
    WatchedReader,
    WatchedWriter,
    env_seconds,
    watched,
)
from sandboxrun.sandbox.lifetime import command_bound
from sandboxrun.sandbox.ratelimit import CreateLimiter, default_rate
from sandboxrun.tuning import env_delays

__all__ = [
    "CLAUDE_CODE_VERSION", "CREDENTIAL_VARS", "PASSTHROUGH_VARS", "SECRET_VARS", "E2BBackend", "E2BSandbox",
    "build_template", "claude_template", "scrub",
]  # fmt: skip

log = logging.getLogger(__name__)

T = TypeVar("T")

HOME = "/home/user"
#: read_file deltas up to this size come back inline (base64) in one command round trip;
#: bigger ones are cut in the sandbox and downloaded as a file
INLINE_READ_LIMIT = 1 << 20
#: a follow poll (one small command): short, so a hung one never holds the watch for long
READ_TIMEOUT = 60.0
DEFAULT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
#: creation attempts, each in its own rate-limit turn, before a 429 counts as one failure
CREATE_TURNS = 4
_SIGNALS = ("INT", "TERM", "KILL", "0")


def _script(script: str, argv: Sequence[str]) -> str:
    """Shell text that runs a fixed ``script`` with ``argv`` as its ``"$@"`` (all quoted)."""
    return f"set -- {shlex.join(str(a) for a in argv)}\n{script}" if argv else script


def _after_mark(text: str) -> str:
    """What a script printed after its last marker (login-shell chatter comes before it)."""
    return text.rsplit(_MARK, 1)[-1] if _MARK in text else ""


class E2BSandbox(Sandbox):
    """A live E2B sandbox, driven through the SDK."""

    home = HOME

    def __init__(self, backend: E2BBackend, sdk: SDKSandbox) -> None:
        self._backend = backend
        self._sdk = sdk
        self.id: str = sdk.sandbox_id

    @property
    def repo_dir(self) -> str:
        return f"{self.home}/repo"

    # -- commands ----------------------------------------------------------------------------

    def _run(
        self,
        command: str,
        *,
        what: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> tuple[int, str, str]:
        """Run shell text to completion: (exit code, stdout, stderr). Not retried.

        ``timeout`` bounds the whole command, a stream that hangs included (the SDK's own
        bound); ``SANDBOXRUN_E2B_COMMAND_TIMEOUT`` caps it for every command.
        """
        cap = self._backend.command_timeout
        timeout = min(timeout, cap) if cap else timeout
        try:
            result = self._sdk.commands.run(
                command,
                cwd=cwd or self.home,
                envs=dict(env or {}),
                timeout=timeout,
            )
            return result.exit_code, result.stdout, result.stderr
        except CommandExitException as exc:
            return exc.exit_code, exc.stdout, exc.stderr
        except TimeoutException as exc:
            if isinstance(exc, SandboxNotRunningException | SandboxUnreachableException):
                raise self._backend.translate(exc, what, self.id) from None
            raise BackendError(
                f"{what} did not finish within {timeout:g}s in E2B sandbox {self.id}",
                "The sandbox may be overloaded; try again, or inspect it with `sandboxrun status`.",
            ) from None
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one of ours
            raise self._backend.translate(exc, what, self.id) from None

    def run_argv(
        self, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None, timeout: float
    ) -> ExecResult:
        """Run ``argv`` to completion in the sandbox; output comes back byte for byte."""
        if not argv:
            raise ValueError("exec needs a program to run")
        what = f"running {Path(str(argv[0])).name}"
        code, out, err = self._run(
            _script(_EXEC_SCRIPT, argv), what=what, cwd=cwd, env=env, timeout=timeout
        )
        try:
            stdout = base64.b64decode(_after_mark(out))
            stderr = base64.b64decode(_after_mark(err))
        except ValueError:
            # The wrapper itself did not run to its end (e.g. mktemp failed): pass text on.
            stdout, stderr = out.encode(), err.encode()
        return ExecResult(code, stdout, stderr)

    def start_detached(self, launch: Launch) -> int:
        """Start the program in its own session (process group); it outlives this connection."""
        argv = launch.argv
        full_env = {**launch.wrapper_env(), "SBR_WRAPPER": DETACH_WRAPPER}
        code, out, err = self._run(
            _script(_LAUNCH_SCRIPT, argv),
            what="starting the agent",
            cwd=launch.cwd,
            env=full_env,
            timeout=60,
        )
        answer = _after_mark(out)
        if answer == "NOAGENT":
            raise AgentError(
                f"cannot run the agent in E2B sandbox {self.id}: {argv[0]} is not installed "
                f"in template {self._backend.settings.template!r}",
                "Build the template with `sandboxrun template build` (it installs Claude "
                "Code), or point SANDBOXRUN_TEMPLATE at a template that has `claude` on PATH.",
            )
        if code != 0 or not answer.startswith("PID "):
            raise BackendError(
                f"could not start the agent in E2B sandbox {self.id}: "
                f"{scrub(err.strip() or answer or f'exit code {code}')[-500:]}"
            )
        return int(answer.split()[1])

    # -- files -------------------------------------------------------------------------------

    def read_file(self, path: str, offset: int = 0) -> bytes:
        """Bytes of ``path`` from ``offset`` on; a poll with nothing new costs one small call."""
        if offset <= 0:
            return self._download(path)
        tmp = f"/tmp/sandboxrun-read-{uuid.uuid4().hex}"
        code, out, err = self._run(
            _script(_READ_SCRIPT, [path, str(offset), str(INLINE_READ_LIMIT), tmp]),
            what=f"reading {path}",
            timeout=READ_TIMEOUT,
        )
        answer = _after_mark(out)
        if answer == "MISSING":
            raise FileNotFoundError(path)
        if answer == "EMPTY":
            return b""
        if answer.startswith("DATA") and code == 0:
            return base64.b64decode(answer[4:])
        if answer == "FILE" and code == 0:
            try:
                return self._download(tmp)
            finally:
                self._backend.retry(f"removing {tmp}", lambda: self._sdk.files.remove(tmp))
        raise BackendError(
            f"reading {path} in E2B sandbox {self.id} failed: "
            f"{scrub(err.strip() or f'exit code {code}')[-500:]}"
        )

    def _download(self, path: str) -> bytes:
        try:
            return bytes(
                self._backend.retry(
                    f"downloading {path}",
                    lambda: self._sdk.files.read(path, format="bytes"),
                    sandbox_id=self.id,
                    passthrough=(FileNotFoundException,),
                )
            )
        except FileNotFoundException:
            raise FileNotFoundError(path) from None

    def download_to(
        self, path: str, out: BinaryIO, *, offset: int = 0, length: int | None = None
    ) -> int:
        """Stream ``length`` bytes of ``path`` from ``offset`` (all: None) into ``out``.

        Never holds more than one network chunk in memory. A piece of a file is cut in the
        sandbox first (``tail -c | head -c`` into /tmp), so a transfer broken halfway resumes
        from where it stopped. Not retried here: the caller resumes. Returns the bytes written.
        """
        remote, tmp = path, None
        if offset > 0 or length is not None:
            tmp = f"/tmp/sandboxrun-piece-{uuid.uuid4().hex}"
            code, out_text, err = self._run(
                _script(_PIECE_SCRIPT, [path, str(offset), str(length or 0), tmp]),
                what=f"cutting a piece of {path}",
                timeout=600,
            )
            answer = _after_mark(out_text)
            if answer == "MISSING":
                raise FileNotFoundError(path)
            if code != 0 or answer != "OK":
                raise BackendError(
                    f"reading {path} in E2B sandbox {self.id} failed: "
                    f"{scrub(err.strip() or f'exit code {code}')[-500:]}"
                )
            remote = tmp

        def stream(progress: Progress) -> int:
            # The SDK bounds a stalled stream by a fixed 60 s only: ours is `stall_timeout`,
            # and once given up on, this worker can no longer write into `out`.
            sink, written = WatchedWriter(out, progress), 0
            with self._sdk.files.read(remote, format="stream") as chunks:
                for chunk in chunks:
                    sink.write(chunk)
                    written += len(chunk)
            return written

        try:
            written = watched(stream, idle=self._backend.stall_timeout, what=f"downloading {path}")
        except FileNotFoundException:
            raise FileNotFoundError(path) from None
        except Exception as exc:  # noqa: BLE001 - network drops, a lost sandbox...
            raise self._backend.translate(exc, f"downloading {path}", self.id) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(Exception):
                    self._sdk.files.remove(tmp)
        return written

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace ``path`` (envd creates the parent directories)."""
        self._backend.retry(
            f"writing {path}", lambda: self._sdk.files.write(path, data), sandbox_id=self.id
        )

    def upload_and_unpack(self, tarball: Path, compression: str, dest: str) -> None:
        """Stream ``tarball`` up (never whole in memory), check it, unpack it into ``dest``
        (a hung unpack fails after ``lifetime.command_bound`` of the tarball's size)."""
        bound = command_bound(tarball.stat().st_size)
        self.unpack(self.upload(tarball), compression, dest, name=tarball.name, timeout=bound)

    def upload(self, tarball: Path) -> str:
        """Stream ``tarball`` to a fresh file under ``/tmp`` in the sandbox; returns its path."""
        remote = f"/tmp/sandboxrun-upload-{uuid.uuid4().hex}.tar"

        def upload() -> None:
            with open(tarball, "rb") as fh:  # a binary file object: the SDK streams it
                # no client-side bound in the SDK for a streamed upload: ours (e2b_watch)
                send = lambda p: self._sdk.files.write(remote, cast(BinaryIO, WatchedReader(fh, p)))  # noqa: E731
                watched(send, idle=self._backend.stall_timeout, what=f"uploading {tarball.name}")

        self._backend.retry(f"uploading {tarball.name}", upload, sandbox_id=self.id)
        return remote

    def unpack(
        self, remote: str, compression: str, dest: str, *, name: str = "", timeout: float = 900
    ) -> None:
        """Check the uploaded archive ``remote`` and extract it into ``dest`` (one command).

        GNU tar must list every member as a regular file or directory with a safe name
        before anything is extracted; ``remote`` is removed whatever happens.
        """
        name = name or Path(remote).name
        res = self.exec(
            ["bash", "-c", _UNPACK_SCRIPT, "unpack", remote, dest, compression], timeout=timeout
        )
        if res.exit_code == 66:
            raise UnsafeArchiveError(
                f"refused to unpack {name} in the sandbox: {res.error_text()}",
                "The archive holds links, special files or names that could escape the "
                "repository; sandboxrun's own packer never makes those, so check where it "
                "came from.",
            )
        if not res.ok:
            raise BackendError(
                f"unpacking {name} in E2B sandbox {self.id} failed: {res.error_text()[-1000:]}",
                "zstd archives need `zstd` in the template: rebuild it with `sandboxrun "
                "template build`, or use --compression gzip."
                if compression == "zstd"
                else None,
            )

    def upload_and_checkout(self, pack: Path, tree: str, dest: str) -> str:
        """Stream a git ``pack`` up, check its ``tree`` out into a new repository ``dest``;
        returns the baseline commit (``e2b_checkout.checkout``)."""
        from sandboxrun.sandbox.backends.e2b_checkout import checkout

        bound = command_bound(pack.stat().st_size)
        return checkout(self, self.upload(pack), tree, dest, name=pack.name, timeout=bound)

    # -- processes and lifetime ------------------------------------------------------------

    def signal_group(self, pgid: int, signame: str) -> bool:
        """``kill -SIG -- -PGID`` in the sandbox; False when the group is gone."""
        if signame not in _SIGNALS:
            raise ValueError(f"unsupported signal {signame!r}")
        flag = "-0" if signame == "0" else f"-{signame}"
        return self.exec(["kill", flag, "--", f"-{int(pgid)}"], timeout=60).ok

    def set_timeout(self, seconds: float) -> None:
        """Make E2B keep the sandbox ``seconds`` from now (it may also shorten it)."""
        self._backend.retry(
            "extending the sandbox's lifetime",
            lambda: self._sdk.set_timeout(max(1, math.ceil(seconds))),
            sandbox_id=self.id,
        )

    def time_left(self) -> float | None:
        info = self._backend.retry(
            "asking E2B about the sandbox", self._sdk.get_info, sandbox_id=self.id
        )
        return max(0.0, (info.end_at - datetime.now(UTC)).total_seconds())

    def is_alive(self) -> bool:
        """False once E2B says the sandbox is gone; True while it runs, or when E2B cannot be
        reached even after retries (unknown is not lost: the caller keeps trying)."""
        try:
            info = self._backend.retry(
                "asking E2B about the sandbox", self._sdk.get_info, sandbox_id=self.id
            )
        except SandboxLostError:
            return False
        except AuthError:
            raise
        except BackendError as exc:
            log.warning("cannot tell whether E2B sandbox %s is alive: %s", self.id, exc)
            return True
        return str(getattr(info.state, "value", info.state)) == "running"

    def snapshot(self) -> str:
        """``create_snapshot``: the id new sandboxes start from (``create(template=id)``)."""
        info = self._backend.retry(
            "snapshotting the sandbox", self._sdk.create_snapshot, sandbox_id=self.id
        )
        return str(info.snapshot_id)

    def destroy(self) -> None:
        # Already gone is what we wanted: kill() answers False for an unknown sandbox.
        with contextlib.suppress(SandboxLostError):
            self._backend.retry("killing the sandbox", self._sdk.kill, sandbox_id=self.id)


def require_key(otherwise: str) -> None:
    """Raise when E2B_API_KEY is not set; the hint ends with ``otherwise`` (what works)."""
    if not os.environ.get("E2B_API_KEY"):
        key = "Get a key at https://e2b.dev/dashboard?tab=keys and `export E2B_API_KEY=...`"
        raise BackendError("E2B_API_KEY is not set, so no E2B sandbox can be created",
                           f"{key}, {otherwise}.")  # fmt: skip


class E2BBackend:
    """Creates E2B sandboxes from ``settings.template`` and reconnects to them by id."""

    name = "e2b"
    isolated = True
    confines_agent = True

    def __init__(self, settings: Settings, *, retry_delays: Sequence[float] | None = None) -> None:
        self.settings = settings
        if retry_delays is None:  # (an explicit () is "no retries": tests of a first failure)
            # SANDBOXRUN_E2B_RETRY_DELAYS="1,2,4,8" tunes the backoff (tests make it short)
            retry_delays = env_delays("SANDBOXRUN_E2B_RETRY_DELAYS", DEFAULT_RETRY_DELAYS)
        self.retry_delays = tuple(retry_delays)
        # How long a call may hang before it counts as failed (e2b_watch; tests make them
        # short). None: the SDK's own (60 s a request; each command its own limit). A
        # sandbox keeps the request timeout it was created or connected with for all calls.
        self.request_timeout = env_seconds("SANDBOXRUN_E2B_REQUEST_TIMEOUT", None)
        self.stall_timeout = (
            env_seconds("SANDBOXRUN_E2B_STALL_TIMEOUT", None) or DEFAULT_STALL_TIMEOUT
        )
        self.command_timeout = env_seconds("SANDBOXRUN_E2B_COMMAND_TIMEOUT", None)
        #: sandbox creations per second, kept across processes (sandbox/ratelimit.py)
        self.create_rate = default_rate()

    # -- readiness and credentials -----------------------------------------------------------

    def check_ready(self, *, dry_run: bool) -> None:
        require_key("or run on this machine with `--backend local` (bubblewrap-confined on Linux)")

    def agent_env(self, *, dry_run: bool) -> dict[str, str]:
        """Claude's credentials and settings from this environment, for inside the sandbox."""
        env = {
            var: os.environ[var]
            for var in (*CREDENTIAL_VARS, *PASSTHROUGH_VARS)
            if os.environ.get(var)
        }
        if not dry_run and not any(var in env for var in CREDENTIAL_VARS):
            raise AgentError(
                "no Claude credentials to give the agent in the E2B sandbox",
                "Set ANTHROPIC_API_KEY, or CLAUDE_CODE_OAUTH_TOKEN (from `claude "
                "setup-token`) to use a Claude subscription. `--dry-run` needs neither.",
            )
        # Claude Code refuses --dangerously-skip-permissions as root unless told it is in a
        # sandbox; E2B runs commands as `user`, but a custom template may not.
        env["IS_SANDBOX"] = "1"
        return env

    # -- sandboxes ---------------------------------------------------------------------------

    def create(
        self,
        session_id: str,
        *,
        timeout_s: float,
        env: Mapping[str, str],
        metadata: Mapping[str, str],
        template: str | None = None,
    ) -> E2BSandbox:
        """A sandbox from ``template`` (default: configured; or a snapshot id), rate-limited."""
        from_snapshot = template is not None
        template = template or self.settings.template
        limiter = CreateLimiter.for_e2b(self.settings.home, self.create_rate)
        meta = {str(k): str(v) for k, v in metadata.items()}
        meta.setdefault("sandboxrun_session", session_id)
        # One key for all our retries: if a create went through but its answer was lost, E2B
        # hands back the same sandbox instead of starting a second one.
        key = str(uuid.uuid4())
        timeout = max(1, math.ceil(timeout_s))

        def create() -> SDKSandbox:
            # each attempt waits its turn (after a 429, a later one); the SDK's retries would not
            for attempt in range(CREATE_TURNS):
                with limiter.turn():
                    try:
                        return SDKSandbox.create(
                            template=template,
                            timeout=timeout,
                            metadata=meta,
                            envs=dict(env),
                            idempotency_key=key,
                            retries=0,
                            request_timeout=self.request_timeout,
                        )
                    except RateLimitException:
                        if attempt == CREATE_TURNS - 1:
                            raise
            raise AssertionError("unreachable")

        try:
            sdk = self.retry("creating the sandbox", create)
        except BackendError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, SandboxException) else None
            status = getattr(cause, "status_code", None)
            text = str(cause or "").lower()
            # no answer, or a server error: E2B may yet have started it, so find it
            if (status is None or status >= 500) and (killed := sweep(self, session_id)):
                exc.message += f" (killed {', '.join(killed)}, started without an answer)"
            if from_snapshot and (status == 404 or "not found" in text):
                raise TemplateNotFoundError(
                    f"the E2B snapshot {template!r} no longer exists",
                    "Build a new one with `sandboxrun warm`.",
                ) from cause
            if status == 404 or ("template" in text and "not found" in text):
                raise BackendError(
                    f"the E2B template {template!r} does not exist (or is not yours)",
                    "Build it once with `sandboxrun template build`"
                    + ("" if template == DEFAULT_TEMPLATE else f" --name {template}")
                    + ", or choose another with SANDBOXRUN_TEMPLATE / `template` in "
                    ".sandboxrun.toml.",
                ) from cause
            if status == 400 and "timeout" in text:
                raise BackendError(
                    f"E2B refused a sandbox lifetime of {timeout}s: {scrub(str(cause))}",
                    "E2B allows at most 1 h per sandbox on the Hobby plan and 24 h on Pro: "
                    "lower --timeout.",
                ) from cause
            raise
        log.debug("created E2B sandbox %s for session %s", sdk.sandbox_id, session_id)
        return E2BSandbox(self, sdk)

    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a snapshot made by :meth:`E2BSandbox.snapshot`; False if it was gone."""
        return bool(
            self.retry(
                "deleting a snapshot",
                lambda: SDKSandbox.delete_snapshot(
                    snapshot_id, request_timeout=self.request_timeout
                ),
            )
        )

    def connect(self, sandbox_id: str) -> E2BSandbox:
        sdk = self.retry(
            "reconnecting to the sandbox",
            lambda: SDKSandbox.connect(sandbox_id, request_timeout=self.request_timeout),
            sandbox_id=sandbox_id,
        )
        return E2BSandbox(self, sdk)

    # -- errors and retries ------------------------------------------------------------------

    def retry(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        sandbox_id: str | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Call ``fn``, retrying rate limits and network hiccups with backoff.

        Only for calls that are safe to repeat. ``passthrough`` exceptions are re-raised as
        they are (e.g. a missing file, which the caller turns into ``FileNotFoundError``);
        everything else becomes a :class:`BackendError` subclass.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except passthrough:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_transient(exc) or attempt >= len(self.retry_delays):
                    raise self.translate(exc, what, sandbox_id) from exc
                delay = self.retry_delays[attempt] * (0.75 + random.random() / 2)
                log.info("E2B: %s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
                time.sleep(delay)
                attempt += 1

    def translate(
        self, exc: BaseException, what: str, sandbox_id: str | None = None
    ) -> SandboxrunError:
        """One of our errors for an SDK (or network) failure while doing ``what``."""
        return translate(exc, what, sandbox_id, retries=len(self.retry_delays))
