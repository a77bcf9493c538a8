"""The client and CLI side of paging: `limit` is a total over pages, pages are fetched one ahead
and used as they come, and the table and `--json` are written page by page."""

from __future__ import annotations

import json
from typing import Any

import pytest

from queuectl import render
from queuectl.client import Client

PAGE = 4


class FakeDaemon:
    """Answers job.list / dlq.list from a list of jobs in pages of at most PAGE, as queuectld does."""

    def __init__(self, n: int) -> None:
        self.jobs = [{"id": f"j{i}"} for i in range(n)]
        self.requests: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.closed = 0

    def send(self, method: str, params_json: str) -> None:
        params = json.loads(params_json)
        self.requests.append(params)
        start = int(params.get("cursor", "0"))
        size = min(params.get("limit", PAGE), PAGE)
        jobs = self.jobs[start:start + size]
        more = start + size < len(self.jobs)
        self.replies.append({"jobs": jobs, "next_cursor": str(start + size) if more else None})

    def receive(self, method: str) -> dict[str, Any]:
        return self.replies.pop(0)


def client_of(fake: FakeDaemon) -> Client:
    c = Client("unix:/nonexistent/q.sock")
    c._connect = lambda: setattr(c, "_sock", object())  # type: ignore[method-assign]
    c._send = fake.send  # type: ignore[method-assign]
    c._receive = fake.receive  # type: ignore[method-assign]

    def close() -> None:
        fake.closed += 1
        c._sock = None

    c.close = close  # type: ignore[method-assign]
    return c


@pytest.mark.parametrize(("n", "limit", "got"), [(10, None, 10), (10, 7, 7), (10, 4, 4), (10, 100, 10), (0, None, 0),
                                                 (8, None, 8), (3, 1, 1)])
def test_limit_is_a_total_over_pages(n: int, limit: int | None, got: int) -> None:
    fake = FakeDaemon(n)
    pages = list(client_of(fake).list_pages("pending", limit))
    assert [j["id"] for page in pages for j in page] == [f"j{i}" for i in range(got)]
    assert all(0 < len(page) <= PAGE for page in pages)
    # Each request asks for what is left of the total, and continues from the previous page.
    assert [r.get("limit") for r in fake.requests] == [
        None if limit is None else limit - PAGE * k for k in range(len(fake.requests))]
    assert [r.get("cursor") for r in fake.requests] == [None, *(str(PAGE * k) for k in range(1, len(fake.requests)))]
    assert all(r["state"] == "pending" for r in fake.requests)
    assert not fake.replies and not fake.closed  # no answer left unread, connection kept


def test_the_next_page_is_asked_for_before_this_one_is_used_and_never_more() -> None:
    fake = FakeDaemon(20)
    pages = client_of(fake).list_pages()
    next(pages)
    assert len(fake.requests) == 2  # page 2 is on its way while page 1 is printed
    next(pages)
    assert len(fake.requests) == 3


def test_stopping_early_drops_the_connection_with_an_answer_in_flight() -> None:
    fake = FakeDaemon(20)
    c = client_of(fake)
    pages = c.list_pages()
    next(pages)
    pages.close()
    assert fake.closed == 1  # the unread answer cannot be taken for the next call's


def test_list_jobs_and_dlq_list_join_the_pages() -> None:
    fake = FakeDaemon(10)
    c = client_of(fake)
    assert len(c.list_jobs()) == 10
    assert len(c.dlq_list(limit=5)) == 5
    assert "state" not in fake.requests[-1]


# -- writing pages as they come ------------------------------------------------------------------


def job(i: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"job-{i}", "command": f"echo {i}", "state": "pending", "attempts": 0, "max_retries": 3,
            "priority": 0, "timeout_s": None, "next_run_at": None, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "last_error": None, **fields}


class Out:
    """Everything written to stdout so far (pytest's capsys, read as it grows)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._text = ""

    def text(self) -> str:
        self._text += self._capsys.readouterr().out
        return self._text


@pytest.fixture
def stdout(capsys: pytest.CaptureFixture[str]) -> Out:
    return Out(capsys)


@pytest.mark.parametrize("pages", [[], [[]], [[job(1)]], [[job(1), job(2, command="a\nb é \x1b")], [job(3)]]])
def test_json_is_the_same_array_written_page_by_page(stdout: Out, pages: list[list[dict[str, Any]]]) -> None:
    everything = [j for page in pages for j in page]
    render.print_json(everything)
    expected = stdout.text()
    render.json_array(iter(pages))
    assert stdout.text()[len(expected):] == expected
    assert json.loads(expected) == everything


def test_json_is_written_before_the_next_page_is_asked_for(stdout: Out) -> None:
    def pages() -> Any:
        yield [job(1)]
        assert '"job-1"' in stdout.text()
        yield [job(2)]

    render.json_array(pages())
    assert len(json.loads(stdout.text())) == 2


def test_the_table_keeps_the_first_pages_widths_and_prints_each_page_as_it_comes(stdout: Out) -> None:
    def pages() -> Any:
        yield [job(1), job(22)]
        assert stdout.text().count("\n") == 3  # header and the first page, before page two
        yield [job(3, command="echo a much longer command than before " + "x" * 80, last_error="exit code 1")]

    render.jobs_stream(pages())
    lines = stdout.text().splitlines()
    assert lines[0].split("\t") == ["ID", "STATE", "QUEUE", "TRIES", "NEXT RUN", "UPDATED", "COMMAND", "LAST ERROR"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["job-1", "job-22", "job-3"]
    # A pipe gets tab-separated fields, every one whole, the same on every page.
    for line in lines[1:]:
        assert len(line.split("\t")) == 8 and line.split("\t")[1] == "pending"
    assert "x" * 80 in lines[3] and lines[3].endswith("exit code 1")


def test_the_table_escapes_what_a_job_controls(stdout: Out) -> None:
    render.jobs_stream(iter([[job(1, command="echo \x1b[2J\u202e", last_error="\x07")]]))
    text = stdout.text()
    assert "\x1b" not in text and "\\x1b[2J\\u202e" in text and "\\x07" in text


def test_no_jobs_says_so(stdout: Out) -> None:
    render.jobs_stream(iter([[]]))
    assert stdout.text() == "no jobs\n"
