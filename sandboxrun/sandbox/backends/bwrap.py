"""Confining a local agent with bubblewrap (``bwrap``): the decision, the plan and the argv.

Everything here is pure (no processes, no file access) except :func:`probe_host`, which looks
at this machine once to fill a :class:`HostView`; the argv is then built from plain data and
unit-tested without running anything. ``docs/security.md`` explains the choices.

The shape of the sandbox, as a security reviewer would want it:

- an empty root with only the system trees bound in read-only (``/usr``, ``/etc``, ``/opt``
  ...): no home directory, no ``/tmp``, ``/run``, ``/var``, ``/srv``, ``/mnt`` of this machine;
  anything of the user's inside a system tree ($HOME, $SANDBOXRUN_HOME, the repository) is
  hidden under an empty tmpfs; well-known secret files in ``/etc`` are masked;
- the sandbox directory is the only writable tree (same path inside as outside), and its
  control directory (prompt, logs, exit code) is read-only inside;
- a private ``HOME``/``CLAUDE_CONFIG_DIR`` inside the sandbox directory, a private ``/tmp``,
  a fresh ``/proc`` and ``/dev``, its own PID, IPC, UTS and user namespaces (uid 1000 inside,
  so Claude Code accepts ``--dangerously-skip-permissions``), no nested user namespaces;
- the network is shared (the agent needs the API);
- the environment is rebuilt from an allow-list: the agent gets the Anthropic/Claude settings
  and credentials, locale and proxy settings, never the rest of ours.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

#: the uid/gid the agent has inside the sandbox (not 0: Claude Code refuses to skip
#: permission prompts as root)
AGENT_UID = 1000
AGENT_GID = 1000

#: top-level trees of this machine the agent may read (when they exist); everything else at
#: the top level (home directories, /tmp, /run, /var, /srv, /mnt, /media ...) is absent
SYSTEM_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "nix")

#: secret files of the system, masked with an empty file. Needed because for a root user the
#: agent's uid maps back to root outside, so root-only files would otherwise be readable.
MASKED_FILE_PATTERNS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/ssh/ssh_host_*_key",
)
#: secret directories of the system, replaced with an empty tmpfs
MASKED_DIR_PATTERNS = ("/etc/ssl/private", "/etc/sudoers.d")

#: files in /etc the agent needs even when they are symlinks out of the system trees
#: (``/etc/resolv.conf`` points into ``/run`` under systemd-resolved)
NEEDED_ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/localtime")

#: environment variables the agent gets from ours, by exact name
ENV_NAMES = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE",
    }
)  # fmt: skip
#: ... and by prefix (Claude Code's own settings and credentials, locale categories)
ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "DISABLE_", "LC_")
#: never passed even when they match: we set these ourselves, or they defeat the sandbox
ENV_DENIED = frozenset({"CLAUDE_CONFIG_DIR", "IS_SANDBOX", "HOME", "TMPDIR"})

INSTALL_HINT = (
    "Install bubblewrap: `sudo apt-get install bubblewrap` (Debian/Ubuntu), "
    "`sudo dnf install bubblewrap` (Fedora), or run scripts/install_bwrap.sh. "
    "To run the agent unconfined anyway, pass --no-isolation (it can then write anywhere you can)."
)


@dataclass(frozen=True)
class IsolationDecision:
    """Whether a local run is confined, and what to tell the user about it."""

    isolated: bool
    #: a plain warning to show (and record) when the run is not isolated; None when it is
    warning: str | None = None
    #: when the run must not start: the error message (the hint is :data:`INSTALL_HINT`)
    refusal: str | None = None


def decide_isolation(system: str, bwrap_path: str | None, no_isolation: bool) -> IsolationDecision:
    """Decide how ``--backend local`` runs on ``system`` (``platform.system()``)."""
    if system != "Linux":
        return IsolationDecision(
            False,
            warning=f"the local backend is NOT isolated on {system or 'this system'}: the agent "
            "runs as you and can read and write everything you can (bubblewrap is Linux-only; "
            "use --backend e2b for isolation)",
        )
    if no_isolation:
        return IsolationDecision(
            False,
            warning="running WITHOUT isolation (--no-isolation): the agent runs as you and can "
            "read and write everything you can, including your repository, its branches and "
            "sandboxrun's own state",
        )
    if bwrap_path is None:
        return IsolationDecision(
            False,
            refusal="the local backend runs the agent under bubblewrap (bwrap), which is not "
            "installed",
        )
    return IsolationDecision(True)


@dataclass(frozen=True)
class RootEntry:
    """One top-level entry of the sandbox's root: a read-only bind, or a symlink."""

    name: str
    symlink: str | None = None  # target when it is a symlink (``usr/bin`` for /bin)


@dataclass(frozen=True)
class HostView:
    """What :func:`probe_host` found on this machine (all absolute paths)."""

    root_entries: tuple[RootEntry, ...]
    masked_files: tuple[str, ...] = ()
    masked_dirs: tuple[str, ...] = ()
    #: paths outside the system trees bound read-only at the same place (resolv.conf target)
    extra_ro: tuple[str, ...] = ()
    supports_disable_userns: bool = True


@dataclass(frozen=True)
class Exposure:
    """How the agent's executable is made reachable inside, without its neighbours."""

    #: files or directories bound read-only at the same path
    binds: tuple[str, ...] = ()
    #: (target, link) symlinks recreated inside, so the path it was found at still works
    symlinks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Confinement:
    """Everything the argv depends on, as data."""

    host: HostView
    #: the only writable tree, mounted at the same path inside
    sandbox_dir: str
    #: directories under ``sandbox_dir`` that are read-only inside (the control directory)
    readonly_inside: tuple[str, ...] = ()
    #: the user's own paths to hide under an empty tmpfs when a system tree holds them
    hidden: tuple[str, ...] = ()
    #: the agent's executable (its file or npm package, and the links to it)
    exposed: Exposure = field(default_factory=Exposure)
    #: (source on this machine, destination inside) files bound read-only
    ro_files: tuple[tuple[str, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    chdir: str | None = None
    #: kill the sandbox when the process that started bwrap dies
    die_with_parent: bool = True
    #: setsid() inside: no controlling terminal (for commands run from a terminal)
    new_session: bool = False


def _under(path: str, parents: Iterable[str]) -> bool:
    p = PurePosixPath(path)
    return any(p == PurePosixPath(q) or PurePosixPath(q) in p.parents for q in parents)


def build_argv(conf: Confinement, command: list[str], bwrap: str = "bwrap") -> list[str]:
    """The ``bwrap`` argv running ``command`` confined as ``conf`` says (order matters)."""
    argv = [bwrap, "--unshare-user", "--uid", str(AGENT_UID), "--gid", str(AGENT_GID)]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--hostname", "sandboxrun"]
    if conf.host.supports_disable_userns:
        argv.append("--disable-userns")
    if conf.die_with_parent:
        argv.append("--die-with-parent")
    if conf.new_session:
        argv.append("--new-session")
    # The root: a fresh tmpfs (bwrap's default) with the system trees in it.
    for entry in conf.host.root_entries:
        dest = f"/{entry.name}"
        if entry.symlink is not None:
            argv += ["--symlink", entry.symlink, dest]
        else:
            argv += ["--ro-bind", dest, dest]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    argv += ["--tmpfs", "/tmp", "--dir", "/var", "--tmpfs", "/var/tmp"]
    argv += ["--dir", "/run"]
    bound = [f"/{e.name}" for e in conf.host.root_entries if e.symlink is None]
    for path in conf.host.masked_files:
        argv += ["--ro-bind", "/dev/null", path]
    for path in conf.host.masked_dirs:
        argv += ["--tmpfs", path]
    # The user's own paths, where a system tree would show them (a repo under /opt). The
    # sandbox directory, even inside a hidden $SANDBOXRUN_HOME, is bound on top afterwards.
    for path in sorted(set(conf.hidden)):
        if _under(path, bound):
            argv += ["--tmpfs", path]
    for path in sorted(set(conf.host.extra_ro) | set(conf.exposed.binds)):
        argv += ["--ro-bind", path, path]
    for target, link in conf.exposed.symlinks:
        # A link inside a system tree is there already (and that tree is read-only).
        if not _under(link, bound) or _under(link, conf.hidden):
            argv += ["--symlink", target, link]
    argv += ["--bind", conf.sandbox_dir, conf.sandbox_dir]
    for path in conf.readonly_inside:
        argv += ["--ro-bind", path, path]
    for src, dest in conf.ro_files:
        argv += ["--ro-bind", src, dest]
    argv.append("--clearenv")
    for key in sorted(conf.env):
        argv += ["--setenv", key, conf.env[key]]
    if conf.chdir:
        argv += ["--chdir", conf.chdir]
    argv.append("--")
    return argv + list(command)


def agent_environment(
    host_env: Mapping[str, str], home: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The agent's whole environment: an allow-list of ours, a private home, ``extra`` last."""
    env = {
        k: v
        for k, v in host_env.items()
        if k not in ENV_DENIED and (k in ENV_NAMES or k.startswith(ENV_PREFIXES))
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            "HOME": home,
            "CLAUDE_CONFIG_DIR": f"{home}/.claude",
            "TMPDIR": "/tmp",
            "USER": "agent",
            "LOGNAME": "agent",
            "SHELL": "/bin/sh",
        }
    )
    env.update({k: v for k, v in (extra or {}).items() if k not in ENV_DENIED})
    return env


def passwd_files(home: str) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` for the sandbox: root, the agent and nobody only."""
    passwd = (
        "root:x:0:0:root:/root:/bin/sh\n"
        f"agent:x:{AGENT_UID}:{AGENT_GID}:sandboxrun agent:{home}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nagent:x:{AGENT_GID}:\nnogroup:x:65534:\n"
    return passwd, group


def executable_exposure(chain: list[tuple[str, str]], resolved: str) -> Exposure:
    """What to make visible so the agent's executable runs inside, and no more.

    ``chain`` is the symlinks from the path it was found at to its real file, as (link,
    target-as-written) pairs (empty when that path is the file itself); ``resolved`` is the
    real file. The links are recreated (not their directories: a ``~/.local/bin`` of the user
    stays hidden); the real file is bound, or, inside an npm package (``node_modules/.../bin``
    or the package root), the package, for the files it loads next to itself.
    """
    real = PurePosixPath(resolved)
    if "node_modules" in real.parts:
        parts = real.parts
        # The package root: node_modules/<name> or node_modules/@scope/<name>.
        i = len(parts) - 1 - parts[::-1].index("node_modules")
        depth = 3 if i + 1 < len(parts) and parts[i + 1].startswith("@") else 2
        bind = str(PurePosixPath(*parts[: i + depth]))
    else:
        bind = resolved
    return Exposure(binds=(bind,), symlinks=tuple((target, link) for link, target in chain))


def _version_at_least(text: str, wanted: tuple[int, ...]) -> bool:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return False
    have = tuple(int(x or 0) for x in match.groups())
    return have >= wanted


def probe_host(bwrap_version: str = "") -> HostView:
    """Look at this machine: which system trees exist, which secret files to mask."""
    entries: list[RootEntry] = []
    bound: list[str] = []
    for name in SYSTEM_TREES:
        path = f"/{name}"
        if os.path.islink(path):
            entries.append(RootEntry(name, symlink=os.readlink(path)))
        elif os.path.isdir(path):
            entries.append(RootEntry(name))
            bound.append(path)
    masked_files = [
        p for pattern in MASKED_FILE_PATTERNS for p in sorted(glob.glob(pattern)) if _file(p)
    ]
    masked_dirs = [
        p for pattern in MASKED_DIR_PATTERNS for p in sorted(glob.glob(pattern)) if _dir(p)
    ]
    extra: list[str] = []
    for path in NEEDED_ETC_FILES:
        real = os.path.realpath(path)
        if os.path.exists(real) and not _under(real, bound):
            extra.append(real)
    return HostView(
        root_entries=tuple(entries),
        masked_files=tuple(masked_files),
        masked_dirs=tuple(masked_dirs),
        extra_ro=tuple(extra),
        # --disable-userns came with bubblewrap 0.8.0.
        supports_disable_userns=_version_at_least(bwrap_version, (0, 8, 0)),
    )


def _file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path)


def _dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def find_bwrap(env: Mapping[str, str] | None = None) -> str | None:
    """The bwrap to use: ``$SANDBOXRUN_BWRAP`` when set (None if it is not executable), else
    ``bwrap`` on PATH or ``/usr/bin/bwrap``; None when there is none."""
    env = os.environ if env is None else env
    explicit = env.get("SANDBOXRUN_BWRAP")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("bwrap", path=env.get("PATH")) or (
        "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None
    )
