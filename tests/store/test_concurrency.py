"""Store contract (7): several processes claiming from one database never get the same job twice.

Real processes (spawn, each with its own store and connections) stand in for several daemons;
threads would share one interpreter and could hide races in the database or the driver.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from queuectld.jobs import JobState
from queuectld.store.base import Store
from queuectld.store.open import open_store
from tests.store import claimer
from tests.store.helpers import T0, assert_counts_exact, new_job

JOBS = 2000
PROCESSES = 4
#: Generous: the children share two busy cores with everything else.
DEADLINE_S = 90

Report = tuple[str, list[str], int, "str | None"]


class Children:
    """PROCESSES spawned servers (see claimer.serve) that run one task each, all at once."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(PROCESSES)
        self.inboxes = [ctx.Queue() for _ in range(PROCESSES)]
        self.outbox = ctx.Queue()
        self.procs = [
            ctx.Process(target=claimer.serve, args=(inbox, self.outbox, self.barrier), daemon=True)
            for inbox in self.inboxes
        ]
        for p in self.procs:
            p.start()

    def run(self, task: str, args_of: list[tuple[Any, ...]]) -> list[Report]:
        """Give child i the task with args_of[i]; return every report (order of completion)."""
        for inbox, args in zip(self.inboxes, args_of, strict=True):
            inbox.put((task, args))
        reports = []
        for _ in self.procs:
            try:
                reports.append(self.outbox.get(timeout=DEADLINE_S))
            except queue.Empty:
                self.barrier.abort()
                pytest.fail(f"a child process did not report within {DEADLINE_S}s")
        return reports

    def stop(self) -> None:
        """Ask each child to exit; kill any that does not."""
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for q in (*self.inboxes, self.outbox):
            q.close()
            q.join_thread()


@pytest.fixture(scope="module")
def children() -> Iterator[Children]:
    """One set of child processes for the whole module (starting interpreters is the slow part)."""
    started = Children()
    try:
        yield started
    finally:
        started.stop()


def test_concurrent_claims_hand_each_job_out_once(children: Children, store_url: str, store: Store) -> None:
    ids = [f"job-{i:04d}" for i in range(JOBS)]
    store.enqueue([new_job(job_id, at=T0 + i * 1e-3) for i, job_id in enumerate(ids)], replace=False, now=T0)
    owners = [f"claimer-{n}" for n in range(PROCESSES)]
    reports = children.run("claim_until_empty", [(store_url, owner, T0 + 10) for owner in owners])

    errors = [err for _, _, _, err in reports if err]
    assert not errors, "\n".join(errors)
    claimed_by = {owner: got for owner, got, _, _ in reports}
    every_claim = Counter(job_id for got in claimed_by.values() for job_id in got)
    twice = sorted(job_id for job_id, n in every_claim.items() if n > 1)
    assert twice == [], f"{len(twice)} job(s) claimed more than once, e.g. {twice[:5]}"
    assert sorted(every_claim) == ids  # and none was left behind

    # The database agrees: one attempt each, owned by the process that was told it won.
    owner_of = {job_id: owner for owner, got in claimed_by.items() for job_id in got}
    for job in store.list_jobs(None, None):
        assert (job.state, job.run, job.owner) == (JobState.PROCESSING, 1, owner_of[job.id])
    assert assert_counts_exact(store)["processing"] == JOBS


def test_concurrent_first_opens_all_succeed(children: Children, store_url: str) -> None:
    # Daemons started together on an empty database must not trip over each other's migration.
    reports = children.run("open_store_once", [(store_url, f"opener-{n}") for n in range(PROCESSES)])
    errors = [err for _, _, _, err in reports if err]
    assert not errors, f"{len(errors)} of {PROCESSES} concurrent first opens failed; the first:\n{errors[0]}"
    store = open_store(store_url)
    try:
        store.enqueue([new_job("after")], replace=False, now=T0)
        assert assert_counts_exact(store)["pending"] == 1  # counters installed exactly once
    finally:
        store.close()
