"""Pages: the daemon's page JSON (bounded in jobs and bytes, `next_cursor` exactly when more
follow), the handlers over a real store, and the client walking pages with `limit` as a total."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl import protocol as p
from queuectl.errors import InvalidParams
from queuectld import handlers
from queuectld.jobs import JobState, LifecyclePolicy, Outcome, OutcomeKind
from queuectld.paging import decode_cursor, page_json
from queuectld.store.base import FinishedAttempt, ListPosition, NewJob
from queuectld.store.open import open_store
from queuectld.store_threads import StoreThreads

T0 = 1_700_000_000.0


def _encoded(n: int, size: int) -> list[str]:
    return [json.dumps({"id": f"j{i}", "pad": "x" * size}) for i in range(n)]


def _positions(n: int) -> list[ListPosition]:
    return [ListPosition(T0 + i, f"j{i}", i + 1) for i in range(n)]


def test_a_page_that_fits_has_no_cursor_unless_more_follow() -> None:
    jobs = _encoded(3, 10)
    assert json.loads(page_json(jobs, _positions(3), None, more=False)) == {
        "jobs": [json.loads(j) for j in jobs], "next_cursor": None}
    cursor = json.loads(page_json(jobs, _positions(3), None, more=True))["next_cursor"]
    assert decode_cursor(cursor, None) == _positions(3)[2]
    assert json.loads(page_json([], [], None, more=False)) == {"jobs": [], "next_cursor": None}


def test_a_page_stops_at_its_byte_budget_and_continues_after_its_last_job() -> None:
    jobs = _encoded(10, 300_000)
    page = page_json(jobs, _positions(10), JobState.PENDING, more=False)
    body = json.loads(page)
    assert len(body["jobs"]) == p.MAX_PAGE_BYTES // 300_000 == 3
    assert len(page.encode()) <= p.MAX_PAGE_BYTES + 100
    assert decode_cursor(body["next_cursor"], JobState.PENDING) == _positions(10)[2]


def test_a_job_bigger_than_the_budget_is_a_page_of_its_own() -> None:
    jobs = _encoded(2, p.MAX_PAGE_BYTES + 10)
    body = json.loads(page_json(jobs, _positions(2), None, more=False))
    assert [j["id"] for j in body["jobs"]] == ["j0"]
    assert decode_cursor(body["next_cursor"], None).id == "j0"


def test_the_budget_counts_utf8_bytes() -> None:
    jobs = [json.dumps({"c": "é" * 200_000}, ensure_ascii=False) for _ in range(4)]  # 400 KB each
    assert len(json.loads(page_json(jobs, _positions(4), None, more=False))["jobs"]) == 2


# -- the handlers over a real store --------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[handlers.Context]:
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    db = StoreThreads(store)
    yield handlers.Context(db=db, scheduler=None, settings=None, config={}, stop=lambda: None)  # type: ignore[arg-type]
    db.shutdown()
    store.close()


def _add(ctx: handlers.Context, n: int, command: str = "true", start: int = 0) -> None:
    ctx.db.store.enqueue([NewJob(f"j{start + i:05d}", command, 3, 0, None, T0, T0 + start + i) for i in range(n)],
                         replace=False, now=T0)


def _call(ctx: handlers.Context, method: str, params: dict[str, Any]) -> dict[str, Any]:
    model = p.METHODS[method].model_validate(params)
    result = asyncio.run(handlers.HANDLERS[method](ctx, model))
    text = result.json if isinstance(result, handlers.Encoded) else result.model_dump_json()
    # What goes on the wire is exactly a JobsResult.
    return p.JobsResult.model_validate_json(text).model_dump(mode="json")


def _walk(ctx: handlers.Context, method: str, params: dict[str, Any]) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        body = _call(ctx, method, {**params, **({"cursor": cursor} if cursor else {})})
        pages.append([j["id"] for j in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_job_list_pages_are_capped_and_continue(ctx: handlers.Context) -> None:
    _add(ctx, p.MAX_PAGE_JOBS + 5)
    pages = _walk(ctx, "job.list", {"limit": 1_000_000})
    assert [len(page) for page in pages] == [p.MAX_PAGE_JOBS, 5]
    assert [i for page in pages for i in page] == [f"j{i:05d}" for i in range(p.MAX_PAGE_JOBS + 5)]
    assert [len(page) for page in _walk(ctx, "job.list", {"state": "pending", "limit": 400})] == [400, 400, 205]
    # The last page is known to be the last: no empty page after it.
    assert _call(ctx, "job.list", {"limit": p.MAX_PAGE_JOBS + 5})["next_cursor"] is not None
    assert _call(ctx, "job.list", {"state": "dead"}) == {"jobs": [], "next_cursor": None}


def test_big_commands_make_smaller_pages(ctx: handlers.Context) -> None:
    _add(ctx, 40, command="echo " + "x" * 100_000)
    pages = _walk(ctx, "job.list", {})
    assert len(pages) > 1 and all(len(page) < 11 for page in pages)
    assert sum(len(page) for page in pages) == 40


def test_dlq_list_pages_the_dead_jobs(ctx: handlers.Context) -> None:
    store = ctx.db.store
    store.enqueue([NewJob(f"j{i}", "false", 0, 0, None, T0, T0 + i) for i in range(7)], replace=False, now=T0)
    ended = [FinishedAttempt(job.id, job.run, "me", OUTCOMES.get(job.id, Outcome(OutcomeKind.EXIT, exit_code=0)),
                             T0 + 2)
             for job in store.claim_due("me", "host", 100, T0 + 1, 30)]
    store.finish(ended, LifecyclePolicy())
    assert _walk(ctx, "dlq.list", {"limit": 2}) == [["j1", "j3"], ["j4", "j6"]]
    assert _walk(ctx, "dlq.list", {}) == [["j1", "j3", "j4", "j6"]]
    # Filtered by how the last attempt ended, paged the same way; a cursor is for its outcome.
    assert _walk(ctx, "dlq.list", {"outcome": "timeout", "limit": 1}) == [["j3"], ["j6"]]
    assert _walk(ctx, "job.list", {"outcome": "exit"}) == [["j0", "j1", "j2", "j4", "j5"]]
    assert _walk(ctx, "job.list", {"state": "completed", "outcome": "exit", "limit": 2}) == [["j0", "j2"], ["j5"]]
    assert _walk(ctx, "dlq.list", {"outcome": "signal"}) == [[]]
    cursor = _call(ctx, "dlq.list", {"outcome": "timeout", "limit": 1})["next_cursor"]
    with pytest.raises(InvalidParams, match="with outcome 'timeout'"):
        _call(ctx, "dlq.list", {"cursor": cursor})
    # A dead job's view says how it ended.
    [j3] = [j for j in _call(ctx, "dlq.list", {})["jobs"] if j["id"] == "j3"]
    assert j3["last_outcome"] == "timeout" and j3["signal"] == "SIGTERM" and j3["host"] == "host"
    assert j3["duration_s"] == pytest.approx(1.0)


#: The dead ones: two exited 1, two timed out (killed by SIGTERM); the rest exited 0.
OUTCOMES = {"j1": Outcome(OutcomeKind.EXIT, exit_code=1), "j4": Outcome(OutcomeKind.EXIT, exit_code=1),
            "j3": Outcome(OutcomeKind.TIMEOUT, signal=15, error="timed out after 1s"),
            "j6": Outcome(OutcomeKind.TIMEOUT, signal=15, error="timed out after 1s")}


def test_a_bad_cursor_is_invalid_params_and_a_cursor_is_for_its_listing(ctx: handlers.Context) -> None:
    _add(ctx, 3)
    cursor = _call(ctx, "job.list", {"limit": 1})["next_cursor"]
    with pytest.raises(InvalidParams, match="cursor: it continues a listing of every state"):
        _call(ctx, "job.list", {"state": "pending", "cursor": cursor})
    with pytest.raises(InvalidParams, match="cursor"):
        _call(ctx, "dlq.list", {"cursor": cursor})
    with pytest.raises(InvalidParams, match="cursor: it is not a cursor"):
        _call(ctx, "job.list", {"cursor": "QUFB"})
    assert [j["id"] for j in _call(ctx, "job.list", {"cursor": cursor})["jobs"]] == ["j00001", "j00002"]
