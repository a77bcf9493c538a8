"""The dashboard's handlers, without a browser: an HTTP client against the ASGI app, which talks
to a real queuectld over its socket with queuectl's own Client."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from queuectl.web import app as web_app
from tests.conftest import Daemon, wait_until
from tests.web.conftest import TOKEN, csrf_of


def test_every_page_needs_a_login(anon: TestClient) -> None:
    for path in ("/", "/jobs", "/jobs/x", "/dlq", "/queues", "/cron", "/daemons"):
        r = anon.get(path)
        assert (r.status_code, r.headers["location"]) == (303, "/login"), path
    assert anon.get("/events/overview").status_code == 401
    assert anon.get("/jobs/x/log").status_code == 401
    assert anon.post("/queues/default/pause", data={"csrf": "x"}).status_code == 403


def test_another_host_name_is_refused(anon: TestClient) -> None:
    # DNS rebinding: a page of another site whose name now points at 127.0.0.1.
    assert anon.get("/login", headers={"host": "evil.example:8765"}).status_code == 400
    assert anon.get("/login", headers={"host": "localhost:8765"}).status_code == 200


def test_a_wrong_token_opens_nothing(anon: TestClient, web_daemon: Daemon) -> None:
    assert str(web_daemon.socket) not in anon.get("/login").text  # nothing about the daemon before a login
    r = anon.post("/login", data={"token": "wrong"})
    assert r.status_code == 401 and "Wrong token" in r.text
    assert "queuectl_session" not in r.cookies
    assert anon.get("/").status_code == 303


def test_login_sets_a_strict_httponly_cookie_and_the_page_a_strict_csp(anon: TestClient) -> None:
    r = anon.post("/login", data={"token": TOKEN})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    page = anon.get("/")
    assert page.status_code == 200 and "Overview" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"


def test_the_printed_link_logs_in(anon: TestClient) -> None:
    r = anon.get(f"/login?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert anon.get("/jobs").status_code == 200


def test_an_action_without_the_csrf_token_is_refused_and_does_nothing(browser_like: TestClient,
                                                                      web_daemon: Daemon) -> None:
    web_daemon.cli("queue", "add", "csrfq")
    for data in ({}, {"csrf": "not-the-token"}):
        r = browser_like.post("/queues/csrfq/pause", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    assert web_daemon.json("queue", "list", "--json")[[q["name"] for q in
                                                        web_daemon.json("queue", "list", "--json")].index("csrfq")][
        "paused"] is False
    csrf = csrf_of(browser_like.get("/queues").text)
    r = browser_like.post("/queues/csrfq/pause", data={"csrf": csrf, "back": "/queues"})
    assert r.status_code == 303
    paused = {q["name"]: q["paused"] for q in web_daemon.json("queue", "list", "--json")}
    assert paused["csrfq"] is True
    assert "paused queue csrfq" in browser_like.get("/queues").text


def test_output_and_commands_are_escaped_and_secrets_masked(browser_like: TestClient, web_daemon: Daemon) -> None:
    csrf = csrf_of(browser_like.get("/jobs").text)
    r = browser_like.post("/jobs/enqueue", data={"csrf": csrf, "id": "xss1",
                                                 "command": "echo '<script>alert(1)</script>'"})
    assert r.status_code == 303 and r.headers["location"] == "/jobs/xss1"
    web_daemon.wait_state("xss1", "completed")
    page = browser_like.get("/jobs/xss1").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    web_daemon.cli("enqueue", "--id", "secret1", "--hold", "--env", "API_TOKEN=hunter2-very-secret", "-c", "true")
    page = browser_like.get("/jobs/secret1").text
    assert "API_TOKEN" in page and "hunter2-very-secret" not in page


def test_enqueue_hold_edit_release_cancel_from_forms(browser_like: TestClient, web_daemon: Daemon) -> None:
    csrf = csrf_of(browser_like.get("/jobs").text)
    browser_like.post("/jobs/enqueue", data={"csrf": csrf, "id": "e1", "command": "sleep 30", "delay": "10m"})
    assert web_daemon.job("e1")["state"] == "pending"
    assert browser_like.post("/jobs/e1/hold", data={"csrf": csrf}).status_code == 303
    assert web_daemon.job("e1")["held"] is True
    assert "held: release it" in browser_like.get("/jobs/e1").text
    browser_like.post("/jobs/e1/edit", data={"csrf": csrf, "command": "echo edited", "priority": "7",
                                             "labels": "a, b", "queue": "default", "max_retries": "1"})
    job = web_daemon.job("e1")
    assert (job["command"], job["priority"], job["labels"], job["max_retries"]) == ("echo edited", 7, ["a", "b"], 1)
    browser_like.post("/jobs/e1/release", data={"csrf": csrf})
    assert web_daemon.job("e1")["held"] is False
    browser_like.post("/jobs/e1/cancel", data={"csrf": csrf})
    assert web_daemon.job("e1")["state"] == "canceled"
    browser_like.post("/jobs/e1/restart", data={"csrf": csrf})
    assert web_daemon.job("e1")["state"] in ("pending", "processing", "completed")


def test_a_refused_action_shows_the_daemons_message(browser_like: TestClient) -> None:
    csrf = csrf_of(browser_like.get("/jobs").text)
    r = browser_like.post("/jobs/nope/cancel", data={"csrf": csrf, "back": "/jobs"})
    assert (r.status_code, r.headers["location"]) == (303, "/jobs")
    assert "No job with id" in browser_like.get("/jobs").text
    r = browser_like.post("/jobs/enqueue", data={"csrf": csrf, "command": "true", "timeout": "soon", "back": "//evil"})
    assert r.headers["location"] == "/"
    assert "is not a duration" in browser_like.get("/").text


def test_jobs_filter_by_state_and_text_and_page_by_cursor(browser_like: TestClient, web_daemon: Daemon) -> None:
    web_daemon.cli("queue", "add", "pages")
    web_daemon.cli("queue", "pause", "pages")
    lines = "".join(f'{{"id": "pg-{i:03d}", "command": "echo needle-{i}", "queue": "pages"}}\n' for i in range(120))
    web_daemon.cli("enqueue", "--file", "-", input=lines)
    newest = browser_like.get("/jobs", params={"queue": "pages"}).text
    assert "pg-119" in newest and "pg-070" in newest and "pg-069" not in newest
    nxt = newest.split('rel="next" href="/jobs?')[1].split('"')[0].replace("&amp;", "&")
    assert "pg-069" in browser_like.get(f"/jobs?{nxt}").text
    first = browser_like.get("/jobs", params={"queue": "pages", "order": "oldest"}).text
    assert "pg-000" in first and "pg-049" in first and "pg-050" not in first
    cursor = first.split('rel="next" href="/jobs?')[1].split('"')[0].replace("&amp;", "&")
    second = browser_like.get(f"/jobs?{cursor}").text
    assert "pg-050" in second and "pg-000" not in second
    found = browser_like.get("/jobs", params={"q": "needle-117"}).text
    assert "pg-117" in found and "pg-116" not in found
    assert "pg-001" not in browser_like.get("/jobs", params={"state": "completed", "queue": "pages"}).text


def test_a_failing_job_lands_in_the_dlq_and_is_retried_from_it(browser_like: TestClient, web_daemon: Daemon) -> None:
    web_daemon.cli("enqueue", "--id", "dl1", "--max-retries", "1", "-c", "echo boom >&2; exit 4")
    web_daemon.wait_state("dl1", "dead")
    page = browser_like.get("/dlq").text
    assert "dl1" in page and "exit 4" in page
    job = browser_like.get("/jobs/dl1").text
    assert "exit 4" in job and job.count("<tr><td class=\"n\">") == 2  # two attempts listed
    csrf = csrf_of(page)
    browser_like.post("/dlq/retry", data={"csrf": csrf, "id": "dl1"})
    # Retried: it runs (and dies) again, its first two attempts kept in its history.
    wait_until(lambda: len(web_daemon.job("dl1")["attempt_history"]) >= 4 and web_daemon.job("dl1")["state"] == "dead",
               what="dl1 to run twice more and die again")
    assert browser_like.post("/dlq/purge", data={"csrf": csrf}).status_code == 303
    assert web_daemon.job("dl1")["state"] == "dead"  # not confirmed: nothing purged
    browser_like.post("/dlq/purge", data={"csrf": csrf, "id": "dl1"})
    assert "dl1" not in browser_like.get("/dlq").text


def test_queue_limit_and_resume(browser_like: TestClient, web_daemon: Daemon) -> None:
    web_daemon.cli("queue", "add", "limq")
    csrf = csrf_of(browser_like.get("/queues").text)
    browser_like.post("/queues/limq/limit", data={"csrf": csrf, "concurrency": "3"})
    assert {q["name"]: q["concurrency"] for q in web_daemon.json("queue", "list", "--json")}["limq"] == 3
    browser_like.post("/queues/limq/limit", data={"csrf": csrf, "concurrency": ""})
    assert {q["name"]: q["concurrency"] for q in web_daemon.json("queue", "list", "--json")}["limq"] is None
    browser_like.post("/queues/add", data={"csrf": csrf, "name": "newq", "concurrency": "2"})
    assert "newq" in browser_like.get("/queues").text


def test_cron_and_daemons_pages(browser_like: TestClient, web_daemon: Daemon) -> None:
    web_daemon.cli("cron", "add", "tick", "0 3 * * *", "--command", "echo tick")
    page = browser_like.get("/cron").text
    assert "tick" in page and "0 3 * * *" in page
    csrf = csrf_of(page)
    r = browser_like.post("/cron/tick/run", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    browser_like.post("/cron/tick/pause", data={"csrf": csrf})
    assert "paused" in browser_like.get("/cron").text
    daemons = browser_like.get("/daemons").text
    assert str(web_daemon.socket) in daemons and "heartbeat" in daemons


def test_the_live_stream_sends_the_page_part(browser_like: TestClient, web_daemon: Daemon,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_app, "LIVE_MAX_S", 0.5)
    body = browser_like.get("/events/overview").text
    assert body.startswith("retry: 2000") and "event: live" in body and "Throughput" in body
    web_daemon.cli("enqueue", "--id", "live-gone", "--hold", "-c", "true")
    web_daemon.cli("jobs", "delete", "live-gone")
    assert "event: down" in browser_like.get("/events/job?id=live-gone").text


def test_the_log_stream_follows_a_job_to_its_end(browser_like: TestClient, web_daemon: Daemon) -> None:
    web_daemon.cli("enqueue", "--id", "lg1", "-c", "echo first; sleep 1; echo second")
    web_daemon.wait_state("lg1", "processing")
    body = browser_like.get("/jobs/lg1/log").text  # the stream ends with the job
    assert "event: attempt\ndata: 1" in body
    assert body.index("first") < body.index("second") < body.index("event: end")
    assert "id: 1:" in body
    resumed = browser_like.get("/jobs/lg1/log", headers={"Last-Event-ID": "1:6"}).text
    assert "first" not in resumed and "second" in resumed


def test_no_output_can_start_an_event_field(browser_like: TestClient, web_daemon: Daemon) -> None:
    web_daemon.cli("enqueue", "--id", "cr1", "-c", r"printf 'a\revent: end\rdata: x\r\nid: 9:9\n'")
    web_daemon.wait_state("cr1", "completed")
    body = browser_like.get("/jobs/cr1/log").text
    assert "\r" not in body
    fields = [line.split(":", 1)[0] for line in body.split("\n") if line]
    assert fields.count("event") == 3 and fields.count("id") == 1  # attempt, log, end; the log's own id
    log = next(line for line in body.split("\n") if line.startswith("data: \"a"))
    assert json.loads(log[len("data: "):]) == "a\revent: end\rdata: x\r\nid: 9:9\n"


def test_the_chart_counts_what_ended(browser_like: TestClient, web_daemon: Daemon) -> None:
    browser_like.get("/")
    for i in range(3):
        web_daemon.cli("enqueue", "--id", f"ch{i}", "-c", "true")
    for i in range(3):
        web_daemon.wait_state(f"ch{i}", "completed")
    wait_until(lambda: "rect" in browser_like.get("/").text and "(0 in all)" not in browser_like.get("/").text,
               what="the chart to count the ended jobs")


def test_pages_keep_working_across_a_daemon_restart(browser_like: TestClient, web_daemon: Daemon) -> None:
    for _ in range(3):  # several kept connections, all of them to the daemon that goes
        assert browser_like.get("/queues").status_code == 200
    web_daemon.stop()
    assert browser_like.get("/").status_code == 502
    assert "not running" in browser_like.get("/").text
    web_daemon.start()
    for path in ("/", "/jobs", "/queues", "/daemons"):
        assert browser_like.get(path).status_code == 200, path
