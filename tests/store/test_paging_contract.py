"""Listing page by page (`list_page`, the path `job.list` and `dlq.list` take): every job exactly
once, in order, with and without a state, also while jobs are added and change state between
pages; and the statement a page runs is one an index answers, with no OFFSET.

The guarantee while the store changes between pages (README, Guarantees): a job present from the
first page to the last and in the listed state throughout appears exactly once; a job added, or
entering or leaving the listed state, meanwhile appears at most once; no job ever appears twice.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sqlalchemy import event

from queuectl.errors import InvalidParams
from queuectld.jobs import Job, JobState
from queuectld.store.base import ListPosition, Store
from tests.store.helpers import T0, add, claim, finish, new_job

STATES = [None, JobState.PENDING]


def page_through(store: Store, state: JobState | None, size: int, between=None,
                 newest_first: bool = False) -> list[list[Job]]:
    """Every page of a listing, calling `between(page_number)` after each page is read."""
    pages: list[list[Job]] = []
    after: ListPosition | None = None
    while True:
        listed = store.list_page(state, size, after, newest_first=newest_first)
        assert len(listed) <= size
        if not listed:
            return pages
        pages.append([job for job, _ in listed])
        after = listed[-1][1]
        if between is not None:
            between(len(pages))


def _fill(store: Store) -> list[str]:
    """23 jobs created in id order; some share a created_at (ties are broken by id), some finish."""
    ids = []
    for i in range(23):
        job_id = f"j{i:02d}"
        add(store, new_job(job_id, at=T0, created_at=T0 + i // 3))  # three jobs per instant
        ids.append(job_id)
    for job in claim(store, limit=5, now=T0 + 100):
        finish(store, job, 0, now=T0 + 101)
    return ids


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("size", [1, 4, 23, 50])
def test_pages_hold_every_job_once_in_order(store: Store, state: JobState | None, size: int) -> None:
    ids = _fill(store)
    expected = [i for i in ids if state is None or store.get(i).state is state]
    assert state is None or 0 < len(expected) < len(ids)
    pages = page_through(store, state, size)
    assert [job.id for page in pages for job in page] == expected
    assert all(len(page) == size for page in pages[:-1])


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("size", [1, 4, 23])
def test_newest_first_pages_hold_every_job_once_in_reverse(store: Store, state: JobState | None, size: int) -> None:
    ids = _fill(store)
    expected = [i for i in ids if state is None or store.get(i).state is state]
    pages = page_through(store, state, size, newest_first=True)
    assert [job.id for page in pages for job in page] == expected[::-1]


def test_an_empty_store_has_no_page(store: Store) -> None:
    assert store.list_page(None, 10, None) == []
    assert store.list_page(JobState.DEAD, 10, None) == []


def test_positions_continue_after_the_last_job_of_a_page(store: Store) -> None:
    add(store, "a", "b", "c")
    first = store.list_page(None, 2, None)
    assert [(job.id, pos.id) for job, pos in first] == [("a", "a"), ("b", "b")]
    assert [job.id for job, _ in store.list_page(None, 2, first[-1][1])] == ["c"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("seed", range(6))
def test_paging_while_jobs_are_added_and_change_state(store: Store, state: JobState | None, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(30):
        add(store, new_job(f"old{i:02d}", at=T0, created_at=T0 + i))
    before = {job.id: job for job in store.list_jobs(None, None)}
    touched: set[str] = set()  # jobs whose state may have changed during the listing
    added: list[str] = []
    clock = [T0 + 1000.0]

    def between(page: int) -> None:
        clock[0] += 10
        now = clock[0]
        for _ in range(rng.randint(0, 3)):
            job_id = f"new{len(added):02d}"
            add(store, new_job(job_id, at=now, created_at=now + len(added)), now=now)
            added.append(job_id)
        for job in claim(store, limit=rng.randint(0, 3), now=now):
            touched.add(job.id)
            if rng.random() < 0.5:  # some complete, some fail (to retry later), some stay running
                finish(store, job, rng.choice([0, 1]), now=now)
        for job_id in rng.sample(sorted(before), 2):
            if store.get(job_id).state in (JobState.PENDING, JobState.FAILED):
                store.cancel(job_id, now)
                touched.add(job_id)

    pages = page_through(store, state, rng.randint(2, 5), between)
    listed = [job.id for page in pages for job in page]
    assert not [i for i, n in Counter(listed).items() if n > 1], "a job appeared twice"
    stayed = [i for i in before if i not in touched and (state is None or before[i].state is state)]
    assert [i for i in listed if i in stayed] == stayed  # each exactly once, in order
    if state is None:
        # State changes do not move a job: every job there at the start is listed, once.
        assert [i for i in listed if i in before] == list(before)
        # Jobs added meanwhile come after those (they were created later): each at most once.
        assert listed[: len(before)] == list(before)
    keys = [(store.get(i).created_at, i) for i in listed]
    assert keys == sorted(keys)


def test_a_cursor_without_the_row_sqlite_lists_by_is_invalid(store: Store, store_url: str) -> None:
    if not store_url.startswith("sqlite"):
        pytest.skip("only SQLite lists without a state by rowid")
    add(store, "a", "b")
    with pytest.raises(InvalidParams, match="cursor"):
        store.list_page(None, 10, ListPosition(T0, "a", None))


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("state", STATES)
def test_a_page_is_served_by_an_index_without_offset(store: Store, store_url: str, state: JobState | None,
                                                     newest_first: bool) -> None:
    """The production statement, captured as it runs, then explained: it walks an index from the
    position on and stops at the limit, so a page deep in a million jobs costs what the first does."""
    for i in range(50):
        add(store, new_job(f"j{i:02d}", created_at=T0 + i))
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    engine = store.read_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", capture)
    try:
        first = store.list_page(state, 10, None, newest_first=newest_first)
        statements.clear()
        store.list_page(state, 10, first[-1][1], newest_first=newest_first)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = [s for s in statements if "FROM jobs" in s[0]]
    if "OFFSET" in statement.upper():  # SQLAlchemy's SQLite dialect always writes one: it must be 0
        assert statement.upper().endswith("OFFSET ?") and list(parameters)[-1] == 0, (statement, parameters)  # type: ignore[call-overload]
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        if store_url.startswith("sqlite"):
            plan = " | ".join(row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters))
            op = "<" if newest_first else ">"
            index = (f"INTEGER PRIMARY KEY (rowid{op}?)" if state is None
                     else f"INDEX ix_jobs_state_created (state=? AND created_at{op}?)")
            assert f"SEARCH jobs USING {index}" in plan, plan
            assert "SCAN" not in plan, plan
            # Only rows sharing one created_at may be sorted by id: never the whole listing.
            assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
        else:
            # Tiny tables are cheaper to scan; forbid that and a full sort to show an index serves it.
            cur = raw.cursor()
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute("SET LOCAL enable_sort = off")
            cur.execute("SET LOCAL enable_bitmapscan = off")
            cur.execute(f"EXPLAIN {statement}", parameters)
            plan = " | ".join(row[0] for row in cur.fetchall())
            raw.rollback()
            index = "ix_jobs_created" if state is None else "ix_jobs_state_created"
            assert f"Index Scan {'Backward ' if newest_first else ''}using {index}" in plan, plan
            assert "Seq Scan" not in plan, plan
            assert "Sort  (" not in plan.replace("Incremental Sort", ""), plan  # ties only, by id


def test_list_jobs_is_every_page_joined(store: Store) -> None:
    _fill(store)
    for state in (None, JobState.COMPLETED):
        pages = page_through(store, state, 3)
        assert [j.id for p in pages for j in p] == [j.id for j in store.list_jobs(state, None)]
    assert [j.id for j in store.list_jobs(None, 4)] == ["j00", "j01", "j02", "j03"]

