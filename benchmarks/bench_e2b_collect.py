"""Peak memory and time of bringing a big result back from an E2B sandbox (the emulator).

The agent leaves one big uncommitted binary file of random bytes; the benchmark measures, each
in a fresh process (so its peak RSS is its own), two ways of getting it out:

- ``pack``: the collection alone (``gitpack.collect_patches``, the producer of the final
  collection and of every checkpoint): one git pack made in the sandbox, streamed to disk in
  64 MiB pieces, retried, SHA-256 checked. Peak RSS of that process.
- ``run``: a whole ``sandboxrun run --backend e2b`` through the CLI (the stand-in agent writes
  the file, then pack, stream, ``index-pack``, checks, landing on the branch and the worktree
  update), under a wrapper whose only child is the CLI: its ``RUSAGE_CHILDREN`` peak is the
  largest of the CLI and every git the CLI ran. The emulator and the sandbox's processes are
  not the wrapper's children.

``tests/e2b/test_e2b_memory.py`` asserts the ``run`` bound (250 MB) for 300 MB. Needs
util-linux (the emulator's namespaces). The emulator runs as its own process.

    .venv/bin/python benchmarks/bench_e2b_collect.py --mb 300
    .venv/bin/python benchmarks/bench_e2b_collect.py --mb 1000 --ways run
"""

from __future__ import annotations

import argparse
import json
import os
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

# Run argv as the only child; print its exit code and the largest peak RSS (KiB) of it and of
# everything it waited for.
WRAPPER = r"""
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def child(sandbox_id: str, base: str, out: Path) -> None:
    """Collect in this (fresh) process and print its peak RSS and the time it took."""
    from sandboxrun.config import Settings
    from sandboxrun.sandbox.backends.e2b import E2BBackend
    from sandboxrun.sandbox.gitpack import collect_patches

    sandbox = E2BBackend(Settings()).connect(sandbox_id)
    session = SimpleNamespace(sandbox_base=base)
    t0 = time.monotonic()
    patches = collect_patches(sandbox, session, subdir="collect", staging=out)  # type: ignore[arg-type]
    seconds = time.monotonic() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "bytes": patches.size}))


def way_pack(mb: int) -> dict:
    """The collection alone, from a sandbox prepared by hand."""
    from e2b import Sandbox

    sdk = Sandbox.create(template="base", timeout=3600)
    try:
        repo = "/home/user/repo"
        res = sdk.commands.run(f"sh -c '{SETUP}' sh {repo} {mb * 1_000_000}", timeout=1800)
        assert res.exit_code == 0, res.stderr
        base = sdk.files.read("/home/user/base.txt").strip()
        with tempfile.TemporaryDirectory() as out:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", sdk.sandbox_id, base, out],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1:])
            return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        sdk.kill()


def way_run(mb: int) -> dict:
    """A whole run through the CLI, on a throwaway repository and SANDBOXRUN_HOME."""
    with tempfile.TemporaryDirectory(prefix="bench-e2b-collect-") as tmp:
        repo = Path(tmp) / "project"
        repo.mkdir()
        env = {**os.environ, "SANDBOXRUN_HOME": f"{tmp}/home", "SANDBOXRUN_CLAUDE_BIN": "claude",
               "ANTHROPIC_API_KEY": "sk-ant-api03-bench", "PYTHONPATH": str(ROOT),
               "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
               "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip
        for argv in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "x"]):
            subprocess.run(["git", *argv], cwd=repo, env=env, check=True)
        argv = [sys.executable, "-m", "sandboxrun", "run", "--backend", "e2b", "--name", "big",
                "--timeout", "1h", "--prompt",
                f"@bash head -c {mb * 1_000_000} /dev/urandom > big.bin\n@write small.txt s"]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=repo, env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        seconds = time.monotonic() - t0
        code, peak_kib = (int(x) for x in proc.stdout.split())
        if code != 0:
            raise RuntimeError(f"the run exited {code}: {proc.stderr[-500:]}")
        size = (repo / ".worktrees" / "big" / "big.bin").stat().st_size
        pack = next(Path(tmp, "home", "artifacts").glob("*/objects/pack/work.pack"))
        return {"seconds": seconds, "peak_rss_mb": peak_kib / 1024, "bytes": pack.stat().st_size,
                "landed": size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the agent's file, MB")
    parser.add_argument("--ways", default="pack,run", help="pack, run or both")
    parser.add_argument("--child", nargs=3, metavar=("ID", "BASE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sid, base, out = args.child
        child(sid, base, Path(out))
        return

    from bench_e2b import Emulator

    emu = Emulator(claude=str(ROOT / "tests" / "fake_claude.py"))
    try:
        print(f"agent's leftover: one binary file of {args.mb:,} MB (random bytes)")
        print("way   time      peak RSS  pack brought back")
        for way in args.ways.split(","):
            try:
                r = way_pack(args.mb) if way == "pack" else way_run(args.mb)
            except (RuntimeError, AssertionError) as exc:
                print(f"{way:<4}  failed: {exc}")
                continue
            print(f"{way:<4}  {r['seconds']:6.1f}s  {r['peak_rss_mb']:6.0f} MB  {r['bytes']:,}")
    finally:
        emu.proc.terminate()
        emu.proc.wait(timeout=60)


if __name__ == "__main__":
    main()
