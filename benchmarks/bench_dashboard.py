"""Benchmark the dashboard: 100 sessions, 20 events per second; how far behind the page and the
terminal view are, and what they cost.

    .venv/bin/python benchmarks/bench_dashboard.py                  # 100 sessions, 20 ev/s, 30 s
    .venv/bin/python benchmarks/bench_dashboard.py --only tui       # the terminal view alone
    .venv/bin/python benchmarks/bench_dashboard.py --only tui --size 170x110   # 100 rows shown

The load: events written through ``SessionStore`` in separate transactions, as runs and hooks
do: agent tool uses round all sessions, and every tenth a status change (running <->
collecting) of the next session.

The page: a real ``sandboxrun mcp --http`` process serves it to a real headless Chromium
(/usr/bin/chromium through /usr/bin/chromedriver; scripts/install_chromium.sh), logged in,
while this process writes. Measured:

- event lag: the newest event's age when its ``events`` message reaches the page (the page
  records it, ``data-lag-ms``); target <= 1 s.
- row lag: from a status write to the row's ``data-state`` changing in the page (a
  MutationObserver in the page records when); target <= 1 s.
- server CPU: the server process's user+system time over the window, as a share of one core.
- the read model alone: one ``Tracker.refresh`` with 100 sessions, median.

The terminal view (Textual, headless, ``--size``, default 170x50) with the same sessions: first
idle for a while (only the clock ticks: frames drawn and CPU), then under the same load from a
writer *process* (status changes only of rows on screen). Per status change: from its commit
to the first frame the app renders that shows it (recorded where the app hands each frame to
the driver, with the state cells as drawn); target <= 1 s. And this process's CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_LAG_S = 1.0
#: how long the terminal view is watched idle (no writes) before the load
IDLE_S = 10.0
OBSERVER = """
window.__rows = [];
const body = document.querySelector('#sessions tbody');
new MutationObserver((ms) => {
  for (const m of ms) {
    if (m.type === 'attributes' && m.attributeName === 'data-state') {
      window.__rows.push([m.target.getAttribute('data-name'), m.target.getAttribute('data-state'),
                          Date.now() / 1000]);
    }
  }
}).observe(body, {subtree: true, attributes: true, attributeFilter: ['data-state']});
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(home: Path, repo: Path, n: int) -> list[str]:
    from sandboxrun.store import SessionStore, Status

    store = SessionStore(home / "state.db")
    ids = []
    for i in range(n):
        s = store.create_session(
            name=f"s{i:03d}",
            mode="sandbox",
            backend="local",
            repo=str(repo),
            branch=f"sandboxrun/s{i:03d}",
            started_at=time.time(),
            deadline=time.time() + 3600,
        )
        store.set_status(s.id, Status.RUNNING)
        ids.append(s.id)
    store.close()
    return ids


def model_cost(home: Path, repo: Path, rounds: int = 30) -> float:
    from sandboxrun.dashboard.model import Tracker

    conn = sqlite3.connect(home / "state.db")
    tracker = Tracker(str(repo))
    tracker.refresh(conn)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        tracker.refresh(conn)
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return statistics.median(times)


def write_load(
    home: Path, ids: list[str], flip: list[str], rate: float, seconds: float, out=None
) -> tuple[int, float, dict[tuple[str, str], float]]:
    """Write ``rate`` events a second for ``seconds`` through ``SessionStore``, each in its own
    transaction as runs and hooks do: agent tool uses round all sessions, and every tenth a
    status change (running <-> collecting) of the next session of ``flip``. Returns the count,
    the wall time and, per (session id, new status), the monotonic time of its commit (also
    printed to ``out`` as JSON lines when given)."""
    import json

    from sandboxrun.store import SessionStore, Status

    store = SessionStore(home / "state.db")
    status = dict.fromkeys(ids, "running")
    writes: dict[tuple[str, str], float] = {}
    interval = 1.0 / rate
    n, turn = 0, 0
    wall0 = nxt = time.monotonic()
    while time.monotonic() - wall0 < seconds:
        if n % 10 == 0:
            sid = flip[turn % len(flip)]
            turn += 1
            new = "collecting" if status[sid] == "running" else "running"
            store.set_status(sid, Status(new))
            status[sid] = new
            at = writes[(sid, new)] = time.monotonic()
            if out is not None:
                print(json.dumps([sid, new, at]), file=out, flush=True)
        else:
            sid = ids[n % len(ids)]
            store.add_event(
                sid, "agent", {"type": "tool_use", "name": "Edit", "summary": f"src/f{n}.py"}
            )
        n += 1
        nxt += interval
        time.sleep(max(0.0, nxt - time.monotonic()))
    wall = time.monotonic() - wall0
    store.close()
    return n, wall, writes


def tui_load(
    home: Path, repo: Path, ids: list[str], rate: float, seconds: float, size: tuple[int, int]
) -> dict:
    """The terminal view (headless Textual) with every session, under the same load as the
    page: a writer *process* writes ``rate`` events a second (every tenth a status change of a
    row on screen). Measured per status change: from its commit to the first frame Textual
    renders that shows it (a frame is recorded when the app hands its update to the driver,
    with the state cells as they were drawn), and this process's CPU over the window."""
    import asyncio
    import json

    from sandboxrun.config import load_settings
    from sandboxrun.dashboard.app import DashboardApp

    app = DashboardApp(load_settings(), str(repo), poll=0.2, db_path=home / "state.db")
    frames: list[tuple[float, dict[str, str]]] = []
    result: dict = {}
    watch: list[str] = []

    async def script(pilot) -> None:  # type: ignore[no-untyped-def]
        while not (app.snap and len(app.snap.sessions) == len(ids)):
            await pilot.pause(0.05)
        table = app.query_one("#sessions")
        visible = max(1, table.size.height - 2)  # the header, and a row half cut off
        watch.extend(ids[: min(visible, len(ids))])
        display = app._display  # private, but the one place a frame leaves the app

        def recorded(screen, update) -> None:  # type: ignore[no-untyped-def]
            display(screen, update)
            frames.append(
                (time.monotonic(), {sid: str(table.get_cell(sid, "state")) for sid in watch})
            )

        app._display = recorded  # type: ignore[method-assign]
        # idle first: nothing written, only the clock ticking (ages, time left)
        cpu0, wall0, idle_frames = time.process_time(), time.monotonic(), len(frames)
        await pilot.pause(IDLE_S)
        result["idle_cpu"] = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        result["idle_frames"] = len(frames) - idle_frames
        cpu0, wall0 = time.process_time(), time.monotonic()
        writer = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--write",
                str(home),
                str(rate),
                str(seconds),
                ",".join(ids),
                ",".join(watch),
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            while writer.poll() is None:
                await pilot.pause(0.1)
            await pilot.pause(1.5)  # the last changes reach the screen
        finally:
            if writer.poll() is None:
                writer.kill()
            out = writer.communicate()[0]
        result["cpu"] = time.process_time() - cpu0
        result["wall"] = time.monotonic() - wall0
        result["writes"] = [json.loads(line) for line in out.splitlines() if line]

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await script(pilot)

    asyncio.run(main())
    lags, missing = [], 0
    for sid, new, at in result["writes"]:
        shown = next((t for t, states in frames if t >= at and states.get(sid) == new), None)
        if shown is None:
            missing += 1
        else:
            lags.append(shown - at)
    return {
        "lags": lags,
        "missing": missing,
        "frames": len(frames),
        "cpu": result["cpu"],
        "wall": result["wall"],
        "idle_cpu": result["idle_cpu"],
        "idle_frames": result["idle_frames"],
        "visible": len(watch),
    }


def page_load(home: Path, repo: Path, ids: list[str], args: argparse.Namespace) -> dict | None:
    """The page in a real headless Chromium while ``write_load`` runs in this process."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(tool, os.X_OK):
            print(f"{tool} missing: run scripts/install_chromium.sh", file=sys.stderr)
            return None
    env = {**os.environ, "SANDBOXRUN_HOME": str(home)}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sandboxrun", "mcp", "--http", "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={home.parent / 'profile'}", "--window-size=1400,1000"):  # fmt: skip
        opts.add_argument(flag)
    driver = None
    try:
        token_file = home / "http.token"
        deadline = time.monotonic() + 60
        while not token_file.exists() or not token_file.read_text().strip():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        driver = webdriver.Chrome(
            service=Service(executable_path="/usr/bin/chromedriver"), options=opts
        )
        wait = WebDriverWait(driver, 60, poll_frequency=0.1)
        for _ in range(600):
            try:
                driver.get(f"{base}/login")
                break
            except Exception:
                time.sleep(0.1)
        driver.find_element(By.ID, "token").send_keys(token_file.read_text().strip())
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live")
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == len(ids)
        )
        driver.execute_script(OBSERVER)
        cpu0 = cpu_seconds(server.pid)
        n, wall, writes = write_load(home, ids, ids, args.rate, args.seconds)
        cpu = cpu_seconds(server.pid) - cpu0
        time.sleep(2.0)  # let the last writes arrive before reading what the page saw
        rows = driver.execute_script("return window.__rows")
        body = driver.find_element(By.TAG_NAME, "body")
        lag_max = float(body.get_attribute("data-lag-max-ms")) / 1000
        seen = int(body.get_attribute("data-events") or 0)
        names = {sid: f"s{i:03d}" for i, sid in enumerate(ids)}
        pending = {(names[sid], st): at for (sid, st), at in writes.items()}
        # the page stamps with the wall clock: move the writes' monotonic times onto it
        offset = time.time() - time.monotonic()
        row_lags = []
        for name, st, at in rows:
            written = pending.pop((name, st), None)
            if written is not None:
                row_lags.append(at - (written + offset))
        return {"n": n, "wall": wall, "cpu": cpu, "seen": seen, "lag_max": lag_max,
                "row_lags": row_lags, "unseen": len(pending)}  # fmt: skip
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--only", choices=("page", "tui"), help="measure only the page or the terminal view"
    )
    parser.add_argument("--size", default="170x50", help="the terminal view's screen, WxH")
    parser.add_argument("--write", nargs=5, help=argparse.SUPPRESS)  # the writer process
    args = parser.parse_args()
    if args.write:
        home, rate, seconds, ids, flip = args.write
        write_load(
            Path(home), ids.split(","), flip.split(","), float(rate), float(seconds), sys.stdout
        )
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-dash-"))
    home, repo = tmp / "home", tmp / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    os.environ["SANDBOXRUN_HOME"] = str(home)
    ok = True
    try:
        print(f"load average {os.getloadavg()[0]:.1f} at the start")
        if args.only != "tui":
            ids = fill(home, repo, args.sessions)
            page = page_load(home, repo, ids, args)
            if page is None:
                return 1
            lags, n, wall = page["row_lags"], page["n"], page["wall"]
            print(f"sessions {args.sessions}, {n} events in {wall:.1f}s ({n / wall:.1f}/s)")
            print(f"events seen by the page: {page['seen']} (of {n})")
            print(
                f"page row lag over {len(lags)} status changes: median "
                f"{statistics.median(lags):.3f}s, p95 {pct(lags, 0.95):.3f}s, max "
                f"{max(lags):.3f}s; {page['unseen']} changes never seen"
            )
            print(f"event lag max {page['lag_max']:.3f}s")
            cpu = page["cpu"]
            print(f"server CPU {cpu:.2f}s in {wall:.1f}s = {100 * cpu / wall:.1f}% of one core")
            print(f"Tracker.refresh with {args.sessions} sessions: median "
                  f"{model_cost(home, repo):.2f} ms")  # fmt: skip
            ok = max(lags) <= TARGET_LAG_S and page["lag_max"] <= TARGET_LAG_S
            ok = ok and not page["unseen"]
            shutil.rmtree(home, ignore_errors=True)
        if args.only != "page":
            home.mkdir(parents=True, exist_ok=True)
            ids = fill(home, repo, args.sessions)
            w, h = (int(x) for x in args.size.lower().split("x"))
            tui = tui_load(home, repo, ids, args.rate, args.seconds, (w, h))
            lags = tui["lags"]
            print(
                f"terminal view {w}x{h} ({tui['visible']} rows on screen), "
                f"{len(lags)} status changes under load: median {statistics.median(lags):.3f}s, "
                f"p95 {pct(lags, 0.95):.3f}s, max {max(lags):.3f}s from commit to a drawn "
                f"frame; {tui['missing']} never drawn; {tui['frames']} frames; its CPU "
                f"{tui['cpu']:.2f}s in {tui['wall']:.1f}s = {100 * tui['cpu'] / tui['wall']:.0f}% of a core"
            )
            print(
                f"terminal view idle (no writes, {IDLE_S:g}s): {tui['idle_frames']} frames, "
                f"its CPU {100 * tui['idle_cpu']:.1f}% of a core"
            )
            ok = ok and max(lags) <= TARGET_LAG_S and not tui["missing"]
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        print("target (<= 1 s behind):", "met" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
