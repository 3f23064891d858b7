"""PID 1 of one emulated sandbox: sets up its mounts, then reaps orphans until it is killed.

``python nsinit.py HOME TOOLS TMP SHADOW [LOWER]`` runs inside the sandbox's fresh mount and PID
namespaces (and, without root, a user namespace where we are root). It first makes ``HOME``
this namespace's ``/home/user``, ``TOOLS`` its ``/usr/local/sbin`` and ``TMP`` its ``/tmp``
(each VM has its own /tmp: programs that keep per-user state there, such as Claude Code's
``/tmp/claude-<uid>``, must not meet this machine's or another sandbox's), prints ``ready``, and
from then on reaps: detached processes started in the sandbox (``setsid nohup ... &``) are
re-parented to it when their launching shell exits, as they would be to init inside a real
E2B VM; reaping them promptly keeps ``kill -0 -- -PGID`` honest (a zombie would still count as
alive). Killing this process (SIGKILL from the emulator) makes the kernel kill every process
left in the namespace: that is how a sandbox is torn down.

``SHADOW`` is ``1`` when this machine has no ``/home/user`` to mount over (and we may not
create one): ``/home`` is then replaced, in this namespace only, by a tmpfs holding this
machine's ``/home`` entries bound back in place plus an empty ``user`` directory.

Mounts go through mount(2) directly with ``/proc/self/fd/N`` sources: the directories are
opened before anything is mounted, so they stay reachable even when they live under ``/home``.
"""

import ctypes
import os
import signal
import sys

SANDBOX_HOME = "/home/user"
TOOLS_MOUNT = "/usr/local/sbin"
MS_BIND = 0x1000
MS_REC = 0x4000

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype=None, flags=0, data=None):
    def enc(value):
        return None if value is None else value.encode()

    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} failed: {os.strerror(err)}")


def _fd_path(fd, name=""):
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")


def _shadow_home():
    """Put a tmpfs over /home with this machine's entries bound back and an empty ``user``."""
    old = os.open("/home", os.O_PATH | os.O_DIRECTORY)
    names = sorted(n for n in os.listdir("/home") if n != "user")
    _mount("tmpfs", "/home", "tmpfs", 0, "mode=755")
    for name in names:
        source, target = _fd_path(old, name), f"/home/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            open(target, "wb").close()
        _mount(source, target, None, MS_BIND | MS_REC)
    os.mkdir(SANDBOX_HOME)


def setup(home, tools, tmp, shadow, lower=None):
    """``lower``: a snapshot's files, seen through an overlay whose upper layer is ``home``
    (with ``home``'s sibling ``work`` as overlayfs' work directory): a sandbox started from a
    snapshot gets its files at once, and never writes into the snapshot."""
    mounts = [(tools, TOOLS_MOUNT), (tmp, "/tmp")]
    if lower is None:
        mounts.append((home, SANDBOX_HOME))
    fds = {target: os.open(source, os.O_PATH | os.O_DIRECTORY) for source, target in mounts}
    if shadow:
        _shadow_home()
    if lower is not None:  # first: the paths are this machine's, before /tmp is the sandbox's
        work = os.path.join(os.path.dirname(home), "work")
        _mount("overlay", SANDBOX_HOME, "overlay", 0,
               f"lowerdir={lower},upperdir={home},workdir={work}")  # fmt: skip
    for target, fd in fds.items():
        _mount(_fd_path(fd), target, None, MS_BIND)
        os.close(fd)


def reap_forever():
    # SIGCHLD stays blocked so it queues up: no lost wake-up between waitpid and the wait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        signal.sigtimedwait({signal.SIGCHLD}, 1.0)


def main():
    home, tools, tmp, shadow = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    lower = sys.argv[5] if len(sys.argv) > 5 else None
    try:
        setup(home, tools, tmp, shadow, lower)
    except OSError as exc:
        sys.stderr.write(f"sandbox setup failed: {exc}\n")
        sys.exit(1)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # Hold none of the emulator's pipes open: only the namespace's processes matter now.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    reap_forever()


if __name__ == "__main__":
    main()
