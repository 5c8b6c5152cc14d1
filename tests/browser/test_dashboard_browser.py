"""The dashboard and the exported report in a real headless browser (Debian's chromium, driven
through chromedriver by selenium): the live page follows a running job without reloading, and
the exported file shows the same figures with the network blocked. Screenshots of both are
left in test-artifacts/."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Env, job_id_of
from held_job import HeldJob, start_dashboard, stop_dashboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="browser tests need Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)
ARTIFACTS = ROOT / "test-artifacts"
WAIT_S = 25


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver is named outright, so selenium never looks for one on the network.
    monkeypatch.setenv("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="prodigy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def text_of(driver: Any, element_id: str) -> str:
    """The element's text, read in one script call: the live page swaps sections as updates
    arrive, so an element found first and read after may be gone (a stale reference)."""
    text: str = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
        element_id,
    )
    return text.strip()


def wait_until(driver: Any, condition: Any, what: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=what)


def screenshot(driver: Any, name: str) -> Path:
    """The whole page, not only the window."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 20, 6000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    return path


def test_live_dashboard_follows_a_running_job_without_reloading(world: Env, browser: Any) -> None:
    held = HeldJob(world, items=6, parallel=2)
    dashboard = None
    try:
        held.started(2)
        dashboard, url = start_dashboard(world, held.job_id)
        browser.get(url)
        wait_until(browser, lambda d: text_of(d, "live-status") == "live", "the stream to open")
        assert text_of(browser, "job-status") == "RUNNING"  # the badge is upper-cased by CSS
        assert text_of(browser, "count-succeeded") == "0"
        assert text_of(browser, "count-running") == "2"
        browser.execute_script("window.stillTheSamePage = true")

        held.release("item_0", "item_1")
        wait_until(
            browser,
            lambda d: text_of(d, "count-succeeded") == "2",
            "the succeeded count to reach 2 on the page",
        )
        assert browser.execute_script("return window.stillTheSamePage") is True, "reloaded"
        assert int(browser.find_element("tag name", "body").get_attribute("data-updates")) > 0
        titles = browser.execute_script(
            "return [...document.querySelectorAll('#timeline rect title')].map(t => t.textContent)"
        )
        assert any(t.startswith("item_0 · attempt 1 · succeeded") for t in titles), titles
        assert any(" · running · " in t for t in titles), titles
        screenshot(browser, "dashboard-running.png")

        assert held.finish() == 3  # item_3 fails both attempts
        wait_until(
            browser,
            lambda d: text_of(d, "job-status") == "COMPLETED",
            "the page to show the job completed",
        )
        assert text_of(browser, "count-finished") == "6"
        assert text_of(browser, "dlq-total") == "1"
        assert browser.execute_script("return window.stillTheSamePage") is True
        screenshot(browser, "dashboard-completed.png")
    finally:
        held.stop()
        if dashboard is not None:
            code, _, err = stop_dashboard(dashboard)
            assert code == 0, err


FAILING = """\
name: offline-report
mode: mapreduce
map:
  input: items.json
  json_path: "$[*]"
  max_parallel: 3
  isolation: none
  agent_template:
    - claude: "/analyze ${item.n}"
    - shell: "sleep 0.0${item.n}; test ${item.n} -ne 4"
error_policy:
  retry_config: {max_attempts: 2, initial_delay: 0}
"""


def test_exported_report_renders_the_same_figures_offline(
    world: Env, browser: Any, tmp_path: Path
) -> None:
    world.write("wf.yaml", FAILING)
    world.write_json("items.json", [{"n": n} for n in range(9)])
    done = world.run("cook", "wf.yaml")
    assert done.returncode == 3, done.stderr
    job = job_id_of(done.stdout)
    report_path = tmp_path / "report.html"
    assert world.run("progress", job, "--export", str(report_path)).returncode == 0
    figures = json.loads(world.run("progress", job, "--format", "json").stdout)

    # No request may leave the page: every scheme but file: is blocked, and any resource the
    # page asked for would be listed by the Resource Timing API.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setBlockedURLs",
        {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*", "data:*"]},
    )
    browser.get(report_path.as_uri())
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.execute_script("return document.styleSheets.length") == 1  # inline

    counts = figures["counts"]
    assert text_of(browser, "job-id") == job
    assert text_of(browser, "count-total") == str(counts["total"]) == "9"
    assert text_of(browser, "count-succeeded") == str(counts["succeeded"]) == "8"
    assert text_of(browser, "count-failed") == str(counts["failed"]) == "1"
    assert text_of(browser, "count-dead") == str(counts["dead_lettered"])
    assert text_of(browser, "dlq-total") == str(figures["dlq"]["total"])
    assert text_of(browser, "cost-total") == f"${figures['cost']['total_usd']:.4f}"
    timeline = browser.find_element("id", "timeline")
    assert timeline.get_attribute("data-attempts") == str(figures["timeline"]["attempts"])
    bars = browser.find_elements("css selector", "#timeline svg rect.succeeded")
    assert len(bars) == 8
    # The charts are drawn: the SVG has a size on the page.
    svg = browser.find_element("css selector", "#throughput svg")
    assert svg.size["width"] > 500 and svg.size["height"] > 50
    screenshot(browser, "report-offline.png")
