"""Child processes for the concurrency tests (a module of its own: spawn imports it by name).

Each child is a long-lived server so the tests pay the interpreter start-up once: it takes a task
from its inbox, runs it and reports. Every task opens its own store on the shared database, as a
separate daemon would, then waits at a shared barrier so that all children race at once.
"""

from __future__ import annotations

import random
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from queuectl.errors import StoreBusy
from queuectld.store import postgres, schema, sqlite  # noqa: F401  # imported at start-up, not during a race
from queuectld.store.open import open_store

# Alembic and its revision scripts load at start-up too, so that the first opens race for real.
schema._script().get_current_head()

#: A claim that keeps finding the store busy this many times in a row is a failure, not contention.
MAX_BUSY_IN_A_ROW = 50


def serve(inbox: Queue[Any], outbox: Queue[Any], barrier: Barrier) -> None:
    """Run tasks ("function name", args) from `inbox` until None; put each report on `outbox`."""
    while (task := inbox.get()) is not None:
        name, args = task
        try:
            outbox.put(TASKS[name](barrier, *args))
        except BaseException:
            outbox.put((None, [], 0, traceback.format_exc()))


def claim_until_empty(barrier: Barrier, url: str, owner: str, now: float) -> tuple[str, list[str], int, str | None]:
    """Claim small random batches until nothing is due; report (owner, ids, busy count, error)."""
    ids: list[str] = []
    busy = 0
    try:
        store = open_store(url)
        try:
            rng = random.Random(owner)
            barrier.wait(60)  # opened (and migrated) by everyone: now race
            in_a_row = 0
            while True:
                try:
                    got = store.claim_due(owner, "host", rng.randint(1, 8), now, 600.0)
                except StoreBusy:
                    # StoreBusy means "nothing changed, try again": a daemon retries; so do we.
                    busy += 1
                    in_a_row += 1
                    if in_a_row >= MAX_BUSY_IN_A_ROW:
                        raise
                    continue
                in_a_row = 0
                if not got:
                    break
                for job in got:
                    assert job.owner == owner, (job.id, job.owner)
                ids.extend(j.id for j in got)
        finally:
            store.close()
    except BaseException:
        return owner, ids, busy, traceback.format_exc()
    return owner, ids, busy, None


def open_store_once(barrier: Barrier, url: str, owner: str) -> tuple[str, list[str], int, str | None]:
    """Open (and so migrate) the store at the same moment as the other children."""
    try:
        barrier.wait(60)
        open_store(url).close()
    except BaseException:
        return owner, [], 0, traceback.format_exc()
    return owner, [], 0, None


TASKS = {"claim_until_empty": claim_until_empty, "open_store_once": open_store_once}
