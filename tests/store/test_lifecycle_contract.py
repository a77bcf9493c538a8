"""Store contract, the lifecycle as jobs.py decides it and the store writes it: fencing on the turn,
backoff with jitter, per-job backoff, every retry rule sending a job to the DLQ, snoozes and
requeues uncounted, cancel from every state, the attempts' fields, counters after every change.

Runs on every backend (see conftest.py), through the production turn path of each.
"""

from __future__ import annotations

import pytest

from queuectl.errors import InvalidState
from queuectld.jobs import JobState, LifecyclePolicy, Outcome, OutcomeKind, RetryPolicy, RetryRules, jitter_spread
from queuectld.store.base import AttemptRecord, DeadFilter, FinishedAttempt, SpawnedAttempt, Store
from tests.store.helpers import (
    HOST,
    LEASE_S,
    OWNER,
    POLICY,
    T0,
    add,
    assert_counts_exact,
    claim,
    claim_one,
    finish,
    new_job,
    requeue,
)

EXIT_0 = Outcome(OutcomeKind.EXIT, exit_code=0)

# -- fencing on the turn ----------------------------------------------------------------------------


def test_a_stale_owner_or_run_writes_nothing_through_finish_and_claim(store: Store) -> None:
    add(store, new_job("a"), new_job("b", at=T0 + 1), new_job("c", at=T0 + 2))
    a, b = claim(store, now=T0 + 5, limit=2)
    before = {j: (store.get(j), store.attempts_of(j)) for j in ("a", "b")}
    stale = [
        FinishedAttempt("a", a.run, "daemon-2", EXIT_0, T0 + 6),  # another owner
        FinishedAttempt("b", b.run - 1, OWNER, EXIT_0, T0 + 6),  # an earlier run
        FinishedAttempt("gone", 1, OWNER, EXIT_0, T0 + 6),  # no such job
    ]
    spawned = [SpawnedAttempt("a", a.run, "daemon-2", pid=1, proc_start=1),
               SpawnedAttempt("b", b.run + 1, OWNER, pid=2, proc_start=2)]
    results, claimed = store.finish_and_claim(stale, POLICY, spawned, OWNER, HOST, 5, T0 + 6, LEASE_S)
    assert results == [(fa, None) for fa in stale]
    assert [j.id for j in claimed] == ["c"]  # the claim is unaffected
    assert {j: (store.get(j), store.attempts_of(j)) for j in ("a", "b")} == before
    assert_counts_exact(store)


def test_the_same_attempt_twice_in_one_batch_is_written_once(store: Store) -> None:
    add(store, new_job("a", max_retries=5))
    a = claim_one(store, "a")
    fail = FinishedAttempt("a", a.run, OWNER, Outcome(OutcomeKind.EXIT, exit_code=1), T0 + 1)
    [(_, first), (_, second)] = store.finish([fail, fail], POLICY)
    assert first is not None and first.attempts == 1
    assert second is None
    assert store.get("a").attempts == 1


# -- backoff --------------------------------------------------------------------------------------


def test_backoff_has_jitter_within_its_bounds(store: Store) -> None:
    jitter = 0.5
    policy = LifecyclePolicy(backoff=RetryPolicy(backoff_base=10, backoff_max_s=300, jitter=jitter))
    ids = [f"j{i:02d}" for i in range(40)]
    add(store, *(new_job(job_id, at=T0 + i * 1e-3) for i, job_id in enumerate(ids)))
    running = claim(store, now=T0 + 1, limit=len(ids))
    results = store.finish([FinishedAttempt(j.id, j.run, OWNER, Outcome(OutcomeKind.EXIT, exit_code=1), T0 + 2)
                            for j in running], policy)
    delays = {fa.job_id: job.next_run_at - (T0 + 2) for fa, job in results if job is not None and job.next_run_at}
    assert sorted(delays) == ids
    for job_id, delay in delays.items():
        assert 10 * (1 - jitter) <= delay <= 10, (job_id, delay)  # base ** 1, less up to half
        # The same on every daemon: fixed by the attempt, not drawn.
        assert delay == pytest.approx(10 * (1 - jitter * jitter_spread(job_id, 1)))
        assert store.get(job_id).next_run_at == pytest.approx(T0 + 2 + delay)
    assert len({round(d, 6) for d in delays.values()}) > 30  # spread out, not in lockstep


def test_a_jobs_own_backoff_overrides_the_configs(store: Store) -> None:
    add(store, new_job("own", backoff_base=5, backoff_max_s=7, max_retries=5), new_job("config", max_retries=5))
    assert (store.get("own").backoff_base, store.get("own").backoff_max_s) == (5, 7)
    now = T0
    for attempt, (own_delay, config_delay) in enumerate([(5, 2), (7, 4), (7, 8)], start=1):
        running = {j.id: j for j in claim(store, now=now, limit=2)}
        assert sorted(running) == ["config", "own"], attempt
        for job_id, delay in (("own", own_delay), ("config", config_delay)):
            after = finish(store, running[job_id], 1, now=now)
            assert after is not None and after.next_run_at == pytest.approx(now + delay), (job_id, attempt)
        now += 10


# -- retry rules: straight to the DLQ ------------------------------------------------------------

RULE_CASES = [
    pytest.param(RetryRules(retry_on_exit=(1, 75)), Outcome(OutcomeKind.EXIT, exit_code=2),
                 "exit code 2; not retried: exit code 2 is not in retry-on-exit 1,75", id="retry-on-exit"),
    pytest.param(RetryRules(no_retry_on_exit=(2, *range(64, 79))), Outcome(OutcomeKind.EXIT, exit_code=70),
                 "exit code 70; not retried: exit code 70 is in no-retry-on-exit 2,64-78", id="no-retry-on-exit"),
    pytest.param(RetryRules(retry_on_timeout=False), Outcome(OutcomeKind.TIMEOUT, error="timed out after 5s"),
                 "timed out after 5s; not retried: retry-on-timeout is off", id="retry-on-timeout"),
    pytest.param(RetryRules(no_retry_on_signal=("KILL",)), Outcome(OutcomeKind.SIGNAL, signal=9),
                 "killed by SIGKILL; not retried: signal KILL is in no-retry-on-signal KILL", id="no-retry-on-signal"),
]


@pytest.mark.parametrize(("rules", "outcome", "error"), RULE_CASES)
@pytest.mark.parametrize("where", ["job", "config"])
def test_an_attempt_a_rule_excludes_goes_straight_to_the_dlq(
    store: Store, rules: RetryRules, outcome: Outcome, error: str, where: str
) -> None:
    own = rules.encode() if where == "job" else None
    policy = POLICY if where == "job" else LifecyclePolicy(backoff=POLICY.backoff, rules=rules)
    add(store, new_job("a", max_retries=5, retry_rules=own))
    assert store.get("a").retry_rules == own
    after = finish(store, claim_one(store, "a"), now=T0 + 1, outcome=outcome, policy=policy)
    assert after is not None and after == store.get("a")
    assert (after.state, after.attempts, after.next_run_at, after.last_error) == (JobState.DEAD, 1, None, error)
    assert (after.last_outcome, after.exit_code, after.signal) == (outcome.kind, outcome.exit_code, outcome.signal)
    [attempt] = store.attempts_of("a")
    assert (attempt.outcome, attempt.error) == (outcome.kind, outcome.describe())
    assert_counts_exact(store)


@pytest.mark.parametrize(
    ("config_rules", "own_rules", "outcome"),
    [
        (RetryRules(retry_on_exit=(1, 75)), RetryRules(retry_on_exit=(2,)), Outcome(OutcomeKind.EXIT, exit_code=2)),
        (RetryRules(no_retry_on_exit=(2, 70)), RetryRules(no_retry_on_exit=()), Outcome(OutcomeKind.EXIT, exit_code=70)),
        (RetryRules(retry_on_timeout=False), RetryRules(retry_on_timeout=True), Outcome(OutcomeKind.TIMEOUT)),
        (RetryRules(no_retry_on_signal=("KILL",)), RetryRules(no_retry_on_signal=()),
         Outcome(OutcomeKind.SIGNAL, signal=9)),
    ],
    ids=["retry-on-exit", "no-retry-on-exit", "retry-on-timeout", "no-retry-on-signal"],
)
def test_a_jobs_own_rules_override_the_configs(
    store: Store, config_rules: RetryRules, own_rules: RetryRules, outcome: Outcome
) -> None:
    policy = LifecyclePolicy(backoff=POLICY.backoff, rules=config_rules)
    add(store, new_job("own", max_retries=5, retry_rules=own_rules.encode()), new_job("config", max_retries=5))
    running = {j.id: j for j in claim(store, limit=2)}
    own = finish(store, running["own"], now=T0 + 1, outcome=outcome, policy=policy)
    assert own is not None
    assert (own.state, own.attempts, own.next_run_at) == (JobState.FAILED, 1, T0 + 1 + 2)
    assert "not retried" not in (own.last_error or "")
    by_config = finish(store, running["config"], now=T0 + 1, outcome=outcome, policy=policy)
    assert by_config is not None and by_config.state is JobState.DEAD  # the same attempt, under the config's


# -- uncounted: snoozed and requeued ---------------------------------------------------------------


@pytest.mark.parametrize(("snooze_s", "delay"), [(45.0, 45.0), (None, 60.0)])
def test_a_snooze_is_uncounted_and_due_after_its_delay(store: Store, snooze_s: float | None, delay: float) -> None:
    add(store, new_job("a", max_retries=0))
    after = finish(store, claim_one(store, "a"), now=T0 + 1, outcome=Outcome(OutcomeKind.SNOOZED, snooze_s=snooze_s),
                   policy=LifecyclePolicy(backoff=POLICY.backoff, snooze_exit=99, snooze_delay_s=60))
    assert after is not None and after == store.get("a")
    assert (after.state, after.attempts, after.next_run_at, after.last_outcome) == (
        JobState.PENDING, 0, T0 + 1 + delay, OutcomeKind.SNOOZED)
    assert store.next_due_at() == T0 + 1 + delay
    assert claim(store, now=T0 + 1 + delay - 0.001) == []
    again = claim_one(store, "a", now=T0 + 1 + delay)
    assert (again.run, again.attempts) == (2, 0)
    # max_retries=0: had the snooze counted, the next failure could not retry; it dies now.
    dead = finish(store, again, 1, now=T0 + 200)
    assert dead is not None and (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert [a.outcome for a in store.attempts_of("a")] == [OutcomeKind.SNOOZED, OutcomeKind.EXIT]
    assert_counts_exact(store)


def test_a_requeued_job_runs_before_jobs_that_became_due_after_it(store: Store) -> None:
    add(store, new_job("first", at=T0), new_job("second", at=T0 + 1))
    first = claim_one(store, "first", now=T0)
    assert requeue(store, first, now=T0 + 50) is not None
    assert [j.id for j in claim(store, now=T0 + 60, limit=1)] == ["first"]
    assert store.get("first").attempts == 0


# -- cancel from every state -----------------------------------------------------------------------


def _one_of_each(store: Store) -> dict[JobState, str]:
    add(store, new_job("pending", at=T0 + 500), new_job("failed", at=T0), new_job("dead", max_retries=0, at=T0 + 1),
        new_job("completed", at=T0 + 2), new_job("canceled", at=T0 + 600), new_job("processing", at=T0 + 2.2))
    finish(store, claim_one(store, "failed", now=T0), 1, now=T0 + 0.5)  # due again at T0 + 2.5
    finish(store, claim_one(store, "dead", now=T0 + 1), now=T0 + 1, outcome=Outcome(OutcomeKind.SIGNAL, signal=15))
    finish(store, claim_one(store, "completed", now=T0 + 2), 0, now=T0 + 2)
    store.cancel("canceled", T0 + 2)
    claim_one(store, "processing", now=T0 + 2.2)
    states = {JobState(s): s for s in ("pending", "failed", "dead", "completed", "canceled", "processing")}
    assert {s: store.get(i).state for s, i in states.items()} == {s: s for s in states}
    return states


@pytest.mark.parametrize("state", list(JobState))
def test_cancel_from_every_state(store: Store, state: JobState) -> None:
    job_id = _one_of_each(store)[state]
    before = store.get(job_id)
    if state in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELED):
        with pytest.raises(InvalidState, match=state.value):
            store.cancel(job_id, T0 + 50)
        assert store.get(job_id) == before
        assert_counts_exact(store)
        return
    attempts_before = store.attempts_of(job_id)
    job, was = store.cancel(job_id, T0 + 50)
    assert was is state and job == store.get(job_id)
    assert (job.state, job.finished_at, job.next_run_at, job.owner, job.lease_expires_at, job.last_error) == (
        JobState.CANCELED, T0 + 50, None, None, None, "canceled")
    assert job.attempts == before.attempts  # a cancel is not a failed attempt
    if state is JobState.PROCESSING:
        assert job.last_outcome is OutcomeKind.CANCELED
        assert store.attempts_of(job_id)[-1] == AttemptRecord(1, T0 + 2.2, T0 + 50, OutcomeKind.CANCELED, None, None,
                                                              "canceled while running", OWNER, HOST)
    else:  # no attempt ended: the last one's outcome stays what it was
        assert job.last_outcome is before.last_outcome
        assert store.attempts_of(job_id) == attempts_before
    assert_counts_exact(store)


# -- attempts as stored ----------------------------------------------------------------------------


def test_attempts_of_records_outcome_signal_owner_and_host(store: Store) -> None:
    add(store, new_job("a", max_retries=5))
    first = store.claim_due("daemon-1", "host-a", 1, T0, LEASE_S)[0]
    finish(store, first, now=T0 + 1, outcome=Outcome(OutcomeKind.TIMEOUT, signal=9, error="timed out after 1s"))
    second = store.claim_due("daemon-2", "host-b", 1, T0 + 10, LEASE_S)[0]
    finish(store, second, now=T0 + 11, outcome=Outcome(OutcomeKind.SIGNAL, signal=11))
    third = store.claim_due("daemon-1", "host-a", 1, T0 + 20, LEASE_S)[0]
    finish(store, third, 0, now=T0 + 21)
    assert store.attempts_of("a") == [
        AttemptRecord(1, T0, T0 + 1, OutcomeKind.TIMEOUT, None, 9, "timed out after 1s", "daemon-1", "host-a"),
        AttemptRecord(2, T0 + 10, T0 + 11, OutcomeKind.SIGNAL, None, 11, "killed by SIGSEGV", "daemon-2", "host-b"),
        AttemptRecord(3, T0 + 20, T0 + 21, OutcomeKind.EXIT, 0, None, None, "daemon-1", "host-a"),
    ]
    job = store.get("a")
    assert (job.state, job.last_outcome, job.signal, job.exit_code, job.host) == (
        JobState.COMPLETED, OutcomeKind.EXIT, None, 0, "host-a")


# -- counters after every kind of change ---------------------------------------------------------


def test_counts_stay_exact_through_every_kind_of_outcome_and_action(store: Store) -> None:
    kinds = [
        Outcome(OutcomeKind.EXIT, exit_code=0), Outcome(OutcomeKind.EXIT, exit_code=3),
        Outcome(OutcomeKind.SIGNAL, signal=9), Outcome(OutcomeKind.TIMEOUT), Outcome(OutcomeKind.KILLED),
        Outcome(OutcomeKind.WORKER_LOST), Outcome(OutcomeKind.SPAWN_FAILED, error="no /bin/sh"),
        Outcome(OutcomeKind.CANCELED), Outcome(OutcomeKind.REQUEUED), Outcome(OutcomeKind.SNOOZED, snooze_s=5),
    ]
    ids = [f"{o.kind.value}-{i}" for i, o in enumerate(kinds)]
    add(store, *(new_job(job_id, max_retries=1 if i % 2 else 0, at=T0 + i / 100) for i, job_id in enumerate(ids)))
    running = {j.id: j for j in claim(store, now=T0 + 1, limit=100)}
    assert_counts_exact(store)
    for job_id, outcome in zip(ids, kinds, strict=True):
        finish(store, running[job_id], now=T0 + 2, outcome=outcome)
        assert_counts_exact(store)
    counts = store.counts()
    assert counts["processing"] == 0 and counts["completed"] == 1 and counts["canceled"] == 1
    assert store.release_strays(OWNER, [], T0 + 3) == []
    add(store, new_job("stray", priority=9, at=T0 + 3))
    assert [j.id for j in claim(store, now=T0 + 3, limit=1)] == ["stray"]
    assert store.release_strays(OWNER, [], T0 + 4) == [("stray", 1)]
    assert_counts_exact(store)
    dead = [j.id for j in store.list_jobs(JobState.DEAD, None)]
    assert len(dead) >= 3
    store.dlq_retry(dead[:1], T0 + 5)
    assert_counts_exact(store)
    store.dlq_retry_matching(DeadFilter(), T0 + 5, 1)
    assert_counts_exact(store)
    store.dlq_purge(dead[2:3])
    assert_counts_exact(store)
    store.dlq_purge_matching(DeadFilter(), 100)
    assert_counts_exact(store)
    store.checkpoint()
    assert assert_counts_exact(store)["dead"] == 0
