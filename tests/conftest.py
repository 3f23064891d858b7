"""Fixtures for the top-level tests live in sbr_testlib (importable by name)."""

import signal

from sbr_testlib import cli, isolated_env, repo  # noqa: F401

# A test run started in the background by a non-interactive shell (`cmd &`, `su -c '... &'`,
# some CI wrappers) inherits SIGINT ignored, and so would every process the tests start: Python
# then raises no KeyboardInterrupt and `sh` cannot even trap it. The tests of Ctrl-C and of
# stopping agents need it delivered, so the run restores it (children get the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
