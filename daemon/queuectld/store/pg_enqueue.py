"""PostgreSQL's enqueue of a small batch without dependencies: one statement, one round trip.

Over SQLAlchemy an enqueue of one job costs six round trips to the server (the pool's ping,
BEGIN, the queue check, the INSERT, NOTIFY, COMMIT) and as many statement compilations and
executions in Python; most of its 2-5 ms were waiting on them. Here the whole enqueue is one
statement on the driver, run outside an explicit transaction (autocommit: the statement is
its own transaction, and its commit is part of its answer): the queues are locked FOR KEY
SHARE (as `queues.require_queues` does) in a CTE, and the environment snapshots, the jobs and
their labels are inserted from arrays (one bind parameter per column, whatever the batch's
size), each only if every queue was found; NOTIFY goes with it (`pg_notify`).

One job without labels (most `job.enqueue` calls) has a statement of its own with one bind
parameter per field, ENQUEUE_ONE: the same writes without the arrays, whose dumping and
unnesting were a quarter of the statement's round trip (0.46 -> 0.35 ms, measured on the
driver). The contract suite runs both (a single job and a batch).

A batch with dependencies, a replace, or one of COPY's size (workflow.COPY_FROM) takes the
shared path. A job whose id exists fails the statement (unique violation) and nothing of it is
written: the caller then takes the shared path, which sorts repeats from conflicts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from queuectl.errors import OutcomeUnknown, QueueNotFound
from queuectld.jobs import JobState
from queuectld.store.base import EnvSnapshot, NewJob
from queuectld.store.errors import describe
from queuectld.store.rows import unique

#: The columns both statements insert a job's row into, in the order of their SELECTs.
_JOB_COLUMNS = ("id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, "
                "run, retry_rules, backoff_base, backoff_max_s, queue, cwd, env_id, labels, held, deps_left, has_dependents")
#: Every queue of the batch was found (`q` holds them, locked): the guard of each insert.
_FOUND = "(SELECT count(*) FROM q) = %(n_queues)s"

ENQUEUE = f"""
WITH q AS (
    SELECT name FROM queues WHERE name = ANY(%(queues)s::text[]) FOR KEY SHARE
), e AS (
    INSERT INTO envs (id, clean, vars)
    SELECT * FROM unnest(%(e_id)s::text[], %(e_clean)s::int[], %(e_vars)s::text[]) WHERE {_FOUND}
    ON CONFLICT (id) DO NOTHING
), j AS (
    INSERT INTO jobs ({_JOB_COLUMNS})
    SELECT n.id, n.command, '{JobState.PENDING.value}', 0, n.max_retries, n.priority, n.timeout_s, n.next_run_at,
           n.created_at, %(now)s, 0, n.retry_rules, n.backoff_base, n.backoff_max_s, n.queue, n.cwd, n.env_id,
           n.labels, n.held, 0, 0
      FROM unnest(%(id)s::text[], %(command)s::text[], %(max_retries)s::int[], %(priority)s::int[],
                  %(timeout_s)s::float8[], %(next_run_at)s::float8[], %(created_at)s::float8[],
                  %(retry_rules)s::text[], %(backoff_base)s::float8[], %(backoff_max_s)s::float8[],
                  %(queue)s::text[], %(cwd)s::text[], %(env_id)s::text[], %(labels)s::text[], %(held)s::int[])
           AS n(id, command, max_retries, priority, timeout_s, next_run_at, created_at, retry_rules, backoff_base,
                backoff_max_s, queue, cwd, env_id, labels, held)
     WHERE {_FOUND}
), l AS (
    INSERT INTO job_labels (label, job_id)
    SELECT * FROM unnest(%(l_label)s::text[], %(l_job)s::text[]) WHERE {_FOUND}
)
SELECT array(SELECT name FROM q), CASE WHEN %(announce)s AND {_FOUND} THEN pg_notify(%(channel)s, %(announcer)s) END
"""


ENQUEUE_ONE = f"""
WITH q AS (
    SELECT name FROM queues WHERE name = %(queue)s::text FOR KEY SHARE
), e AS (
    INSERT INTO envs (id, clean, vars)
    SELECT %(e_id)s::text, %(e_clean)s::int, %(e_vars)s::text FROM q WHERE %(e_id)s::text IS NOT NULL
    ON CONFLICT (id) DO NOTHING
), j AS (
    INSERT INTO jobs ({_JOB_COLUMNS})
    SELECT %(id)s::text, %(command)s::text, '{JobState.PENDING.value}', 0, %(max_retries)s::int, %(priority)s::int,
           %(timeout_s)s::float8, %(next_run_at)s::float8, %(created_at)s::float8, %(now)s::float8, 0,
           %(retry_rules)s::text, %(backoff_base)s::float8, %(backoff_max_s)s::float8, q.name, %(cwd)s::text,
           %(env_id)s::text, NULL, %(held)s::int, 0, 0
      FROM q
)
SELECT array(SELECT name FROM q),
       CASE WHEN %(announce)s::bool AND EXISTS (SELECT 1 FROM q) THEN pg_notify(%(channel)s::text, %(announcer)s::text) END
"""


def _vars_json(snapshot: EnvSnapshot) -> str:
    """An environment snapshot's variables as the envs row stores them."""
    return json.dumps(snapshot.vars, sort_keys=True, ensure_ascii=False)


def one_params(job: NewJob, now: float, envs: Sequence[EnvSnapshot], channel: str, announcer: str) -> dict[str, Any]:
    """The bind parameters of ENQUEUE_ONE for `job` (no labels, no dependencies) and its snapshot
    (`envs` holds no other)."""
    snapshot = next((e for e in envs if e.id == job.env_id), None) if job.env_id is not None else None
    return {
        "queue": job.queue, "now": now, "channel": channel, "announcer": announcer, "announce": not job.held,
        "e_id": None if snapshot is None else snapshot.id, "e_clean": None if snapshot is None else int(snapshot.clean),
        "e_vars": None if snapshot is None else _vars_json(snapshot),
        "id": job.id, "command": job.command, "max_retries": job.max_retries, "priority": job.priority,
        "timeout_s": job.timeout_s, "next_run_at": job.next_run_at, "created_at": job.created_at,
        "retry_rules": job.retry_rules, "backoff_base": job.backoff_base, "backoff_max_s": job.backoff_max_s,
        "cwd": job.cwd, "env_id": job.env_id, "held": int(job.held),
    }


def params(new: Sequence[NewJob], now: float, envs: Sequence[EnvSnapshot], channel: str,
           announcer: str) -> dict[str, Any]:
    """The bind parameters of ENQUEUE for `new` (no dependencies) and their snapshots; `announcer`
    is the NOTIFY payload (PostgresStore.announcer)."""
    queues = unique([j.queue for j in new])
    snapshots = list({e.id: e for e in envs}.values())
    labels = [(label, j.id) for j in new if j.labels for label in j.labels.split(",")]
    return {
        "queues": queues, "n_queues": len(queues), "now": now, "channel": channel, "announcer": announcer,
        "announce": any(not j.held for j in new),
        "e_id": [e.id for e in snapshots], "e_clean": [int(e.clean) for e in snapshots],
        "e_vars": [_vars_json(e) for e in snapshots],
        "id": [j.id for j in new], "command": [j.command for j in new], "max_retries": [j.max_retries for j in new],
        "priority": [j.priority for j in new], "timeout_s": [j.timeout_s for j in new],
        "next_run_at": [j.next_run_at for j in new], "created_at": [j.created_at for j in new],
        "retry_rules": [j.retry_rules for j in new], "backoff_base": [j.backoff_base for j in new],
        "backoff_max_s": [j.backoff_max_s for j in new], "queue": [j.queue for j in new],
        "cwd": [j.cwd for j in new], "env_id": [j.env_id for j in new], "labels": [j.labels for j in new],
        "held": [int(j.held) for j in new],
        "l_label": [label for label, _ in labels], "l_job": [job_id for _, job_id in labels],
    }


def check_queues(wanted: Sequence[str], found: Sequence[str]) -> None:
    """QueueNotFound for the first of `wanted` the statement did not find (then it wrote nothing)."""
    have = set(found)
    for name in wanted:
        if name not in have:
            raise QueueNotFound(name=name)


def answer_lost(exc: BaseException) -> OutcomeUnknown | None:
    """OutcomeUnknown when a driver error of the autocommit statement may hide its commit: the
    connection failed (no SQLSTATE) or the server ended the session (FATAL, PANIC) while it ran.
    An ERROR with a SQLSTATE aborted the statement's own transaction: nothing was written (None:
    translate it as any statement error)."""
    diag = getattr(exc, "diag", None)
    state = getattr(exc, "sqlstate", None)
    severity = getattr(diag, "severity_nonlocalized", None) if diag is not None else None
    if state and severity == "ERROR":
        return None
    return OutcomeUnknown(detail=describe(exc))
