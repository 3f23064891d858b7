"""PID 1 of one emulated sandbox: reaps orphans until the emulator kills it.

It runs inside the sandbox's own PID and mount namespaces. Detached processes started in the
sandbox (``setsid nohup ... &``) are re-parented to it when their launching shell exits, as they
would be to init inside a real E2B VM; reaping them promptly keeps ``kill -0 -- -PGID`` honest
(a zombie would still count as alive). Killing this process (SIGKILL from the emulator) makes
the kernel kill every process left in the namespace: that is how a sandbox is torn down.
"""

import os
import signal


def main() -> None:
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


if __name__ == "__main__":
    main()
