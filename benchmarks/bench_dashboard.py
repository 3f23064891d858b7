"""Benchmark the dashboard: 100 sessions, 20 events per second, how far behind the page is and
what the server's CPU costs.

    .venv/bin/python benchmarks/bench_dashboard.py                  # 100 sessions, 20 ev/s, 30 s
    .venv/bin/python benchmarks/bench_dashboard.py --sessions 100 --rate 20 --seconds 60

A real ``sandboxrun mcp --http`` process serves the page to a real headless Chromium
(/usr/bin/chromium through /usr/bin/chromedriver; scripts/install_chromium.sh), logged in.
A writer process (this one) writes 20 events a second through ``SessionStore`` in separate
transactions, as runs and hooks do: agent lines, and every tenth a status change of the next
session (running <-> collecting). Measured:

- event lag: the newest event's age when its ``events`` message reaches the page (the page
  records it, ``data-lag-ms``); target <= 1 s.
- row lag: from a status write to the row's ``data-state`` changing in the page (a
  MutationObserver in the page records when); target <= 1 s.
- server CPU: the server process's user+system time over the window, as a share of one core.
- the read model alone: one ``Tracker.refresh`` with 100 sessions (what the terminal view does
  on each change), median.
- the terminal view (Textual, headless) with the 100 sessions: from a status write in another
  thread to the row's state cell showing it; target <= 1 s.
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


def tui_lag(home: Path, repo: Path, ids: list[str], changes: int = 40) -> list[float]:
    """The terminal view with every session shown: seconds from a status write (in another
    thread, its own connection) to the row's state cell showing it, per change."""
    import asyncio
    import threading

    from sandboxrun.config import load_settings
    from sandboxrun.dashboard.app import DashboardApp
    from sandboxrun.store import SessionStore, Status

    app = DashboardApp(load_settings(), str(repo), poll=0.2, db_path=home / "state.db")
    store = SessionStore(home / "state.db")
    lags: list[float] = []

    async def script(pilot) -> None:  # type: ignore[no-untyped-def]
        while not (app.snap and len(app.snap.sessions) == len(ids)):
            await pilot.pause(0.05)
        table = app.query_one("#sessions")
        for i in range(changes):
            sid = ids[i % len(ids)]
            old = str(table.get_cell(sid, "state"))
            new = "collecting" if old == "running" else "running"
            committed: list[float] = []

            def write(sid: str = sid, new: str = new, committed: list[float] = committed) -> None:
                store.set_status(sid, Status(new))
                committed.append(time.monotonic())

            threading.Thread(target=write).start()
            while str(table.get_cell(sid, "state")) != new:
                await pilot.pause(0.01)
            seen = time.monotonic()
            while not committed:
                await pilot.pause(0.01)
            lags.append(seen - committed[0])

    async def main() -> None:
        async with app.run_test(size=(170, 50)) as pilot:
            await script(pilot)

    asyncio.run(main())
    store.close()
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(tool, os.X_OK):
            print(f"{tool} missing: run scripts/install_chromium.sh", file=sys.stderr)
            return 1
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from sandboxrun.store import SessionStore, Status

    tmp = Path(tempfile.mkdtemp(prefix="bench-dash-"))
    home, repo = tmp / "home", tmp / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    env = {**os.environ, "SANDBOXRUN_HOME": str(home)}
    os.environ["SANDBOXRUN_HOME"] = str(home)
    ids = fill(home, repo, args.sessions)
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
                 f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,1000"):  # fmt: skip
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
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == args.sessions
        )
        driver.execute_script(OBSERVER)

        store = SessionStore(home / "state.db")
        writes: dict[tuple[str, str], float] = {}
        names = {sid: f"s{i:03d}" for i, sid in enumerate(ids)}
        status = dict.fromkeys(ids, "running")
        cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
        interval = 1.0 / args.rate
        n, nxt, turn = 0, time.monotonic(), 0
        while time.monotonic() - wall0 < args.seconds:
            sid = ids[n % len(ids)]
            if n % 10 == 0:
                sid = ids[turn % len(ids)]
                turn += 1
                new = "collecting" if status[sid] == "running" else "running"
                store.set_status(sid, Status(new))
                status[sid] = new
                writes[(names[sid], new)] = time.time()
            else:
                store.add_event(
                    sid,
                    "agent",
                    {"type": "tool_use", "name": "Edit", "summary": f"src/f{n}.py"},
                )
            n += 1
            nxt += interval
            time.sleep(max(0.0, nxt - time.monotonic()))
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(server.pid) - cpu0
        time.sleep(2.0)  # let the last writes arrive before reading what the page saw
        rows = driver.execute_script("return window.__rows")
        lag_max = float(driver.find_element(By.TAG_NAME, "body").get_attribute("data-lag-max-ms"))
        seen = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-events") or 0)
        row_lags = []
        for name, st, at in rows:
            written = writes.pop((name, st), None)
            if written is not None:
                row_lags.append(at - written)
        store.close()
        model_ms = model_cost(home, repo)
        tui = tui_lag(home, repo, ids)
        print(f"sessions {args.sessions}, {n} events in {wall:.1f}s ({n / wall:.1f}/s)")
        print(f"events seen by the page: {seen} (of {n})")
        print(
            f"row lag over {len(row_lags)} status changes: median {statistics.median(row_lags):.3f}s, "
            f"p95 {pct(row_lags, 0.95):.3f}s, max {max(row_lags):.3f}s; "
            f"{len(writes)} changes never seen"
        )
        print(f"event lag max {lag_max / 1000:.3f}s")
        print(f"server CPU {cpu:.2f}s in {wall:.1f}s = {100 * cpu / wall:.1f}% of one core")
        print(f"Tracker.refresh with {args.sessions} sessions: median {model_ms:.2f} ms")
        print(
            f"terminal view, {len(tui)} status changes: median {statistics.median(tui):.3f}s, "
            f"max {max(tui):.3f}s from write to cell"
        )
        ok = max(row_lags) <= TARGET_LAG_S and lag_max / 1000 <= TARGET_LAG_S and not writes
        ok = ok and max(tui) <= TARGET_LAG_S
        print("target (<= 1 s behind):", "met" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
