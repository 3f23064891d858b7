"""The one way sandboxrun talks to tmux: a small wrapper over libtmux.

Every tmux call in sandboxrun goes through :class:`Tmux`, which pins the server (a socket name
or path, else ``$SANDBOXRUN_TMUX_SOCKET``, else the user's default server) so that tests and
several projects never meet on one server by accident. libtmux runs ``tmux`` with argv lists,
so nothing is ever parsed by a shell.

Why these choices:
- a child's program is the pane's own process (``new-session ... -- argv``), not text typed
  into a shell, so a busy machine cannot garble it;
- text goes in through a named buffer and ``paste-buffer -p`` (bracketed paste: newlines stay
  newlines, a leading ``/`` or ``@`` opens no picker), and Enter is a separate key;
- ``TMUX``/``TMUX_PANE`` are dropped from the environment handed to children, so a child
  started from inside tmux does not think it owns the caller's pane.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import libtmux
from libtmux import exc as tmux_exc

from sandboxrun import process
from sandboxrun.errors import SandboxrunError

#: environment variable naming the tmux socket (a path) sandboxrun uses
SOCKET_ENV = "SANDBOXRUN_TMUX_SOCKET"
#: variables never passed on to a child's pane
_DROP_ENV = ("TMUX", "TMUX_PANE")
_PANE_FORMAT = "#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_current_path}\t#{pane_title}"


#: separates two tmux commands in one :meth:`Tmux.cmd` call
THEN = "\x00;"


def _literal(arg: str) -> str:
    if arg == THEN:
        return ";"
    return arg[:-1] + "\\;" if arg.endswith(";") else arg


class TmuxError(SandboxrunError):
    """tmux is missing or a tmux command failed."""


@dataclass(frozen=True)
class PaneInfo:
    """What tmux knows about a session's first pane."""

    pane_id: str
    pid: int | None
    dead: bool
    dead_status: int | None
    title: str
    path: str = ""


class Tmux:
    """One tmux server (by socket path or name) and the few operations sandboxrun needs."""

    def __init__(self, socket_path: str | Path | None = None, socket_name: str | None = None):
        if socket_path is None and socket_name is None:
            socket_path = os.environ.get(SOCKET_ENV) or None
        if process.which("tmux") is None:
            raise TmuxError(
                "tmux is not installed",
                "Install it (apt-get install tmux, brew install tmux) and try again.",
            )
        self.socket_path = str(socket_path) if socket_path else None
        self.socket_name = socket_name
        self.server = libtmux.Server(socket_name=socket_name, socket_path=self.socket_path)

    # -- plumbing ---------------------------------------------------------------------------

    def cmd(self, *args: str, check: bool = True) -> list[str]:
        """Run one tmux command on this server; its stdout lines (raises TmuxError).

        Arguments are taken literally: tmux splits commands at an argument ending in ``;``,
        so such an ending is escaped (a prompt like "fix this;" stays one argument). The
        :data:`THEN` marker separates two commands run in one go.
        """
        res = self.server.cmd(*(_literal(a) for a in args))
        if check and res.returncode != 0:
            raise TmuxError(
                f"tmux {args[0]} failed: {' '.join(res.stderr) or 'exit ' + str(res.returncode)}",
                "Check the session exists (`tmux ls`) and that tmux works in this terminal.",
            )
        return list(res.stdout)

    def socket_args(self) -> list[str]:
        """``-S PATH`` / ``-L NAME`` for a plain ``tmux`` argv (attach runs tmux itself)."""
        if self.socket_path:
            return ["-S", self.socket_path]
        if self.socket_name:
            return ["-L", self.socket_name]
        return []

    # -- sessions ---------------------------------------------------------------------------

    def has_session(self, name: str) -> bool:
        """Whether a session of exactly this name exists."""
        try:
            return bool(self.server.has_session(name, exact=True))
        except tmux_exc.LibTmuxException:
            return False

    def sessions(self, prefix: str = "") -> list[str]:
        """Names of the sessions on this server starting with ``prefix``."""
        res = self.server.cmd("list-sessions", "-F", "#{session_name}")
        if res.returncode != 0:  # no server running: no sessions
            return []
        return [s for s in res.stdout if s.startswith(prefix)]

    def new_session(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str] | None = None,
        width: int = 200,
        height: int = 50,
    ) -> PaneInfo:
        """A detached session whose pane runs ``argv`` directly (no shell in between).

        ``env`` is given to the pane with ``-e`` on top of the server's environment; it
        normally is the caller's whole environment, so the child sees what the caller sees.
        The pane stays visible after the program exits (``remain-on-exit``), so its last words
        (a login screen, an error) can be read and the exit noticed.
        """
        args = ["new-session", "-d", "-s", name, "-x", str(width), "-y", str(height)]
        args += ["-c", str(cwd), *_env_args(env)]
        # remain-on-exit in the same tmux call: set before a fast-failing program can exit.
        win = f"={name}:"
        self.cmd(*args, "--", *argv, THEN, "set-option", "-w", "-t", win, "remain-on-exit", "on")
        info = self.pane(name)
        if info is None:
            raise TmuxError(f"tmux session {name} vanished right after it was created")
        return info

    def new_window(
        self,
        session: str,
        window: str,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """A second window in ``session`` running ``argv`` directly (e.g. the monitor).

        ``env`` as for :meth:`new_session`: a long-running server's own environment is from
        whenever it started, not the caller's.
        """
        args = ["new-window", "-d", "-t", f"={session}:", "-n", window, "-c", str(cwd)]
        self.cmd(*args, *_env_args(env), "--", *argv)

    def windows(self, session: str) -> list[str]:
        """Names of the session's windows whose pane is alive."""
        res = self.server.cmd(
            "list-windows", "-t", f"={session}", "-F", "#{window_name}\t#{pane_dead}"
        )
        if res.returncode != 0:
            return []
        return [line.split("\t")[0] for line in res.stdout if line.endswith("\t0")]

    def kill_session(self, name: str) -> bool:
        """End a session (and its processes); False when there was none."""
        return self.server.cmd("kill-session", "-t", f"={name}").returncode == 0

    def kill_server(self) -> None:
        """End the whole server (tests' finalizers)."""
        self.server.cmd("kill-server")

    # -- panes ------------------------------------------------------------------------------

    @staticmethod
    def _target(session: str) -> str:
        # "=name:" pins an exact session name (no prefix matching) and its current window.
        return f"={session}:"

    def pane(self, session: str) -> PaneInfo | None:
        """The session's active pane, or None when the session does not exist."""
        res = self.server.cmd("display-message", "-p", "-t", self._target(session), _PANE_FORMAT)
        if res.returncode != 0 or not res.stdout:
            return None
        return _pane_info(res.stdout[0])

    def snapshot(self, session: str) -> tuple[PaneInfo | None, str]:
        """The session's pane and its visible text in one tmux call (None, "" without one).

        One process instead of :meth:`pane` + :meth:`capture`: what pollers (spawn's wait, the
        monitor) do several times a second per child.
        """
        target = self._target(session)
        res = self.server.cmd(
            "display-message", "-p", "-t", target, _PANE_FORMAT, ";",
            "capture-pane", "-p", "-J", "-t", target,
        )  # fmt: skip
        if res.returncode != 0 or not res.stdout:
            return None, ""
        info = _pane_info(res.stdout[0])
        if info is None:
            return None, ""
        text = "\n".join(line.rstrip() for line in res.stdout[1:]).rstrip() + "\n"
        return info, text

    def capture(self, session: str, *, history: int = 0) -> str:
        """The pane's visible text (plus ``history`` lines of scrollback), trailing blanks cut."""
        args = ["capture-pane", "-p", "-J", "-t", self._target(session)]
        if history:
            args += ["-S", str(-history)]
        lines = self.cmd(*args, check=False)
        return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"

    def send_keys(self, session: str, *keys: str) -> None:
        """Press keys by name (``Enter``, ``Down``, ``Escape``, ``C-c``), one call each."""
        for key in keys:
            self.cmd("send-keys", "-t", self._target(session), key)

    def paste(self, session: str, text: str) -> None:
        """Paste ``text`` into the pane as one bracketed paste (no Enter).

        The text goes through a file and a uniquely named buffer (deleted by the paste), so
        its size, newlines and characters reach the program exactly; ``-r`` keeps ``\\n``.
        """
        buffer = f"sandboxrun-{uuid.uuid4().hex[:12]}"
        fd, path = tempfile.mkstemp(prefix="sandboxrun-paste-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode("utf-8"))
            self.cmd("load-buffer", "-b", buffer, path)
            self.cmd("paste-buffer", "-p", "-r", "-d", "-b", buffer, "-t", self._target(session))
        finally:
            os.unlink(path)

    def session_env(self, session: str, name: str) -> str | None:
        """A variable of the session's environment (what ``new_session`` gave with ``-e``)."""
        res = self.server.cmd("show-environment", "-t", f"={session}", name)
        if res.returncode != 0 or not res.stdout or "=" not in res.stdout[0]:
            return None
        return res.stdout[0].split("=", 1)[1]


def _pane_info(line: str) -> PaneInfo | None:
    """A :data:`_PANE_FORMAT` line as a PaneInfo (None: not a pane, e.g. no server)."""
    pane_id, pid, dead, status, path, title = (line.split("\t", 5) + [""] * 6)[:6]
    if not pane_id.startswith("%"):
        return None  # no server (tmux then prints the format unexpanded or empty)
    return PaneInfo(
        pane_id=pane_id,
        pid=int(pid) if pid.isdigit() else None,
        dead=dead == "1",
        dead_status=int(status) if status.lstrip("-").isdigit() else None,
        title=title,
        path=path,
    )


def _env_args(env: Mapping[str, str] | None) -> list[str]:
    """``-e KEY=VALUE`` for each variable (tmux's own dropped)."""
    args: list[str] = []
    for key, value in (env or {}).items():
        if key not in _DROP_ENV and "=" not in key:
            args += ["-e", f"{key}={value}"]
    return args


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child's pane: ``base`` (default ours) minus tmux's own, plus
    ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROP_ENV}
    env.update(extra)
    return env
