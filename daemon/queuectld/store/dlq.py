"""The dead-letter queue's bulk actions, inside a write transaction the store opened: retry and
purge, by ids (all or none) or by a DeadFilter (up to a limit per transaction).

A retry is `jobs.on_dlq_retry`'s Decision, written as it says; the per-state counters follow by
the dialect's triggers, as for every change. Id lists are cut into chunks for the drivers'
bound-parameter limits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, delete, select, update

from queuectl.errors import InvalidParams, InvalidState, JobNotFound
from queuectld.jobs import Decision, Job, JobState, on_dlq_retry
from queuectld.store import queues as queue_store
from queuectld.store import workflow
from queuectld.store.base import DeadFilter, JobFilter
from queuectld.store.models import attempts, jobs
from queuectld.store.rows import LIST_COLUMNS, chunks, job_from_row, unique

_DEAD = JobState.DEAD.value
#: What a retried job forgets besides the Decision's fields: how its last attempt ended.
_FORGOTTEN = {"finished_at": None, "exit_code": None, "signal": None, "last_outcome": None}


def retry(conn: Connection, ids: Sequence[str], now: float, command: str | None,
          with_dependents: bool = False) -> list[Job]:
    """Retry every one of `ids` (all dead), `command` first replacing the command of the only one;
    JobNotFound / InvalidState for the first id that is missing / not dead, and nothing changes.
    `with_dependents`: the jobs canceled because one of them ended (transitively) are restarted
    too, after them in the result (DependencyFailed / DependencyNotFound if one of those still
    has a dependency that can never be met, and nothing changes)."""
    ids = unique(ids)
    if command is not None and len(ids) != 1:
        raise InvalidParams(detail="a new command can be given for one job only")
    found = _read(conn, ids, whole=True)  # the jobs come back whole, output tail included
    for job_id in ids:
        if job_id not in found:
            raise JobNotFound(job_id=job_id)
    retried = _retry(conn, [found[job_id] for job_id in ids], now, command)
    dependents = workflow.canceled_dependents(conn, ids) if with_dependents else []
    back = workflow.put_back(conn, dependents, now)[0] if dependents else []
    workflow.refresh_dependents(conn, ids, {*ids, *(job.id for job in back)}, now)
    return retried + back


def retry_matching(conn: Connection, where: DeadFilter, now: float, limit: int) -> list[str]:
    """Retry up to `limit` dead jobs matching `where`, oldest first; returns their ids."""
    rows = conn.execute(_matching(where, limit)).all()
    ids = [job.id for job in _retry(conn, [job_from_row(r) for r in rows], now, None)]
    workflow.refresh_dependents(conn, ids, set(ids), now)
    return ids


def purge(conn: Connection, ids: Sequence[str]) -> list[Job]:
    """Delete every one of `ids` (all dead) with its attempts; JobNotFound / InvalidState for
    the first that is missing / not dead, and nothing is deleted. Returns the jobs as they were."""
    ids = unique(ids)
    chosen = workflow.every_job(ids, _read(conn, ids))
    for job in chosen:
        if job.state is not JobState.DEAD:
            raise InvalidState(job_id=job.id, state=job.state.value, action="dlq purge (only dead jobs are purged)")
    _delete(conn, ids)
    return chosen


def purge_matching(conn: Connection, where: DeadFilter, limit: int) -> list[Job]:
    """Delete up to `limit` dead jobs matching `where`, oldest first, with their attempts."""
    gone = [job_from_row(r) for r in conn.execute(_matching(where, limit)).all()]
    _delete(conn, [job.id for job in gone])
    return gone


def dead_filter(where: DeadFilter) -> list[Any]:
    """The conditions of `where` on dead jobs: finished_after inclusive, finished_before exclusive."""
    conds: list[Any] = [jobs.c.state == _DEAD]
    if where.outcome is not None:
        conds.append(jobs.c.last_outcome == where.outcome.value)
    if where.finished_after is not None:
        conds.append(jobs.c.finished_at >= where.finished_after)
    if where.finished_before is not None:
        conds.append(jobs.c.finished_at < where.finished_before)
    conds.extend(workflow.job_conditions(JobFilter(queue=where.queue, label=where.label)))
    return conds


def _matching(where: DeadFilter, limit: int) -> Any:
    # Oldest first on ix_jobs_state_created; locked, so a peer's action cannot take them too.
    return (select(*LIST_COLUMNS).where(*dead_filter(where)).order_by(jobs.c.created_at, jobs.c.id)
            .limit(limit).with_for_update())


def _read(conn: Connection, ids: Sequence[str], *, whole: bool = False) -> dict[str, Job]:
    found: dict[str, Job] = {}
    columns = list(jobs.c) if whole else LIST_COLUMNS
    for chunk in chunks(ids):
        rows = conn.execute(select(*columns).where(jobs.c.id.in_(chunk)).with_for_update())
        found.update((r.id, job_from_row(r)) for r in rows)
    return found


def _retry(conn: Connection, dead: Sequence[Job], now: float, command: str | None) -> list[Job]:
    """Write each job's on_dlq_retry Decision (InvalidState before any write if one is not dead,
    QueueNotFound if its queue was removed meanwhile):
    one UPDATE per chunk of jobs sharing a decision (they all do, at one `now`)."""
    decided = [(job, on_dlq_retry(job, now)) for job in dead]
    # A removed queue keeps its finished jobs' names; back in it, they would wait forever.
    queue_store.require_queues(conn, sorted({job.queue for job in dead}))
    by_decision: dict[Decision, list[str]] = defaultdict(list)
    for job, decision in decided:
        by_decision[decision].append(job.id)
    extra: dict[str, Any] = dict(_FORGOTTEN, **({"command": command} if command is not None else {}))
    for decision, ids in by_decision.items():
        for chunk in chunks(ids):
            conn.execute(
                update(jobs).where(jobs.c.id.in_(chunk), jobs.c.state == _DEAD).values(
                    state=decision.state.value, attempts=decision.attempts, next_run_at=decision.next_run_at,
                    last_error=decision.last_error, updated_at=now, **extra,
                )
            )
    return [
        replace(job, state=d.state, attempts=d.attempts, next_run_at=d.next_run_at, last_error=d.last_error,
                updated_at=now, **extra)
        for job, d in decided
    ]


def _delete(conn: Connection, ids: Sequence[str]) -> None:
    for chunk in chunks(ids):
        conn.execute(delete(attempts).where(attempts.c.job_id.in_(chunk)))
        conn.execute(delete(jobs).where(jobs.c.id.in_(chunk), jobs.c.state == _DEAD))
