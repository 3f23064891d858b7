"""Run the emulator standalone: ``python -m tests.e2b_emulator`` prints its env and serves.

Handy to poke at it by hand or from another process; stop it with Ctrl-C (every sandbox and
its processes are killed on the way out).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .server import DEFAULT_API_KEY, E2BEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--claude", help="program to expose as `claude` inside sandboxes")
    parser.add_argument(
        "--root", help="where the sandboxes' files live (default: a new directory in /tmp)"
    )
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    root = Path(args.root) if args.root else None
    with E2BEmulator(api_key=args.api_key, claude=args.claude, root=root) as emulator:
        for key, value in emulator.env().items():
            print(f"export {key}={value}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
