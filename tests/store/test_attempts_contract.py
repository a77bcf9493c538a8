"""Store contract, attempts: claiming, backoff, the DLQ boundary, fencing, requeue, leases, due times.

Runs on every backend (see conftest.py).
"""

from __future__ import annotations

import pytest

from queuectld.jobs import JobState, LifecyclePolicy, Outcome, OutcomeKind, RetryPolicy
from queuectld.store.base import AttemptRecord, DaemonInfo, FinishedAttempt, LostAttempt, SpawnedAttempt, Store
from tests.store.helpers import HOST, LEASE_S, OWNER, POLICY, T0, add, claim, claim_one, finish, new_job, requeue

EXIT_0 = Outcome(OutcomeKind.EXIT, exit_code=0)

# -- claiming -------------------------------------------------------------------------------------


def test_claim_stamps_owner_lease_and_an_attempt(store: Store) -> None:
    add(store, "a")
    job = claim_one(store, "a", now=T0 + 2)
    assert (job.state, job.owner, job.host, job.run, job.attempts) == (JobState.PROCESSING, OWNER, HOST, 1, 0)
    assert (job.started_at, job.lease_expires_at, job.updated_at) == (T0 + 2, T0 + 2 + LEASE_S, T0 + 2)
    assert store.get("a") == job
    assert store.attempts_of("a") == [AttemptRecord(1, T0 + 2, None, None, None, None, None, OWNER, HOST)]
    assert claim(store, now=T0 + 3) == []  # already taken


def test_claim_order_is_priority_then_due_time(store: Store) -> None:
    add(
        store,
        new_job("low", priority=-1, at=T0),
        new_job("mid-late", priority=0, at=T0 + 2),
        new_job("mid-early", priority=0, at=T0 + 1),
        new_job("high-late", priority=5, at=T0 + 4),
        new_job("high-early", priority=5, at=T0 + 3),
        new_job("high-not-due", priority=9, at=T0 + 100),  # priority never beats the due time
    )
    first = claim(store, now=T0 + 10, limit=3)
    assert [j.id for j in first] == ["high-early", "high-late", "mid-early"]
    assert [j.id for j in claim(store, now=T0 + 10, limit=3)] == ["mid-late", "low"]
    assert claim(store, now=T0 + 10) == []


def test_claim_keeps_batch_order(store: Store) -> None:
    # The daemon stamps a batch's jobs 1 µs apart (handlers.enqueue_batch); they must run in order.
    now = 1_712_345_678.123456
    ids = [f"job-{i:02d}" for i in range(30)]
    add(store, *(new_job(job_id, at=now + i * 1e-6) for i, job_id in enumerate(ids)), now=now)
    assert [j.id for j in store.list_jobs(None, None)] == ids
    got: list[str] = []
    while batch := claim(store, now=now + 1, limit=4):
        got += [j.id for j in batch]
    assert got == ids


def test_limit_is_respected(store: Store) -> None:
    add(store, *(new_job(f"j{i}", at=T0 + i / 100) for i in range(10)))
    assert len(claim(store, now=T0 + 1, limit=3)) == 3
    assert len(claim(store, now=T0 + 1, limit=100)) == 7


# -- (3) backoff, (4) not before next_run_at, (5) DLQ ---------------------------------------------


def test_failed_attempt_schedules_exponential_backoff(store: Store) -> None:
    policy = LifecyclePolicy(backoff=RetryPolicy(backoff_base=3, backoff_max_s=20))
    add(store, new_job("a", max_retries=4))
    now = T0
    for attempts, delay in [(1, 3), (2, 9), (3, 20), (4, 20)]:  # min(3 ** n, 20)
        job = claim_one(store, "a", now=now)
        after = finish(store, job, 2, now=now + 0.5, policy=policy)
        assert after is not None
        assert (after.state, after.attempts, after.exit_code) == (JobState.FAILED, attempts, 2)
        assert after.next_run_at == pytest.approx(now + 0.5 + delay)
        assert (after.last_error, after.owner, after.lease_expires_at) == ("exit code 2", None, None)
        now = after.next_run_at
    assert store.get("a").state is JobState.FAILED


def test_job_is_not_claimed_before_its_next_run_at(store: Store) -> None:
    add(store, new_job("later", at=T0 + 10))
    assert claim(store, now=T0) == []
    assert claim(store, now=T0 + 9.999) == []
    assert store.next_due_at() == T0 + 10
    assert claim_one(store, "later", now=T0 + 10).run == 1  # due exactly at next_run_at
    # The same holds for a retry's backoff.
    after = finish(store, store.get("later"), 1, now=T0 + 11)
    assert after is not None and after.next_run_at == T0 + 11 + 2
    assert claim(store, now=T0 + 12.999) == []
    assert claim_one(store, "later", now=T0 + 13).run == 2


def test_exhausted_retries_move_the_job_to_the_dlq(store: Store) -> None:
    # max_retries counts retries after the first attempt: 2 means three attempts.
    add(store, new_job("a", max_retries=2))
    now = T0
    states = []
    for _ in range(3):
        job = claim_one(store, "a", now=now)
        after = finish(store, job, 1, now=now)
        assert after is not None
        states.append(after.state)
        now = after.next_run_at or now
    assert states == [JobState.FAILED, JobState.FAILED, JobState.DEAD]
    dead = store.get("a")
    assert (dead.attempts, dead.next_run_at, dead.run) == (3, None, 3)
    assert claim(store, now=now + 1_000_000) == []
    assert store.next_due_at() is None
    assert [a.exit_code for a in store.attempts_of("a")] == [1, 1, 1]


def test_success_completes_and_records_output(store: Store) -> None:
    add(store, "a")
    after = finish(store, claim_one(store, "a"), 0, now=T0 + 1, output_tail="hello\n")
    assert after is not None
    assert (after.state, after.exit_code, after.last_error, after.finished_at) == (JobState.COMPLETED, 0, None, T0 + 1)
    assert (after.next_run_at, after.attempts, after.owner) == (None, 0, None)
    assert store.get("a").output_tail == "hello\n"
    assert store.attempts_of("a") == [AttemptRecord(1, T0, T0 + 1, OutcomeKind.EXIT, 0, None, None, OWNER, HOST)]
    assert (after.last_outcome, after.signal) == (OutcomeKind.EXIT, None)


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (Outcome(OutcomeKind.TIMEOUT, exit_code=0, error="timed out after 5s"), "timed out after 5s"),
        (Outcome(OutcomeKind.TIMEOUT, signal=15), "timeout"),
        (Outcome(OutcomeKind.WORKER_LOST, error="worker lost: daemon d9 stopped"), "worker lost: daemon d9 stopped"),
        (Outcome(OutcomeKind.SIGNAL, signal=11), "killed by SIGSEGV"),
        (Outcome(OutcomeKind.KILLED, signal=9, error="killed: its lease was lost"), "killed: its lease was lost"),
        (Outcome(OutcomeKind.SPAWN_FAILED, error="could not start /bin/sh: EMFILE"), "could not start /bin/sh: EMFILE"),
    ],
)
def test_other_outcomes_count_as_failures_and_are_recorded(store: Store, outcome: Outcome, error: str) -> None:
    add(store, "a")
    after = finish(store, claim_one(store, "a"), now=T0 + 1, outcome=outcome)
    assert after is not None
    assert (after.state, after.attempts, after.last_error) == (JobState.FAILED, 1, error)
    assert (after.last_outcome, after.exit_code, after.signal) == (outcome.kind, outcome.exit_code, outcome.signal)
    assert store.get("a") == after
    assert store.attempts_of("a") == [
        AttemptRecord(1, T0, T0 + 1, outcome.kind, outcome.exit_code, outcome.signal, error, OWNER, HOST)]


# -- fencing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("owner", "run"), [("daemon-2", None), (None, 7), (None, 0)])
def test_finish_with_a_wrong_fence_changes_nothing(store: Store, owner: str | None, run: int | None) -> None:
    add(store, "a")
    running = claim_one(store, "a")
    before = (store.get("a"), store.attempts_of("a"))
    assert finish(store, running, 0, now=T0 + 1, owner=owner, run=run) is None
    assert (store.get("a"), store.attempts_of("a")) == before


def test_finish_after_cancel_or_a_previous_finish_changes_nothing(store: Store) -> None:
    add(store, "a", "b")
    a, b = claim(store, limit=2)
    assert finish(store, a, 0, now=T0 + 1) is not None
    done = (store.get(a.id), store.attempts_of(a.id))
    assert finish(store, a, 1, now=T0 + 2) is None  # a second report of the same attempt
    assert (store.get(a.id), store.attempts_of(a.id)) == done
    store.cancel(b.id, T0 + 1)
    canceled = (store.get(b.id), store.attempts_of(b.id))
    assert finish(store, b, 1, now=T0 + 2) is None
    assert (store.get(b.id), store.attempts_of(b.id)) == canceled


def test_group_finish_answers_each_attempt_in_order(store: Store) -> None:
    add(store, new_job("a", at=T0), new_job("b", at=T0 + 0.1))
    a, b = claim(store, now=T0 + 1, limit=2)
    stale = FinishedAttempt(b.id, b.run, "someone-else", EXIT_0, T0 + 2)
    good = FinishedAttempt(a.id, a.run, OWNER, EXIT_0, T0 + 2)
    spawned = [SpawnedAttempt(b.id, b.run, OWNER, pid=4242, proc_start=99),
               SpawnedAttempt(a.id, a.run, "someone-else", pid=1, proc_start=1)]
    results = store.finish([stale, good], POLICY, spawned)
    assert [(fa, None if job is None else job.state) for fa, job in results] == [
        (stale, None), (good, JobState.COMPLETED),
    ]
    assert (store.get(b.id).pid, store.get(b.id).proc_start) == (4242, 99)  # the fenced spawn record landed
    assert store.get(b.id).state is JobState.PROCESSING


# -- requeued (worker stop --now) ----------------------------------------------------------------


def test_a_requeued_attempt_is_not_counted_and_keeps_its_place(store: Store) -> None:
    add(store, new_job("a", max_retries=0, at=T0 - 5), new_job("b", at=T0 - 1))
    job = claim(store, limit=1)[0]
    assert job.id == "a"
    back = requeue(store, job, now=T0 + 5)
    assert back is not None and back == store.get("a")
    assert (back.state, back.attempts, back.owner, back.lease_expires_at, back.next_run_at, back.run) == (
        JobState.PENDING, 0, None, None, T0 - 5, 1,
    )  # due when it was: ahead of "b" still
    assert (back.last_outcome, back.last_error) == (OutcomeKind.REQUEUED, None)
    [attempt] = store.attempts_of("a")
    assert (attempt.outcome, attempt.finished_at, attempt.error) == (
        OutcomeKind.REQUEUED, T0 + 5, "stopped by `worker stop --now`")
    # With max_retries=0 a counted attempt would have sent it to the DLQ; it runs again instead.
    again = claim(store, now=T0 + 5, limit=1)[0]
    assert (again.id, again.run) == ("a", 2)
    assert finish(store, job, 0, now=T0 + 6) is None  # the requeued attempt is fenced off


def test_a_requeue_keeps_the_last_error_of_a_counted_attempt(store: Store) -> None:
    add(store, new_job("a", max_retries=3))
    failed = finish(store, claim_one(store, "a"), 4, now=T0 + 1)
    assert failed is not None and failed.next_run_at == T0 + 3
    back = requeue(store, claim_one(store, "a", now=T0 + 3), now=T0 + 4)
    assert back is not None
    assert (back.state, back.attempts, back.last_error, back.next_run_at) == (JobState.PENDING, 1, "exit code 4", T0 + 3)


def test_a_requeue_with_a_wrong_fence_changes_nothing(store: Store) -> None:
    add(store, "a")
    job = claim_one(store, "a")
    before = (store.get("a"), store.attempts_of("a"))
    requeued = Outcome(OutcomeKind.REQUEUED, error="stopped by `worker stop --now`")
    assert finish(store, job, now=T0 + 5, outcome=requeued, owner="daemon-2") is None
    assert finish(store, job, now=T0 + 5, outcome=requeued, run=job.run + 1) is None
    # Neither the job nor its running attempt's record may change.
    assert (store.get("a"), store.attempts_of("a")) == before


# -- leases ---------------------------------------------------------------------------------------


def test_lost_attempts_finds_expired_leases_and_dead_owners(store: Store) -> None:
    add(store, *(new_job(x, at=T0 + i / 10) for i, x in enumerate(["mine", "expired", "orphan", "waiting"])))
    mine = claim(store, owner=OWNER, now=T0 + 1, limit=1, lease_s=100)[0]
    expired = claim(store, owner="daemon-2", now=T0 + 1, limit=1, lease_s=10)[0]
    orphan = claim(store, owner="daemon-3", now=T0 + 1, limit=1, lease_s=100)[0]
    assert [mine.id, expired.id, orphan.id] == ["mine", "expired", "orphan"]
    store.finish([], POLICY, [SpawnedAttempt("orphan", orphan.run, "daemon-3", pid=777, proc_start=12345)])
    assert store.lost_attempts(T0 + 11, []) == []  # lease ends at T0 + 11: not yet lost
    assert store.lost_attempts(T0 + 11.001, []) == [LostAttempt("expired", 1, "daemon-2", HOST, None, None)]
    lost = sorted(store.lost_attempts(T0 + 12, ["daemon-3", "daemon-9"]), key=lambda x: x.job_id)
    assert lost == [
        LostAttempt("expired", 1, "daemon-2", HOST, None, None),
        LostAttempt("orphan", 1, "daemon-3", HOST, 777, 12345),
    ]
    # A terminal job is never lost, whoever owned it.
    finish(store, orphan, 0, now=T0 + 12)
    assert [x.job_id for x in store.lost_attempts(T0 + 12, ["daemon-3"])] == ["expired"]


def test_a_rescued_job_keeps_its_place_before_the_backlog_enqueued_while_it_ran(store: Store) -> None:
    add(store, new_job("rescued", at=T0))
    [job] = claim(store, owner="daemon-dead", now=T0 + 1, limit=1)
    add(store, *(new_job(f"backlog-{i}", at=T0 + 5 + i) for i in range(5)))  # enqueued while it ran
    lost = Outcome(OutcomeKind.WORKER_LOST, error="worker lost: daemon daemon-dead stopped heartbeating 95 s ago")
    after = finish(store, job, now=T0 + 100, outcome=lost)
    assert after is not None and (after.state, after.attempts, after.next_run_at) == (JobState.FAILED, 1, T0)
    # The rescue runs next: claimed before every job enqueued before it was rescued.
    assert [j.id for j in claim(store, now=T0 + 100, limit=1)] == ["rescued"]
    assert [j.id for j in claim(store, now=T0 + 100, limit=2)] == ["backlog-0", "backlog-1"]
    assert store.attempts_of("rescued")[0].error == lost.error


def test_renew_leases_extends_only_the_owners_processing_jobs(store: Store) -> None:
    add(store, *(new_job(x, at=T0 + i / 10) for i, x in enumerate(["a", "b", "done", "theirs"])))
    a, b, done = claim(store, owner=OWNER, now=T0 + 1, limit=3, lease_s=10)
    theirs = claim(store, owner="daemon-2", now=T0 + 1, limit=1, lease_s=10)[0]
    finish(store, done, 0, now=T0 + 2)
    info = DaemonInfo(OWNER, HOST, pid=100, proc_start=5, started_at=T0, heartbeat_at=T0, slots=4, active=0)
    store.register_daemon(info)
    running = [(a.id, a.run), (b.id, b.run), (done.id, done.run), (theirs.id, theirs.run)]
    assert store.renew_leases(OWNER, running, T0 + 8, 30, active=2, slots=4) == {"a", "b"}
    assert store.get("a").lease_expires_at == store.get("b").lease_expires_at == T0 + 38
    assert store.get("theirs").lease_expires_at == theirs.lease_expires_at == T0 + 11
    assert store.get("done").lease_expires_at is None
    [me] = store.daemons()
    assert (me.heartbeat_at, me.active, me.slots) == (T0 + 8, 2, 4)
    # Renewed leases keep a live owner's jobs out of recovery.
    assert [x.job_id for x in store.lost_attempts(T0 + 20, [])] == ["theirs"]
    assert store.renew_leases("nobody", running, T0 + 9, 30, 0, 1) == set()
    assert (a.id, b.id) == ("a", "b")


# -- due times ------------------------------------------------------------------------------------


def test_next_due_at(store: Store) -> None:
    assert store.next_due_at() is None
    add(store, new_job("a", at=T0 + 5), new_job("b", at=T0 + 3), new_job("c", at=T0 + 9))
    assert store.next_due_at() == T0 + 3
    b = claim_one(store, "b", now=T0 + 3)
    assert store.next_due_at() == T0 + 5  # a processing job is not waiting
    after = finish(store, b, 1, now=T0 + 4)  # retry at T0 + 6
    assert after is not None and store.next_due_at() == T0 + 5
    store.cancel("a", T0 + 4)
    assert store.next_due_at() == T0 + 6
    store.delete("c")
    finish(store, claim_one(store, "b", now=T0 + 6), 0, now=T0 + 7)
    assert store.next_due_at() is None
