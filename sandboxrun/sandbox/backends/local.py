"""The ``local`` backend: a throwaway directory on this machine, confined with bubblewrap.

On Linux the agent, and every command we run in its directory, runs under ``bwrap``
(:mod:`sandboxrun.sandbox.backends.bwrap`): the sandbox directory is the only thing it can
write, it sees no home directory, no repository and no sandboxrun state, and nothing it starts
outlives it. Without bwrap a run is refused unless ``--no-isolation``; on macOS it is not
isolated at all (said plainly at every run). ``docs/security.md`` is the threat model.

Layout of ``$SANDBOXRUN_HOME/sandboxes/<id>`` (the root, ours; never visible inside):

- ``home/``: the sandbox's home (``Sandbox.home``): ``repo/``, ``.sandboxrun/`` (control
  files: read-only inside), ``.claude/`` (the agent's private Claude config);
- ``sandbox.json``: whether it is isolated and the supervisor's pid (trusted: the agent cannot
  write it, so tearing down never signals a process the agent named);
- ``etc/passwd``, ``etc/group``: the sandbox's user database (root, agent, nobody).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import sandboxrun.sandbox.backends.bwrap as bwrap_mod
from sandboxrun import process
from sandboxrun.config import INSTALL_CLAUDE_HINT, Settings
from sandboxrun.errors import (
    AgentError,
    BackendError,
    ProcessError,
    ProgramNotFoundError,
    SandboxLostError,
)
from sandboxrun.sandbox.backends.base import ExecResult, Launch, Sandbox

# With isolation this shell is the supervisor: it stays outside the sandbox, owns the bwrap
# process ("$@" is the bwrap argv) and writes the exit code where the agent cannot. INT and
# TERM are *ignored* (inherited by bwrap, which would otherwise die of them and take the
# sandbox down at once through --die-with-parent); `env --default-signal` restores them for
# the agent inside, which gets them directly: it stays in our process group. KILL to the
# group kills the supervisor and bwrap, and --die-with-parent then the whole sandbox.
SUPERVISOR = r"""
trap '' INT TERM
"$@" < "$SBR_STDIN_PATH" > "$SBR_LOG_PATH" 2> "$SBR_STDERR_PATH"
code=$?
echo $code > "$SBR_EXIT_PATH.tmp" && mv "$SBR_EXIT_PATH.tmp" "$SBR_EXIT_PATH"
"""

# Inside the sandbox, around the agent: wait for it, then SIGKILL everything else in the PID
# namespace (`kill -1` reaches only this namespace) before the exit code is written, so not
# even a `setsid` daemon can touch the sandbox directory while we collect. bwrap's own init
# ending kills the namespace too; this makes it happen before the exit code exists.
INNER_WRAPPER = r"""
trap : INT TERM
"$@"
code=$?
kill -KILL -1 2>/dev/null
exit $code
"""

_SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "0": 0}
META = "sandbox.json"
CONTROL = ".sandboxrun"


@dataclass(frozen=True)
class _Tools:
    """bwrap and what this machine looks like to it (probed once per process)."""

    bwrap: str
    host: bwrap_mod.HostView


@functools.lru_cache(maxsize=1)
def _tools() -> _Tools:
    path = bwrap_mod.find_bwrap()
    if path is None:
        raise BackendError(
            "this sandbox runs under bubblewrap (bwrap), which is not installed any more",
            bwrap_mod.INSTALL_HINT,
        )
    res = process.run([path, "--version"], check=False, timeout=30)
    return _Tools(path, bwrap_mod.probe_host(res.stdout))


def probe_tools() -> None:
    """Probe bwrap now (once per process; a fork server does it for the drivers it forks)."""
    if bwrap_mod.find_bwrap() is not None:
        _tools()


def _bwrap_failure() -> str | None:
    """Why bwrap cannot start a sandbox on this machine (user namespaces refused...), or None."""
    tools = _tools()
    conf = bwrap_mod.Confinement(host=tools.host, sandbox_dir="/tmp", new_session=True)
    res = process.run(bwrap_mod.build_argv(conf, ["true"], tools.bwrap), check=False, timeout=60)
    if res.ok:
        return None
    return (res.stderr or res.stdout).strip()[-500:] or f"exit code {res.returncode}"


def _env_resets_signals() -> bool:
    """`env --default-signal` (coreutils 8.31+) restores INT/TERM for the agent inside."""
    res = process.run(["env", "--default-signal=INT", "true"], check=False, timeout=30)
    return res.ok


class LocalSandbox(Sandbox):
    """A sandbox that is a directory on this machine (confined with bwrap when ``isolated``)."""

    def __init__(
        self,
        sandbox_id: str,
        root: Path,
        settings: Settings,
        *,
        isolated: bool,
        legacy: bool = False,
    ) -> None:
        self.id = sandbox_id
        self.root = root
        self.settings = settings
        self.isolated = isolated
        # Sandboxes made before the home/ layout had their home at the root.
        self.home = str(root if legacy else root / "home")

    @property
    def repo_dir(self) -> str:
        return f"{self.home}/repo"

    # -- confinement -------------------------------------------------------------------------

    def _confinement(
        self, env: Mapping[str, str] | None, chdir: str, *, agent: bool
    ) -> bwrap_mod.Confinement:
        """How a command runs inside: the agent (control dir read-only) or one of ours."""
        tools = _tools()
        home = self.home
        ro_files = [
            (str(self.root / "etc" / "passwd"), "/etc/passwd"),
            (str(self.root / "etc" / "group"), "/etc/group"),
        ]
        creds = _claude_credentials()
        if agent and creds is not None:
            ro_files.append((str(creds), f"{home}/.claude/.credentials.json"))
        return bwrap_mod.Confinement(
            host=tools.host,
            sandbox_dir=home,
            readonly_inside=(f"{home}/{CONTROL}",) if agent else (),
            hidden=(str(self.settings.home), str(Path.home())),
            exposed=_agent_exposure(self.settings.claude_bin),
            ro_files=tuple(ro_files),
            env=bwrap_mod.agent_environment(os.environ, home, env),
            chdir=chdir,
            # Our own commands may run from the user's terminal: no controlling tty inside
            # (TIOCSTI). The agent is started detached, without one, and must stay in our
            # process group so stop signals reach it.
            new_session=not agent,
        )

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        full = dict(os.environ)
        full.update(env or {})
        return full

    # -- the Sandbox primitives ---------------------------------------------------------------

    def run_argv(
        self, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None, timeout: float
    ) -> ExecResult:
        """Run a short command in the sandbox (confined like the agent when isolated)."""
        self._require()
        if self.isolated:
            conf = self._confinement(env, cwd or self.home, agent=False)
            command = bwrap_mod.build_argv(conf, list(argv), _tools().bwrap)
            run_env: dict[str, str] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            run_cwd = "/"
        else:
            command, run_env, run_cwd = list(argv), self._env(env), cwd or self.home
        try:
            # input=b"": stdin is at EOF at once, never the user's terminal.
            res = process.run_raw(
                command, cwd=run_cwd, env=run_env, input=b"", check=False, timeout=timeout
            )
        except ProgramNotFoundError:
            return ExecResult(127, b"", f"{argv[0]}: command not found".encode())
        except ProcessError as exc:
            # A timeout. Killing bwrap killed everything inside (--die-with-parent).
            raise BackendError(
                f"{argv[0]} did not finish within {timeout:g}s in the sandbox"
            ) from exc
        return ExecResult(res.returncode, res.stdout, res.stderr)

    def start_detached(self, launch: Launch) -> int:
        """Start the program in a new session (its own process group), surviving our exit.

        Isolated, the process started is a supervisor shell outside the sandbox that owns the
        bwrap process; the agent runs inside, in the supervisor's process group. Unconfined, it
        is :data:`~sandboxrun.sandbox.backends.base.DETACH_WRAPPER` around the agent.
        """
        self._require()
        if process.which(launch.argv[0]) is None:
            raise AgentError(
                f"cannot run the agent: {launch.argv[0]} not found", INSTALL_CLAUDE_HINT
            )
        for path in (launch.log_path, launch.stderr_path, launch.exit_path, launch.pid_path):
            # The files the supervisor writes must be plain files of ours, never links.
            self._check_plain(path)
        if self.isolated:
            conf = self._confinement(launch.env, launch.cwd, agent=True)
            inner = ["env", "--default-signal=INT,TERM", "/bin/sh", "-c", INNER_WRAPPER, "sh"]
            command = bwrap_mod.build_argv(conf, [*inner, *launch.argv], _tools().bwrap)
            files = {k: v for k, v in launch.wrapper_env().items() if k.startswith("SBR_")}
            wrap_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **files}
            argv, cwd = ["/bin/sh", "-c", SUPERVISOR, "sh", *command], "/"
        else:
            argv, cwd = launch.wrapper_argv(), launch.cwd
            wrap_env = self._env(launch.wrapper_env())
        pid = process.spawn_detached(argv, cwd=cwd, env=wrap_env)
        self.write_file(launch.pid_path, f"{pid}\n".encode())
        self._write_meta(supervisor_pid=pid)
        return pid

    def read_file(self, path: str, offset: int = 0) -> bytes:
        """Read a file of the sandbox, never following a link the sandbox planted."""
        fd = self._open_beneath(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise BackendError(f"{path} in the sandbox is not a regular file")
            fh.seek(offset)
            return fh.read()

    def copy_out(self, path: str, dest: Path) -> None:
        """Stream a regular file of the sandbox to ``dest``: any size, links not followed."""
        fd = self._open_beneath(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise BackendError(f"{path} in the sandbox is not a regular file")
            with open(dest, "wb") as out:
                shutil.copyfileobj(fh, out, 1 << 20)

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace a file of the sandbox (atomically; links are not followed)."""
        rel = self._relative(path)
        dfd = self._open_dir(rel.parent, create=True)
        try:
            tmp = f".{rel.name}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                         dir_fd=dfd)  # fmt: skip
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, rel.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def upload_and_unpack(self, tarball: Path, compression: str, dest: str) -> None:
        from sandboxrun.sync.unpack import safe_extract

        self._require()
        Path(dest).mkdir(parents=True, exist_ok=True)
        safe_extract(tarball, Path(dest), compression)

    def signal_group(self, pgid: int, signame: str) -> bool:
        try:
            os.killpg(int(pgid), _SIGNALS[signame])
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def set_timeout(self, seconds: float) -> None:
        """Local sandboxes have no lifetime limit of their own: our watchdog is the limit."""

    def is_alive(self) -> bool:
        return self.root.is_dir()

    def time_left(self) -> float | None:
        return None

    def destroy(self) -> None:
        """Kill the supervisor's group (and so the whole sandbox), then remove the directory."""
        pid = _read_meta(self.root).get("supervisor_pid")
        if pid is None and self.home == str(self.root):
            # A sandbox from before sandbox.json: its pid file, checked like any other pid.
            with contextlib.suppress(OSError, ValueError, BackendError):
                pid = int(self.read_file(f"{self.home}/{CONTROL}/agent.pid").strip())
        if isinstance(pid, int) and pid > 1 and _is_our_supervisor(pid, self.home):
            self.signal_group(pid, "KILL")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def _require(self) -> None:
        if not self.root.is_dir():
            raise SandboxLostError(
                f"local sandbox {self.id} is gone ({self.root} no longer exists)",
                "Its last collected patches are under the session's artifacts directory.",
            )

    def _write_meta(self, **fields: object) -> None:
        meta = {**_read_meta(self.root), "isolated": self.isolated, **fields}
        tmp = self.root / f".{META}.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.root / META)

    def _relative(self, path: str) -> PurePosixPath:
        try:
            rel = PurePosixPath(path).relative_to(self.home)
        except ValueError:
            raise BackendError(f"{path} is outside sandbox {self.id}") from None
        if not rel.parts or ".." in rel.parts:
            raise BackendError(f"{path} is not a file inside sandbox {self.id}")
        return rel

    def _open_dir(self, rel: PurePosixPath, *, create: bool = False) -> int:
        """An fd of ``home/rel``, walking it one name at a time without following links."""
        self._require()
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        dfd = os.open(self.home, flags)
        try:
            for part in rel.parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=dfd)
                try:
                    nfd = os.open(part, flags, dir_fd=dfd)
                except OSError as exc:
                    if not isinstance(exc, FileNotFoundError):
                        raise BackendError(
                            f"{part} in sandbox {self.id} is not a directory"
                        ) from exc
                    raise
                os.close(dfd)
                dfd = nfd
        except BaseException:
            os.close(dfd)
            raise
        return dfd

    def _open_beneath(self, path: str, flags: int) -> int:
        rel = self._relative(path)
        dfd = self._open_dir(rel.parent)
        try:
            return os.open(rel.name, flags | os.O_NOFOLLOW, dir_fd=dfd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise BackendError(f"{path} in the sandbox is not a regular file: {exc}") from exc
        finally:
            os.close(dfd)

    def _check_plain(self, path: str) -> None:
        rel = self._relative(path)
        dfd = self._open_dir(rel.parent, create=True)
        try:
            st = os.stat(rel.name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        finally:
            os.close(dfd)
        if not stat.S_ISREG(st.st_mode):
            raise BackendError(f"{path} in the sandbox is not a regular file")


def _read_meta(root: Path) -> dict:
    try:
        data = json.loads((root / META).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_our_supervisor(pid: int, home: str) -> bool:
    """Whether ``pid`` still runs this sandbox's supervisor (not a reused pid)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        # No /proc (macOS): the pid came from our own trusted file, trust it.
        return not Path("/proc/self").exists()
    return f"SBR_PID_PATH={home}/".encode() in environ


def _claude_credentials() -> Path | None:
    """The user's Claude Code login file, bound read-only into the sandbox when present."""
    config = os.environ.get("CLAUDE_CONFIG_DIR") or str(Path.home() / ".claude")
    path = Path(config) / ".credentials.json"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=8)
def _agent_exposure(claude_bin: str) -> bwrap_mod.Exposure:
    """The agent's executable as the sandbox must see it: its links, its file or package."""
    found = process.which(claude_bin)
    if found is None:
        return bwrap_mod.Exposure()
    path = os.path.abspath(found)
    chain: list[tuple[str, str]] = []
    for _ in range(40):  # the kernel's own limit on nested links
        if not os.path.islink(path):
            break
        target = os.readlink(path)
        chain.append((path, target))
        # Resolve the directory part only: the next hop may itself be a link.
        path = os.path.join(os.path.realpath(os.path.dirname(path)), target)
        path = os.path.normpath(path)
    return bwrap_mod.executable_exposure(chain, os.path.realpath(found))


class LocalBackend:
    """Creates :class:`LocalSandbox` directories under ``$SANDBOXRUN_HOME/sandboxes``."""

    name = "local"
    #: the agent runs this machine's programs (not a separate machine with its own install)
    isolated = False

    def __init__(self, settings: Settings, *, no_isolation: bool = False) -> None:
        self.settings = settings
        self.no_isolation = no_isolation
        self.decision = bwrap_mod.decide_isolation(
            platform.system(), bwrap_mod.find_bwrap(), no_isolation
        )

    @property
    def confines_agent(self) -> bool:
        """Whether new sandboxes run the agent under bwrap."""
        return self.decision.isolated

    def check_ready(self, *, dry_run: bool) -> None:
        if self.decision.refusal:
            raise BackendError(self.decision.refusal, bwrap_mod.INSTALL_HINT)
        failure = _bwrap_failure() if self.decision.isolated else None
        if failure:
            raise BackendError(
                f"bubblewrap is installed but cannot start a sandbox here: {failure}",
                "Unprivileged user namespaces may be disabled (sysctl "
                "kernel.unprivileged_userns_clone, or AppArmor's "
                "kernel.apparmor_restrict_unprivileged_userns on Ubuntu 24.04+), or this runs "
                "inside a container that forbids them. Enable them, or pass --no-isolation to "
                "run the agent unconfined.",
            )
        if self.decision.isolated and not _env_resets_signals():
            raise BackendError(
                "isolation needs `env --default-signal` (GNU coreutils 8.31 or newer)",
                "Upgrade coreutils, or pass --no-isolation to run the agent unconfined.",
            )
        if dry_run:
            return
        if process.which(self.settings.claude_bin) is None:
            raise AgentError(
                f"Claude Code ({self.settings.claude_bin!r}) is not installed on this machine",
                f"{INSTALL_CLAUDE_HINT} `sandboxrun run --dry-run` (pack and check, no agent) works without it.",
            )

    def create(
        self,
        session_id: str,
        *,
        timeout_s: float,
        env: Mapping[str, str],
        metadata: Mapping[str, str],
    ) -> LocalSandbox:
        if self.decision.refusal:
            raise BackendError(self.decision.refusal, bwrap_mod.INSTALL_HINT)
        root = self.settings.sandboxes_dir / session_id
        try:
            root.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise BackendError(
                f"local sandbox directory {root} already exists",
                "A sandbox of this session is left over: `sandboxrun cleanup` removes those of "
                "ended sessions; then start the run again.",
            ) from exc
        sandbox = LocalSandbox(session_id, root, self.settings, isolated=self.confines_agent)
        home = Path(sandbox.home)
        for path in (home / CONTROL, home / ".claude", root / "etc"):
            path.mkdir(parents=True)
        passwd, group = bwrap_mod.passwd_files(sandbox.home)
        (root / "etc" / "passwd").write_text(passwd)
        (root / "etc" / "group").write_text(group)
        sandbox._write_meta()
        return sandbox

    def connect(self, sandbox_id: str) -> LocalSandbox:
        root = self.settings.sandboxes_dir / sandbox_id
        meta = _read_meta(root)
        # The sandbox keeps the isolation it was made with, whatever this process was asked.
        sandbox = LocalSandbox(
            sandbox_id,
            root,
            self.settings,
            isolated=bool(meta.get("isolated")),
            legacy=not meta and not (root / "home").is_dir(),
        )
        sandbox._require()
        return sandbox

    def agent_env(self, *, dry_run: bool) -> dict[str, str]:
        # Isolated, the agent's environment is rebuilt from an allow-list inside the sandbox
        # (bwrap.agent_environment); unconfined, it inherits this machine's as is.
        return {}
