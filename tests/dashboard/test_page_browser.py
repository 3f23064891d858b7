"""The dashboard page in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium, which never downloads a browser here): log in, watch rows change state as real hooks
and a run write to the database, open a log, agent-written markup stays text, screenshot.

Skipped, with the reason, where Chromium cannot be installed (scripts/install_chromium.sh).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from dashlib import hook, local_child, make_group, sandbox_session

from sandboxrun.fanout import groups
from sandboxrun.store import Status

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: screenshots land here (CI keeps the directory as the run's artifacts)
ARTIFACTS = Path(
    os.environ.get("SANDBOXRUN_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[2] / "test-artifacts"
)
EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture
def browser(tmp_path):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} missing: run scripts/install_chromium.sh "
            "(apt packages chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # with both paths given, Selenium fetches nothing
    profile = tmp_path / "chromium-profile"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str, timeout: float = 120):
    """Poll `condition` until it is truthy; a page being replaced or re-rendered is "not yet".

    The login form posting, or a live update re-rendering a row, can pull a node out of the
    document between finding it and reading it. Chromium reports that as a stale element or,
    depending on the moment, as a generic "Node with given id does not belong to the document"
    inspector error; both mean "look again", never a failure of the page.
    """
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        try:
            return condition(d)
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, message=what)


def row_state(driver, name: str) -> str | None:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f'#sessions tbody tr[data-name="{name}"]')
    return rows[0].get_attribute("data-state") if rows else None


def log_in(driver, server) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.base}/")
    wait_for(driver, lambda d: d.current_url.endswith("/login"), "redirected to the login form")
    driver.find_element(By.ID, "token").send_keys("wrong-token")
    driver.find_element(By.ID, "login").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "error").is_displayed(), "refused")
    box = driver.find_element(By.ID, "token")
    box.clear()
    box.send_keys(server.token)
    driver.find_element(By.ID, "login").click()
    wait_for(driver, lambda d: d.current_url == f"{server.base}/", "the dashboard")
    assert server.token not in driver.current_url
    wait_for(
        driver,
        lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live",
        "the event stream connected",
    )


def test_page_in_chromium_follows_a_run_and_escapes_agent_text(browser, server, store, proj):
    from selenium.webdriver.common.by import By

    wt = local_child(proj, "api", "claude-api")
    sid = sandbox_session(store, "run1", proj, deadline=time.time() + 3600)
    gid = make_group(store, proj)
    log_in(browser, server)
    driver = browser
    (api_name,) = [
        r["name"] for r in [store.get(s.id).to_dict() for s in store.list()] if r["role"] == "api"
    ]

    wait_for(driver, lambda d: row_state(d, "run1") == "running", "run1 row running")
    wait_for(driver, lambda d: row_state(d, api_name) == "idle", "api row idle")
    # a real hook process moves the local child; the row follows without a reload
    hook("UserPromptSubmit", wt, "claude-api", prompt="go")
    wait_for(driver, lambda d: row_state(d, api_name) == "busy", "api row busy")
    hook("Notification", wt, "claude-api", notification_type="permission_prompt")
    wait_for(driver, lambda d: row_state(d, api_name) == "needs_permission", "api row asks")

    # open run1's log, then the run progresses: its lines stream in, agent markup stays text
    run1_row = '#sessions tbody tr[data-name="run1"]'
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, run1_row).click() or True, "click")
    wait_for(driver, lambda d: d.find_element(By.ID, "detail").is_displayed(), "detail shown")
    store.add_event(sid, "agent", {"type": "text", "text": EVIL, "message_id": "m1"})
    store.add_event(sid, "agent", {"type": "tool_use", "name": "Edit", "summary": "src/app.py"})
    store.update(sid, cost_usd=0.42)
    store.set_status(sid, Status.COMPLETED)
    groups.update_task(store, gid, "api", state="started", session_id=sid)
    wait_for(driver, lambda d: "Edit: src/app.py" in d.find_element(By.ID, "log").text, "log")
    wait_for(driver, lambda d: row_state(d, "run1") == "completed", "run1 row completed")
    # shown as the agent wrote it
    wait_for(driver, lambda d: EVIL in d.find_element(By.ID, "log").text, "agent markup as text")
    assert driver.find_elements(By.CSS_SELECTOR, "#log img, #log script") == []
    assert driver.execute_script("return window.__pwned === undefined")
    # rows re-render on every event, so each read is a wait that tolerates a replaced node
    run1_cost = '#sessions tbody tr[data-name="run1"] td.cost'
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, run1_cost).text == "$0.42", "cost")
    wait_for(driver, lambda d: "total $0.42" in d.find_element(By.ID, "totals").text, "totals")
    # the group: its dependency graph and timeline
    wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-group="feat"] .node[data-task="docs"]'),
        "group graph",
    )
    assert len(driver.find_elements(By.CSS_SELECTOR, '[data-group="feat"] path.edge')) == 3
    wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-group="feat"] rect.bar'),
        "timeline bar of the started task",
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-page.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
