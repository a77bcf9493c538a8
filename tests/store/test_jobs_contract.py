"""Store contract, jobs: enqueue, list, filter, duplicates and replace, cancel, delete, DLQ retry, counts.

Runs on every backend (see conftest.py); a backend passes only if it behaves exactly like the others.
"""

from __future__ import annotations

import random

import pytest

from queuectl.errors import DuplicateJob, InvalidState, JobNotFound
from queuectld.jobs import JobState, OutcomeKind, check_transition
from queuectld.store.base import Store
from tests.store.helpers import OWNER, T0, add, assert_counts_exact, claim, claim_one, finish, new_job, requeue

# -- (1) enqueue and list -------------------------------------------------------------------------


def test_enqueue_and_list(store: Store) -> None:
    ids = store.enqueue(
        [
            new_job("b", command="echo b", max_retries=5, priority=2, timeout_s=9.5, at=T0 + 60, created_at=T0),
            new_job("a", command="echo a", created_at=T0 + 1),
            new_job("c", command="echo 'c d'\nexit 3", created_at=T0 + 2),
        ],
        replace=False,
        now=T0,
    ).ids
    assert ids == ["b", "a", "c"]
    listed = store.list_jobs(None, None)
    assert [j.id for j in listed] == ["b", "a", "c"]  # oldest first, not by id
    b = store.get("b")
    assert (b.command, b.state, b.attempts, b.max_retries, b.priority, b.timeout_s) == (
        "echo b", JobState.PENDING, 0, 5, 2, 9.5,
    )
    assert (b.next_run_at, b.created_at, b.updated_at, b.run) == (T0 + 60, T0, T0, 0)
    assert (b.owner, b.lease_expires_at, b.exit_code, b.last_error, b.started_at) == (None, None, None, None, None)
    assert store.get("c").command == "echo 'c d'\nexit 3"  # stored verbatim
    assert [j.id for j in store.list_jobs(None, 2)] == ["b", "a"]
    assert listed[0] == store.get("b")


def test_get_of_a_missing_job(store: Store) -> None:
    with pytest.raises(JobNotFound, match="'nope'"):
        store.get("nope")


# -- (2) filter by state --------------------------------------------------------------------------


def make_one_of_each_state(store: Store) -> dict[JobState, str]:
    """One job in every state, reached through the store's own transitions; returns state -> id."""
    add(store, new_job("done", at=T0), new_job("failing", at=T0 + 1), new_job("doomed", max_retries=0, at=T0 + 2),
        new_job("stopped", at=T0 + 2.8), new_job("running", at=T0 + 3), new_job("waiting", at=T0 + 100))
    finish(store, claim_one(store, "done", now=T0), 0, now=T0 + 0.5)
    finish(store, claim_one(store, "failing", now=T0 + 1), 1, now=T0 + 1.5)
    finish(store, claim_one(store, "doomed", now=T0 + 2), 1, now=T0 + 2.5)
    store.cancel("stopped", T0 + 2.6)
    claim_one(store, "running", now=T0 + 3)  # "failing" is not due before T0 + 3.5
    return {
        JobState.COMPLETED: "done", JobState.FAILED: "failing", JobState.DEAD: "doomed",
        JobState.CANCELED: "stopped", JobState.PROCESSING: "running", JobState.PENDING: "waiting",
    }


def test_filter_by_state(store: Store) -> None:
    by_state = make_one_of_each_state(store)
    for state, job_id in by_state.items():
        assert [j.id for j in store.list_jobs(state, None)] == [job_id], state
    assert len(store.list_jobs(None, None)) == len(JobState)
    assert store.states_of([*by_state.values(), "missing"]) == {v: k for k, v in by_state.items()}
    assert_counts_exact(store)


# -- duplicates and replace -----------------------------------------------------------------------


def test_duplicate_id_is_refused_and_changes_nothing(store: Store) -> None:
    add(store, new_job("a", command="first"))
    with pytest.raises(DuplicateJob, match="'a'"):
        add(store, new_job("a", command="second"), now=T0 + 1)
    assert store.get("a").command == "first"
    assert_counts_exact(store)


def test_batch_with_a_duplicate_inside_is_rejected_whole(store: Store) -> None:
    with pytest.raises(DuplicateJob, match="'x'"):
        add(store, "w", "x", "y", "x")
    assert store.list_jobs(None, None) == []
    assert_counts_exact(store)


def test_batch_clashing_with_a_stored_job_is_rejected_whole(store: Store) -> None:
    add(store, "b")
    with pytest.raises(DuplicateJob, match="'b'"):
        add(store, "a", new_job("b", command="not the same"), "c", now=T0 + 1)
    assert [j.id for j in store.list_jobs(None, None)] == ["b"]
    assert_counts_exact(store)


def test_replace_overwrites_a_finished_job_and_its_history(store: Store) -> None:
    add(store, new_job("a", command="old"))
    finish(store, claim_one(store, "a"), 0, now=T0 + 1)
    assert len(store.attempts_of("a")) == 1
    add(store, new_job("a", command="new", at=T0 + 5), new_job("b", at=T0 + 6), replace=True, now=T0 + 5)
    a = store.get("a")
    assert (a.command, a.state, a.attempts, a.exit_code, a.next_run_at) == ("new", JobState.PENDING, 0, None, T0 + 5)
    assert store.attempts_of("a") == []
    assert claim_one(store, "a", now=T0 + 5).run == 1  # a replaced job starts its numbering afresh
    assert_counts_exact(store)


def test_replace_refuses_a_processing_job_and_changes_nothing(store: Store) -> None:
    add(store, new_job("a", command="old"))
    running = claim_one(store, "a")
    with pytest.raises(InvalidState, match="'a'"):
        add(store, new_job("fresh"), new_job("a", command="new"), replace=True, now=T0 + 1)
    assert store.get("a") == running
    with pytest.raises(JobNotFound):
        store.get("fresh")  # the whole batch was refused
    assert_counts_exact(store)


# -- cancel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.FAILED])
def test_cancel_a_waiting_job(store: Store, state: JobState) -> None:
    job_id = make_one_of_each_state(store)[state]
    job, before = store.cancel(job_id, T0 + 50)
    assert before is state
    assert (job.state, job.finished_at, job.next_run_at, job.owner) == (JobState.CANCELED, T0 + 50, None, None)
    assert job_id not in [j.id for j in claim(store, now=T0 + 10_000)]  # a canceled job is never claimed
    assert_counts_exact(store)


def test_cancel_a_processing_job_fences_its_attempt(store: Store) -> None:
    add(store, "a")
    running = claim_one(store, "a")
    job, before = store.cancel("a", T0 + 5)
    assert before is JobState.PROCESSING
    assert (job.state, job.owner, job.lease_expires_at) == (JobState.CANCELED, None, None)
    [attempt] = store.attempts_of("a")
    assert (attempt.outcome, attempt.finished_at, attempt.error) == (OutcomeKind.CANCELED, T0 + 5, "canceled while running")
    assert (job.last_outcome, job.last_error) == (OutcomeKind.CANCELED, "canceled")
    # The attempt ends later on the worker: it must not resurrect the job.
    assert finish(store, running, 0, now=T0 + 6) is None
    assert store.get("a") == job
    assert store.lost_attempts(T0 + 10_000, [OWNER]) == []
    assert_counts_exact(store)


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.DEAD, JobState.CANCELED])
def test_cancel_a_terminal_job_is_refused(store: Store, state: JobState) -> None:
    job_id = make_one_of_each_state(store)[state]
    before = store.get(job_id)
    with pytest.raises(InvalidState, match=state.value):
        store.cancel(job_id, T0 + 50)
    assert store.get(job_id) == before


def test_cancel_a_missing_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        store.cancel("nope", T0)


# -- delete ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.FAILED, JobState.COMPLETED, JobState.DEAD])
def test_delete_removes_a_job_and_its_history(store: Store, state: JobState) -> None:
    job_id = make_one_of_each_state(store)[state]
    assert store.delete(job_id).id == job_id
    with pytest.raises(JobNotFound):
        store.get(job_id)
    assert store.attempts_of(job_id) == []
    assert_counts_exact(store)
    add(store, new_job(job_id))  # the id is free again


def test_delete_refuses_a_processing_job(store: Store) -> None:
    add(store, "a")
    running = claim_one(store, "a")
    with pytest.raises(InvalidState, match="processing"):
        store.delete("a")
    assert store.get("a") == running
    with pytest.raises(JobNotFound):
        store.delete("nope")


# -- (5) and (6): the DLQ -------------------------------------------------------------------------


def test_dlq_retry_resets_counters(store: Store) -> None:
    add(store, new_job("a", max_retries=1))
    finish(store, claim_one(store, "a"), 1, now=T0 + 1)
    failed = store.get("a")
    dead = finish(store, claim_one(store, "a", now=failed.next_run_at or 0), 7, now=T0 + 10)
    assert dead is not None and (dead.state, dead.attempts) == (JobState.DEAD, 2)
    assert [j.id for j in store.list_jobs(JobState.DEAD, None)] == ["a"]
    [job] = store.dlq_retry(["a"], T0 + 20)
    assert job == store.get("a")
    assert (job.state, job.attempts, job.next_run_at) == (JobState.PENDING, 0, T0 + 20)
    assert (job.exit_code, job.last_error, job.finished_at, job.last_outcome, job.signal) == (None,) * 5
    assert job.max_retries == 1  # retries are reset, not the job's settings
    # It runs again, and its history keeps every earlier attempt.
    again = claim_one(store, "a", now=T0 + 20)
    assert again.run == 3
    assert [a.attempt for a in store.attempts_of("a")] == [1, 2, 3]
    assert_counts_exact(store)


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.FAILED, JobState.PROCESSING, JobState.COMPLETED])
def test_dlq_retry_refuses_a_job_that_is_not_dead(store: Store, state: JobState) -> None:
    job_id = make_one_of_each_state(store)[state]
    before = store.get(job_id)
    with pytest.raises(InvalidState, match=state.value):
        store.dlq_retry([job_id], T0 + 50)
    assert store.get(job_id) == before
    with pytest.raises(JobNotFound):
        store.dlq_retry(["nope"], T0)


# -- counts ---------------------------------------------------------------------------------------


def test_counts_stay_exact_through_every_transition(store: Store) -> None:
    assert assert_counts_exact(store) == {s.value: 0 for s in JobState}
    add(store, *(new_job(x, max_retries=0 if x == "a" else 3, at=T0 + i / 10) for i, x in enumerate("abcde")))
    assert assert_counts_exact(store)["pending"] == 5
    jobs = {j.id: j for j in claim(store, now=T0 + 1, limit=4)}
    assert sorted(jobs) == ["a", "b", "c", "d"]
    assert_counts_exact(store)
    finish(store, jobs["a"], 1, now=T0 + 1)  # -> dead
    assert_counts_exact(store)
    finish(store, jobs["b"], 1, now=T0 + 1)  # -> failed
    assert_counts_exact(store)
    finish(store, jobs["c"], 0, now=T0 + 1)  # -> completed
    assert_counts_exact(store)
    requeue(store, jobs["d"], now=T0 + 1)  # -> pending
    assert_counts_exact(store)
    store.checkpoint()
    assert_counts_exact(store)
    store.cancel("e", T0 + 2)  # pending -> canceled
    assert_counts_exact(store)
    store.dlq_retry(["a"], T0 + 3)  # dead -> pending
    assert_counts_exact(store)
    add(store, new_job("c", command="again"), "f", replace=True, now=T0 + 4)  # completed -> pending, + 1
    assert_counts_exact(store)
    store.delete("b")
    assert_counts_exact(store)
    with pytest.raises(DuplicateJob):
        add(store, "g", new_job("f", command="not the same"), now=T0 + 5)  # a refused batch must not count
    assert_counts_exact(store)
    running = claim(store, now=T0 + 5, limit=1)[0]
    store.cancel(running.id, T0 + 6)  # processing -> canceled
    store.checkpoint()
    store.checkpoint()
    assert assert_counts_exact(store) == {
        "pending": 3, "processing": 0, "completed": 0, "failed": 0, "dead": 0, "canceled": 2,
    }


def test_counts_stay_exact_through_a_random_walk(store: Store) -> None:
    # A seeded random mix of every operation, checked after each step: catches counter drift
    # on paths a scripted sequence forgets (e.g. replace of a dead job, release after cancel),
    # and any state change the transition table (jobs.TRANSITIONS) does not allow.
    rng = random.Random(20240101)
    now = T0
    next_id = 0
    for _ in range(150):
        now += 1
        op = rng.choice(["add", "add", "replace", "claim", "claim", "finish", "finish", "finish", "release",
                         "cancel", "delete", "dlq", "checkpoint"])
        jobs = store.list_jobs(None, None)
        running = [j for j in jobs if j.state is JobState.PROCESSING]
        # dlq retry mostly picks a dead job, sometimes any job (to be refused and change nothing).
        retryable = [j for j in jobs if j.state is JobState.DEAD] if rng.random() < 0.8 else jobs
        pick = rng.choice(jobs) if jobs else None
        try:
            if op == "add":
                next_id += 1
                add(store, new_job(f"j{next_id}", max_retries=rng.randint(0, 2), at=now), now=now)
            elif op == "replace" and pick is not None:
                add(store, new_job(pick.id, at=now), replace=True, now=now)
            elif op == "claim":
                claim(store, now=now + 1000, limit=rng.randint(1, 4))
            elif op == "finish" and running:
                finish(store, rng.choice(running), rng.choice([0, 1, 1]), now=now)
            elif op == "release" and running:
                assert requeue(store, rng.choice(running), now=now) is not None
            elif op == "cancel" and pick is not None:
                store.cancel(pick.id, now)
            elif op == "delete" and pick is not None:
                store.delete(pick.id)
            elif op == "dlq" and retryable:
                store.dlq_retry([rng.choice(retryable).id], now)
            elif op == "checkpoint":
                store.checkpoint()
        except InvalidState:
            pass  # refused operations are part of the walk: they must change nothing either
        assert_counts_exact(store)
        if op not in ("add", "replace", "delete"):  # those make or remove rows rather than move them
            after = {j.id: j.state for j in store.list_jobs(None, None)}
            for job in jobs:
                if after[job.id] is not job.state:
                    assert check_transition(job.state, after[job.id]), (op, job.id, job.state, after[job.id])


def test_batches_larger_than_one_in_list_chunk(store: Store) -> None:
    # The store splits id lists into chunks of a few hundred (bound-parameter limits); work
    # across the seams: states, replace, and naming the clashing id of a refused batch.
    ids = [f"j{i:04d}" for i in range(1234)]
    add(store, *(new_job(job_id, at=T0 + i * 1e-3) for i, job_id in enumerate(ids)))
    assert store.states_of(ids) == dict.fromkeys(ids, JobState.PENDING)
    claimed = {j.id for j in claim(store, now=T0 + 10, limit=3)}
    replaced = [new_job(job_id, command="again", at=T0 + 20) for job_id in ids[3:]]
    add(store, *replaced, replace=True, now=T0 + 20)  # none of these is running
    assert {j.id for j in store.list_jobs(JobState.PENDING, None) if j.command == "again"} == set(ids[3:])
    with pytest.raises(InvalidState, match="|".join(f"'{job_id}'" for job_id in claimed)):  # any running one
        add(store, *(new_job(job_id) for job_id in ids), replace=True, now=T0 + 30)
    with pytest.raises(DuplicateJob, match="'j1100'"):
        add(store, *(new_job(f"new{i}") for i in range(1100)), new_job("j1100", command="not the same"), now=T0 + 30)
    assert len(store.list_jobs(None, None)) == len(ids)
    assert_counts_exact(store)
