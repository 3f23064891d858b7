"""Emulated sandboxes: a private mount + PID namespace each, commands as real processes.

Each sandbox is a directory on this machine bind-mounted onto ``/home/user`` inside its own
mount namespace, with its own PID namespace whose init (``nsinit.py``) reaps orphans. Commands
enter the namespaces with ``nsenter``, so inside a sandbox ``/home/user`` is that sandbox's
home, ``ps`` sees only its processes and process groups behave as in a VM. ``/tmp`` is the
sandbox's own too. The rest of the filesystem (``/usr``, this checkout) is this machine's,
shared by all sandboxes.

Without root, each sandbox also gets a user namespace in which we are root (``unshare --user
--map-root-user``), which is what makes the mount and PID namespaces possible; commands then
run as uid 0 inside it, as they do when the emulator runs as root, and their files belong to
us outside it.

Everything here runs on the emulator's event loop thread; the test-facing API in
``server.py`` hops onto it with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SANDBOX_HOME = "/home/user"  # also in nsinit.py, which runs on its own
#: empty on this machine yet on root's login PATH (/etc/profile): each sandbox gets the
#: emulator's tools directory mounted here, which holds ``claude`` when the emulator has one
TOOLS_MOUNT = "/usr/local/sbin"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: >= 0.6.2 so the SDK enables octet-stream uploads and file metadata
ENVD_VERSION = "0.6.7"
CHUNK = 32 << 10  # envd reads process output in 32 KiB chunks

_INIT = Path(__file__).with_name("nsinit.py")
# `nsenter --wd` resolves the directory before entering the mount namespace (so /home/user
# would be this machine's); a tiny shell changes directory inside, then execs (same pid).
_CD_EXEC = 'cd -- "$1" || exit 1; shift; exec "$@"'


class EmulatorError(Exception):
    """A request the emulated envd refuses (mapped to a Connect or HTTP error by the caller)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # not_found | invalid | exists
        self.message = message


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class ProcessEnd:
    """How a command ended, in envd's terms (Go's ProcessState)."""

    exit_code: int
    exited: bool
    status: str
    error: str | None


class EmuProcess:
    """One command started through ``process.Process/Start``."""

    def __init__(
        self,
        sandbox: EmuSandbox,
        proc: asyncio.subprocess.Process,
        *,
        cmd: str,
        args: list[str],
        envs: dict[str, str],
        cwd: str,
        tag: str | None,
    ) -> None:
        self.sandbox = sandbox
        self.proc = proc
        self.pid = proc.pid
        self.cmd, self.args, self.envs, self.cwd, self.tag = cmd, args, envs, cwd, tag
        self.subscribers: list[asyncio.Queue] = []
        self.end: ProcessEnd | None = None
        self.task: asyncio.Task | None = None

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        if self.end is not None:
            queue.put_nowait(("end", self.end))
        self.subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(queue)

    def publish(self, item: tuple) -> None:
        for queue in list(self.subscribers):
            queue.put_nowait(item)

    async def pump(self) -> None:
        """Forward output to subscribers until the process ends, then publish its end."""
        readers = [
            asyncio.create_task(self._read(self.proc.stdout, "stdout")),
            asyncio.create_task(self._read(self.proc.stderr, "stderr")),
        ]
        returncode = await self.proc.wait()
        # envd closes the pipes once the process is reaped: output still held open by
        # background children is not waited for (the stream ends with the process).
        _, pending = await asyncio.wait(readers, timeout=0.2)
        for task in pending:
            task.cancel()
        if returncode >= 0:
            status = f"exit status {returncode}"
            self.end = ProcessEnd(returncode, True, status, None if returncode == 0 else status)
        else:
            status = f"signal: {signal.Signals(-returncode).name[3:].lower()}"
            self.end = ProcessEnd(-1, False, status, status)
        self.sandbox.procs.pop(self.pid, None)
        if self.sandbox.alive:
            self.publish(("end", self.end))
        else:
            # A command started while the sandbox was being destroyed (registered after
            # destroy() told the running ones) ends like them: its stream breaks, as a dropped
            # VM's would, instead of hanging until the client's own timeout.
            self.publish(("lost", f"The sandbox {self.sandbox.sandbox_id} was not found"))

    async def _read(self, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        while True:
            chunk = await stream.read(CHUNK)
            if not chunk:
                return
            self.publish(("data", name, chunk))

    def send_signal(self, signum: int) -> None:
        """Signal the command itself (bash), not its children, as envd does."""
        targets = _children(self.pid) or [self.pid]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    async def write_stdin(self, data: bytes) -> None:
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            raise EmulatorError("invalid", "stdin not enabled or closed")
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()


@dataclass
class EmuSandbox:
    """One emulated sandbox."""

    sandbox_id: str
    template_id: str
    root: Path
    metadata: dict[str, str]
    env_vars: dict[str, str]
    started_at: float
    end_at: float
    access_token: str
    client_id: str = "emulator"
    holder: asyncio.subprocess.Process | None = None
    init_pid: int = 0
    alive: bool = True
    procs: dict[int, EmuProcess] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        """The directory on this machine that is ``/home/user`` inside the sandbox (for one
        started from a snapshot as root, the overlay's upper layer: use :meth:`host_path`)."""
        return self.root / "home"

    def resolve(self, path: str) -> str:
        """An absolute path inside the sandbox (relative paths start at ``/home/user``)."""
        if not path.startswith("/"):
            path = f"{SANDBOX_HOME}/{path}"
        return os.path.normpath(path).replace("//", "/")

    def host_path(self, path: str) -> Path:
        """Where ``path`` (as seen inside the sandbox) is reachable from this machine.

        ``/proc/<init>/root`` walks the sandbox's own mount table, so ``/home/user`` lands in
        its home and every other path in this machine's filesystem, exactly as commands see it.
        """
        return Path(f"/proc/{self.init_pid}/root{self.resolve(path)}")


async def copy_tree(src: Path, dest: Path) -> None:
    """Copy the contents of ``src`` into the existing directory ``dest``, keeping modes and
    times (``cp -a``: E2B's snapshots keep a filesystem as it was)."""
    proc = await asyncio.create_subprocess_exec(
        "cp", "-a", "--", f"{src}/.", f"{dest}/",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"copying {src} to {dest} failed: {err.decode(errors='replace')}")


class SandboxManager:
    """Creates, runs commands in and tears down emulated sandboxes."""

    def __init__(self, root: Path, tools_dir: Path, *, userns: bool, shadow_home: bool) -> None:
        self.root = root
        self.tools_dir = tools_dir
        #: each sandbox in its own user namespace too (what lets a non-root user do this)
        self.userns = userns
        #: no /home/user on this machine: each sandbox gets a private /home (see nsinit.py)
        self.shadow_home = shadow_home
        self.sandboxes: dict[str, EmuSandbox] = {}
        #: sandboxes that no longer exist, with why (for the proxy's error message)
        self.gone: dict[str, str] = {}
        self._reaper: asyncio.Task | None = None
        #: background removals of destroyed sandboxes' files
        self._cleanups: set[asyncio.Task] = set()

    def start_reaper(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_expired())

    async def _reap_expired(self) -> None:
        # E2B kills a sandbox when its timeout passes: set_timeout() is what keeps it alive.
        while True:
            now = time.time()
            for sandbox in list(self.sandboxes.values()):
                if sandbox.end_at <= now:
                    await self.destroy(sandbox.sandbox_id, "expired")
            await asyncio.sleep(0.05)

    async def create(
        self,
        *,
        template_id: str,
        timeout: float,
        metadata: dict[str, str],
        env_vars: dict[str, str],
        seed: Path | None = None,
    ) -> EmuSandbox:
        """A new sandbox; ``seed`` (a snapshot's copy of a home) becomes its ``/home/user``."""
        sandbox_id = "i" + secrets.token_hex(10)
        root = self.root / sandbox_id
        (root / "home").mkdir(parents=True)
        # A snapshot's files: through an overlay when we may mount one (root: no copying, as
        # E2B boots a snapshot without copying it through anything), else copied.
        overlay = seed is not None and not self.userns
        if overlay:
            (root / "work").mkdir()
        elif seed is not None:
            await copy_tree(seed, root / "home")
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
        now = time.time()
        sandbox = EmuSandbox(
            sandbox_id=sandbox_id,
            template_id=template_id,
            root=root,
            metadata=dict(metadata),
            env_vars=dict(env_vars),
            started_at=now,
            end_at=now + timeout,
            access_token=secrets.token_hex(16),
        )
        # setpriv --pdeathsig: if this emulator dies without cleaning up, unshare dies with it
        # and --kill-child then takes the whole PID namespace down.
        sandbox.holder = await asyncio.create_subprocess_exec(
            "setpriv",
            "--pdeathsig",
            "KILL",
            "unshare",
            *(["--user", "--map-root-user"] if self.userns else []),
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "--kill-child",
            "--",
            sys.executable,
            str(_INIT),
            str(sandbox.home),
            str(self.tools_dir),
            str(root / "tmp"),
            "1" if self.shadow_home else "0",
            *([str(seed)] if overlay else []),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            line = await asyncio.wait_for(sandbox.holder.stdout.readline(), 15)
        except TimeoutError:
            line = b""
        children = _children(sandbox.holder.pid)
        if line != b"ready\n" or not children:
            with contextlib.suppress(ProcessLookupError):
                sandbox.holder.kill()
            err = await sandbox.holder.stderr.read()
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(
                f"the emulator could not start a sandbox namespace: {err.decode().strip()!r}"
            )
        sandbox.init_pid = children[0]
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    async def start_process(
        self,
        sandbox: EmuSandbox,
        *,
        cmd: str,
        args: list[str],
        envs: dict[str, str],
        cwd: str | None,
        stdin: bool,
        tag: str | None,
    ) -> tuple[EmuProcess, asyncio.Queue]:
        """Start a command as envd would; returns it already subscribed (no output lost)."""
        cwd = sandbox.resolve(cwd or SANDBOX_HOME)
        if not sandbox.host_path(cwd).is_dir():
            raise EmulatorError("invalid", f"cwd '{cwd}' does not exist")
        # envd's environment: its PATH, the user's identity, the sandbox's env vars, then the
        # request's (later wins).
        env = {"PATH": BASE_PATH, "HOME": SANDBOX_HOME, "USER": "user", "LOGNAME": "user"}
        env.update(sandbox.env_vars)
        env.update(envs)
        # In a user namespace, enter it too, keeping our own uid (its root there): nsenter's
        # default setgroups() is refused where unshare --map-root-user denied it.
        userns = ["-U", "--preserve-credentials"] if self.userns else []
        proc = await asyncio.create_subprocess_exec(
            "nsenter",
            "-t",
            str(sandbox.init_pid),
            *userns,
            "-m",
            "-p",
            "--",
            "/bin/sh",
            "-c",
            _CD_EXEC,
            "sh",
            cwd,
            cmd,
            *args,
            env=env,
            cwd="/",
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        emu = EmuProcess(sandbox, proc, cmd=cmd, args=args, envs=envs, cwd=cwd, tag=tag)
        queue = emu.subscribe()
        sandbox.procs[emu.pid] = emu
        emu.task = asyncio.get_running_loop().create_task(emu.pump())
        return emu, queue

    async def destroy(self, sandbox_id: str, reason: str) -> bool:
        """Kill everything in the sandbox and delete its files; False if it did not exist."""
        sandbox = self.sandboxes.pop(sandbox_id, None)
        if sandbox is None:
            return False
        sandbox.alive = False
        self.gone[sandbox_id] = reason
        message = f"The sandbox {sandbox_id} was not found"
        for proc in list(sandbox.procs.values()):
            proc.publish(("lost", message))
        # SIGKILL to the namespace's init makes the kernel kill every process inside it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(sandbox.init_pid, signal.SIGKILL)
        if sandbox.holder is not None:
            try:
                await asyncio.wait_for(sandbox.holder.wait(), 10)
            except TimeoutError:
                log.warning("sandbox %s: namespace holder did not exit", sandbox_id)
        for proc in list(sandbox.procs.values()):
            if proc.task is not None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(proc.task), 5)
        # The bind mount lived only in the sandbox's namespace, now gone: this removes the
        # sandbox's own directory, never anything mounted over. E2B answers a kill once the VM
        # is dead, not once its disk is scrubbed, so the files go in the background.
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(shutil.rmtree, sandbox.root, True)
        )
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return True

    async def settle(self) -> None:
        """Wait until the files of every destroyed sandbox are gone from this machine."""
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    async def destroy_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for sandbox_id in list(self.sandboxes):
            await self.destroy(sandbox_id, "emulator stopped")
        await self.settle()
