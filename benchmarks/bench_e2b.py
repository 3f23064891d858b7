"""Benchmark the e2b backend through the loopback E2B emulator.

    .venv/bin/python benchmarks/bench_e2b.py               # ~2,000 files, ~25 MB
    .venv/bin/python benchmarks/bench_e2b.py --scale 0.2   # quick run
    .venv/bin/python benchmarks/bench_e2b.py --json

Needs root and util-linux (the emulator's namespaces). Three measurements, each the median of
--repeat runs on a generated tree packed with sandboxrun's own packer:

1. Phase timings of one sandbox as the run pipeline drives it: create, upload_and_unpack,
   baseline commit, start_detached until the exit file appears, an empty log poll, collect
   (diff + download) and destroy.
2. Transfer overhead: our upload_and_unpack + read_file of the tarball, against a bare SDK
   ``files.write`` + ``files.read`` of the same tarball; the ratio is ours / bare. Ours does
   more (checks the archive, unpacks it, removes it), so the ratio shows that cost.
3. Concurrency: the provisioning sequence (create, upload, baseline, destroy) for one sandbox,
   then five at once from threads; the ratio is wall(5) / wall(1) (1.0 = perfectly parallel,
   5.0 = serialized).

The emulator runs on this machine, so absolute numbers are local overheads (no WAN); the ratios
are what carries over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandboxrun.backends.e2b import E2BBackend  # noqa: E402
from sandboxrun.config import Settings  # noqa: E402
from sandboxrun.sync.pack import pack_worktree  # noqa: E402
from tests.e2b_emulator import E2BEmulator  # noqa: E402

CTL = "/home/user/.sandboxrun"
BASELINE = (
    'cd "$1" && git init -q && git -c user.name=b -c user.email=b@b add -A '
    "&& git -c user.name=b -c user.email=b@b commit -q -m base && git rev-parse HEAD"
)
COLLECT = (
    'cd "$1" && git add -A && git -c core.quotepath=on diff --cached --binary --full-index HEAD'
    ' > "$2"'
)


def make_tree(root: Path, scale: float, seed: int = 7) -> None:
    """Source-like text files in nested directories, plus a few binaries."""
    rng = random.Random(seed)
    words = [
        "def",
        "class",
        "return",
        "import",
        "value",
        "self",
        "data",
        "result",
        "for",
        "while",
        "if",
        "else",
    ]
    n_files = max(20, int(2000 * scale))
    for i in range(n_files):
        d = root / f"pkg{i % 37}" / f"mod{i % 11}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 50 == 0:
            (d / f"blob{i}.bin").write_bytes(rng.randbytes(200_000))
        else:
            lines = (" ".join(rng.choices(words, k=10)) for _ in range(rng.randint(50, 250)))
            (d / f"file{i}.py").write_text("\n".join(lines) + "\n")


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def phases(backend: E2BBackend, tarball: Path) -> dict[str, float]:
    """One sandbox through the pipeline's primitives; seconds per phase."""
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]):
        t0 = time.perf_counter()
        value = fn()
        out[name] = time.perf_counter() - t0
        return value

    sb = timed("create", lambda: backend.create("bench", timeout_s=600, env={}, metadata={}))
    try:
        timed("upload_and_unpack", lambda: sb.upload_and_unpack(tarball, "gzip", sb.repo_dir))
        timed("baseline", lambda: sb.exec(["sh", "-c", BASELINE, "sh", sb.repo_dir]))
        sb.write_file(f"{CTL}/prompt.txt", b"go\n")

        def agent() -> None:
            sb.start_detached(
                ["sh", "-c", "find . -name '*.py' | head -200 | xargs sed -i 's/def/fn/'; echo ok"],
                cwd=sb.repo_dir,
                env={},
                stdin_path=f"{CTL}/prompt.txt",
                log_path=f"{CTL}/agent.log",
                stderr_path=f"{CTL}/agent.stderr",
                exit_path=f"{CTL}/agent.exit",
                pid_path=f"{CTL}/agent.pid",
            )
            while True:
                try:
                    sb.read_file(f"{CTL}/agent.exit")
                    return
                except FileNotFoundError:
                    time.sleep(0.02)

        timed("agent_start_to_exit", agent)
        # the follow loop's steady state: a poll at the end of the log, nothing new
        timed("log_poll_nothing_new", lambda: sb.read_file(f"{CTL}/agent.log", 3))
        timed("log_read_from_start", lambda: sb.read_file(f"{CTL}/agent.log", 0))

        def collect() -> int:
            sb.exec(["sh", "-c", COLLECT, "sh", sb.repo_dir, f"{CTL}/changes.diff"])
            return len(sb.read_file(f"{CTL}/changes.diff"))

        out["collected_bytes"] = timed("collect", collect)
    finally:
        timed("destroy", sb.destroy)
    return out


def transfer(backend: E2BBackend, tarball: Path, repeat: int) -> dict[str, float]:
    """Ours (upload_and_unpack + read_file) against the bare SDK (files.write + files.read)."""
    from e2b import Sandbox

    size = tarball.stat().st_size
    bare = Sandbox.create(template="base", timeout=600)
    sb = backend.create("bench-transfer", timeout_s=600, env={}, metadata={})
    try:

        def bare_up() -> None:
            with open(tarball, "rb") as fh:
                bare.files.write("/home/user/t.tar.gz", fh)

        bare_upload = median_time(bare_up, repeat)
        bare_download = median_time(
            lambda: bare.files.read("/home/user/t.tar.gz", format="bytes"), repeat
        )

        def bare_unpack() -> None:
            d = f"/home/user/x{time.monotonic_ns()}"
            bare.commands.run(f"mkdir {d} && tar -xzf /home/user/t.tar.gz -C {d}")

        bare_untar = median_time(bare_unpack, repeat)
        ours_upload = median_time(
            lambda: sb.upload_and_unpack(tarball, "gzip", f"{sb.home}/u{time.monotonic_ns()}"),
            repeat,
        )
        with open(tarball, "rb") as fh:
            sb._sdk.files.write("/home/user/t.tar.gz", fh)  # the same bytes to bring back
        ours_download = median_time(lambda: sb.read_file("/home/user/t.tar.gz"), repeat)
    finally:
        bare.kill()
        sb.destroy()
    bare_total, ours_total = bare_upload + bare_download, ours_upload + ours_download
    return {
        "tarball_bytes": size,
        "bare_upload": bare_upload,
        "bare_download": bare_download,
        "ours_upload_and_unpack": ours_upload,
        "ours_read_file": ours_download,
        "bare_untar": bare_untar,
        "ratio": ours_total / bare_total,
        # against a bare upload that also unpacks (plain `tar -x`, no checks)
        "ratio_with_untar": ours_total / (bare_total + bare_untar),
    }


def concurrency(backend: E2BBackend, tarball: Path, repeat: int) -> dict[str, float]:
    def provision(i: int) -> None:
        sb = backend.create(f"bench-{i}", timeout_s=600, env={}, metadata={})
        try:
            sb.upload_and_unpack(tarball, "gzip", sb.repo_dir)
            sb.exec(["sh", "-c", BASELINE, "sh", sb.repo_dir])
        finally:
            sb.destroy()

    one = median_time(lambda: provision(0), repeat)

    def five() -> None:
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(provision, range(5)))

    many = median_time(five, repeat)
    return {"one": one, "five": many, "ratio": many / one}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size factor")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the E2B emulator needs root (mount and PID namespaces)")
    work = Path(tempfile.mkdtemp(prefix="bench-e2b-"))
    try:
        make_tree(work / "tree", args.scale)
        tarball = work / "upload.tar.gz"
        packed = pack_worktree(work / "tree", tarball, compression="gzip")
        with E2BEmulator() as emulator:
            os.environ.update(emulator.env())
            os.environ.pop("E2B_DEBUG", None)
            backend = E2BBackend(Settings(home=work / "home"))
            runs = [phases(backend, tarball) for _ in range(args.repeat)]
            results = {
                "files": packed.file_count,
                "bytes_in": packed.bytes_in,
                "tarball_bytes": packed.bytes_out,
                "phases": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
                "transfer": transfer(backend, tarball, args.repeat),
                "concurrency": concurrency(backend, tarball, args.repeat),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{results['files']} files, {results['bytes_in'] / 1e6:.1f} MB -> "
        f"{results['tarball_bytes'] / 1e6:.1f} MB gzip; median of {args.repeat}"
    )
    print("\nphases (one sandbox):")
    for name, value in results["phases"].items():
        shown = f"{value:,.0f} B" if name == "collected_bytes" else f"{value * 1000:8.1f} ms"
        print(f"  {name:22s} {shown}")
    t = results["transfer"]
    print("\ntransfer of the tarball:")
    print(
        f"  bare SDK   write {t['bare_upload'] * 1000:7.1f} ms  read {t['bare_download'] * 1000:7.1f} ms"
    )
    print(
        f"  sandboxrun upload_and_unpack {t['ours_upload_and_unpack'] * 1000:7.1f} ms  "
        f"read_file {t['ours_read_file'] * 1000:7.1f} ms"
    )
    print(f"  bare SDK   + plain tar -xzf in the sandbox {t['bare_untar'] * 1000:7.1f} ms")
    print(
        f"  ratio (ours / bare write+read): {t['ratio']:.2f}x; "
        f"(ours / bare write+tar+read): {t['ratio_with_untar']:.2f}x"
    )
    c = results["concurrency"]
    print("\nprovisioning (create + upload + baseline + destroy):")
    print(
        f"  1 sandbox {c['one']:.2f} s   5 at once {c['five']:.2f} s   "
        f"ratio {c['ratio']:.2f}x (1.0 = fully parallel, 5.0 = serial)"
    )


if __name__ == "__main__":
    main()
