"""Benchmark the secrets check on the corpus of bench_pack.py: false positives and cost.

    .venv/bin/python benchmarks/bench_secrets.py              # full corpus, both engines
    .venv/bin/python benchmarks/bench_secrets.py --scale 0.1  # quick run
    .venv/bin/python benchmarks/bench_secrets.py --engine hyperscan --extra .venv/lib

Targets: 0 false positives (the corpus has no secret besides the two it plants on purpose,
``.env`` and ``certs/server.pem``, both left out by name) and a scan that costs at most 15 % of
the pack time. ``--engine`` picks the content-check engines to measure (``both`` by default:
Hyperscan and pure Python side by side, as ``SANDBOXRUN_SECRETS_ENGINE`` would select them).
Figures, each the median of --repeat runs on a warm page cache, interleaved so drift hits all
alike:

* scan [engine]: the engine alone over every selected file, already in memory;
* names: the name check (``name_reason``) over every candidate path;
* pack without check: ``pack_worktree`` (gzip, default level) with the content check replaced
  by a no-op (the name check stays);
* pack, first time [engine]: as ``run`` packs a repository it has not seen (empty
  clean-content cache);
* pack, again [engine]: as ``run`` packs it for the next session (the pure-Python engine's
  cache knows the clean contents: every file is hashed, only what changed is scanned;
  Hyperscan scans as fast as that hashing, so it keeps no cache and scans every time).

The order of the figures is shuffled every round. Each pack figure is also given by minimums
and as the median of its per-round ratio to the pack without check, and each figure has its
CPU seconds (all threads) and those of the thread that packs, which carries the scan: under
load, the wall-time medians wander and these do not. From them, an idle-machine estimate:
the packing thread's CPU time or all CPU time over every core, whichever is longer. The
engines' findings are compared on every selected file (and on ``--extra`` trees): any
difference is reported and fails the run. A fresh process pays once for the Hyperscan database
(compiled, or loaded from the cache beside the clean-content cache): measured separately.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pack import corpus  # noqa: E402

from sandboxrun.sync import secrets_hs  # noqa: E402
from sandboxrun.sync.pack import pack_worktree, select_files  # noqa: E402
from sandboxrun.sync.secrets import ENGINE_ENV, ContentCheck, name_reason  # noqa: E402
from sandboxrun.sync.secrets_content import scan_python  # noqa: E402

PLANTED = {".env", "certs/server.pem"}
TARGET = 0.15
ENGINES = ("hyperscan", "python")

Scan = Callable[[bytes], "str | None"]


def engine(name: str) -> Scan:
    """The engine called ``name`` (exits if Hyperscan cannot be used here)."""
    if name == "python":
        return scan_python
    hs = secrets_hs.load_engine()
    if hs is None:
        raise SystemExit(f"--engine hyperscan: {secrets_hs.failure()}")
    return hs


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, time.thread_time()


def extra_fp(root: Path, engines: dict[str, Scan]) -> int:
    """Content findings in a directory of ordinary code (each one is a false positive), by
    every engine; returns the number of files on which the engines disagree."""
    files = size = 0
    hits: dict[str, list[str]] = {name: [] for name in engines}
    differ = []
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()[: 2 << 20]
        files, size = files + 1, size + len(data)
        found = {name: scan(data) for name, scan in engines.items()}
        for name, rule in found.items():
            if rule is not None:
                hits[name].append(f"{path.relative_to(root)} ({rule})")
        if len(set(found.values())) > 1:
            differ.append(f"{path.relative_to(root)} {found}")
    for name, h in hits.items():
        print(f"{root} [{name}]: {files} files, {size / 1e6:.0f} MB: {len(h)} content findings {h}")
    if differ:
        print(f"ENGINES DISAGREE on {len(differ)} files: {differ[:10]}")
    return len(differ)


def fresh_process_costs(cache_dir: Path) -> dict[str, float]:
    """Seconds a new process spends getting the Hyperscan engine, imports done: compiling
    the database (no cache) and loading it (from the cache the compiling run wrote)."""
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from pathlib import Path\n"
        "import hyperscan\n"
        "from sandboxrun.sync import secrets_hs\n"
        "t = time.perf_counter()\n"
        "e = secrets_hs.load_engine(Path(sys.argv[1]) if sys.argv[1] else None)\n"
        "print(time.perf_counter() - t if e is not None else -1)\n"
    )
    out: dict[str, float] = {}
    for label, arg in (("compile", ""), ("compile", str(cache_dir)), ("load", str(cache_dir))):
        done = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True)
        out[label] = min(out.get(label, 1e9), float(done.stdout.strip() or -1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size factor (1.0=full)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--engine",
        choices=(*ENGINES, "both"),
        default="both",
        help="content-check engine(s) to measure (default: both, side by side)",
    )
    parser.add_argument("--json", action="store_true", help="also print results as JSON")
    parser.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="more directories of real code to scan for false positives (e.g. a site-packages)",
    )
    args = parser.parse_args()
    names = list(ENGINES) if args.engine == "both" else [args.engine]
    engines = {name: engine(name) for name in names}
    disagreements = sum(extra_fp(Path(extra), engines) for extra in args.extra)

    repo = corpus(args.scale, args.seed)
    sel = select_files(repo)
    paths = sel.files + sel.excluded_secrets
    data = [(repo / p).read_bytes() for p in sel.files]
    total = sum(map(len, data))

    content_hits = {p: r for p, r in sel.secret_reasons.items() if r.startswith("content:")}
    name_hits = {p for p, r in sel.secret_reasons.items() if r.startswith("name:")}
    false_positives = sorted(set(content_hits) | (name_hits - PLANTED))
    missed = sorted(PLANTED - set(sel.excluded_secrets))
    everything = data + [(repo / p).read_bytes() for p in sel.excluded_secrets]
    verdicts = {name: [scan(d) for d in everything] for name, scan in engines.items()}
    differ = sum(len(set(v)) > 1 for v in zip(*verdicts.values(), strict=True))
    disagreements += differ

    tmp = Path(tempfile.mkdtemp(prefix="bench-secrets-"))
    out = tmp / "o.tar.gz"

    def pack_without() -> None:
        with mock.patch.object(ContentCheck, "__call__", lambda _self, _data: None):
            pack_worktree(repo, out)

    def packer(name: str, cache: Path, fresh: bool) -> Callable[[], None]:
        def run() -> None:
            if fresh:
                cache.unlink(missing_ok=True)
            with mock.patch.dict(os.environ, {ENGINE_ENV: name}):
                pack_worktree(repo, out, scan_cache=cache)

        return run

    runs: dict[str, Callable[[], object]] = {
        "names": lambda: [name_reason(p) for p in paths],
        "pack without check": pack_without,
    }
    for name, scan in engines.items():
        runs[f"scan [{name}]"] = lambda scan=scan: [scan(d) for d in data]
        runs[f"pack, first time [{name}]"] = packer(name, tmp / f"cold-{name}" / "c", True)
        runs[f"pack, again [{name}]"] = packer(name, tmp / f"warm-{name}" / "c", False)
    for fn in runs.values():  # warm the page cache, git's index and the warm caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    order = list(runs)
    shuffle = random.Random(args.seed)
    for _ in range(args.repeat):
        shuffle.shuffle(order)  # no figure always runs right after a heavy one
        for name in order:
            fn = runs[name]
            (c0, t0), started = cpu(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
            c1, t1 = cpu()
            cpus[name].append((c1 - c0, t1 - t0))
    med = {name: statistics.median(t) for name, t in times.items()}
    low = {name: min(t) for name, t in times.items()}  # less sensitive to other load
    mcpu = {name: statistics.median(c[0] for c in v) for name, v in cpus.items()}
    mthread = {name: statistics.median(c[1] for c in v) for name, v in cpus.items()}

    base = med["pack without check"]

    ncpu = os.cpu_count() or 1

    def model(name: str) -> float:
        """Wall time on an idle machine, from CPU time alone: the packing thread's CPU or
        all CPU spread over every core, whichever is longer (checked against the idle-machine
        figures of docs/performance.md within ~3 points)."""
        return max(mthread[name], mcpu[name] / ncpu)

    def paired(name: str) -> float:
        """Median over rounds of (this figure / the pack without check of the same round):
        slow drifts of the machine's load cancel out."""
        ratios = zip(times[name], times["pack without check"], strict=True)
        return statistics.median(a / b for a, b in ratios) - 1

    load = os.getloadavg()
    print(f"corpus: {repo}\n  {len(sel.files)} files, {total / 1e6:.1f} MB scanned")
    print(
        f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)"
    )
    print(f"false positives: {len(false_positives)} {false_positives or ''}")
    print(f"planted secrets missed: {len(missed)} {missed or ''}")
    if len(engines) > 1:
        print(f"engines disagree on {differ} of {len(everything)} files")
    print(f"\n{'figure':<30}{'median s':>9}{'min s':>8}{'cpu s':>8}{'packer thread cpu s':>21}")
    for name in runs:
        print(
            f"{name:<30}{med[name]:>9.3f}{low[name]:>8.3f}{mcpu[name]:>8.3f}{mthread[name]:>21.3f}"
        )
    results: dict[str, dict[str, float | str]] = {}
    for name in engines:
        scan, first, again = (f"{k} [{name}]" for k in ("scan", "pack, first time", "pack, again"))
        r = {
            "scan_ratio": med[scan] / base,
            "scan_mb_s": total / 1e6 / med[scan],
            "first": med[first] / base - 1,
            "first_by_min": low[first] / low["pack without check"] - 1,
            "first_thread_cpu": mthread[first] - mthread["pack without check"],
            "again": med[again] / base - 1,
            "again_by_min": low[again] / low["pack without check"] - 1,
            "first_paired": paired(first),
            "again_paired": paired(again),
            "first_model": model(first) / model("pack without check") - 1,
            "again_model": model(again) / model("pack without check") - 1,
        }
        results[name] = r
        print(
            f"\n[{name}] content scan alone: {r['scan_ratio']:.1%} of pack time "
            f"({r['scan_mb_s']:.0f} MB/s; by minimums "
            f"{low[scan] / low['pack without check']:.1%})"
        )
        for label, key in (("first time", "first"), ("again", "again")):
            value = r[key]
            assert isinstance(value, float)
            print(
                f"[{name}] pack wall time with the check ({label}) vs without: {value:+.1%} "
                f"(target <= {TARGET:.0%}: {'MET' if value <= TARGET else 'MISSED'}); "
                f"by minimums {r[key + '_by_min']:+.1%}, paired by round {r[key + '_paired']:+.1%}"
            )
        print(
            f"[{name}] idle-machine estimate from CPU times: first pack {r['first_model']:+.1%}, "
            f"again {r['again_model']:+.1%}"
        )
        print(
            f"[{name}] first pack: +{r['first_thread_cpu']:.3f} CPU-s on the packing thread "
            f"= {r['first_thread_cpu'] / base:.1%} of the pack's wall time"
        )
    print(f"\nname check: {med['names'] * 1e6 / max(1, len(paths)):.1f} us per path")
    if "hyperscan" in engines:
        costs = fresh_process_costs(tmp / "hs-cache")
        print(
            f"hyperscan engine in a fresh process (imports aside): {costs['compile'] * 1e3:.0f} "
            f"ms to compile the database ({costs['compile'] / base:.1%} of a pack), "
            f"{costs['load'] * 1e3:.1f} ms to load it from the cache ({costs['load'] / base:.1%})"
        )
    spread = max(statistics.median(t) / min(t) - 1 for t in times.values())
    if spread > 0.15:
        print(f"worst median/min spread {spread:.0%}: something else was using the CPUs")
    if args.json:
        print(
            json.dumps(
                {
                    "files": len(sel.files),
                    "bytes": total,
                    "load": load,
                    "false_positives": false_positives,
                    "missed": missed,
                    "disagreements": disagreements,
                    "median_s": med,
                    "min_s": low,
                    "cpu_s": mcpu,
                    "thread_cpu_s": mthread,
                    "engines": results,
                },
                indent=2,
            )
        )
    shutil.rmtree(tmp)
    return 1 if false_positives or missed or disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
