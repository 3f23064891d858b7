"""Benchmark the E2B pipeline against the naive one, cold and warm, on the 20k-file corpus.

    .venv/bin/python benchmarks/bench_fanout_e2b.py                # 20k files, 3 rounds
    .venv/bin/python benchmarks/bench_fanout_e2b.py --scale 0.25 --rounds 2 --json

Needs root and util-linux (the emulator's namespaces). The corpus is ``bench_pack``'s: ~20k
tracked files, with 50 of them changed after the commit and 20 untracked ones (plus ignored
trees that nobody uploads). Three ways to give a sandbox the same work and bring the agent's
diff back, each round in turn, on the same in-process E2B emulator:

- **naive**: what a peer does: ``git ls-files | tar -czf``, ``Sandbox.create``, a bare
  ``files.write`` of the tarball, ``tar -xzf && git init && git add -A && git commit`` in the
  sandbox, then ``git add -A && git diff --cached --binary`` back over stdout.
- **cold**: sandboxrun's own run code (``Provisioner.pack``, ``create_sandbox``, ``upload``
  with its baseline, then ``collect_patches``), on a real session row: the upload is git
  objects (``sync/gitupload.py``), checked out in the sandbox.
- **tar** (with ``--tar``): the same, with the tarball upload (``upload = "tar"``: what a
  run falls back to where git objects cannot stand for the files).
- **warm**: the same run started from a snapshot (``sandbox/warm.py``): only the difference
  is uploaded (the snapshot is made once, before the rounds, and reported on its own).

The stand-in agent (a line appended to 20 files) runs between start and collection and is not timed.
The targets (issue 12): cold <= 0.5x naive (whole pipeline); warm bytes uploaded <= 1 % of
cold; warm time to agent start <= 0.3x cold. Bytes are what the emulator received.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

AGENT = 'for f in $(git ls-files | head -n 20); do echo agent >> "$f"; done'
TO_START = ("pack", "create", "upload", "baseline")


def sh(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def naive(repo: Path, work: Path, emu) -> dict[str, float]:
    """The peer's pipeline, phase by phase (seconds) and the bytes it uploaded."""
    from e2b import Sandbox

    out: dict[str, float] = {}
    b0 = emu.stats["bytes_uploaded"]
    t = time.perf_counter()
    tarball = work / "naive.tar.gz"
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(
        ["tar", "--null", "-T", "-", "-czf", str(tarball)], input=listing, cwd=repo, check=True
    )
    out["pack"] = time.perf_counter() - t
    t = time.perf_counter()
    sb = Sandbox.create(template="base", timeout=900)
    out["create"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        with open(tarball, "rb") as fh:
            sb.files.write("/home/user/repo.tar.gz", fh)
        out["upload"] = time.perf_counter() - t
        t = time.perf_counter()
        sb.commands.run(
            "mkdir -p repo && tar -xzf repo.tar.gz -C repo && rm repo.tar.gz && cd repo && "
            "git init -q && git add -A && git -c user.name=n -c user.email=n@n commit -qm base",
            timeout=900,
        )
        out["baseline"] = time.perf_counter() - t
        sb.commands.run(f"cd repo && {AGENT}", timeout=300)
        t = time.perf_counter()
        diff = sb.commands.run(
            "cd repo && git add -A && git diff --cached --binary", timeout=900
        ).stdout
        out["collect"] = time.perf_counter() - t
        assert diff.count("diff --git") == 20, diff[:500]
    finally:
        t = time.perf_counter()
        sb.kill()
        out["teardown"] = time.perf_counter() - t
        tarball.unlink(missing_ok=True)
    out["bytes"] = emu.stats["bytes_uploaded"] - b0
    return out


def ours(
    repo: Path, settings, store, emu, warm_key: str | None, upload: str = "auto"
) -> dict[str, float]:
    """sandboxrun's own run code, cold (``warm_key`` None) or from the snapshot."""
    from sandboxrun.sandbox.backends.e2b import E2BBackend
    from sandboxrun.sandbox.gitpack import collect_patches
    from sandboxrun.sandbox.journal import Journal, PhaseTimes
    from sandboxrun.sandbox.provision import Provisioner
    from sandboxrun.sandbox.warm import warm_start

    session = store.create_session(
        name=f"bench-{time.monotonic_ns()}", mode="sandbox", backend="e2b", repo=str(repo),
        worktree=str(repo), branch="main", base_commit=sh("git", "-C", str(repo), "rev-parse",
        "HEAD").strip(), options={"compression": "gzip", "dry_run": True, "upload": upload},
    )  # fmt: skip
    times = PhaseTimes()
    backend = E2BBackend(settings)
    backend.create_rate = 100.0
    prov = Provisioner(
        settings, backend, Journal(store, session.id), settings.session_artifacts(session.id),
        times,
    )  # fmt: skip
    b0 = emu.stats["bytes_uploaded"]
    sb = warm_start(prov, session, warm_key) if warm_key else None
    if warm_key and sb is None:
        raise SystemExit(f"the warm start fell back: {store.events(session.id)[-3:]}")
    if sb is None:
        packed = prov.pack(session)
        sb = prov.create_sandbox(store.get(session.id))
        prov.upload(sb, packed)
        packed.path.unlink(missing_ok=True)
    out = dict(times.rounded())
    out["bytes"] = emu.stats["bytes_uploaded"] - b0
    try:
        res = sb.exec(["sh", "-c", AGENT], cwd=sb.repo_dir, timeout=300)
        assert res.ok, res.error_text()
        t = time.perf_counter()
        patches = collect_patches(sb, store.get(session.id))
        out["collect"] = time.perf_counter() - t
        assert patches.manifest is not None
    finally:
        t = time.perf_counter()
        sb.destroy()
        out["teardown"] = time.perf_counter() - t
    return out


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rounds[0] if all(k in r for r in rounds)]
    return {k: statistics.median(r[k] for r in rounds) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size (1.0: 20k files)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tar", action="store_true", help="also time a cold start with a tarball")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the E2B emulator needs root")

    from bench_pack import corpus

    from sandboxrun.config import Settings
    from sandboxrun.sandbox.warm_build import build_snapshot
    from sandboxrun.store import SessionStore
    from tests.e2b_emulator import E2BEmulator

    repo = corpus(args.scale, args.seed)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-fanout-e2b-") as tmp, E2BEmulator() as emu:
        work = Path(tmp)
        os.environ.update(emu.env())
        os.environ.pop("E2B_DEBUG", None)
        emu.templates = None
        settings = Settings(home=work / "home")
        store = SessionStore(settings.db_path)
        t = time.perf_counter()
        b0 = emu.stats["bytes_uploaded"]
        entry = build_snapshot(settings, repo, base="HEAD")
        warm_build = {"seconds": time.perf_counter() - t, "bytes": emu.stats["bytes_uploaded"] - b0}
        runs: dict[str, list[dict[str, float]]] = {"naive": [], "cold": [], "warm": []}
        if args.tar:
            runs["tar"] = []
        for _ in range(args.rounds):
            runs["naive"].append(naive(repo, work, emu))
            emu.settle()
            runs["cold"].append(ours(repo, settings, store, emu, None))
            emu.settle()
            runs["warm"].append(ours(repo, settings, store, emu, entry.key))
            emu.settle()
            if args.tar:
                runs["tar"].append(ours(repo, settings, store, emu, None, upload="tar"))
                emu.settle()
        med = {name: median_of(r) for name, r in runs.items()}
        for m in med.values():
            m["to_start"] = sum(m.get(p, 0.0) for p in TO_START)
            m["total"] = m["to_start"] + m.get("collect", 0.0) + m.get("teardown", 0.0)
        result = {
            "files": entry.files,
            "corpus_bytes": entry.bytes,
            "rounds": args.rounds,
            "warm_build": warm_build,
            "median": med,
            "cold_vs_naive": round(med["cold"]["total"] / med["naive"]["total"], 3),
            "warm_bytes_vs_cold": round(med["warm"]["bytes"] / med["cold"]["bytes"], 4),
            "warm_start_vs_cold": round(med["warm"]["to_start"] / med["cold"]["to_start"], 3),
            "targets": {
                "cold_vs_naive": 0.5,
                "warm_bytes_vs_cold": 0.01,
                "warm_start_vs_cold": 0.3,
            },  # fmt: skip
            "cores": os.cpu_count(),
            "load_avg_start": load_start,
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        }
        if "tar" in med:
            result["tar_vs_naive"] = round(med["tar"]["total"] / med["naive"]["total"], 3)
        store.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    cols = ("pack", "create", "upload", "baseline", "to_start", "collect", "teardown", "total")
    print(f"corpus: {result['files']} files uploaded, {result['corpus_bytes']} bytes")
    print(f"warm snapshot made once: {warm_build['seconds']:.2f}s, {warm_build['bytes']} bytes")
    print(f"{'':6}" + "".join(f"{c:>10}" for c in cols) + f"{'bytes up':>12}")
    for name, m in med.items():
        row = "".join(f"{m.get(c, 0.0):>10.2f}" for c in cols)
        print(f"{name:6}{row}{int(m['bytes']):>12}")
    print(f"cold / naive (total): {result['cold_vs_naive']}x (target <= 0.5x)")
    if "tar" in med:
        print(f"tar (cold, tarball upload) / naive: {result['tar_vs_naive']}x")
    print(f"warm / cold bytes uploaded: {result['warm_bytes_vs_cold']:.2%} (target <= 1%)")
    print(f"warm / cold time to agent start: {result['warm_start_vs_cold']}x (target <= 0.3x)")
    print(
        f"machine: {result['cores']} cores, load {result['load_avg_start']} at the start, "
        f"{result['load_avg']} at the end"
    )


if __name__ == "__main__":
    main()
