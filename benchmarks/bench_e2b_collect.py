"""Peak memory and time of bringing a big result back from an E2B sandbox (the emulator).

The agent leaves one big uncommitted binary file; the benchmark measures, each in a fresh
process (so its peak RSS is the collection's own), two ways of getting the work out:

- ``stream``: a checkpoint or ``download`` of e2b's patches (``sandbox.checkpoint``): the
  patches are produced in the sandbox, then streamed to files on disk in 64 MiB pieces,
  SHA-256 checked.
- ``pack``: the final collection (``collect.collect_patches``): one git pack of the work made
  in the sandbox, streamed the same way (``checkpoint.fetch``). (Before the two were merged,
  ``collect_patches`` downloaded two patch files whole into memory: 1.9 GB peak for 500 MB.)

Needs root and util-linux (the emulator's namespaces). The emulator runs as its own process.

    .venv/bin/python benchmarks/bench_e2b_collect.py --mb 200
    .venv/bin/python benchmarks/bench_e2b_collect.py --mb 500 --ways stream
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETUP = r"""
set -e
mkdir -p "$1" && cd "$1"
git init -q && git config user.email b@b && git config user.name b
echo base > README && git add README && git commit -qm base
git rev-parse HEAD > ../base.txt
head -c "$2" /dev/urandom > big.bin
"""


def child(way: str, sandbox_id: str, base: str, out: Path) -> None:
    """Collect in this (fresh) process and print its peak RSS and the time it took."""
    from sandboxrun.config import Settings
    from sandboxrun.sandbox.backends.e2b import E2BBackend

    sandbox = E2BBackend(Settings()).connect(sandbox_id)
    session = SimpleNamespace(sandbox_base=base)
    t0 = time.monotonic()
    if way == "stream":
        from sandboxrun.sandbox.checkpoint import download_live

        manifest = download_live(sandbox, session, out)  # type: ignore[arg-type]
        size = sum(s for s, _ in manifest.files.values())
    else:
        from sandboxrun.sandbox.collect import collect_patches

        patches = collect_patches(sandbox, session, subdir="collect", staging=out)  # type: ignore[arg-type]
        size = patches.size
    seconds = time.monotonic() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"way": way, "seconds": seconds, "peak_rss_mb": peak_mb, "bytes": size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the agent's file, MB")
    parser.add_argument("--ways", default="stream,pack", help="stream, pack or both")
    parser.add_argument("--child", nargs=4, metavar=("WAY", "ID", "BASE", "OUT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.child:
        way, sid, base, out = args.child
        child(way, sid, base, Path(out))
        return

    from bench_e2b import Emulator
    from e2b import Sandbox

    emu = Emulator()
    try:
        sdk = Sandbox.create(template="base", timeout=3600)
        repo = "/home/user/repo"
        res = sdk.commands.run(f"sh -c '{SETUP}' sh {repo} {args.mb * 1_000_000}", timeout=600)
        assert res.exit_code == 0, res.stderr
        base = sdk.files.read("/home/user/base.txt").strip()
        print(f"agent's leftover: one binary file of {args.mb:,} MB (random bytes)")
        print("way        time     peak RSS  bytes brought back")
        for way in args.ways.split(","):
            with tempfile.TemporaryDirectory() as out:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", way, sdk.sandbox_id, base, out],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if proc.returncode != 0:
                    print(f"{way:<9}  failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{way:<9}  {r['seconds']:6.1f}s  {r['peak_rss_mb']:6.0f} MB  "
                      f"{r['bytes']:,}")  # fmt: skip
        sdk.kill()
    finally:
        emu.proc.terminate()
        emu.proc.wait(timeout=60)


if __name__ == "__main__":
    main()
