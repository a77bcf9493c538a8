"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `queuectl web`
started as a user starts it, over a real queuectld. One browser for the module; each test looks
at the page change without reloading it. Screenshots of every page go to tmp/artifacts/web (or
$QUEUECTL_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, executable, wait_until
from tests.web.conftest import TOKEN

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium): the browser tests need it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("QUEUECTL_ARTIFACTS", Path(__file__).parents[2] / "tmp" / "artifacts")) / "web"
#: How long a live change may take to show (the page hears from the server every second).
LIVE_MS = 20_000


@pytest.fixture(scope="module")
def web_url(web_daemon: Daemon) -> Iterator[str]:
    """`queuectl web` on a free loopback port, with the test's login token; its base URL."""
    env = {**web_daemon.env, "QUEUECTL_WEB_TOKEN": TOKEN}
    log = web_daemon.root / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([executable("queuectl"), "web", "--listen", "127.0.0.1:0"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        found = wait_until(lambda: re.search(r"at (http://127\.0\.0\.1:\d+/)", log.read_text()), timeout=30,
                           what=f"queuectl web to print its URL: {log.read_text() if log.exists() else ''}")
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, web_url: str) -> Iterator[Any]:
    """A fresh browser context (no cookies), logged in, with the dashboard open."""
    context = browser.new_context(base_url=web_url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(LIVE_MS)
    p = context.new_page()
    p.goto("/login")
    p.fill("input[name=token]", TOKEN)
    p.click("button[type=submit]")
    p.wait_for_url(web_url)
    try:
        yield p
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot into the artifacts dir."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_wrong_token_is_refused_and_the_right_one_logs_in(browser: Any, web_url: str) -> None:
    context = browser.new_context(base_url=web_url, viewport={"width": 1280, "height": 800})
    p = context.new_page()
    p.goto("/")
    assert p.url.endswith("/login")
    shot(p, "login")
    p.fill("input[name=token]", "not-the-token")
    p.click("button[type=submit]")
    sync_api.expect(p.locator(".flash-error")).to_contain_text("Wrong token")
    assert context.cookies() == []
    p.fill("input[name=token]", TOKEN)
    p.click("button[type=submit]")
    sync_api.expect(p.locator("h1")).to_have_text("Overview")
    cookie = next(c for c in context.cookies() if c["name"] == "queuectl_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    context.close()


def test_a_failing_job_retries_and_lands_in_the_dlq_live_then_is_retried(page: Any, web_daemon: Daemon) -> None:
    page.goto("/jobs?new=1")
    page.fill("textarea[name=command]", "echo 'about to fail' >&2; exit 3")
    page.fill("input[name=id]", "bw-fail")
    page.fill("input[name=max_retries]", "1")
    page.click("#enqueue button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/bw-fail$"))
    live = page.locator("#live")
    # Without a reload: the first attempt fails, the retry fails, the job is dead.
    sync_api.expect(live.locator(".actions .state-dead")).to_be_visible(timeout=LIVE_MS)
    sync_api.expect(live.locator("table.grid tbody tr")).to_have_count(2)
    sync_api.expect(live).to_contain_text("exit 3")
    shot(page, "job-dead")
    page.goto("/dlq")
    row = page.locator("tr", has_text="bw-fail")
    sync_api.expect(row).to_contain_text("exit 3")
    shot(page, "dlq")
    row.locator("button", has_text="Retry").click()
    sync_api.expect(page.locator(".flash-ok")).to_contain_text("moved 1 dead job(s) back to pending")
    # Retried: it runs (and fails) again, its earlier attempts kept in its history.
    wait_until(lambda: len(web_daemon.job("bw-fail")["attempt_history"]) >= 3, what="bw-fail to run again")


def test_a_running_jobs_log_is_followed_live(page: Any, web_daemon: Daemon) -> None:
    web_daemon.cli("enqueue", "--id", "bw-log", "-c", "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.5; done")
    web_daemon.wait_state("bw-log", "processing")
    page.goto("/jobs/bw-log")
    log = page.locator("#log")
    sync_api.expect(log).to_contain_text("tick-1")
    sync_api.expect(page.locator("#live .actions .state-processing")).to_be_visible()
    shot(page, "job-running")
    sync_api.expect(log).to_contain_text("tick-6")
    sync_api.expect(page.locator("#log-state")).to_have_text("job bw-log is completed")
    sync_api.expect(page.locator("#live .actions .state-completed")).to_be_visible()
    text = log.inner_text()
    assert text.index("tick-1") < text.index("tick-6") and text.count("tick-3") == 1


def test_a_paused_queue_makes_a_new_job_wait_and_says_why(page: Any, web_daemon: Daemon) -> None:
    web_daemon.cli("queue", "add", "bw-q")
    page.goto("/queues")
    page.locator("tr", has_text="bw-q").locator("button", has_text="Pause").click()
    sync_api.expect(page.locator(".flash-ok")).to_contain_text("paused queue bw-q")
    sync_api.expect(page.locator("tr", has_text="bw-q")).to_contain_text("paused")
    shot(page, "queues")
    web_daemon.cli("enqueue", "--id", "bw-wait", "--queue", "bw-q", "-c", "echo ran")
    page.goto("/jobs/bw-wait")
    sync_api.expect(page.locator("#why")).to_contain_text("paused")
    shot(page, "job-waiting")
    page.goto("/queues")
    page.locator("tr", has_text="bw-q").locator("button", has_text="Resume").click()
    page.goto("/jobs/bw-wait")
    sync_api.expect(page.locator("#live .actions .state-completed")).to_be_visible()


def test_an_action_without_the_csrf_token_is_refused(page: Any, web_daemon: Daemon) -> None:
    web_daemon.cli("queue", "add", "bw-csrf")
    answer = page.request.post("/queues/bw-csrf/pause", form={"back": "/queues"})
    assert answer.status == 403 and "CSRF" in answer.text()
    answer = page.request.post("/queues/bw-csrf/pause", form={"csrf": "forged", "back": "/queues"})
    assert answer.status == 403
    assert {q["name"]: q["paused"] for q in web_daemon.json("queue", "list", "--json")}["bw-csrf"] is False


def test_screenshots_of_the_other_pages(page: Any, web_daemon: Daemon) -> None:
    web_daemon.cli("cron", "add", "bw-nightly", "30 2 * * *", "--command", "backup.sh --all", "--label", "backup")
    for name, path, heading in (("overview", "/", "Overview"), ("jobs", "/jobs", "Jobs"),
                                ("cron", "/cron", "Cron schedules"), ("daemons", "/daemons", "Daemons")):
        page.goto(path)
        sync_api.expect(page.locator("h1")).to_have_text(heading)
        sync_api.expect(page.locator("#conn")).to_have_text("live")
        shot(page, name)
    assert "bw-nightly" in page.goto("/cron").text()  # type: ignore[union-attr]
