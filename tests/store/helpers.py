"""Small helpers shared by the store contract tests: build jobs, claim, finish, check counters.

The store never reads the clock, so every test drives time explicitly from T0.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from queuectld.jobs import Job, JobState, LifecyclePolicy, Outcome, OutcomeKind, RetryPolicy
from queuectld.store.base import FinishedAttempt, NewJob, Store

#: A fixed "now" (2023-11-14): tests move time forward from here by passing `now`.
T0 = 1_700_000_000.0
OWNER = "daemon-1"
HOST = "host-a"
LEASE_S = 30.0
#: Backoff without jitter, so tests can name the exact due time of a retry.
POLICY = LifecyclePolicy(backoff=RetryPolicy(backoff_base=2, backoff_max_s=300, jitter=0.0))


def new_job(
    job_id: str,
    *,
    command: str = "true",
    max_retries: int = 3,
    priority: int = 0,
    timeout_s: float | None = None,
    at: float = T0,
    created_at: float | None = None,
    retry_rules: str | None = None,
    backoff_base: float | None = None,
    backoff_max_s: float | None = None,
) -> NewJob:
    """A job due at `at` (created then too, unless told otherwise)."""
    return NewJob(
        id=job_id,
        command=command,
        max_retries=max_retries,
        priority=priority,
        timeout_s=timeout_s,
        next_run_at=at,
        created_at=at if created_at is None else created_at,
        retry_rules=retry_rules,
        backoff_base=backoff_base,
        backoff_max_s=backoff_max_s,
    )


def add(store: Store, *jobs: NewJob | str, replace: bool = False, now: float = T0) -> list[str]:
    """Enqueue jobs (a bare string is a default job with that id) in one batch."""
    batch = [new_job(j, at=now) if isinstance(j, str) else j for j in jobs]
    return store.enqueue(batch, replace=replace, now=now).ids


def claim(
    store: Store, *, owner: str = OWNER, now: float = T0, limit: int = 100, lease_s: float = LEASE_S
) -> list[Job]:
    """Claim up to `limit` due jobs for `owner`."""
    return store.claim_due(owner, HOST, limit, now, lease_s)


def claim_one(store: Store, job_id: str, *, owner: str = OWNER, now: float = T0) -> Job:
    """Claim, expecting exactly `job_id` to be the one due job."""
    got = claim(store, owner=owner, now=now)
    assert [j.id for j in got] == [job_id]
    return got[0]


def finish(
    store: Store,
    job: Job,
    exit_code: int | None = 1,
    *,
    now: float,
    outcome: Outcome | None = None,
    owner: str | None = None,
    run: int | None = None,
    output_tail: str | None = None,
    policy: LifecyclePolicy = POLICY,
) -> Job | None:
    """Record the end of `job`'s current attempt (fenced on its run and owner unless overridden):
    `outcome`, or by default the shell exiting with `exit_code`."""
    attempt = FinishedAttempt(
        job_id=job.id,
        run=job.run if run is None else run,
        owner=(job.owner or "") if owner is None else owner,
        outcome=Outcome(OutcomeKind.EXIT, exit_code=exit_code) if outcome is None else outcome,
        finished_at=now,
        output_tail=output_tail,
    )
    [(echo, after)] = store.finish([attempt], policy)
    assert echo == attempt
    return after


def requeue(store: Store, job: Job, *, now: float) -> Job | None:
    """End `job`'s attempt as requeued (worker stop --now): the path that replaced `release`."""
    return finish(store, job, now=now, outcome=Outcome(OutcomeKind.REQUEUED, error="stopped by `worker stop --now`"))


def assert_counts_exact(store: Store) -> dict[str, int]:
    """counts() must equal a real count of the rows, per state (and list every state)."""
    real = Counter(j.state.value for j in store.list_jobs(None, None))
    expected = {state.value: real.get(state.value, 0) for state in JobState}
    got = store.counts()
    assert got == expected
    return got


@contextmanager
def announcements(store_url: str) -> Iterator[threading.Event]:
    """A peer store on `store_url` listening for announcements: the event is set at each one
    (cleared once the listener has connected, which itself calls once)."""
    from queuectld.store.open import open_store

    peer = open_store(store_url)
    heard = threading.Event()
    stop = peer.listen(heard.set)
    try:
        assert heard.wait(10)  # the listener calls once on connecting
        heard.clear()
        yield heard
    finally:
        stop()
        peer.close()
