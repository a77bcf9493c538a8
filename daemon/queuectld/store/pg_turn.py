"""PostgreSQL's turn statements on the driver, pipelined: a turn costs three round trips.

Over SQLAlchemy a turn that ended one attempt and claimed one job sent eleven statements, each a
round trip to the server and a statement compilation and execution in Python: BEGIN, the pids,
the ended jobs (locked), their job rows, their attempt rows, the limited-queue check, the queue
locks, the claim, the claimed attempt rows, COMMIT. Waiting on them was most of the writer
thread's time, and the writer thread was what bounded PostgreSQL end to end.

Here each write takes all its rows in one statement (arrays, one bind parameter per column:
never near the 65,535 parameter limit), and the statements are sent in psycopg's pipeline mode:
a statement whose answer the turn does not read is queued, and goes with the next one it reads.
So a turn is three round trips: [BEGIN, pids, ended jobs locked], [job and attempt rows of the
ends, NOTIFY, queue locks, claim], [the claimed jobs' attempt rows, COMMIT]. The queue locks stay a statement of their own before the claim: the
claim must take its snapshot after they are granted (READ COMMITTED gives each statement its
own), so that it sees the jobs a peer's claim took while it waited (see postgres.py).

The rare steps (the dependents of an ended job, strays, a paused queue's running jobs) leave
pipeline mode and run over SQLAlchemy on the same connection and transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import ExitStack
from typing import Any

from sqlalchemy import Connection, select

from queuectld.jobs import Job, JobState
from queuectld.store import workflow
from queuectld.store.base import RunKey, SpawnedAttempt
from queuectld.store.models import jobs
from queuectld.store.rows import JOB_COLUMNS_SQL, row_job
from queuectld.store.turn import Settled

_RECORD_PROCESSES = """
UPDATE jobs SET pid = u.pid, proc_start = u.proc_start
  FROM unnest(%(id)s::text[], %(run)s::int[], %(owner)s::text[], %(pid)s::int[], %(proc_start)s::int[])
       AS u(id, run, owner, pid, proc_start)
 WHERE jobs.id = u.id AND jobs.run = u.run AND jobs.owner = u.owner AND jobs.state = 'processing'
"""
_PROCESSING = f"SELECT {JOB_COLUMNS_SQL} FROM jobs WHERE id = ANY(%(ids)s::text[]) AND state = 'processing' FOR UPDATE"
# Fenced again on (id, run, owner, processing), as every attempt write is; the attempt rows of
# the same ends in the same statement.
_WRITE_ENDS = """
WITH e AS (
    SELECT * FROM unnest(%(id)s::text[], %(run)s::int[], %(owner)s::text[], %(state)s::text[], %(attempts)s::int[],
                         %(next_run_at)s::float8[], %(last_error)s::text[], %(exit_code)s::int[], %(signal)s::int[],
                         %(outcome)s::text[], %(finished_at)s::float8[], %(output_tail)s::text[], %(error)s::text[])
             AS e(id, run, owner, state, attempts, next_run_at, last_error, exit_code, signal, outcome, finished_at,
                  output_tail, error)
), j AS (
    UPDATE jobs SET state = e.state, attempts = e.attempts, next_run_at = e.next_run_at, last_error = e.last_error,
                    exit_code = e.exit_code, signal = e.signal, last_outcome = e.outcome, finished_at = e.finished_at,
                    updated_at = e.finished_at, output_tail = e.output_tail, owner = NULL, lease_expires_at = NULL,
                    pid = NULL, proc_start = NULL
      FROM e WHERE jobs.id = e.id AND jobs.run = e.run AND jobs.owner = e.owner AND jobs.state = 'processing'
)
UPDATE attempts SET finished_at = e.finished_at, outcome = e.outcome, exit_code = e.exit_code, signal = e.signal,
                    error = e.error
  FROM e WHERE attempts.job_id = e.id AND attempts.attempt = e.run
"""
#: NOTIFY at commit if one of the queues has a concurrency limit (see TurnWrites.announce_freed).
_ANNOUNCE_FREED = """
SELECT pg_notify(%(channel)s, %(announcer)s) FROM queues
 WHERE name = ANY(%(queues)s::text[]) AND concurrency IS NOT NULL LIMIT 1
"""
# Before the claim, in the same transaction: lock the rows of the queues with a limit, in name
# order (no deadlock between claimers). A second daemon's claim waits here until the first one
# commits; its claim statement then runs on a new snapshot (READ COMMITTED) that sees the jobs
# the first one took, so the two never exceed a limit together. FOR NO KEY UPDATE conflicts with
# itself but not with the FOR KEY SHARE an enqueue takes to check that its queue exists.
LOCK_LIMITED = "SELECT name FROM queues WHERE concurrency IS NOT NULL AND paused = 0 ORDER BY name FOR NO KEY UPDATE"
# The claim: each queue that is not paused contributes at most its share (its room under its
# limit, counted on ix_jobs_running, or the whole claim) of due claimable rows, walked in order on
# ix_jobs_due and locked SKIP LOCKED; of those, priority first, then a fair turn between queues
# (the n-th due job of each queue at that priority before any queue's n+1-th), then due time.
CLAIM = """
WITH room AS (
    SELECT q.name, CASE WHEN q.concurrency IS NULL THEN %(limit)s
                        ELSE LEAST(%(limit)s, q.concurrency - (SELECT count(*) FROM jobs r
                                                             WHERE r.queue = q.name AND r.state = 'processing'))
                   END AS n
      FROM queues q WHERE q.paused = 0
), due AS (
    SELECT c.id, c.priority, c.next_run_at,
           row_number() OVER (PARTITION BY c.queue, c.priority ORDER BY c.next_run_at) AS turn
      FROM room CROSS JOIN LATERAL (
           SELECT j.id, j.queue, j.priority, j.next_run_at FROM jobs j
            WHERE j.queue = room.name AND j.state IN ('pending', 'failed') AND j.held = 0 AND j.deps_left = 0
              AND j.next_run_at <= %(now)s
            ORDER BY j.priority DESC, j.next_run_at
            LIMIT GREATEST(room.n, 0)
            FOR UPDATE SKIP LOCKED) c
), picked AS (
    SELECT id FROM due ORDER BY priority DESC, turn, next_run_at LIMIT %(limit)s
)
UPDATE jobs
   SET state = 'processing', owner = %(owner)s, host = %(host)s, lease_expires_at = %(lease)s,
       run = run + 1, started_at = %(now)s, updated_at = %(now)s, pid = NULL, proc_start = NULL
  FROM picked WHERE jobs.id = picked.id
RETURNING """ + ", ".join(f"jobs.{name}" for name in JOB_COLUMNS_SQL.split(", "))
#: The claimed jobs' attempt rows: queued after the claim is read, so they go with the COMMIT.
_START_ATTEMPTS = """
INSERT INTO attempts (job_id, attempt, started_at, owner, host)
SELECT id, run, %(now)s, %(owner)s, %(host)s FROM unnest(%(id)s::text[], %(run)s::int[]) AS u(id, run)
"""


def unusable(raw: Any) -> bool:
    """Whether a psycopg connection is closed or its session is lost (no more statements on it)."""
    import psycopg

    return bool(raw.closed) or raw.pgconn.status != psycopg.pq.ConnStatus.OK


class PgTurnWrites:
    """TurnWrites on the psycopg connection of a SQLAlchemy write transaction (PostgreSQL's one
    write path of a turn), in pipeline mode until a step needs SQLAlchemy; `close()` ends it."""

    def __init__(self, conn: Connection, channel: str, announcer: str) -> None:
        self.conn = conn
        self.channel = channel  #: where this queue's daemons listen (postgres.channel_of)
        self.announcer = announcer  #: the NOTIFY payload: PostgresStore.announcer (hex, no quoting needed)
        self._raw: Any = conn.connection.dbapi_connection
        self._pipeline = ExitStack()
        self._piped = False

    # -- the transaction ------------------------------------------------------------------------
    # The driver connection is in autocommit mode while the turn runs (postgres.py sets it): psycopg
    # would send a BEGIN of its own and wait for its answer, even in pipeline mode. So BEGIN and
    # COMMIT are the turn's own statements, queued with the others.

    def begin(self) -> None:
        """Queue BEGIN (sent with the turn's first statement that is read)."""
        self._send("BEGIN ISOLATION LEVEL READ COMMITTED")

    def commit(self) -> None:
        """Queue COMMIT and leave pipeline mode: what is still queued goes with it, in one round
        trip, and the first error among them is raised here (see postgres.py for what it means)."""
        self._send("COMMIT")
        self.close()

    def rollback(self) -> None:
        """After a failure: leave pipeline mode (its own errors are the failure's) and roll back."""
        try:
            self.close()
        except Exception:  # noqa: BLE001  # the failure being raised already says what went wrong
            pass
        if not unusable(self._raw):
            self._raw.rollback()  # ROLLBACK unless the server has no transaction open

    # -- pipeline mode --------------------------------------------------------------------------

    def _send(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Queue a statement whose answer is not read (sent with the next one that is)."""
        self._pipe()
        self._raw.execute(sql, params)

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run a statement, with everything queued before it, in one round trip; its rows."""
        self._pipe()
        with self._raw.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _pipe(self) -> None:
        if not self._piped:
            self._pipeline.enter_context(self._raw.pipeline())
            self._piped = True

    def close(self) -> None:
        """Leave pipeline mode: what is still queued is sent, and its errors raised, here."""
        if self._piped:
            self._piped = False
            self._pipeline.close()

    def _sqlalchemy(self) -> Connection:
        """The transaction's SQLAlchemy connection, out of pipeline mode (for the rare steps)."""
        self.close()
        return self.conn

    # -- TurnWrites -----------------------------------------------------------------------------

    def record_processes(self, spawned: Sequence[SpawnedAttempt]) -> None:
        """See TurnWrites."""
        self._send(_RECORD_PROCESSES, {
            "id": [sp.job_id for sp in spawned], "run": [sp.run for sp in spawned],
            "owner": [sp.owner for sp in spawned], "pid": [sp.pid for sp in spawned],
            "proc_start": [sp.proc_start for sp in spawned],
        })

    def processing(self, ids: Sequence[str]) -> dict[str, Job]:
        """See TurnWrites."""
        return {row[0]: row_job(row) for row in self._rows(_PROCESSING, {"ids": list(ids)})}

    def held_by(self, owner: str) -> list[RunKey]:
        """See TurnWrites."""
        rows = self._sqlalchemy().execute(
            select(jobs.c.id, jobs.c.run).where(jobs.c.owner == owner, jobs.c.state == JobState.PROCESSING.value)
        )
        return [(r.id, r.run) for r in rows]

    def write_ends(self, settled: Sequence[Settled]) -> None:
        """See TurnWrites."""
        fas = [s.finished for s in settled]
        decisions = [s.decision for s in settled]
        self._send(_WRITE_ENDS, {
            "id": [fa.job_id for fa in fas], "run": [fa.run for fa in fas], "owner": [fa.owner for fa in fas],
            "state": [d.state.value for d in decisions], "attempts": [d.attempts for d in decisions],
            "next_run_at": [d.next_run_at for d in decisions], "last_error": [d.last_error for d in decisions],
            "exit_code": [fa.outcome.exit_code for fa in fas], "signal": [fa.outcome.signal for fa in fas],
            "outcome": [fa.outcome.kind.value for fa in fas], "finished_at": [fa.finished_at for fa in fas],
            "output_tail": [fa.output_tail for fa in fas], "error": [s.attempt_error for s in settled],
        })

    def claim(self, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        """See TurnWrites."""
        self._send(LOCK_LIMITED)
        rows = self._rows(CLAIM, {"owner": owner, "host": host, "lease": now + lease_s, "now": now, "limit": limit})
        claimed = [row_job(row) for row in rows]
        if claimed:
            self._send(_START_ATTEMPTS, {"id": [j.id for j in claimed], "run": [j.run for j in claimed],
                                         "now": now, "owner": owner, "host": host})
        return claimed

    def announce(self) -> None:
        """See TurnWrites. (Delivered at commit, and only if the transaction commits.)"""
        self._send(f"NOTIFY {self.channel}, '{self.announcer}'")

    def dependencies_ended(self, ended: Sequence[tuple[str, JobState]], now: float) -> bool:
        """See TurnWrites."""
        return workflow.apply_dependency_ends(workflow.SqlDependencyWrites(self._sqlalchemy()), ended, now)

    def announce_freed(self, queues: Collection[str]) -> None:
        """See TurnWrites."""
        self._send(_ANNOUNCE_FREED, {"channel": self.channel, "announcer": self.announcer, "queues": sorted(queues)})

    def running_in(self, queues: Sequence[str] | None) -> list[tuple[str, int, str]]:
        """See TurnWrites."""
        query = select(jobs.c.id, jobs.c.run, jobs.c.owner).where(jobs.c.state == JobState.PROCESSING.value)
        if queues is not None:
            query = query.where(jobs.c.queue.in_(list(queues)))
        return [(r.id, r.run, r.owner or "") for r in self._sqlalchemy().execute(query)]
