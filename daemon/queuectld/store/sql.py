"""The store over SQLAlchemy Core: one implementation for every dialect.

Subclasses in sqlite.py / postgres.py override only what differs: engines, the claim statement,
the per-state counters, maintenance. Every public method is one transaction; SQLAlchemy errors are
translated to queuectl errors here and never leave the package.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, RootTransaction, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from queuectl.errors import DuplicateJob, InvalidState, JobNotFound, OutcomeUnknown, QueuectlError, StoreUnavailable
from queuectld.config import DEFAULTS
from queuectld.jobs import TERMINAL_STATES, Job, JobState, Outcome, RetryPolicy
from queuectld.store import schema
from queuectld.store.base import (
    AttemptRecord, DaemonInfo, Enqueued, FinishedAttempt, ListPosition, LostAttempt, NewJob, RunKey, SpawnedAttempt,
)
from queuectld.store.errors import is_driver_error, to_domain_error
from queuectld.store.models import attempts, config, daemons, jobs, meta

log = logging.getLogger(__name__)

_WAITING = (JobState.PENDING.value, JobState.FAILED.value)
_LIST_COLUMNS = [c for c in jobs.c if c.name != "output_tail"]
_LIST_NAMES = tuple(c.name for c in _LIST_COLUMNS)
_IN_CHUNK = 500
#: Why an attempt was put back by `release_strays` (kept in its attempt row).
STRAY_ERROR = "never started here: this daemon does not run it (e.g. the answer to its claim was lost); not counted"

T = TypeVar("T")


@contextmanager
def translate_db_errors(*, where: str = "the database", writing: bool = True) -> Iterator[None]:
    """The one boundary between the drivers and the domain: every SQLAlchemy, sqlite3 or psycopg
    error (and an OSError such as ENOSPC) raised inside becomes the queuectl error a user can act
    on (store/errors.py says which). A SQLAlchemy IntegrityError passes through: the caller knows
    which constraint means what. Nothing is logged here: StoreThreads logs each failure once."""
    try:
        yield
    except IntegrityError:
        raise
    except QueuectlError:
        raise
    except Exception as exc:
        if not (is_driver_error(exc) or isinstance(exc, OSError)):
            raise
        raise to_domain_error(exc, where=where, writing=writing) from exc


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    data["state"] = JobState(data["state"])
    data.setdefault("output_tail", None)
    return Job(**data)


class SqlStore:
    """The Store implementation shared by every dialect."""

    #: What holds the store, as DiskFull names it: "the disk holding {where} is full".
    where = "the database"
    #: A local directory holding the store (SQLite), whose free space tells when a full disk has room again.
    data_dir: str | None = None

    def __init__(self, write_engine: Engine, read_engine: Engine) -> None:
        self.write_engine = write_engine
        self.read_engine = read_engine

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction. An error from its statements means nothing was changed (the
        transaction rolls back); an error from its COMMIT does not: see `_commit`."""
        with translate_db_errors(where=self.where):
            conn = self.write_engine.connect()
        try:
            with translate_db_errors(where=self.where):
                trans = conn.begin()
                try:
                    yield conn
                except BaseException:
                    trans.rollback()
                    raise
            self._commit(trans)
        finally:
            conn.close()

    def _commit(self, trans: RootTransaction) -> None:
        """Commit, kept apart from the classifier of statement errors: once COMMIT is sent, the
        server may have committed even if its answer never arrives (a dropped connection, a
        crashed server). Such an error is OutcomeUnknown, never "nothing was changed" — unless
        the dialect knows that this error means nothing was committed."""
        try:
            trans.commit()
            self._after_commit()
        except DBAPIError as exc:
            if self._commit_failed_cleanly(exc.orig):
                with translate_db_errors(where=self.where):
                    raise
            log.error("the commit's outcome is unknown: %s", _first_line(exc.orig))
            raise OutcomeUnknown(detail=_first_line(exc.orig)) from None

    def _commit_failed_cleanly(self, error: BaseException | None) -> bool:
        """Whether this driver error from COMMIT guarantees that nothing was committed (dialect
        specific; by default nothing is guaranteed)."""
        return False

    def _after_commit(self) -> None:
        """Called after each successful commit of `_write` (a fault point for tests may raise here)."""

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate_db_errors(where=self.where, writing=False), self.read_engine.begin() as conn:
            yield conn

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self, *, may_create: bool = True, queue_id: str | None = None) -> schema.SchemaPlan:
        """Create the schema, or upgrade it to the newest revision, under the migration lock.

        `queue_id` is the identity to record if the database has none yet (else a random one).
        Raises schema.SchemaRefused for a database newer than this release (or not queuectl's),
        and schema.EmptyDatabase for an empty one when `may_create` is False."""
        try:
            with translate_db_errors(where=self.where):
                return schema.upgrade(self._schema_lock, before_apply=self._before_upgrade, may_create=may_create,
                                      queue_id=queue_id)
        except IntegrityError as exc:  # no caller here knows a constraint to explain: a plain store error
            raise to_domain_error(exc, where=self.where, writing=True) from exc

    def schema_plan(self) -> schema.SchemaPlan:
        """The revision the database is at and the ones opening it would apply; changes nothing."""
        with self._read() as conn:
            return schema.plan(conn)

    def queue_id(self) -> str | None:
        """The queue's identity recorded in the database (revision 0002 on), or None before it."""
        with self._read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == "queue_id")).scalar()

    @contextmanager
    def _schema_lock(self) -> Iterator[Connection]:
        """A transaction holding the lock that serializes migrations (SQLite: its BEGIN IMMEDIATE)."""
        with self.write_engine.begin() as conn:
            yield conn

    def _before_upgrade(self, plan: schema.SchemaPlan) -> None:
        """Runs under the migration lock before an upgrade changes anything (SQLite: the backup)."""

    def _announce(self, conn: Connection) -> None:
        """A job became due now: tell other daemons sharing the store (dialect specific)."""

    def listen(self, on_jobs: Callable[[], None]) -> Callable[[], None]:
        """Call `on_jobs` (from another thread) when another daemon makes a job due; returns a
        function that stops listening. A store only one daemon uses needs nothing: its own
        requests already wake its scheduler."""
        return lambda: None

    def _insert_jobs(self, conn: Connection, new: Sequence[NewJob], now: float) -> None:
        """Insert new pending jobs (dialects may take a faster path for big batches)."""
        conn.execute(
            insert(jobs),
            [
                {
                    "id": j.id, "command": j.command, "state": JobState.PENDING.value, "attempts": 0,
                    "max_retries": j.max_retries, "priority": j.priority, "timeout_s": j.timeout_s,
                    "next_run_at": j.next_run_at, "created_at": j.created_at, "updated_at": now, "run": 0,
                }
                for j in new
            ],
        )

    def _claim(self, conn: Connection, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        """Move up to `limit` due jobs to processing in one statement (dialect specific)."""
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Periodic maintenance (e.g. SQLite's WAL checkpoint)."""

    def close(self) -> None:
        """Release all connections."""
        self.write_engine.dispose()
        self.read_engine.dispose()

    # -- jobs -----------------------------------------------------------------------------------

    def enqueue(self, new: Sequence[NewJob], *, replace: bool, now: float) -> Enqueued:
        """Insert jobs in one transaction; with replace, overwrite any that are not running.

        Without replace, a job whose id exists with identical fields (command, max_retries,
        priority, timeout_s; times are not compared) is a repeat of the same request, e.g. a
        retry after a lost answer: it is not added again and comes back in `existing`. An id
        that exists with different fields is DuplicateJob, and nothing of the batch is added.
        """
        ids = [j.id for j in new]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise DuplicateJob(f"job id {dup!r} appears twice in one batch; ids must be unique.")
        try:
            with self._write() as conn:
                if replace:
                    for chunk in _chunks(ids):
                        running = conn.execute(
                            select(jobs.c.id).where(jobs.c.id.in_(chunk), jobs.c.state == JobState.PROCESSING.value)
                        ).scalar()
                        if running is not None:
                            raise InvalidState(job_id=running, state="processing", action="replace (cancel it first)")
                        conn.execute(delete(attempts).where(attempts.c.job_id.in_(chunk)))
                        conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
                self._insert_jobs(conn, new, now)
                self._announce(conn)
            return Enqueued(ids, [])
        except IntegrityError:
            if replace:
                raise DuplicateJob(job_id=self._first_existing(ids) or ids[0]) from None
        # Some ids exist (the fast path above pays nothing for this check): again, skipping repeats.
        try:
            with self._write() as conn:
                existing = self._existing_fields(conn, ids)
                for j in new:
                    if j.id in existing and existing[j.id] != (j.command, j.max_retries, j.priority, j.timeout_s):
                        raise DuplicateJob(job_id=j.id)
                fresh = [j for j in new if j.id not in existing]
                if fresh:
                    self._insert_jobs(conn, fresh, now)
                    self._announce(conn)
        except IntegrityError:  # added meanwhile by another daemon sharing the store
            raise DuplicateJob(job_id=self._first_existing(ids) or ids[0]) from None
        return Enqueued(ids, [i for i in ids if i in existing])

    def _existing_fields(self, conn: Connection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """(command, max_retries, priority, timeout_s) of the jobs among `ids` that exist."""
        out: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(ids):
            rows = conn.execute(
                select(jobs.c.id, jobs.c.command, jobs.c.max_retries, jobs.c.priority, jobs.c.timeout_s)
                .where(jobs.c.id.in_(chunk))
            )
            out.update((r.id, (r.command, r.max_retries, r.priority, r.timeout_s)) for r in rows)
        return out

    def _first_existing(self, ids: Sequence[str]) -> str | None:
        with self._read() as conn:
            for chunk in _chunks(ids):
                found = conn.execute(select(jobs.c.id).where(jobs.c.id.in_(chunk)).limit(1)).scalar()
                if found is not None:
                    return found
        return None

    def get(self, job_id: str) -> Job:
        """One job, or JobNotFound."""
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(job_id=job_id)
        return _job(row)

    def attempts_of(self, job_id: str) -> list[AttemptRecord]:
        """Every recorded attempt of a job, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.attempt)
            ).all()
        return [
            AttemptRecord(r.attempt, r.started_at, r.finished_at, r.exit_code, r.reason, r.error, r.owner) for r in rows
        ]

    def list_jobs(self, state: JobState | None, limit: int | None) -> list[Job]:
        """Jobs oldest first, optionally of one state: all of them, or the first `limit`."""
        return [job for job, _ in self.list_page(state, limit, None)]

    def list_page(
        self, state: JobState | None, limit: int | None, after: ListPosition | None
    ) -> list[tuple[Job, ListPosition]]:
        """Up to `limit` jobs oldest first, optionally of one state, after the position `after`
        (taken from an earlier page), each with its own position. Keyset paging on an index, no
        OFFSET: a page costs the same at any depth and any store size."""
        query = select(*_LIST_COLUMNS, *self._list_extra())
        if state is not None:
            query = query.where(jobs.c.state == state.value)
        if after is not None:
            query = query.where(self._list_after(state, after))
        query = query.order_by(*self._list_order(state))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [self._listed(row) for row in rows]

    def _list_order(self, state: JobState | None) -> tuple[Any, ...]:
        """Oldest first, in an order an index serves (ix_jobs_created, ix_jobs_state_created)."""
        return (jobs.c.created_at, jobs.c.id)

    def _list_after(self, state: JobState | None, after: ListPosition) -> Any:
        """Rows past `after` in _list_order. `created_at >= c` is the index range; the rest breaks
        ties by id among the few rows that share c (a row-value comparison would leave the index)."""
        return and_(
            jobs.c.created_at >= after.created_at,
            or_(jobs.c.created_at > after.created_at, jobs.c.id > after.id),
        )

    def _list_extra(self) -> tuple[Any, ...]:
        """Columns a dialect selects besides the job's to know a row's position (none here)."""
        return ()

    def _listed(self, row: Any) -> tuple[Job, ListPosition]:
        # By position, names zipped once per row: row._mapping cost three times the query.
        data = dict(zip(_LIST_NAMES, row))
        data["state"] = JobState(data["state"])
        rowid = row[len(_LIST_NAMES)] if len(row) > len(_LIST_NAMES) else None
        return Job(**data), ListPosition(data["created_at"], data["id"], rowid)

    def states_of(self, ids: Iterable[str]) -> dict[str, JobState]:
        """Current state of each existing job among `ids`."""
        out: dict[str, JobState] = {}
        with self._read() as conn:
            for chunk in _chunks(list(ids)):
                for job_id, state in conn.execute(select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(chunk))):
                    out[job_id] = JobState(state)
        return out

    def counts(self) -> dict[str, int]:
        """Jobs per state, from counters kept in the same transaction as every change."""
        with self._read() as conn:
            got = dict(self._count_rows(conn))
        return {s.value: int(got.get(s.value) or 0) for s in JobState}

    def _count_rows(self, conn: Connection) -> Any:
        """(state, n) rows; dialects read counters instead of counting (which scans)."""
        return conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()

    def next_due_at(self) -> float | None:
        """When the earliest waiting job becomes due (None if none waits)."""
        with self._read() as conn:
            return conn.execute(select(func.min(jobs.c.next_run_at)).where(jobs.c.state.in_(_WAITING))).scalar()

    # -- attempts -------------------------------------------------------------------------------

    def claim_due(self, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        """Atomically move up to `limit` due jobs to processing, stamped with `owner` and a lease."""
        with self._write() as conn:
            return self._claim_due_in(conn, owner, host, limit, now, lease_s)

    def _claim_due_in(self, conn: Connection, owner: str, host: str, limit: int, now: float,
                      lease_s: float) -> list[Job]:
        claimed = self._claim(conn, owner, host, limit, now, lease_s)
        if claimed:
            conn.execute(
                insert(attempts),
                [{"job_id": j.id, "attempt": j.run, "started_at": now, "owner": owner} for j in claimed],
            )
        claimed.sort(key=lambda j: (-j.priority, j.next_run_at or 0.0))
        return claimed

    def finish(
        self,
        finished: Sequence[FinishedAttempt],
        policy: RetryPolicy,
        spawned: Sequence[SpawnedAttempt] = (),
    ) -> list[tuple[FinishedAttempt, Job | None]]:
        """Record started processes and ended attempts in one transaction (group commit).

        Each write is fenced on (id, run, owner, processing): an attempt whose lease was lost
        (recovered elsewhere, canceled) matches nothing and comes back with None. A batch costs
        four statements however many attempts it holds.
        """
        with self._write() as conn:
            return self._finish_in(conn, finished, policy, spawned)

    def finish_and_claim(
        self,
        finished: Sequence[FinishedAttempt],
        policy: RetryPolicy,
        spawned: Sequence[SpawnedAttempt],
        owner: str,
        host: str,
        limit: int,
        now: float,
        lease_s: float,
    ) -> tuple[list[tuple[FinishedAttempt, Job | None]], list[Job]]:
        """`finish`, then `claim_due` for the slots it freed, in one transaction: a scheduler turn
        costs one commit."""
        with self._write() as conn:
            results = self._finish_in(conn, finished, policy, spawned)
            claimed = self._claim_due_in(conn, owner, host, limit, now, lease_s) if limit > 0 else []
        return results, claimed

    def _finish_in(
        self, conn: Connection, finished: Sequence[FinishedAttempt], policy: RetryPolicy,
        spawned: Sequence[SpawnedAttempt],
    ) -> list[tuple[FinishedAttempt, Job | None]]:
        out: list[tuple[FinishedAttempt, Job | None]] = []
        if spawned:
            conn.execute(_RECORD_PROCESS, [
                {"k_id": sp.job_id, "k_run": sp.run, "k_owner": sp.owner, "v_pid": sp.pid,
                 "v_start": sp.proc_start} for sp in spawned
            ])
        if not finished:
            return out
        current: dict[str, Job] = {}
        for chunk in _chunks([fa.job_id for fa in finished]):
            rows = conn.execute(
                select(*_LIST_COLUMNS)
                .where(jobs.c.id.in_(chunk), jobs.c.state == JobState.PROCESSING.value)
                .with_for_update()
            )
            current.update((row.id, _job(row)) for row in rows)
        settled = settle_attempts(finished, current, policy)
        job_rows = [
            {"k_id": fa.job_id, "k_run": fa.run, "k_owner": fa.owner, **{f"v_{k}": v for k, v in values.items()}}
            for fa, _, values in settled if values
        ]
        if job_rows:
            conn.execute(_FINISH_JOB, job_rows)
            conn.execute(_FINISH_ATTEMPT, [
                {"k_id": fa.job_id, "k_run": fa.run, "v_finished_at": fa.finished_at,
                 "v_exit_code": fa.outcome.exit_code, "v_reason": fa.outcome.reason,
                 "v_error": None if fa.outcome.succeeded else fa.outcome.describe()}
                for fa, _, values in settled if values
            ])
        return [(fa, job) for fa, job, _ in settled]

    def release(self, job_id: str, run: int, owner: str, now: float) -> bool:
        """Return a running job to pending without counting a failed attempt (worker stop --now)."""
        with self._write() as conn:
            res = conn.execute(
                update(jobs)
                .where(*_fence(job_id, run, owner))
                .values(
                    state=JobState.PENDING.value, owner=None, lease_expires_at=None, pid=None, proc_start=None,
                    next_run_at=now, updated_at=now,
                )
            )
            if res.rowcount != 1:
                return False  # the lease was lost: the attempt is not ours to close
            self._announce(conn)
            conn.execute(
                update(attempts)
                .where(attempts.c.job_id == job_id, attempts.c.attempt == run)
                .values(finished_at=now, reason="requeued", error="stopped by `worker stop --now`; not counted")
            )
        return True

    def renew_leases(
        self, owner: str, running: Collection[RunKey], now: float, lease_s: float, active: int, slots: int
    ) -> set[str]:
        """Extend the leases of exactly the attempts `running` (job id, run) that this owner still
        holds, fenced as every attempt write is, and heartbeat; returns the ids renewed. A row the
        owner holds but does not run is not renewed (see `release_strays`)."""
        held: set[str] = set()
        with self._write() as conn:
            for chunk in _chunks(list(running), 200):
                held.update(conn.execute(
                    update(jobs)
                    .where(or_(*(and_(jobs.c.id == job_id, jobs.c.run == run) for job_id, run in chunk)),
                           jobs.c.owner == owner, jobs.c.state == JobState.PROCESSING.value)
                    .values(lease_expires_at=now + lease_s)
                    .returning(jobs.c.id)
                ).scalars())
            conn.execute(
                update(daemons).where(daemons.c.id == owner).values(heartbeat_at=now, active=active, slots=slots)
            )
        return held

    def release_strays(self, owner: str, running: Collection[RunKey], now: float) -> list[RunKey]:
        """Put back every processing row of this owner that is not among the attempts it runs
        (the claim committed but its answer was lost, or any other reason): pending, due when it
        was, no attempt counted, the attempt row saying why, announced to other daemons. Returns
        them.

        The caller must pass every attempt whose claim it has seen commit; a claim still in
        flight when `running` was taken would be put back under its own process."""
        keep = set(running)
        with self._write() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.run).where(jobs.c.owner == owner, jobs.c.state == JobState.PROCESSING.value)
            ).all()
            strays = [(r.id, r.run) for r in rows if (r.id, r.run) not in keep]
            for job_id, run in strays:
                conn.execute(
                    update(jobs)
                    .where(*_fence(job_id, run, owner))
                    # next_run_at is left as it was when claimed: the job keeps its place in line.
                    .values(state=JobState.PENDING.value, owner=None, lease_expires_at=None, pid=None,
                            proc_start=None, updated_at=now)
                )
                conn.execute(
                    update(attempts)
                    .where(attempts.c.job_id == job_id, attempts.c.attempt == run)
                    .values(finished_at=now, reason="requeued", error=STRAY_ERROR)
                )
            if strays:
                self._announce(conn)
        return strays

    def lost_attempts(self, now: float, dead_owners: Iterable[str]) -> list[LostAttempt]:
        """Running attempts whose lease expired or whose owner is known dead."""
        dead = list(dead_owners)
        cond = jobs.c.lease_expires_at < now
        if dead:
            cond = cond | jobs.c.owner.in_(dead)
        with self._read() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.run, jobs.c.owner, jobs.c.host, jobs.c.pid, jobs.c.proc_start).where(
                    jobs.c.state == JobState.PROCESSING.value, cond
                )
            ).all()
        return [LostAttempt(r.id, r.run, r.owner or "", r.host, r.pid, r.proc_start) for r in rows]

    def cancel(self, job_id: str, now: float) -> tuple[Job, JobState]:
        """Cancel a waiting or running job; returns it and the state it was in."""
        with self._write() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id=job_id)
            before = JobState(row.state)
            if before in TERMINAL_STATES:
                raise InvalidState(job_id=job_id, state=before.value, action="cancel")
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=JobState.CANCELED.value, owner=None, lease_expires_at=None, next_run_at=None,
                    finished_at=now, updated_at=now, last_error="canceled",
                )
            )
            if before is JobState.PROCESSING:
                conn.execute(
                    update(attempts)
                    .where(attempts.c.job_id == job_id, attempts.c.attempt == row.run)
                    .values(finished_at=now, reason="canceled", error="canceled while running")
                )
            after = conn.execute(select(jobs).where(jobs.c.id == job_id)).one()
        return _job(after), before

    def delete(self, job_id: str) -> Job:
        """Delete a job that is not running, with its attempt history."""
        with self._write() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id=job_id)
            if row.state == JobState.PROCESSING.value:
                raise InvalidState(job_id=job_id, state="processing", action="delete (cancel it first)")
            conn.execute(delete(attempts).where(attempts.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return _job(row)

    def dlq_retry(self, job_id: str, now: float) -> Job:
        """Move a dead job back to pending with attempts reset."""
        with self._write() as conn:
            row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id=job_id)
            if row.state != JobState.DEAD.value:
                raise InvalidState(job_id=job_id, state=row.state, action="dlq retry (only dead jobs can be retried)")
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=JobState.PENDING.value, attempts=0, next_run_at=now, updated_at=now,
                    finished_at=None, exit_code=None, last_error=None,
                )
            )
            self._announce(conn)
            return _job(conn.execute(select(jobs).where(jobs.c.id == job_id)).one())

    # -- config and daemons ---------------------------------------------------------------------

    def config_all(self) -> dict[str, Any]:
        """Every key: stored values over defaults."""
        with self._read() as conn:
            stored = {k: json.loads(v) for k, v in conn.execute(select(config.c.key, config.c.value))}
        return {**DEFAULTS, **{k: v for k, v in stored.items() if k in DEFAULTS}}

    def config_set(self, key: str, value: Any) -> None:
        """Store one (already validated) config value."""
        with self._write() as conn:
            conn.execute(delete(config).where(config.c.key == key))
            conn.execute(insert(config).values(key=key, value=json.dumps(value)))

    def register_daemon(self, info: DaemonInfo) -> None:
        """Add this daemon instance (the owner of its leases)."""
        with self._write() as conn:
            conn.execute(
                insert(daemons).values(
                    id=info.id, host=info.host, pid=info.pid, proc_start=info.proc_start,
                    started_at=info.started_at, heartbeat_at=info.heartbeat_at, slots=info.slots, active=info.active,
                )
            )

    def daemons(self) -> list[DaemonInfo]:
        """Every registered daemon instance."""
        with self._read() as conn:
            rows = conn.execute(select(daemons)).all()
        return [DaemonInfo(**dict(r._mapping)) for r in rows]

    def forget_daemons(self, ids: Iterable[str]) -> None:
        """Remove daemon rows (dead instances, or this one at shutdown)."""
        ids = list(ids)
        if ids:
            with self._write() as conn:
                conn.execute(delete(daemons).where(daemons.c.id.in_(ids)))


def _fence(job_id: str, run: int, owner: str) -> tuple[Any, ...]:
    """The guard on every write that ends or renews an attempt."""
    return (
        jobs.c.id == job_id,
        jobs.c.run == run,
        jobs.c.owner == owner,
        jobs.c.state == JobState.PROCESSING.value,
    )


def settle_attempts(
    finished: Sequence[FinishedAttempt], current: dict[str, Job], policy: RetryPolicy
) -> list[tuple[FinishedAttempt, Job | None, dict[str, Any]]]:
    """For each ended attempt: the job after it and the column values to write, or (None, {})
    when the fence fails. `current` holds the processing jobs by id, as read in this transaction."""
    out: list[tuple[FinishedAttempt, Job | None, dict[str, Any]]] = []
    for fa in finished:
        job = current.get(fa.job_id)
        if job is None or job.run != fa.run or job.owner != fa.owner:
            out.append((fa, None, {}))
            continue
        del current[fa.job_id]  # the same attempt reported twice in one batch counts once
        values = _after_attempt(fa.outcome, job.attempts, job.max_retries, policy, fa.finished_at)
        values.update(updated_at=fa.finished_at, finished_at=fa.finished_at, output_tail=fa.output_tail)
        out.append((fa, replace(job, **{**values, "state": JobState(values["state"])}), values))
    return out


def _after_attempt(
    outcome: Outcome, attempts_before: int, max_retries: int, policy: RetryPolicy, now: float
) -> dict[str, Any]:
    """The job's new values after an attempt (the same keys either way, for one executemany)."""
    common = {"owner": None, "lease_expires_at": None, "pid": None, "proc_start": None, "exit_code": outcome.exit_code}
    if outcome.succeeded:
        return {**common, "state": JobState.COMPLETED.value, "attempts": attempts_before, "next_run_at": None,
                "last_error": None}
    state, attempts_now, next_run_at = policy.after_failure(attempts_before, max_retries, now)
    return {
        **common,
        "state": state.value,
        "attempts": attempts_now,
        "next_run_at": next_run_at,
        "last_error": outcome.describe(),
    }


_FENCE_PARAMS = (
    jobs.c.id == bindparam("k_id"),
    jobs.c.run == bindparam("k_run"),
    jobs.c.owner == bindparam("k_owner"),
    jobs.c.state == JobState.PROCESSING.value,
)
_RECORD_PROCESS = update(jobs).where(*_FENCE_PARAMS).values(pid=bindparam("v_pid"), proc_start=bindparam("v_start"))
_FINISH_JOB = update(jobs).where(*_FENCE_PARAMS).values(**{
    name: bindparam(f"v_{name}")
    for name in ("owner", "lease_expires_at", "pid", "proc_start", "exit_code", "state", "attempts", "next_run_at",
                 "last_error", "updated_at", "finished_at", "output_tail")
})
_FINISH_ATTEMPT = (
    update(attempts)
    .where(attempts.c.job_id == bindparam("k_id"), attempts.c.attempt == bindparam("k_run"))
    .values(finished_at=bindparam("v_finished_at"), exit_code=bindparam("v_exit_code"),
            reason=bindparam("v_reason"), error=bindparam("v_error"))
)


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _first_line(error: BaseException | None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__

