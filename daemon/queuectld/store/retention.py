"""Retention: deleting ended jobs, inside a write transaction the store opened, in batches.

A job is taken when it ended (completed, canceled, dead) in the state asked for, before the
cutoff, and no job that has not ended yet depends on it: deleting a dependency cancels its
waiting dependents ("dependency X was deleted"), which retention must never do on its own. The
rows go oldest ended first, on the partial index `ix_jobs_ended` (revision 0007), so a batch
reads about as many index entries as it deletes, at any table size.

Several daemons may prune one PostgreSQL database at once: the rows a batch takes are locked
with SKIP LOCKED, so two batches never wait for each other nor take the same job, and the
DELETE is conditional on the state, so a row changed meanwhile (a `dlq retry`) is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, exists, func, not_, or_, select

from queuectld.jobs import TERMINAL_STATES, JobState
from queuectld.store import workflow
from queuectld.store.base import CleanFilter, Pruned
from queuectld.store.models import attempts, job_deps, jobs
from queuectld.store.rows import chunks

_ENDED = sorted(s.value for s in TERMINAL_STATES)


def conditions(where: CleanFilter) -> list[Any]:
    """The conditions of `where`: ended in its state before its cutoff, in its queue and with its
    label when given, and not a dependency of a job that has not ended."""
    if where.state not in TERMINAL_STATES:
        raise ValueError(f"{where.state.value} jobs have not ended; only ended jobs are cleaned")
    waiting = jobs.alias("waiting")
    has_waiting_dependent = exists(
        select(1).select_from(job_deps.join(waiting, waiting.c.id == job_deps.c.job_id))
        .where(job_deps.c.dep_id == jobs.c.id, waiting.c.state.not_in(_ENDED))
    )
    conds: list[Any] = [
        jobs.c.state == where.state.value,
        # has_dependents is 0 for nearly every job: the dependency check costs nothing then.
        or_(jobs.c.has_dependents == 0, not_(has_waiting_dependent)),
    ]
    if where.finished_before is not None:
        conds.append(jobs.c.finished_at < where.finished_before)
    conds.extend(workflow.job_conditions(where.job_filter()))
    return conds


def take(conn: Connection, where: CleanFilter, limit: int, *, skip_locked: bool) -> list[Pruned]:
    """Delete up to `limit` jobs matching `where`, oldest ended first, with their attempts, labels
    and own dependency edges; returns what was deleted (their log files are the caller's)."""
    query = (select(jobs.c.id, jobs.c.state, jobs.c.run, jobs.c.has_dependents)
             .where(*conditions(where)).order_by(jobs.c.finished_at).limit(limit))
    rows = conn.execute(query.with_for_update(skip_locked=True) if skip_locked else query).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    for chunk in chunks(ids):
        conn.execute(delete(attempts).where(attempts.c.job_id.in_(chunk)))
        conn.execute(delete(jobs).where(jobs.c.id.in_(chunk), jobs.c.state == where.state.value))
    workflow.forget_jobs(conn, ids)
    return [Pruned(r.id, JobState(r.state), r.run, bool(r.has_dependents)) for r in rows]


def preview(conn: Connection, where: CleanFilter, limit: int) -> tuple[int, list[str]]:
    """How many jobs `where` takes now, and the ids of the first `limit` of them (oldest ended first)."""
    conds = conditions(where)
    count = conn.execute(select(func.count()).select_from(jobs).where(*conds)).scalar_one()
    ids = conn.execute(select(jobs.c.id).where(*conds).order_by(jobs.c.finished_at).limit(limit)).scalars().all()
    return int(count), list(ids)


def runs_of(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
    """The attempts started so far (`run`) of each job among `ids` that exists."""
    out: dict[str, int] = {}
    for chunk in chunks(list(ids)):
        out.update((r.id, r.run) for r in conn.execute(select(jobs.c.id, jobs.c.run).where(jobs.c.id.in_(chunk))))
    return out


__all__ = ["conditions", "preview", "runs_of", "take"]
