"""The status page for everyone, in headless Chromium: axe-core's WCAG 2.1 A/AA rules, a phone's width, a
dark system theme, paper, and the keyboard, on pages rendered from hand-built snapshots in their hard states.

Walk 13e found: the task tables' boxes scrolled sideways on a phone but could not be reached with the
keyboard (axe `scrollable-region-focusable`); a long job name widened the page on a phone; the page ignored
a dark theme; on paper every task table lost its last column. axe-core is one npm package that `./dev test`
fetches into .cache/axe-core (its part is skipped without it); Debian's chromium and chromium-driver as in
tests/e2e/test_status_page.py. The pages are files: the route adds headers only (the e2e test reads the
page a daemon serves). One browser for the module: starting Chromium is most of the cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.model import TaskStatus
from reconciler.status import StatusQuery, build_snapshot
from reconciler.status.model import Replica
from reconciler.status.render import render_html
from tests.deploy.daemon_facts import ROOT
from tests.status.conftest import IDLE, LEADER, NOW, ZEGO, Told, inputs, record

pytest.importorskip("selenium", reason="selenium is a dev dependency: ./dev test installs it")
# below the skip: a plain `pip install -e .` has no selenium
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.test_status_page import start_chromium

AXE = ROOT / ".cache" / "axe-core" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# A job name as long as the specs allow, with no hyphen to break it at.
LONG_JOB = "RecordingJob/" + "classroomrecordingsforthenorthernregionsecondarybackupcluster01"
PHONE = 320  # WCAG 1.4.10: a 1280 px screen at 400 % zoom
A4 = 718  # CSS px across an A4 page inside Chromium's default print margins


def _pages() -> dict[str, str]:
    """Each hard state's page, rendered: every status with re-issues and a look-alike room, a spec set that
    broke with a prune held, a standby before its first load."""
    told = Told()
    lobby = "SnapshotJob/lobby-audit/lobby"
    run = told.start(record(lobby, vendor_task_id="snap-1"), NOW - 3000)
    told.room_active("lobby", NOW - 2500)
    running = told.start(told.stop(run, NOW - 2000), NOW - 1400, vendor_task_id="snap-2", reissue_count=1)
    others = [
        record(f"{LONG_JOB}/class-101", TaskStatus.FAILED, last_error="StartRecord: 403 forbidden " + "x" * 120),
        record("SnapshotJob/lobby-audit/hall", TaskStatus.STOPPED, stopped_at=NOW - 50, stop_reason=IDLE),
        record("SnapshotJob/lobby-audit/den", TaskStatus.DORMANT, stopped_at=NOW - 50, stop_reason=IDLE),
        record("SnapshotJob/lobby-audit/l\u043ebby", TaskStatus.PENDING),
        record("ThumbnailJob/thumbs/file-1", TaskStatus.DONE),
        record("SnapshotJob/old/x", TaskStatus.REMOVED),
    ]
    told.seed(others, NOW - 1000)
    told.room_active("class-101", NOW - 900, account=ZEGO)
    events = [
        {"timestamp": "2027-01-15T07:58:00Z", "level": "warning", "event": "start failed", "key": lobby, "error": "x"},
        {"timestamp": "2027-01-15T07:59:00Z", "level": "info", "event": "decision", "key": lobby, "reason": IDLE},
    ]
    every = inputs([running, *others], history=told.history, events=events)
    broke = Replica(
        *("leader", "holds the state lease", LEADER.spec_digest, NOW - 600, LEADER.spec_summary),
        spec_error=f"1 error:\n/specs/{'deep/' * 40}jobs.yaml:3:5: unknown field 'roomz'",
        spec_error_since=NOW - 5,
        # Keys and rooms as long as the specs allow, with nothing to wrap at: the boxes widened the page (60c-6).
        prune_held=(f"{LONG_JOB}/{'r' * 128}", *(f"SnapshotJob/gone/room-{i}" for i in range(11))),
        max_prune=20.0,
        left_out=(("SnapshotJob/classes", ("c" * 128, *(f"class-{i}" for i in range(11)))),),
    )
    standby = Replica("standby", "does not act: another holder took the state lock", None, None, None, None, None)
    return {
        "every-status": render_html(build_snapshot(every, StatusQuery(), NOW)),
        "spec-broke": render_html(build_snapshot(inputs([running], replica=broke), StatusQuery(), NOW)),
        "standby-first-load": render_html(build_snapshot(inputs([], replica=standby), StatusQuery(), NOW)),
    }


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each page's file:// URL."""
    where = tmp_path_factory.mktemp("pages")
    urls = {}
    for name, html in _pages().items():
        (where / f"{name}.html").write_text(html, encoding="utf-8")
        urls[name] = (where / f"{name}.html").as_uri()
    return urls


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def show(
    driver: webdriver.Chrome,
    url: str,
    *,
    width: int = 1200,
    media: str = "",
    scheme: str = "light",
    forced: bool = False,
) -> None:
    """`url` in a viewport `width` CSS px wide (below headless Chromium's smallest window too), on `media`
    (`print` or the screen) with the system's colour scheme `scheme`, in forced colours (Windows High
    Contrast) or not."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    features = [
        {"name": "prefers-color-scheme", "value": scheme},
        {"name": "forced-colors", "value": "active" if forced else "none"},
    ]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": media, "features": features})
    driver.get(url)


def axe_violations(driver: webdriver.Chrome, rules: str = "") -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page shown (or those of one rule): rule, then elements."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    only = {"type": "rule", "values": [rules]} if rules else {"type": "tag", "values": WCAG_21_AA}
    found: list[dict[str, Any]] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: arguments[0]})"
        ".then(r => done(r.violations.map(v => ({id: v.id, nodes: v.nodes.map(n => n.target.join(' '))}))));",
        only,
    )
    return [f"{v['id']}: {', '.join(v['nodes'][:3])}" for v in found]


@pytest.mark.skipif(not AXE.is_file(), reason="no axe-core (./dev test fetches it into .cache/axe-core)")
def test_axe_finds_no_wcag_violation_on_a_phone_light_or_dark(browser: webdriver.Chrome, pages: dict[str, str]) -> None:
    for name, url in pages.items():
        show(browser, url, width=PHONE)
        assert axe_violations(browser) == [], name
        show(browser, url, width=PHONE, scheme="dark")  # the dark theme's own colours: their contrast
        assert axe_violations(browser, "color-contrast") == [], name


def test_a_phone_a_dark_theme_paper_and_the_keyboard(browser: webdriver.Chrome, pages: dict[str, str]) -> None:
    """One test (one browser under xdist): no sideways scrolling on a phone, every column reachable by keyboard,
    a dark page for a dark theme, a legend that still explains the bars in forced colours, every column on
    paper."""
    for url in pages.values():
        show(browser, url, width=PHONE)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    show(browser, pages["every-status"], width=PHONE)
    # The failed task's table is wider than the phone: its box scrolls, Tab reaches the box, arrows scroll it.
    box = browser.find_element(By.XPATH, "//div[@class='scroll'][.//caption[contains(., 'failed')]]")
    assert browser.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", box)
    browser.find_element(By.XPATH, f"//h3/a[. = '{LONG_JOB}']").send_keys(Keys.TAB)  # from its job's heading
    assert browser.switch_to.active_element == box
    assert box.aria_role == "region" and LONG_JOB in box.accessible_name and "failed" in box.accessible_name
    for _ in range(3):
        box.send_keys(Keys.ARROW_RIGHT)
    assert browser.execute_script("return arguments[0].scrollLeft", box) > 0
    assert browser.execute_script("return getComputedStyle(arguments[0]).outlineStyle", box) == "solid"  # drawn

    background = "return getComputedStyle(document.body).backgroundColor"
    show(browser, pages["every-status"], scheme="light")
    assert browser.execute_script(background) == "rgb(255, 255, 255)"
    show(browser, pages["every-status"], scheme="dark")
    assert browser.execute_script(background) == "rgb(13, 17, 23)"
    lost = "return getComputedStyle(document.querySelector('.sw.c-lost')).backgroundImage"
    assert "rgb(179, 38, 30)" in browser.execute_script(lost)  # the hatched bars' red (#hatch), not the theme's

    # Forced colours (Windows High Contrast) leave the SVG bars their colours: the legend's swatches keep theirs.
    show(browser, pages["every-status"], forced=True)
    swatch_and_bar = browser.execute_script(
        "return [getComputedStyle(document.querySelector('.sw.c-run')).backgroundColor,"
        " getComputedStyle(document.querySelector('rect.c-run')).fill]"
    )
    assert swatch_and_bar[0] == swatch_and_bar[1]

    show(browser, pages["every-status"], width=A4, media="print")
    clipped = "return [...document.querySelectorAll('.scroll')].filter(e => e.scrollWidth > e.clientWidth).length"
    assert browser.execute_script(clipped) == 0
    assert not browser.find_element(By.CSS_SELECTOR, "form.filters").is_displayed()
    assert "Next attempt" in browser.find_element(By.TAG_NAME, "main").text


def test_skip_links_reach_the_rooms_and_500_decisions_without_tabbing_through_the_tasks(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """Walk 14b: with 500 tasks on a page (a job link and a table box each) the decisions at the end were some
    500 Tab stops away, and the 500 decisions' links could not be skipped either; only "Skip to tasks" existed.
    Now the first Tab stops are one skip link per long section, each moving the focus to its section."""
    records = [record(f"SnapshotJob/job-{i:03d}/room-{i}", TaskStatus.RUNNING) for i in range(120)]
    events = [
        {"timestamp": "2027-01-15T07:58:00Z", "level": "info", "event": "decision", "key": r.key, "reason": IDLE}
        for r in records * 5
    ][:500]
    html = render_html(build_snapshot(inputs(records, events=events), StatusQuery(per_page=500, decisions=500), NOW))
    page = tmp_path / "many.html"
    page.write_text(html, encoding="utf-8")
    show(browser, page.as_uri(), width=PHONE)
    links = ["Skip to tasks", "Skip to rooms", "Skip to recent decisions"]
    assert [a.text or a.get_attribute("textContent") for a in browser.find_elements(By.CSS_SELECTOR, "a.skip")] == links
    stops_before = browser.execute_script(
        "const all = [...document.querySelectorAll('a[href], input, select, button, [tabindex=\"0\"]')];"
        "return all.indexOf(document.querySelector('#decisions a[href]'))"
    )
    assert stops_before > 240  # what the skip link saves: a job link and a table box per task
    for name, section in (("Skip to rooms", "rooms"), ("Skip to recent decisions", "decisions")):
        browser.refresh()
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        for _ in range(links.index(name)):  # the skip links are the first stops, in this order
            browser.switch_to.active_element.send_keys(Keys.TAB)
        assert browser.switch_to.active_element.get_attribute("textContent") == name
        assert browser.switch_to.active_element.location["x"] >= 0  # shown while it has the focus
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        assert browser.execute_script("return document.activeElement.id") == section
    browser.switch_to.active_element.send_keys(Keys.TAB)  # into the decisions: their box, then their first link
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert (
        browser.execute_script(
            "const a = document.activeElement; return a.tagName + (a.closest('#decisions') ? '+' : '')"
        )
        == "A+"
    )
