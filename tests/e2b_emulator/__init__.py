"""A loopback E2B emulator for tests and benchmarks: control plane + envd, real processes.

Sandboxes are private mount + PID namespaces on this machine (root required), so the
unmodified ``e2b`` SDK can create them, upload and download files and run commands over real
HTTP. See ``server.E2BEmulator`` for the test controls.
"""

from .server import DEFAULT_API_KEY, E2BEmulator

__all__ = ["DEFAULT_API_KEY", "E2BEmulator"]
