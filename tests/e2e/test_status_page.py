"""The status page as a person uses it: headless Chromium on the page of `capctl run` against `capctl sim`.

Debian's `chromium` and `chromium-driver` (`./dev test` installs them with apt-get when it can) are driven
through selenium with a fresh profile and no background networking. The test reads the page before and
after a task idles out and is re-issued, walks it with the keyboard, uses the filter form, checks that no
request leaves 127.0.0.1 and that a phone-sized window needs no sideways scrolling, and saves screenshots
in its tmp_path. The flags and the token are checked through the real CLI as well, and the page through a proxy
that serves it under a path prefix (its links and form stay under it).
"""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import Sim, Workdir
from tests.e2e.test_cli_run import start_daemon
from tests.servers import daemon_output, sim_output
from tests.specdocs import providers, snapshot_job

pytest.importorskip("selenium", reason="selenium is a dev dependency: ./dev test installs it")
# below the skip: a plain `pip install -e .` has no selenium
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOBBY = "SnapshotJob/audit/lobby"
ONE_LINE_TIMES = (
    "return [...document.querySelectorAll('table.decisions time')].every(t => t.getClientRects().length == 1)"
)
IDLE = "idle timeout (Volcengine IdleTimeOut)"


def start_chromium(profile: Path, *, logs: bool = False) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile in `profile` (skips the test when it is not installed); with
    `logs`, its network requests and console are kept for `get_log`."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (./dev test installs them as root)")
    options = Options()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,1000"):
        options.add_argument(flag)
    if logs:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = start_chromium(tmp_path / "chromium-profile", logs=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def callback_sim(tmp_path: Path) -> Iterator[tuple[Sim, str]]:
    """A `capctl sim` (fake clock) whose callbacks go to a daemon port held now; yields (sim, that address).
    The port is bound (not listening) until the test starts the daemon on it, as `capctl demo` does."""
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{reserved.getsockname()[1]}"
    callbacks = ["--volcengine-callback-url", f"http://{address}/callbacks/volcengine"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sim", "--fake-clock", "--listen", "127.0.0.1:0", *callbacks],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sim = Sim(sim_output(proc).url())
        reserved.close()  # the daemon binds it next
        yield sim, address
    finally:
        reserved.close()
        proc.terminate()
        proc.wait(timeout=10)


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def focus_path(driver: webdriver.Chrome, presses: int) -> list[str]:
    """What the Tab key visits from the top of a freshly loaded page: tag, then the link text or the field's name."""
    seen = []
    for _ in range(presses):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        seen.append(
            driver.execute_script(
                "const e = document.activeElement;"
                "return e.tagName.toLowerCase() + ':' + (e.getAttribute('name') || e.textContent.trim());"
            )
        )
    return seen


# URL schemes of the browser's own pages and of data held in the page: never a request over the network.
BROWSER_OWN_SCHEMES = ("chrome", "chrome-untrusted", "chrome-search", "data", "about")


def page_requests(driver: webdriver.Chrome) -> list[str]:
    """Every network URL asked for since the last call (Chrome's performance log); the browser's own pages
    (its new tab before the first navigation: `chrome://`, and since Chromium 150 `chrome-untrusted://` and
    `chrome-search://` parts of it) are no network requests of the page."""
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return [u for u in urls if urlsplit(u).scheme not in BROWSER_OWN_SCHEMES]


def lobby_tasks(status: httpx.Client) -> list[dict[str, Any]]:
    """The lobby's task, as the JSON twin gives it."""
    jobs = status.get("/api/v1/status", params={"job": "audit"}).json()["jobs"]
    return [t for j in jobs for g in j["groups"] for t in g["tasks"] if t["key"] == LOBBY]


def lobby_reissues(status: httpx.Client) -> list[str]:
    """The reasons of the lobby's re-issues, as the JSON twin gives them."""
    return [r["reason"] for t in lobby_tasks(status) for r in t["reissues"]]


def test_a_person_reads_the_page_before_and_after_an_idle_out(
    tmp_path: Path, callback_sim: tuple[Sim, str], browser: webdriver.Chrome
) -> None:
    sim, address = callback_sim
    sim.post("/reset")
    work = Workdir(tmp_path, sim)
    work.write("providers.yaml", providers(sim.base, callbacks=True))
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"], idle=20))
    daemon = work.spawn("run", "--listen", address, "--resync", "1s", stdout=subprocess.DEVNULL)
    log = daemon_output(daemon)
    url = log.url()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        wait_for("both tasks to run", lambda: len(sim.tasks("volcengine", state="running")) == 2)
        sim.publish("volcengine", "hall", userId="alice")  # someone comes into the hall; the lobby stays empty
        sim.post("/callbacks/deliver")  # her UserJoinRoom reaches the daemon
        status = httpx.Client(base_url=url, timeout=5)
        wait_for("the hall's activity", lambda: status.get("/api/v1/status").json()["rooms"][0]["active"])
        browser.get(url + "/")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Every task is running." in body and "leader holds the state lease and acts" in body
        lobby_row = browser.find_element(By.XPATH, "//tr[th[starts-with(normalize-space(), 'lobby')]]")
        lobby_task = next(t for t in sim.tasks("volcengine") if t["roomId"] == "lobby")
        assert lobby_task["taskId"] in lobby_row.text and "ago" in lobby_row.text  # vendor id, running since
        assert "active" in browser.find_element(By.XPATH, "//h3[contains(., 'hall')]/..").text
        browser.save_screenshot(str(shots / "before.png"))

        # The keyboard: the skip links come first, then the page's controls in reading order, the filter
        # form's fields in their visual order; the first skip link moves the focus to the tasks.
        path = focus_path(browser, 13)
        skips = ["a:Skip to tasks", "a:Skip to rooms", "a:Skip to recent decisions"]
        assert path[:3] == skips and path[3:5] == ["a:reload", "a:as JSON"]
        form = [p for p in path if p.split(":")[0] in ("input", "select", "button")]
        assert form == ["input:job", "input:room", "select:status", "select:per_page", "button:Show"]
        focusable = browser.execute_script(
            "return [...document.querySelectorAll('a[href], input, select, button, [tabindex=\"0\"]')]"
            ".map(e => e.tagName.toLowerCase()"
            " + ':' + (e.getAttribute('name') || e.textContent.trim()))"
        )
        assert path == focusable[: len(path)]  # no tabindex reorders anything (a table's scroll box is a stop)
        browser.refresh()  # a fresh page: Tab starts from its top again
        browser.switch_to.active_element.send_keys(Keys.TAB)
        assert browser.switch_to.active_element.text == "Skip to tasks"
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        assert browser.execute_script("return document.activeElement.id") == "tasks"

        # The filter form, typed into and submitted with Enter.
        field = browser.find_element(By.NAME, "job")
        field.send_keys("audit", Keys.ENTER)
        wait_for("the filtered page", lambda: "job=audit" in browser.current_url)
        assert "Tasks 1–2 of 2 matching" in browser.find_element(By.TAG_NAME, "body").text

        # The lobby idles out at the simulated vendor; nobody is in it and room callbacks arrive (the hall's),
        # so the daemon (1 s sweeps) leaves it dormant until someone joins: bob's join re-issues it.
        sim.advance(21)
        wait_for("the lobby to wait", lambda: [t["status"] for t in lobby_tasks(status)] == ["dormant"])
        sim.publish("volcengine", "lobby", userId="bob")
        sim.post("/callbacks/deliver")
        wait_for("the re-issue", lambda: lobby_reissues(status) == [IDLE])
        browser.refresh()
        lobby_row = browser.find_element(By.XPATH, "//tr[th[starts-with(normalize-space(), 'lobby')]]")
        cells = lobby_row.find_elements(By.TAG_NAME, "td")
        assert cells[2].text.startswith("1") and IDLE in cells[2].text  # Re-issues: count, then when and why
        timeline = browser.find_element(By.XPATH, "//h3[contains(., 'Room') and contains(., 'lobby')]/..").text
        assert "2 runs" in timeline and "gap" in timeline
        decisions = browser.find_element(By.XPATH, "//section[@aria-labelledby='decisions-h']").text
        assert "action=reissue" in decisions and LOBBY in decisions
        assert browser.execute_script(ONE_LINE_TIMES)  # a long detail does not squeeze the time over lines
        browser.save_screenshot(str(shots / "after.png"))

        # A phone: everything readable without scrolling sideways (wide tables scroll in their own box).
        browser.set_window_size(390, 844)
        browser.refresh()
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        # what each decision was and why stay on a phone too (their table scrolls in its box, as the tasks')
        decisions = browser.find_element(By.XPATH, "//section[@aria-labelledby='decisions-h']").text
        assert "action=reissue" in decisions and browser.execute_script(ONE_LINE_TIMES)
        browser.save_screenshot(str(shots / "phone.png"))

        requests = page_requests(browser)
        assert requests and all(urlsplit(u).hostname == "127.0.0.1" for u in requests), requests
        logged = browser.get_log("browser")  # type: ignore[no-untyped-call]
        errors = [e["message"] for e in logged if e["level"] == "SEVERE"]
        assert all("favicon.ico" in e for e in errors), errors  # no blocked resource, no script error

        # A restart (a rollout, a failover) keeps the timelines: the history is the state's (walk 6d: it was
        # the daemon's memory, and the page began again from each task's last run, the rooms "activity unknown").
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.text()
        daemon = work.spawn("run", "--listen", address, "--resync", "1s", stdout=subprocess.DEVNULL)
        log = daemon_output(daemon)
        log.url()
        browser.set_window_size(1200, 1000)
        browser.get(url + "/")
        timeline = browser.find_element(By.XPATH, "//h3[contains(., 'Room') and contains(., 'lobby')]/..").text
        assert "2 runs" in timeline and "gap" in timeline and "activity unknown" not in timeline
        assert "active" in browser.find_element(By.XPATH, "//h3[contains(., 'hall')]/..").text
        lobby_row = browser.find_element(By.XPATH, "//tr[th[starts-with(normalize-space(), 'lobby')]]")
        assert IDLE in lobby_row.find_elements(By.TAG_NAME, "td")[2].text
        browser.save_screenshot(str(shots / "restarted.png"))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0, log.text()
    shown = ("before.png", "after.png", "phone.png", "restarted.png")
    assert all((shots / name).stat().st_size > 10_000 for name in shown)


def test_the_token_and_no_status_page_through_the_cli(work: Workdir, tmp_path: Path) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    (tmp_path / "status-token").write_text("tok-status-e2e-4711\n")
    daemon, log, http = start_daemon(work, "--status-token-ref", f"file:{tmp_path / 'status-token'}")
    try:
        assert http.get("/").status_code == 401
        assert http.get("/api/v1/status", headers={"authorization": "Bearer tok-status-e2e-4711"}).status_code == 200
        assert http.get("/", auth=("me", "tok-status-e2e-4711")).status_code == 200  # as a browser sends it
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert "tok-status-e2e-4711" not in log.text()
    daemon, log, http = start_daemon(work, "--no-status-page")
    try:
        assert http.get("/").status_code == 404 and http.get("/api/v1/status").status_code == 404
        assert http.get("/healthz").status_code == 200
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    missing = work.capctl("run", "--status-token-ref", "env:CAPCTL_NO_SUCH_TOKEN", expect=1).stderr
    assert "--status-token-ref env:CAPCTL_NO_SUCH_TOKEN: environment variable CAPCTL_NO_SUCH_TOKEN is not set" in (
        " ".join(missing.split())
    )
    shape = work.capctl("run", "--status-token-ref", "hunter2", expect=1).stderr
    assert "--status-token-ref must be env:NAME or file:PATH" in " ".join(shape.split())


def test_an_open_page_beyond_loopback_is_warned_about(work: Workdir) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the daemon warns, then cannot listen there.
    # Tests listen on loopback only, so the warning is checked on an address the daemon never gets.
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.env["STATUS_TOKEN"] = "tok-4712"
    warned = " ".join(work.capctl("run", "--listen", "192.0.2.1:0", expect=1).stderr.split())
    assert "the status page is open to anyone who reaches --listen" in warned and "cannot listen on" in warned
    guarded = work.capctl("run", "--listen", "192.0.2.1:0", "--status-token-ref", "env:STATUS_TOKEN", expect=1)
    assert "status page is open" not in guarded.stderr and "tok-4712" not in guarded.stderr
    closed = work.capctl("run", "--listen", "192.0.2.1:0", "--no-status-page", expect=1)
    assert "status page is open" not in closed.stderr
    # POST /api/v1/sync makes the daemon call the vendors: open beyond loopback without CAPCTL_SYNC_TOKEN, it is
    # warned about too (it was not)
    assert "POST /api/v1/sync and /api/v1/wake are open to anyone who reaches --listen" in warned
    assert "set CAPCTL_SYNC_TOKEN" in warned
    synced = work.capctl("run", "--listen", "192.0.2.1:0", env={"CAPCTL_SYNC_TOKEN": "sync-4712"}, expect=1).stderr
    assert "/api/v1/wake are open" not in synced and "sync-4712" not in synced
    # A token set but blank (an empty Secret) left the route open (warned about only beyond loopback); as an empty
    # --status-token-ref is refused
    blank = " ".join(
        work.capctl("run", "--listen", "192.0.2.1:0", env={"CAPCTL_SYNC_TOKEN": " \n"}, expect=1).stderr.split()
    )
    assert "CAPCTL_SYNC_TOKEN is set but empty" in blank and "cannot listen" not in blank
    assert "leave POST /api/v1/sync and /api/v1/wake open" in blank  # both routes (walk 20E-2: it named sync)
    assert blank.startswith("Error: CAPCTL_SYNC_TOKEN")  # as the options' errors, not a JSON log line (5g)
    # One no client can send is refused at start too (it started, and only some clients could sync), unquoted
    control = " ".join(
        work.capctl(
            "run", "--listen", "192.0.2.1:0", env={"CAPCTL_SYNC_TOKEN": "sy\x01nc-4712"}, expect=1
        ).stderr.split()
    )
    assert control.startswith("Error: CAPCTL_SYNC_TOKEN holds a control character (U+0001) at character 3 of 10")
    assert "4712" not in control and "cannot listen" not in control


@contextmanager
def prefix_proxy(prefix: str, upstream: str) -> Iterator[tuple[str, list[str]]]:
    """An Ingress that serves `upstream` under `prefix` and strips it (`/capctl/x` → `/x`), as ingress-nginx's
    rewrite-target does; yields (its URL, every path asked of it). A path outside the prefix is answered 404."""
    asked: list[str] = []

    class Strip(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if not self.path.startswith(prefix + "/"):
                self.send_error(404, "outside the prefix")
                return
            answer = httpx.get(upstream + self.path[len(prefix) :], timeout=5)
            self.send_response(answer.status_code)
            self.send_header("content-type", answer.headers["content-type"])
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *_: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Strip) as server:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}{prefix}/", asked
        finally:
            server.shutdown()


def test_the_page_behind_an_ingress_path_prefix_stays_under_it(
    work: Workdir, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """Walk 61c-1: the filter form posted to `/` and "as JSON" linked `/api/v1/status`, so behind a proxy that
    serves the daemon under `/capctl/` both left the prefix (the proxy's 404, or another app's page)."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    daemon, log, _ = start_daemon(work)
    try:
        with prefix_proxy("/capctl", log.url()) as (page, asked):
            browser.get(page)
            links = [str(a.get_attribute("href")) for a in browser.find_elements(By.CSS_SELECTOR, "a[href]")]
            assert links and all(link.startswith(page) for link in links), links
            browser.find_element(By.NAME, "job").send_keys("audit", Keys.ENTER)
            wait_for("the filtered page", lambda: "job=audit" in browser.current_url)
            assert browser.current_url.startswith(page + "?")
            assert "Tasks 1–2 of 2 matching" in browser.find_element(By.TAG_NAME, "body").text
            browser.find_element(By.LINK_TEXT, "as JSON").click()
            wait_for("the JSON twin", lambda: "api/v1/status" in browser.current_url)
            assert browser.current_url.startswith(page + "api/v1/status?job=audit")
            assert json.loads(browser.find_element(By.TAG_NAME, "body").text)["query"]["job"] == "audit"
            browser.back()
            browser.find_element(By.LINK_TEXT, "Clear filters").click()
            wait_for("the unfiltered page", lambda: "job=" not in browser.current_url)
            assert browser.current_url.startswith(page)
            outside = [p for p in asked if not p.startswith("/capctl/") and p != "/favicon.ico"]
            assert not outside and len(asked) >= 4, asked
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0, log.text()
