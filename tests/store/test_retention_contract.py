"""Store contract, retention: `prune` deletes ended jobs of one state ended before a cutoff,
oldest ended first, in batches, with their attempts, labels and own edges; never a job that a
job which has not ended depends on; `prune_preview` counts and changes nothing; `runs_of`;
`enqueue --replace` reports the runs of what it replaced; concurrent prunes on PostgreSQL take
each job once, without errors; the counters stay exact.

Runs on every backend (see conftest.py).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from queuectl.errors import JobNotFound
from queuectld.jobs import JobState, Outcome, OutcomeKind
from queuectld.store import open_store
from queuectld.store.base import CleanFilter, Store
from tests.store.helpers import T0, add, assert_counts_exact, claim, claim_one, finish, new_job


def _ended(store: Store) -> None:
    """Completed c1 (ended T0+10), c2 (T0+20), c3 (T0+30); dead d1 (T0+15); canceled x1 (T0+25);
    pending p1; c1 has an attempt, a label."""
    add(store, *(new_job(i, at=T0 + n, max_retries=0) for n, i in enumerate(["c1", "d1", "c2", "c3"])))
    for job_id, when, code in [("c1", T0 + 10, 0), ("d1", T0 + 15, 1), ("c2", T0 + 20, 0), ("c3", T0 + 30, 0)]:
        [job] = claim(store, now=when, limit=1)
        assert job.id == job_id
        finish(store, job, code, now=when)
    add(store, new_job("x1", at=T0 + 100)._replace(labels="keep,ml"), now=T0 + 20)
    store.cancel("x1", T0 + 25)
    add(store, new_job("p1", at=T0 + 10_000), now=T0 + 30)


def _ids(store: Store) -> set[str]:
    return {j.id for j in store.list_jobs(None, None)}


def test_prune_takes_one_state_before_the_cutoff_oldest_ended_first(store: Store) -> None:
    _ended(store)
    gone = store.prune(CleanFilter(JobState.COMPLETED, finished_before=T0 + 25), 10)
    assert [(p.id, p.state, p.run) for p in gone] == [("c1", JobState.COMPLETED, 1), ("c2", JobState.COMPLETED, 1)]
    assert _ids(store) == {"d1", "c3", "x1", "p1"}
    with pytest.raises(JobNotFound):
        store.get("c1")
    assert store.attempts_of("c1") == []
    assert store.runs_of(["c1", "c3", "p1", "nope"]) == {"c3": 1, "p1": 0}
    assert_counts_exact(store)


def test_prune_in_batches_until_fewer_than_the_limit(store: Store) -> None:
    add(store, *(new_job(f"j{i:02}", at=T0 + i) for i in range(7)))
    for i in range(7):
        finish(store, claim(store, now=T0 + i, limit=1)[0], 0, now=T0 + 100 + i)
    where = CleanFilter(JobState.COMPLETED, finished_before=T0 + 1000)
    batches = []
    while True:
        gone = store.prune(where, 3)
        batches.append([p.id for p in gone])
        if len(gone) < 3:
            break
    assert batches == [["j00", "j01", "j02"], ["j03", "j04", "j05"], ["j06"]]
    assert _ids(store) == set()
    assert_counts_exact(store)


def test_prune_takes_canceled_and_dead_by_queue_and_label(store: Store) -> None:
    _ended(store)
    assert store.prune(CleanFilter(JobState.CANCELED, finished_before=T0 + 1000, label="nolabel"), 10) == []
    assert [p.id for p in store.prune(CleanFilter(JobState.CANCELED, finished_before=T0 + 1000, label="ml"), 10)] \
        == ["x1"]
    assert store.prune(CleanFilter(JobState.DEAD, queue="other"), 10) == []
    assert [p.id for p in store.prune(CleanFilter(JobState.DEAD), 10)] == ["d1"]
    assert _ids(store) == {"c1", "c2", "c3", "p1"}
    assert_counts_exact(store)


def test_prune_removes_the_labels_and_own_edges(store: Store, store_url: str) -> None:
    add(store, new_job("a", at=T0)._replace(labels="ml"))
    finish(store, claim_one(store, "a", now=T0), 0, now=T0 + 1)
    add(store, new_job("b", at=T0 + 1)._replace(after=("a",), labels="ml"), now=T0 + 1)
    finish(store, claim_one(store, "b", now=T0 + 2), 0, now=T0 + 3)
    gone = store.prune(CleanFilter(JobState.COMPLETED, finished_before=T0 + 10), 10)
    assert sorted(p.id for p in gone) == ["a", "b"]
    probe = open_store(store_url)
    try:
        with probe.read_engine.connect() as conn:  # type: ignore[attr-defined]
            assert conn.execute(text("SELECT count(*) FROM job_labels")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM job_deps")).scalar() == 0
    finally:
        probe.close()


def test_a_dependency_of_a_job_that_has_not_ended_is_kept(store: Store) -> None:
    add(store, new_job("dep", at=T0), new_job("other", at=T0 + 5_000))
    finish(store, claim_one(store, "dep", now=T0), 0, now=T0 + 1)
    # `waiter` is past `dep` (satisfied) but still waits on `other`: pruning `dep` would cancel it.
    add(store, new_job("waiter", at=T0 + 2)._replace(after=("dep", "other")), now=T0 + 2)
    where = CleanFilter(JobState.COMPLETED, finished_before=T0 + 100)
    assert store.prune(where, 10) == []
    assert store.prune_preview(where, 10) == (0, [])
    assert store.get("waiter").state is JobState.PENDING
    # Once the dependent has ended too, the dependency goes.
    store.cancel("waiter", T0 + 3)
    assert [p.id for p in store.prune(where, 10)] == ["dep"]
    assert store.get("waiter").state is JobState.CANCELED
    assert_counts_exact(store)


def test_prune_preview_counts_and_changes_nothing(store: Store) -> None:
    _ended(store)
    before = {j.id: j for j in store.list_jobs(None, None)}
    assert store.prune_preview(CleanFilter(JobState.COMPLETED, finished_before=T0 + 25), 1) == (2, ["c1"])
    assert store.prune_preview(CleanFilter(JobState.COMPLETED), 10) == (3, ["c1", "c2", "c3"])
    assert {j.id: j for j in store.list_jobs(None, None)} == before
    assert store.attempts_of("c1") != []


def test_prune_refuses_a_state_that_has_not_ended(store: Store) -> None:
    add(store, "p1")
    with pytest.raises(ValueError, match="have not ended"):
        store.prune(CleanFilter(JobState.PENDING), 10)
    assert _ids(store) == {"p1"}


def test_replace_reports_the_runs_of_what_it_replaced(store: Store) -> None:
    add(store, new_job("r", max_retries=1))
    finish(store, claim_one(store, "r", now=T0), 1, now=T0 + 1)  # failed: retries at T0 + 3
    finish(store, claim(store, now=T0 + 10)[0], 0, now=T0 + 11)
    assert store.get("r").run == 2
    done = store.enqueue([new_job("r", command="echo new", at=T0 + 20), new_job("fresh", at=T0 + 20)],
                         replace=True, now=T0 + 20)
    assert done.replaced == {"r": 2}
    assert store.get("r").run == 0 and store.attempts_of("r") == []


def test_concurrent_prunes_take_each_job_once(store: Store, store_url: str) -> None:
    n = 600
    add(store, *(new_job(f"k{i:04}", at=T0) for i in range(n)))
    for job in claim(store, now=T0, limit=n):
        finish(store, job, 0, now=T0 + 1)
    others = [open_store(store_url) for _ in range(3)]
    taken: list[list[str]] = [[] for _ in others]
    errors: list[BaseException] = []
    where = CleanFilter(JobState.COMPLETED, finished_before=T0 + 10)

    def prune(i: int) -> None:
        try:
            while True:
                gone = others[i].prune(where, 50)
                taken[i].extend(p.id for p in gone)
                if not gone:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prune, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in others:
        s.close()
    assert errors == []
    every = [job_id for part in taken for job_id in part]
    assert sorted(every) == sorted(f"k{i:04}" for i in range(n))  # each once, none left
    assert _ids(store) == set()
    assert_counts_exact(store)


def test_prune_of_a_failed_attempt_job_keeps_a_retrying_one(store: Store) -> None:
    add(store, new_job("retrying", max_retries=2))
    finish(store, claim_one(store, "retrying", now=T0), 1, now=T0 + 1, outcome=Outcome(OutcomeKind.EXIT, exit_code=1))
    assert store.get("retrying").state is JobState.FAILED  # has a finished_at, but has not ended
    for state in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELED):
        assert store.prune(CleanFilter(state, finished_before=T0 + 1000), 10) == []
    assert _ids(store) == {"retrying"}
