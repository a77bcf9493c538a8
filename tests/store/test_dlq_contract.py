"""Store contract, the dead-letter queue: retry and purge by ids (all or none) and by filter
(outcome, finished after, finished before), in chunks past the IN() limit, counters kept right,
a retry announced to other daemons, and listing by outcome.

Runs on every backend (see conftest.py).
"""

from __future__ import annotations

import pytest

from queuectl.errors import InvalidParams, InvalidState, JobNotFound
from queuectld.jobs import Job, JobState, Outcome, OutcomeKind
from queuectld.store.base import DeadFilter, FinishedAttempt, Store
from tests.store.helpers import (
    OWNER,
    POLICY,
    T0,
    add,
    announcements,
    assert_counts_exact,
    claim,
    claim_one,
    finish,
    new_job,
)

#: How each dead job of `_graveyard` died, and when.
DEATHS = {
    "exit-early": (Outcome(OutcomeKind.EXIT, exit_code=3), T0 + 10),
    "timeout-early": (Outcome(OutcomeKind.TIMEOUT, error="timed out after 5s"), T0 + 20),
    "timeout-late": (Outcome(OutcomeKind.TIMEOUT, error="timed out after 5s"), T0 + 30),
    "signal-late": (Outcome(OutcomeKind.SIGNAL, signal=9), T0 + 40),
    "exit-late": (Outcome(OutcomeKind.EXIT, exit_code=1), T0 + 50),
}


def _graveyard(store: Store) -> dict[str, Job]:
    """The dead jobs of DEATHS (one attempt each), plus a pending and a completed one."""
    # Inserted in creation order, so that every store lists them in the same order.
    add(store, new_job("done", at=T0 + 5), *(new_job(job_id, max_retries=0, at=T0 + 6 + i)
                                             for i, job_id in enumerate(DEATHS)), new_job("alive", at=T0 + 1000))
    finish(store, claim_one(store, "done", now=T0 + 5), 0, now=T0 + 6)
    for job_id, (outcome, when) in DEATHS.items():
        running = claim(store, now=when, limit=1)
        assert [j.id for j in running] == [job_id]
        finish(store, running[0], now=when, outcome=outcome)
    dead = {j.id: j for j in store.list_jobs(JobState.DEAD, None)}
    assert sorted(dead) == sorted(DEATHS)
    return dead


def _unchanged(store: Store, ids: list[str]) -> dict[str, object]:
    return {i: (store.get(i), store.attempts_of(i)) for i in ids}


# -- retry by ids ----------------------------------------------------------------------------------


def test_retry_by_ids_moves_every_one_back_to_pending(store: Store) -> None:
    _graveyard(store)
    retried = store.dlq_retry(["signal-late", "exit-early", "signal-late"], T0 + 100)  # a repeat counts once
    assert [j.id for j in retried] == ["signal-late", "exit-early"]
    for job in retried:
        assert job == store.get(job.id)
        assert (job.state, job.attempts, job.next_run_at, job.last_error, job.exit_code, job.signal,
                job.last_outcome, job.finished_at) == (JobState.PENDING, 0, T0 + 100, None, None, None, None, None)
        assert len(store.attempts_of(job.id)) == 1  # the history stays
    assert sorted(j.id for j in claim(store, now=T0 + 100)) == ["exit-early", "signal-late"]
    assert_counts_exact(store)


@pytest.mark.parametrize("bad", ["missing", "alive", "done"])
def test_retry_by_ids_is_all_or_none(store: Store, bad: str) -> None:
    dead = _graveyard(store)
    before = _unchanged(store, [*dead, "alive", "done"])
    error = JobNotFound if bad == "missing" else InvalidState
    with pytest.raises(error, match=f"'{bad}'"):
        store.dlq_retry(["exit-early", bad, "exit-late"], T0 + 100)
    assert _unchanged(store, [*dead, "alive", "done"]) == before
    assert_counts_exact(store)


def test_retry_with_a_new_command(store: Store) -> None:
    _graveyard(store)
    [job] = store.dlq_retry(["exit-early"], T0 + 100, command="echo fixed")
    assert (job.command, job.state) == ("echo fixed", JobState.PENDING)
    assert store.get("exit-early").command == "echo fixed"
    before = _unchanged(store, ["exit-late", "timeout-late"])
    with pytest.raises(InvalidParams, match="one job"):
        store.dlq_retry(["exit-late", "timeout-late"], T0 + 100, command="echo both")
    assert _unchanged(store, ["exit-late", "timeout-late"]) == before


def test_retry_by_ids_past_one_in_list_chunk(store: Store) -> None:
    ids = [f"d{i:04d}" for i in range(1203)]
    add(store, *(new_job(job_id, max_retries=0, at=T0 + i * 1e-3) for i, job_id in enumerate(ids)))
    running = claim(store, now=T0 + 10, limit=len(ids))
    store.finish([FinishedAttempt(j.id, j.run, OWNER, Outcome(OutcomeKind.EXIT, exit_code=1), T0 + 11)
                  for j in running], POLICY)
    assert assert_counts_exact(store)["dead"] == len(ids)
    with pytest.raises(JobNotFound, match="'nope'"):
        store.dlq_retry([*ids, "nope"], T0 + 12)  # the last chunk's id fails the whole request
    assert assert_counts_exact(store)["dead"] == len(ids)
    assert [j.id for j in store.dlq_retry(ids, T0 + 12)] == ids
    assert assert_counts_exact(store)["pending"] == len(ids)


# -- retry by filter -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (DeadFilter(), list(DEATHS)),
        (DeadFilter(outcome=OutcomeKind.TIMEOUT), ["timeout-early", "timeout-late"]),
        (DeadFilter(outcome=OutcomeKind.SIGNAL), ["signal-late"]),
        (DeadFilter(outcome=OutcomeKind.WORKER_LOST), []),
        (DeadFilter(finished_after=T0 + 30), ["timeout-late", "signal-late", "exit-late"]),  # inclusive
        (DeadFilter(finished_before=T0 + 30), ["exit-early", "timeout-early"]),  # exclusive
        (DeadFilter(outcome=OutcomeKind.EXIT, finished_after=T0 + 15, finished_before=T0 + 60), ["exit-late"]),
    ],
)
def test_retry_matching_takes_exactly_what_the_filter_says(store: Store, where: DeadFilter,
                                                          expected: list[str]) -> None:
    _graveyard(store)
    others = _unchanged(store, [i for i in DEATHS if i not in expected])
    assert store.dlq_retry_matching(where, T0 + 100, 100) == expected  # oldest first
    assert {i: store.get(i).state for i in expected} == dict.fromkeys(expected, JobState.PENDING)
    assert _unchanged(store, [i for i in DEATHS if i not in expected]) == others
    assert store.dlq_retry_matching(where, T0 + 100, 100) == []  # nothing dead matches any more
    assert_counts_exact(store)


def test_retry_matching_pages_by_limit_and_never_takes_a_job_twice(store: Store) -> None:
    _graveyard(store)
    started = T0 + 100
    where = DeadFilter(finished_before=started)  # what a bulk action sets: the moment it began
    first = store.dlq_retry_matching(where, started, 2)
    assert first == ["exit-early", "timeout-early"]
    # One of them dies again meanwhile: after `started`, so the same action does not retry it again.
    again = {j.id: j for j in claim(store, now=started + 1, limit=2)}
    finish(store, again["exit-early"], 1, now=started + 1)
    assert store.get("exit-early").state is JobState.DEAD
    rest: list[str] = []
    while page := store.dlq_retry_matching(where, started + 2, 2):
        rest += page
        assert len(page) <= 2
    assert rest == ["timeout-late", "signal-late", "exit-late"]
    assert store.get("exit-early").state is JobState.DEAD
    assert_counts_exact(store)


def test_a_retry_is_announced_to_other_daemons(store: Store, store_url: str) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store: nothing to announce")
    _graveyard(store)
    with announcements(store_url) as heard:
        store.dlq_retry_matching(DeadFilter(outcome=OutcomeKind.WORKER_LOST), T0 + 100, 10)  # nothing matched
        assert not heard.wait(1.5)
        store.dlq_retry_matching(DeadFilter(outcome=OutcomeKind.SIGNAL), T0 + 100, 10)
        assert heard.wait(10)
        heard.clear()
        store.dlq_retry(["exit-early"], T0 + 100)
        assert heard.wait(10)


# -- purge -----------------------------------------------------------------------------------------


def test_purge_by_ids_deletes_the_jobs_and_their_history(store: Store) -> None:
    dead = _graveyard(store)
    gone = store.dlq_purge(["timeout-late", "exit-early"])
    assert [(j.id, j.run, j.state) for j in gone] == [("timeout-late", 1, JobState.DEAD), ("exit-early", 1, JobState.DEAD)]
    for job_id in ("timeout-late", "exit-early"):
        with pytest.raises(JobNotFound):
            store.get(job_id)
        assert store.attempts_of(job_id) == []
    assert sorted(j.id for j in store.list_jobs(JobState.DEAD, None)) == sorted(set(dead) - {"timeout-late", "exit-early"})
    assert_counts_exact(store)


@pytest.mark.parametrize("bad", ["missing", "alive", "done"])
def test_purge_by_ids_is_all_or_none(store: Store, bad: str) -> None:
    dead = _graveyard(store)
    before = _unchanged(store, [*dead, "alive", "done"])
    with pytest.raises(JobNotFound if bad == "missing" else InvalidState, match=f"'{bad}'"):
        store.dlq_purge(["exit-early", bad])
    assert _unchanged(store, [*dead, "alive", "done"]) == before
    assert_counts_exact(store)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (DeadFilter(outcome=OutcomeKind.TIMEOUT), ["timeout-early", "timeout-late"]),
        (DeadFilter(finished_before=T0 + 30), ["exit-early", "timeout-early"]),
        (DeadFilter(finished_after=T0 + 40), ["signal-late", "exit-late"]),
    ],
)
def test_purge_matching_deletes_what_the_filter_says(store: Store, where: DeadFilter, expected: list[str]) -> None:
    _graveyard(store)
    assert [j.id for j in store.dlq_purge_matching(where, 100)] == expected
    assert sorted(j.id for j in store.list_jobs(JobState.DEAD, None)) == sorted(set(DEATHS) - set(expected))
    assert [store.get(i).state for i in ("alive", "done")] == [JobState.PENDING, JobState.COMPLETED]
    assert all(store.attempts_of(i) == [] for i in expected)
    assert_counts_exact(store)


def test_purge_matching_pages_by_limit(store: Store) -> None:
    _graveyard(store)
    pages = []
    while page := store.dlq_purge_matching(DeadFilter(), 2):
        pages.append([j.id for j in page])
    assert pages == [["exit-early", "timeout-early"], ["timeout-late", "signal-late"], ["exit-late"]]
    assert assert_counts_exact(store)["dead"] == 0


# -- listing by outcome ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [None, JobState.DEAD])
def test_list_by_outcome_pages_in_order(store: Store, state: JobState | None) -> None:
    _graveyard(store)
    assert [j.id for j, _ in store.list_page(state, None, None, OutcomeKind.TIMEOUT)] == ["timeout-early",
                                                                                          "timeout-late"]
    assert [j.id for j, _ in store.list_page(state, None, None, OutcomeKind.EXIT)] == (
        ["done", "exit-early", "exit-late"] if state is None else ["exit-early", "exit-late"])
    pages, after = [], None
    while page := store.list_page(state, 1, after, OutcomeKind.EXIT):
        pages.append([j.id for j, _ in page])
        after = page[-1][1]
    assert pages == ([["done"], ["exit-early"], ["exit-late"]] if state is None else [["exit-early"], ["exit-late"]])
    assert store.list_page(state, 10, None, OutcomeKind.SNOOZED) == []
    assert store.list_page(JobState.PENDING, 10, None, OutcomeKind.TIMEOUT) == []
