"""Why a waiting job is not running: one reason, the first that applies (Slurm's REASON column).

Pure: no I/O, no clock reads. The caller reads the job, its queue, its dependencies and the live
daemons, and passes `now`. The order is fixed: held; a dependency; its run time; its queue
paused; its queue full; no daemon claiming; every slot busy; else ready.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from queuectl.protocol import BlockedBy, BlockerKind
from queuectld.jobs import TERMINAL_STATES, Job, JobState
from queuectld.store.base import DaemonInfo, Dependency, QueueInfo

__all__ = ["WAITING_STATES", "explain", "in_words"]

#: The states of a job that waits to run; any other has no blocker.
WAITING_STATES = frozenset({JobState.PENDING, JobState.FAILED})


def explain(job: Job, queue: QueueInfo, dependencies: Sequence[Dependency], daemons: Sequence[DaemonInfo],
            now: float) -> BlockedBy | None:
    """The one reason `job` is not running now (None: it is not waiting). `queue` is the job's
    queue; `daemons` the live daemons sharing the store (their `claiming`, `slots`, `active`)."""
    if job.state not in WAITING_STATES:
        return None
    if job.held:
        return BlockedBy(kind=BlockerKind.HELD, message=f"held: release it with `queuectl release {job.id}`")
    blocker = _dependency(job, dependencies)
    if blocker is not None:
        return blocker
    if job.next_run_at is not None and job.next_run_at > now:
        when = datetime.fromtimestamp(job.next_run_at, tz=UTC)
        # The message to the nearest second: a time put at 22:30 may sit a hair before it (clock.py).
        shown = datetime.fromtimestamp(round(job.next_run_at), tz=UTC)
        return BlockedBy(kind=BlockerKind.NOT_BEFORE, not_before=when,
                         message=f"not before {shown:%Y-%m-%d %H:%M:%S} UTC ({in_words(job.next_run_at - now)})")
    if queue.paused:
        return BlockedBy(kind=BlockerKind.QUEUE_PAUSED,
                         message=f"queue {queue.name} is paused: resume it with `queuectl queue resume {queue.name}`")
    if queue.concurrency is not None and queue.running >= queue.concurrency:
        return BlockedBy(kind=BlockerKind.QUEUE_FULL, running=queue.running, limit=queue.concurrency,
                         message=f"queue at its concurrency ({queue.running}/{queue.concurrency})")
    claiming = [d for d in daemons if d.claiming]
    if not claiming:
        return BlockedBy(kind=BlockerKind.NO_DAEMON, message="no daemon is claiming (all stopped or none running)")
    busy = sum(min(d.active, d.slots) for d in claiming)
    total = sum(d.slots for d in claiming)
    if busy >= total:
        return BlockedBy(kind=BlockerKind.SLOTS_BUSY, running=busy, limit=total,
                         message=f"every slot busy on every live daemon ({busy}/{total})")
    return BlockedBy(kind=BlockerKind.READY, message="ready, starting now")


def _dependency(job: Job, dependencies: Sequence[Dependency]) -> BlockedBy | None:
    """The first dependency the job still waits for, in the order given. The store's count is
    the truth (a dependency restarted after it satisfied the job does not hold it again)."""
    if job.deps_left <= 0:
        return None
    for dep in dependencies:
        if dep.state is None:
            continue  # deleted: its dependents were canceled, or the edge no longer holds them
        done = dep.state in TERMINAL_STATES if dep.any_end else dep.state is JobState.COMPLETED
        if not done:
            return BlockedBy(kind=BlockerKind.DEPENDENCY, dependency=dep.dep_id, dependency_state=dep.state,
                             message=f"waiting for dependency {dep.dep_id} ({dep.state.value})")
    # The store counts an edge this listing did not show (read in between).
    return BlockedBy(kind=BlockerKind.DEPENDENCY, message=f"waiting for {job.deps_left} dependency(ies)")


def in_words(seconds: float) -> str:
    """A delay as people say it: "in 42 s", "in 12 min", "in 5 h", "in 3 d" (rounded up)."""
    if seconds < 90:
        return f"in {max(1, math.ceil(seconds))} s"
    if seconds < 90 * 60:
        return f"in {math.ceil(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"in {math.ceil(seconds / 3600)} h"
    return f"in {math.ceil(seconds / 86400)} d"
