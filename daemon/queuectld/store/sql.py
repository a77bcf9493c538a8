"""The store over SQLAlchemy Core: one implementation for every dialect.

Subclasses in sqlite.py / postgres.py override only what differs: engines, the claim statement,
the turn's statements (turn.py), the per-state counters, maintenance. Every public method is one
transaction; SQLAlchemy errors are translated to queuectl errors here and never leave the package.
The scheduler's turn lives in turn.py, the dead-letter queue's bulk actions in dlq.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    RootTransaction,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from queuectl.errors import (
    DependencyFailed,
    DependencyNotFound,
    DuplicateJob,
    InvalidState,
    JobNotFound,
    OutcomeUnknown,
    QueuectlError,
)
from queuectld.config import DEFAULTS
from queuectld.jobs import Job, JobState, LifecyclePolicy, OutcomeKind, on_cancel
from queuectld.store import dlq, queues, retention, schedules, schema, turn, workflow
from queuectld.store.base import (
    AttemptRecord,
    CleanFilter,
    CronFired,
    DaemonInfo,
    DeadFilter,
    Dependency,
    Enqueued,
    EnvSnapshot,
    FinishedAttempt,
    JobEdit,
    JobFilter,
    ListPosition,
    LostAttempt,
    NewJob,
    Pruned,
    QueueCounts,
    QueueInfo,
    RunKey,
    Schedule,
    SpawnedAttempt,
)
from queuectld.store.errors import is_driver_error, to_domain_error
from queuectld.store.models import attempts, config, daemons, jobs, meta
from queuectld.store.rows import LIST_COLUMNS, LIST_NAMES, chunks, job_from_mapping, job_from_row
from queuectld.store.turn import STRAY_ERROR, ClaimRequest, TurnResult, TurnWrites

__all__ = ["STRAY_ERROR", "SqlStore", "translate_db_errors"]

log = logging.getLogger(__name__)

_WAITING = (JobState.PENDING.value, JobState.FAILED.value)
#: The columns `_insert_jobs` copies (PostgreSQL), in the order of its rows.
_COPY_JOB_COLUMNS = ("id", "command", "state", "attempts", "max_retries", "priority", "timeout_s", "next_run_at",
                     "created_at", "updated_at", "run", "retry_rules", "backoff_base", "backoff_max_s", "queue", "cwd",
                     "env_id", "labels", "held", "deps_left", "has_dependents")
#: The fields a repeated enqueue must match to be the same job (times are not compared, nor
#: `held`, which a release changes meanwhile); its dependencies must match too (_same_job_key).
_SAME_JOB_FIELDS = ("command", "max_retries", "priority", "timeout_s", "retry_rules", "backoff_base", "backoff_max_s",
                    "queue", "cwd", "env_id", "labels")


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



class SqlStore:
    """The Store implementation shared by every dialect."""

    #: Whether the store's clock is a database's that every host shares (see `clock_now`).
    shared_clock = False
    #: The longest the daemon leaves between two `checkpoint`s (None: its maintenance interval).
    checkpoint_every_s: float | None = None

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

    def _insert_jobs(self, conn: Connection, new: Sequence[NewJob], now: float, links: workflow.Links) -> None:
        """Insert new pending jobs with their deps_left and has_dependents from `links` (dialects
        may take a faster path for big batches); `_insert_links` then writes the rest of `links`."""
        left, marked = links.deps_left, links.has_dependents
        if conn.dialect.name == "postgresql" and len(new) >= workflow.COPY_FROM:  # a tenth of an executemany's time
            pending = JobState.PENDING.value
            workflow.copy_rows(conn, "jobs", _COPY_JOB_COLUMNS, (
                (j.id, j.command, pending, 0, j.max_retries, j.priority, j.timeout_s, j.next_run_at, j.created_at,
                 now, 0, j.retry_rules, j.backoff_base, j.backoff_max_s, j.queue, j.cwd, j.env_id, j.labels,
                 int(j.held), left[i] if left else 0, marked[i] if marked else 0)
                for i, j in enumerate(new)
            ))
            return
        conn.execute(
            insert(jobs),
            [
                {
                    "id": j.id, "command": j.command, "state": JobState.PENDING.value, "attempts": 0,
                    "max_retries": j.max_retries, "priority": j.priority, "timeout_s": j.timeout_s,
                    "next_run_at": j.next_run_at, "created_at": j.created_at, "updated_at": now, "run": 0,
                    "retry_rules": j.retry_rules, "backoff_base": j.backoff_base, "backoff_max_s": j.backoff_max_s,
                    "queue": j.queue, "cwd": j.cwd, "env_id": j.env_id, "labels": j.labels, "held": int(j.held),
                    "deps_left": left[i] if left else 0, "has_dependents": marked[i] if marked else 0,
                }
                for i, j in enumerate(new)
            ],
        )

    def _insert_links(self, conn: Connection, links: workflow.Links) -> None:
        """Write a batch's job_deps and job_labels rows (dialects may take a faster path)."""
        workflow.insert_links(conn, links)

    def _add_jobs(self, conn: Connection, new: Sequence[NewJob], now: float, envs: Sequence[EnvSnapshot],
                  keep_dependents: Collection[str] = ()) -> None:
        """Insert a batch (its queues checked, its snapshots, edges and labels with it); announce
        it when one of its jobs can be claimed."""
        queues.require_queues(conn, sorted({j.queue for j in new}))
        workflow.insert_envs(conn, envs)
        links = workflow.plan_links(conn, new, keep_dependents)
        self._insert_jobs(conn, new, now, links)
        self._insert_links(conn, links)
        if links.due(new):
            self._announce(conn)

    def _add_plain(self, new: Sequence[NewJob], now: float, envs: Sequence[EnvSnapshot]) -> bool:
        """Insert a batch as `_add_jobs` does, in a transaction of its own, by a dialect's faster
        path when it has one for this batch; False: it has none (nothing was done). An id that
        exists raises IntegrityError, and nothing of the batch is written."""
        return False

    def _turn_writes(self) -> AbstractContextManager[TurnWrites]:
        """A write transaction and the turn's statements in it: the one write path of every
        turn (finish, claim, strays), on each dialect's driver (sqlite.RawTurnWrites,
        pg_turn.PgTurnWrites)."""
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Periodic maintenance (e.g. SQLite's WAL checkpoint)."""

    def close(self) -> None:
        """Release all connections."""
        self.write_engine.dispose()
        self.read_engine.dispose()

    # -- jobs -----------------------------------------------------------------------------------

    def enqueue(
        self, new: Sequence[NewJob], *, replace: bool, now: float, envs: Sequence[EnvSnapshot] = ()
    ) -> Enqueued:
        """Insert jobs in one transaction; with replace, overwrite any that are not running.

        Every job's queue must exist (QueueNotFound). `envs` are the snapshots the jobs' env_id
        name, stored once each (one already stored is kept). Dependencies (`after`: completion,
        `after_any`: any end) must be earlier jobs of the batch or jobs that exist
        (DependencyNotFound); an `after` dependency that already ended dead or canceled is
        DependencyFailed. deps_left counts the edges not satisfied now. Labels get their
        job_labels rows.

        Without replace, a job whose id exists with identical fields (command, max_retries,
        priority, timeout_s, retry rules and backoff, queue, cwd, env_id, labels and
        dependencies; times and `held` are not compared) is a repeat of the same request, e.g. a
        retry after a lost answer: it is not added again and comes back in `existing`. An id
        that exists with different fields is DuplicateJob, and nothing of the batch is added.
        A replaced job keeps its dependents (their edges name its id); the replaced jobs come
        back in `replaced` with the attempts they had started (their logs are the caller's).
        """
        ids = [j.id for j in new]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise DuplicateJob(f"job id {dup!r} appears twice in one batch; ids must be unique.")
        try:
            if not replace and self._add_plain(new, now, envs):
                return Enqueued(ids, [], {})
            with self._write() as conn:
                keep: set[str] = set()
                replaced: dict[str, int] = {}
                if replace and any(j.after or j.after_any for j in new):
                    workflow.lock_dependency_graph(conn)  # before the rows below (see there)
                if replace:
                    for chunk in chunks(ids):
                        for old_id, old_state, old_run in conn.execute(
                            select(jobs.c.id, jobs.c.state, jobs.c.run).where(jobs.c.id.in_(chunk)).with_for_update()
                        ):
                            if old_state == JobState.PROCESSING.value:
                                raise InvalidState(job_id=old_id, state="processing",
                                                   action="replace (cancel it first)")
                            replaced[old_id] = old_run
                        conn.execute(delete(attempts).where(attempts.c.job_id.in_(chunk)))
                        conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
                    workflow.forget_jobs(conn, ids)
                    keep = workflow.with_dependents(conn, ids)
                self._add_jobs(conn, new, now, envs, keep)
            return Enqueued(ids, [], replaced)
        except IntegrityError:
            if replace:
                raise DuplicateJob(job_id=self._first_existing(ids) or ids[0]) from None
        except (DependencyNotFound, DependencyFailed):
            # A repeat of a batch whose dependency ended meanwhile: judged below, as repeats are.
            if replace or self._first_existing(ids) is None:
                raise
        # Some ids exist (the fast path above pays nothing for this check): again, skipping repeats.
        try:
            with self._write() as conn:
                existing = self._existing_fields(conn, ids)
                for j in new:
                    if j.id in existing and existing[j.id] != _same_job_key(j):
                        raise DuplicateJob(job_id=j.id)
                fresh = [j for j in new if j.id not in existing]
                if fresh:
                    self._add_jobs(conn, fresh, now, envs)
        except IntegrityError:  # added meanwhile by another daemon sharing the store
            raise DuplicateJob(job_id=self._first_existing(ids) or ids[0]) from None
        return Enqueued(ids, [i for i in ids if i in existing])

    def _existing_fields(self, conn: Connection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The _same_job_key of the jobs among `ids` that exist: _SAME_JOB_FIELDS, then edges."""
        out: dict[str, tuple[Any, ...]] = {}
        columns = [jobs.c[name] for name in _SAME_JOB_FIELDS]
        for chunk in chunks(ids):
            rows = conn.execute(select(jobs.c.id, *columns).where(jobs.c.id.in_(chunk)))
            out.update((r[0], tuple(r[1:])) for r in rows)
        edges = workflow.edges_by_job(conn, list(out))
        return {job_id: (*key, frozenset(edges.get(job_id, {}).items())) for job_id, key in out.items()}

    def _first_existing(self, ids: Sequence[str]) -> str | None:
        with self._read() as conn:
            for chunk in chunks(ids):
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
        return job_from_row(row)

    def attempts_of(self, job_id: str) -> list[AttemptRecord]:
        """Every recorded attempt of a job, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.attempt)
            ).all()
        return [
            AttemptRecord(r.attempt, r.started_at, r.finished_at, None if r.outcome is None else OutcomeKind(r.outcome),
                          r.exit_code, r.signal, r.error, r.owner, r.host)
            for r in rows
        ]

    def list_jobs(self, state: JobState | None, limit: int | None) -> list[Job]:
        """Jobs oldest first, optionally of one state: all of them, or the first `limit`."""
        return [job for job, _ in self.list_page(state, limit, None)]

    def list_page(
        self, state: JobState | None, limit: int | None, after: ListPosition | None,
        outcome: OutcomeKind | None = None, queue: str | None = None, label: str | None = None,
        newest_first: bool = False,
    ) -> list[tuple[Job, ListPosition]]:
        """Up to `limit` jobs oldest first, optionally of one state, of one last outcome, of one
        queue and with one label, after the position `after` (taken from an earlier page), each
        with its own position. Keyset paging on an index, no OFFSET: a page costs the same at any
        depth and any store size. The outcome and the queue are filtered on the rows the index
        walks (no index of their own, which every finish would pay for): a page of a rare one
        reads past the others; a label is looked up in job_labels. `newest_first` walks the same
        index backwards."""
        query = select(*LIST_COLUMNS, *self._list_extra())
        query = query.where(*workflow.job_conditions(JobFilter(state, outcome, queue, label)))
        if after is not None:
            query = query.where(self._list_before(state, after) if newest_first else self._list_after(state, after))
        order = self._list_order(state)
        query = query.order_by(*([column.desc() for column in order] if newest_first else order))
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

    def _list_before(self, state: JobState | None, after: ListPosition) -> Any:
        """Rows past `after` in _list_order reversed (newest first), as _list_after."""
        return and_(
            jobs.c.created_at <= after.created_at,
            or_(jobs.c.created_at < after.created_at, jobs.c.id < after.id),
        )

    def _list_extra(self) -> tuple[Any, ...]:
        """Columns a dialect selects besides the job's to know a row's position (none here)."""
        return ()

    def _listed(self, row: Any) -> tuple[Job, ListPosition]:
        # By position, names zipped once per row: row._mapping cost three times the query.
        job = job_from_mapping(dict(zip(LIST_NAMES, row, strict=False)))
        rowid = row[len(LIST_NAMES)] if len(row) > len(LIST_NAMES) else None
        return job, ListPosition(job.created_at, job.id, rowid)

    def states_of(self, ids: Iterable[str]) -> dict[str, JobState]:
        """Current state of each existing job among `ids`."""
        out: dict[str, JobState] = {}
        with self._read() as conn:
            for chunk in chunks(list(ids)):
                for job_id, state in conn.execute(select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(chunk))):
                    out[job_id] = JobState(state)
        return out

    def counts(self) -> dict[str, int]:
        """Jobs per state, from counters kept in the same transaction as every change."""
        with self._read() as conn:
            got = dict(self._count_rows(conn))
        return {s.value: int(got.get(s.value) or 0) for s in JobState}

    def _count_rows(self, conn: Connection) -> Any:
        """(state, n) rows: the sums of the per-(queue, state, held) counters (dialect specific);
        this fallback counts, which scans."""
        return conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()

    def _queue_count_rows(self, conn: Connection) -> Any:
        """(queue, state, held, n) rows of the counters, n nonzero (dialect specific); this
        fallback counts, which scans."""
        return conn.execute(
            select(jobs.c.queue, jobs.c.state, jobs.c.held, func.count()).group_by(jobs.c.queue, jobs.c.state,
                                                                                   jobs.c.held)
        ).all()

    def next_due_at(self) -> float | None:
        """When the earliest job the claim could take becomes due: claimable (not held, not
        blocked) in a queue neither paused nor full; None if there is none (dialect specific)."""
        raise NotImplementedError

    # -- attempts -------------------------------------------------------------------------------

    def claim_due(self, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        """Atomically move up to `limit` due jobs to processing, stamped with `owner`, `host` and a
        lease, each with a new attempt row; in claim order (priority, then due time)."""
        with self._turn_writes() as writes:
            return turn.run_turn(writes, (), LifecyclePolicy(), (), ClaimRequest(owner, host, limit, now, lease_s))[1]

    def finish(
        self,
        finished: Sequence[FinishedAttempt],
        policy: LifecyclePolicy,
        spawned: Sequence[SpawnedAttempt] = (),
    ) -> list[tuple[FinishedAttempt, Job | None]]:
        """Record started processes and ended attempts in one transaction (group commit).

        What each end does to its job is `jobs.after_attempt`'s decision under `policy`. Each
        write is fenced on (id, run, owner, processing): an attempt whose lease was lost
        (recovered elsewhere, canceled) matches nothing and comes back with None. A batch costs
        four statements however many attempts it holds. The scheduler's turn without a claim.
        """
        with self._turn_writes() as writes:
            return turn.run_turn(writes, finished, policy, spawned)[0]

    def finish_and_claim(
        self,
        finished: Sequence[FinishedAttempt],
        policy: LifecyclePolicy,
        spawned: Sequence[SpawnedAttempt],
        owner: str,
        host: str,
        limit: int,
        now: float,
        lease_s: float,
    ) -> TurnResult:
        """`finish`, then `claim_due` for the slots it freed, in one transaction: a scheduler turn
        costs one commit."""
        with self._turn_writes() as writes:
            return turn.run_turn(writes, finished, policy, spawned, ClaimRequest(owner, host, limit, now, lease_s))

    def renew_leases(
        self, owner: str, running: Collection[RunKey], now: float, lease_s: float, active: int, slots: int,
        claiming: bool = True,
    ) -> set[str]:
        """Extend the leases of exactly the attempts `running` (job id, run) that this owner still
        holds, fenced as every attempt write is, and heartbeat (with its slots, how many are
        active and whether it claims); returns the ids renewed. A row the owner holds but does not
        run is not renewed (see `release_strays`); one it no longer holds (e.g. requeued by
        `requeue_running`) is missing from the answer, which tells the owner to kill it."""
        held: set[str] = set()
        with self._write() as conn:
            for chunk in chunks(list(running), 200):
                held.update(conn.execute(
                    update(jobs)
                    .where(or_(*(and_(jobs.c.id == job_id, jobs.c.run == run) for job_id, run in chunk)),
                           jobs.c.owner == owner, jobs.c.state == JobState.PROCESSING.value)
                    .values(lease_expires_at=now + lease_s)
                    .returning(jobs.c.id)
                ).scalars())
            conn.execute(
                update(daemons).where(daemons.c.id == owner)
                .values(heartbeat_at=now, active=active, slots=slots, claiming=int(claiming))
            )
        return held

    def adopt_attempts(self, owner: str, attempts: Collection[RunKey], now: float, lease_s: float) -> dict[str, str | None]:
        """Make `owner` the holder of attempts (job id, run) that its state dir's job keeper still
        runs for a daemon that is gone (restarted, killed -9, replaced by `--replace`): each row
        still `processing` at that run, whoever held it, gets `owner` and a lease from `now`.
        Returns {job id: the owner it had} for those adopted. An attempt missing from the answer
        was ended meanwhile (recovered once its lease expired, canceled, deleted): the caller
        kills its processes and drops its result."""
        adopted: dict[str, str | None] = {}
        with self._write() as conn:
            for chunk in chunks(list(attempts), 200):
                match = or_(*(and_(jobs.c.id == job_id, jobs.c.run == run) for job_id, run in chunk))
                rows = conn.execute(select(jobs.c.id, jobs.c.owner)
                                    .where(match, jobs.c.state == JobState.PROCESSING.value)
                                    .with_for_update()).all()
                if not rows:
                    continue
                ids = [row.id for row in rows]
                conn.execute(update(jobs).where(jobs.c.id.in_(ids), jobs.c.state == JobState.PROCESSING.value)
                             .values(owner=owner, lease_expires_at=now + lease_s))
                adopted.update((row.id, row.owner) for row in rows)
        return adopted

    def release_strays(self, owner: str, running: Collection[RunKey], now: float) -> list[RunKey]:
        """Put back every processing row of this owner that is not among the attempts it runs
        (the claim committed but its answer was lost, or any other reason): each is an attempt
        ended as requeued (STRAY_ERROR), through the turn's own writes: pending, due when it was,
        no attempt counted, announced to other daemons. Returns them.

        The caller must pass every attempt whose claim it has seen commit; a claim still in
        flight when `running` was taken would be put back under its own process."""
        with self._turn_writes() as writes:
            return turn.release_strays(writes, owner, running, now)

    def clock_now(self) -> float:
        """The store's clock now, in seconds since the epoch: the database server's on a shared
        database (PostgreSQL's clock_timestamp()); on a one-host store (SQLite, which has no clock
        of its own) this host's wall clock. clock.StoreClock learns its offset from it."""
        return time.time()

    def _judging_now(self, now: float | None) -> Any:
        """`now` as a bound value, or (None) the store's clock read inside the statement."""
        return literal(self.clock_now() if now is None else now, Float)

    def lost_attempts(self, now: float | None, dead_owners: Iterable[str]) -> list[LostAttempt]:
        """Running attempts whose lease expired at `now` or whose owner is known dead. `now=None`
        judges the leases by the store's clock in the statement (on PostgreSQL the database's:
        no host's clock takes part). Each comes with its owner's boot and PID namespace, if its
        row is there, and how long ago its lease expired by the clock that judged it."""
        dead = list(dead_owners)
        judged = self._judging_now(now)
        cond = jobs.c.lease_expires_at < judged
        if dead:
            cond = cond | jobs.c.owner.in_(dead)
        with self._read() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.run, jobs.c.owner, jobs.c.host, jobs.c.pid, jobs.c.proc_start,
                       daemons.c.boot_id, daemons.c.pid_ns, (judged - jobs.c.lease_expires_at).label("expired_s"))
                .select_from(jobs.outerjoin(daemons, daemons.c.id == jobs.c.owner))
                .where(jobs.c.state == JobState.PROCESSING.value, cond)
            ).all()
        return [LostAttempt(r.id, r.run, r.owner or "", r.host, r.pid, r.proc_start, r.boot_id, r.pid_ns,
                            None if r.expired_s is None else float(r.expired_s)) for r in rows]

    def daemon_silences(self, now: float | None) -> list[tuple[DaemonInfo, float]]:
        """Every registered daemon with the seconds since its last heartbeat at `now`; `now=None`:
        by the store's clock in the statement (on PostgreSQL the database's, which also stamped
        the heartbeats: a peer is judged silent without comparing two hosts' clocks)."""
        judged = self._judging_now(now)
        with self._read() as conn:
            rows = conn.execute(select(daemons, (judged - daemons.c.heartbeat_at).label("silent_s"))).all()
        return [(_daemon_of(r._mapping), float(r.silent_s)) for r in rows]

    def cancel(self, job_id: str, now: float) -> tuple[Job, JobState]:
        """Cancel a waiting or running job (`jobs.on_cancel`); returns it and the state it was in.
        A running job's attempt ends as canceled; its process is the caller's to stop. Its
        waiting dependents get the end (`jobs.on_dependency_end`): those after it are canceled,
        transitively; those after any end of it have one dependency fewer."""
        with self._write() as conn:
            row = conn.execute(select(*LIST_COLUMNS).where(jobs.c.id == job_id).with_for_update()).first()
            if row is None:
                raise JobNotFound(job_id=job_id)
            job = job_from_row(row)
            decision = on_cancel(job, now)
            values: dict[str, Any] = {
                "state": decision.state.value, "attempts": decision.attempts, "next_run_at": decision.next_run_at,
                "last_error": decision.last_error, "owner": None, "lease_expires_at": None, "pid": None,
                "proc_start": None, "finished_at": now, "updated_at": now,
            }
            if job.state is JobState.PROCESSING:
                values.update(last_outcome=OutcomeKind.CANCELED.value, exit_code=None, signal=None)
                conn.execute(
                    update(attempts)
                    .where(attempts.c.job_id == job_id, attempts.c.attempt == job.run)
                    .values(finished_at=now, outcome=OutcomeKind.CANCELED.value, exit_code=None, signal=None,
                            error="canceled while running")
                )
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.state == job.state.value).values(**values))
            if job.state is JobState.PROCESSING:  # a slot of a limited queue is free for every daemon
                turn.announce_freed(conn, [job.queue], self._announce)
            if job.has_dependents:
                self._dependencies_ended(conn, [(job_id, decision.state)], now)
            after = conn.execute(select(jobs).where(jobs.c.id == job_id)).one()
        return job_from_row(after), job.state

    def _dependencies_ended(self, conn: Connection, ended: Sequence[tuple[str, workflow.EndedState]],
                            now: float) -> None:
        """Apply `ended` (id, state now; None: deleted) to their waiting dependents, announcing
        those that became claimable (workflow.apply_dependency_ends)."""
        if workflow.apply_dependency_ends(workflow.SqlDependencyWrites(conn), ended, now):
            self._announce(conn)

    def delete(self, job_id: str, now: float | None = None) -> Job:
        """Delete a job that is not running, with its attempt history, labels and dependencies.
        Its waiting dependents are canceled ("dependency X was deleted"), transitively, at `now`
        (None: the clock's time)."""
        with self._write() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id).with_for_update()).first()
            if row is None:
                raise JobNotFound(job_id=job_id)
            if row.state == JobState.PROCESSING.value:
                raise InvalidState(job_id=job_id, state="processing", action="delete (cancel it first)")
            conn.execute(delete(attempts).where(attempts.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
            workflow.forget_jobs(conn, [job_id])
            if row.has_dependents:
                self._dependencies_ended(conn, [(job_id, None)], _now(now))
        return job_from_row(row)

    # -- the dead-letter queue (dlq.py) ---------------------------------------------------------

    def dlq_retry(
        self, ids: Sequence[str], now: float, command: str | None = None, with_dependents: bool = False
    ) -> list[Job]:
        """Move dead jobs back to pending, attempts reset (`jobs.on_dlq_retry`), in one
        transaction: all of `ids` or none (a missing id is JobNotFound, a job not dead
        InvalidState, and nothing changes). `command` replaces the command of the one job given
        (InvalidParams with more). `with_dependents`: every job canceled because one of them
        ended (canceled_by, transitively) is restarted too (`jobs.on_restart`), deps_left
        recounted. Returns the jobs as they are now, in the order given, then those dependents."""
        with self._write() as conn:
            retried = dlq.retry(conn, ids, now, command, with_dependents)
            if retried:
                self._announce(conn)
        return retried

    def dlq_retry_matching(self, where: DeadFilter, now: float, limit: int) -> list[str]:
        """Retry up to `limit` dead jobs matching `where` (oldest first) in one transaction;
        returns their ids. Callers loop until fewer than `limit` come back."""
        with self._write() as conn:
            retried = dlq.retry_matching(conn, where, now, limit)
            if retried:
                self._announce(conn)
        return retried

    def dlq_purge(self, ids: Sequence[str], now: float | None = None) -> list[Job]:
        """Delete dead jobs with their attempts, in one transaction: all of `ids` or none (as
        dlq_retry). Returns the deleted jobs (their log files are the caller's to remove). Their
        waiting dependents are canceled at `now` ("dependency X was deleted"), as by `delete`."""
        with self._write() as conn:
            gone = dlq.purge(conn, ids)
            self._purged(conn, gone, now)
        return gone

    def dlq_purge_matching(self, where: DeadFilter, limit: int, now: float | None = None) -> list[Job]:
        """Delete up to `limit` dead jobs matching `where` (oldest first) with their attempts,
        in one transaction; returns them. Callers loop until fewer than `limit` come back.
        Their waiting dependents are canceled, as by `dlq_purge`."""
        with self._write() as conn:
            gone = dlq.purge_matching(conn, where, limit)
            self._purged(conn, gone, now)
        return gone

    def _purged(self, conn: Connection, gone: Sequence[Job], now: float | None) -> None:
        workflow.forget_jobs(conn, [job.id for job in gone])
        ended: list[tuple[str, workflow.EndedState]] = [(job.id, None) for job in gone if job.has_dependents]
        if ended:
            self._dependencies_ended(conn, ended, _now(now))

    # -- retention (retention.py) ---------------------------------------------------------------

    def prune(self, where: CleanFilter, limit: int, now: float | None = None) -> list[Pruned]:
        """Delete up to `limit` ended jobs matching `where` (oldest ended first) with their
        attempts, labels and own edges, in one transaction; returns them (their log files are the
        caller's to remove). A job some job that has not ended depends on is never taken. Rows a
        concurrent prune holds are skipped (SKIP LOCKED), so daemons prune side by side without
        waiting or taking a job twice. Callers loop until fewer than `limit` come back."""
        with self._write() as conn:
            gone = retention.take(conn, where, limit, skip_locked=conn.dialect.name == "postgresql")
            # None expected (they were excluded), but a dependent enqueued in the same instant
            # gets what every deletion gives it, never an edge to nothing it waits on forever.
            ended: list[tuple[str, workflow.EndedState]] = [(p.id, None) for p in gone if p.had_dependents]
            if ended:
                self._dependencies_ended(conn, ended, _now(now))
        return gone

    def prune_preview(self, where: CleanFilter, limit: int) -> tuple[int, list[str]]:
        """What `prune` with `where` would take now: how many jobs, and the first `limit` ids
        (oldest ended first). Reads only."""
        with self._read() as conn:
            return retention.preview(conn, where, limit)

    def runs_of(self, ids: Sequence[str]) -> dict[str, int]:
        """The attempts started so far of each job among `ids` that exists (a missing id is left out)."""
        with self._read() as conn:
            return retention.runs_of(conn, ids)

    def reclaim_space(self, max_pages: int, keep_fraction: float) -> int:
        """Give free pages of the database file back to the file system, keeping `keep_fraction`
        of its pages free for reuse and at most `max_pages` per call; returns how many free pages
        are still above what is kept (0: done). Nothing to do by default: a server database
        reclaims space with its own (auto)vacuum."""
        return 0

    # -- workflow (workflow.py) -----------------------------------------------------------------

    def envs_of(self, ids: Collection[str]) -> dict[str, EnvSnapshot]:
        """The environment snapshots stored under `ids`, by id (an unknown id is left out)."""
        with self._read() as conn:
            return workflow.envs_of(conn, ids)

    def dependencies_of(self, job_id: str) -> list[Dependency]:
        """A job's dependencies, by id, each with its state now (None: deleted); JobNotFound."""
        with self._read() as conn:
            return workflow.dependencies_of(conn, job_id)

    def release(self, ids: Sequence[str], now: float) -> list[Job]:
        """Release held jobs in one transaction: all of `ids` or none (JobNotFound for a missing
        one, InvalidState for one not held). Returns them as they are now, in the order given."""
        with self._write() as conn:
            released, due = workflow.release(conn, ids, now)
            if due:
                self._announce(conn)
        return released

    def hold(self, ids: Sequence[str], now: float) -> list[Job]:
        """Hold waiting jobs in one transaction, so that none starts until released: all of `ids`
        or none (JobNotFound for a missing one, InvalidState for one running, ended or held).
        Returns them as they are now, in the order given."""
        with self._write() as conn:
            return workflow.hold(conn, ids, now)

    def release_matching(self, where: JobFilter, now: float, limit: int) -> list[str]:
        """Release up to `limit` held jobs matching `where` (oldest first) in one transaction;
        returns their ids. Callers loop until fewer than `limit` come back."""
        with self._write() as conn:
            ids, due = workflow.release_matching(conn, where, now, limit)
            if due:
                self._announce(conn)
        return ids

    def edit(self, job_id: str, change: JobEdit, now: float) -> Job:
        """Change a job that is not processing (InvalidState while it is), as `change` says, in
        one transaction; returns it as it is now. A new queue must exist (QueueNotFound); new
        `after` / `after_any` replace its dependencies, which must exist (DependencyNotFound),
        be able to complete (DependencyFailed) and not wait for it (DependencyCycle), deps_left
        recounted; new labels replace its labels."""
        with self._write() as conn:
            job, due = workflow.edit(conn, job_id, change, now)
            if due:
                self._announce(conn)
        return job

    def restart(self, ids: Sequence[str], now: float) -> list[Job]:
        """Put completed, dead or canceled jobs back to pending now (`jobs.on_restart`: attempts
        reset, attempt history and run number kept), in one transaction: all of `ids` or none
        (JobNotFound, InvalidState, or DependencyNotFound / DependencyFailed for a dependency that
        can no longer be met). deps_left is recounted; a waiting dependent of a restarted job
        waits for it again. Returns them as they are now, in the order given."""
        with self._write() as conn:
            back, due = workflow.restart(conn, ids, now)
            if due:
                self._announce(conn)
        return back

    # -- named queues (queues.py) ----------------------------------------------------------------

    def queue_add(self, name: str, concurrency: int | None, now: float) -> QueueInfo:
        """Create an empty queue with a concurrency limit across every daemon (None: none).
        QueueExists if it is there."""
        with self._write() as conn:
            queues.add(conn, name, concurrency, now)
        return QueueInfo(name, concurrency, False)

    def queue_set(self, name: str, concurrency: int | None) -> QueueInfo:
        """Change a queue's concurrency limit (None: none); QueueNotFound if it is not there.
        Peers are told (a raised limit may make jobs claimable); running jobs over a lowered
        limit keep running, and no more start until the queue is under it."""
        with self._write() as conn:
            queues.set_limit(conn, name, concurrency)
            self._announce(conn)
            [info] = queues.infos(conn, self._queue_count_rows(conn), [name])
        return info

    def queue_rm(self, name: str) -> None:
        """Remove a queue that holds no waiting or running job (QueueNotEmpty says how many it
        holds); its finished jobs keep its name. `default` is never removed (InvalidParams)."""
        with self._write() as conn:
            queues.remove(conn, name, self._queue_count_rows(conn))

    def queue_get(self, name: str) -> QueueInfo:
        """One queue with its numbers (QueueNotFound if it is not there)."""
        with self._read() as conn:
            [info] = queues.infos(conn, self._queue_count_rows(conn), [name])
        return info

    def queues(self) -> list[QueueInfo]:
        """Every queue by name, with its numbers: waiting (held included), held, running, and
        when its oldest waiting job was created. From counters and an index, never a scan."""
        with self._read() as conn:
            return queues.infos(conn, self._queue_count_rows(conn))

    def ended_per_minute(self, now: float, minutes: int) -> list[int]:
        """Jobs that ended completed or dead in each of the last `minutes` minutes before `now`
        (the store's clock), oldest first: one range read of ix_jobs_ended per state (jobs
        retention has deleted meanwhile are not counted)."""
        since = now - 60.0 * minutes
        age = (jobs.c.finished_at - since) / 60.0
        # Truncation is floor here (the ages are not negative); PostgreSQL's CAST rounds instead.
        minute = (func.floor(age) if self.read_engine.dialect.name == "postgresql" else age).cast(Integer)
        counts = [0] * minutes
        with self._read() as conn:
            for state in (JobState.COMPLETED.value, JobState.DEAD.value):
                rows = conn.execute(
                    select(minute, func.count()).where(jobs.c.state == state, jobs.c.finished_at >= since,
                                                       jobs.c.finished_at < now).group_by(minute))
                for m, n in rows:
                    if 0 <= int(m) < minutes:
                        counts[int(m)] += int(n)
        return counts

    def queue_counts(self) -> QueueCounts:
        """Every queue's numbers and each queue's jobs per state, in one read: from the counters
        and one index probe per queue, never a scan (a metrics scrape costs O(queues))."""
        with self._read() as conn:
            rows = list(self._queue_count_rows(conn))
            by_state: dict[tuple[str, str], int] = {}
            for queue, state, _held, n in rows:
                by_state[(queue, state)] = by_state.get((queue, state), 0) + int(n)
            return QueueCounts(queues.infos(conn, rows), by_state)

    def queue_pause(self, names: Sequence[str] | None, paused: bool) -> list[QueueInfo]:
        """Pause (no job of theirs is claimed; running ones go on) or resume `names` (None: every
        queue); QueueNotFound for a name that is not a queue, and nothing changes. A resume is
        announced to peers. Returns the queues as they are now."""
        with self._write() as conn:
            done = queues.pause(conn, names, paused)
            if not paused:
                self._announce(conn)
            return queues.infos(conn, self._queue_count_rows(conn), done) if done else []

    def requeue_running(self, names: Sequence[str] | None, now: float) -> list[RunKey]:
        """End every processing attempt of `names` (None: of every queue) as requeued through the
        turn's path (uncounted, due when it was, fenced; turn.PAUSED_ERROR in the attempt row);
        returns their (id, run). Killing their processes is the caller's: the daemon that runs
        one finds it in this answer, a peer finds its lease gone at its next renewal."""
        if names is not None:
            with self._read() as conn:
                queues.require_queues(conn, names)
        with self._turn_writes() as writes:
            return turn.requeue_running(writes, names, now)

    # -- config and daemons ---------------------------------------------------------------------

    # -- cron schedules (schedules.py) ------------------------------------------------------------

    def cron_add(self, schedule: Schedule, queue: str) -> Schedule:
        """Store a new schedule whose jobs go to `queue` (QueueNotFound if it is not there;
        CronExists if the name is taken). Returns it as stored."""
        with self._write() as conn:
            queues.require_queues(conn, [queue])
            schedules.add(conn, schedule)
            return schedules.get(conn, schedule.name)

    def cron_get(self, name: str) -> Schedule:
        """One schedule, with its last job's state now; CronNotFound."""
        with self._read() as conn:
            return schedules.get(conn, name)

    def cron_list(self) -> list[Schedule]:
        """Every schedule, by name."""
        with self._read() as conn:
            return schedules.all_of(conn)

    def cron_rm(self, name: str) -> None:
        """Remove a schedule; the jobs it fired stay (and keep naming it). CronNotFound."""
        with self._write() as conn:
            schedules.remove(conn, name)

    def cron_pause(self, name: str, paused: bool, next_fire: float | None) -> Schedule:
        """Pause or resume a schedule on every daemon; `next_fire` given replaces its next slot
        (a resume starts from now: the slots of the pause are not missed ones). CronNotFound."""
        with self._write() as conn:
            schedules.set_paused(conn, name, paused, next_fire)
            return schedules.get(conn, name)

    def cron_next_fire(self) -> float | None:
        """The earliest next fire of any schedule not paused (None: none)."""
        with self._read() as conn:
            return schedules.earliest(conn)

    def cron_due(self, now: float) -> list[Schedule]:
        """The schedules not paused whose next fire is at or before `now`, earliest first."""
        with self._read() as conn:
            return schedules.due(conn, now)

    def cron_fire(
        self, name: str, expected: float, new: Sequence[tuple[float, NewJob]], next_fire: float, now: float,
        envs: Sequence[EnvSnapshot] = (), skipped: float | None = None, skip_reason: str | None = None,
    ) -> CronFired | None:
        """Fire a due schedule in one transaction: enqueue `new` (one job per slot, stamped with
        the schedule and its slot) and move its next fire from `expected` to `next_fire`,
        recording the last job and `skipped` / `skip_reason`. With `overlap skip` and the previous
        fire's job not ended, no job is enqueued and the skip is recorded instead.

        None, and nothing changed, if the schedule is no longer due at `expected` (another daemon
        fired it, it was paused or removed). If a job for one of the slots exists already (the
        unique (schedule, slot) key refused it), no job is enqueued and the schedule moves on,
        recording that: each slot is fired once across every daemon."""
        try:
            with self._write() as conn:
                s = schedules.lock_for_fire(conn, name, expected)
                if s is None:
                    return None
                why = schedules.overlap_skip(s) if new else None
                if why is not None:
                    fired = CronFired([], new[-1][0], why)
                else:
                    fired = CronFired([(slot, job.id) for slot, job in new], skipped, skip_reason)
                    if new:
                        self._add_jobs(conn, [job for _, job in new], now, envs)
                        schedules.mark_jobs(conn, name, fired.jobs)
                schedules.advance(conn, s, fired, next_fire, now)
            return fired
        except IntegrityError:
            pass
        # The schedule's own check passed, yet a job for one of these slots exists (the clock of
        # the store stepped back, a schedule re-added under its old name): that slot was fired.
        # Move on without a job, or the ticker would find it due again at once, for ever.
        with self._write() as conn:
            s = schedules.lock_for_fire(conn, name, expected)
            if s is None:
                return None
            fired = CronFired([], new[-1][0], "already fired: a job for this slot exists")
            schedules.advance(conn, s, fired, next_fire, now)
        return fired

    def cron_run(self, name: str, new: NewJob, now: float, envs: Sequence[EnvSnapshot] = ()) -> str:
        """Enqueue one job of a schedule now, by hand (no slot: it moves no fire). CronNotFound."""
        with self._write() as conn:
            schedules.get(conn, name)
            self._add_jobs(conn, [new], now, envs)
            schedules.mark_jobs(conn, name, [(None, new.id)])
            schedules.record_run(conn, name, new.id, now)
        return new.id

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
                    claiming=int(info.claiming), boot_id=info.boot_id, pid_ns=info.pid_ns,
                    clock_offset=info.clock_offset,
                )
            )

    def daemons(self) -> list[DaemonInfo]:
        """Every registered daemon instance (`claiming` as its last heartbeat said)."""
        with self._read() as conn:
            rows = conn.execute(select(daemons)).all()
        return [_daemon_of(r._mapping) for r in rows]

    def forget_daemons(self, ids: Iterable[str]) -> None:
        """Remove daemon rows (dead instances, or this one at shutdown)."""
        ids = list(ids)
        if ids:
            with self._write() as conn:
                conn.execute(delete(daemons).where(daemons.c.id.in_(ids)))


_DAEMON_FIELDS = ("id", "host", "pid", "proc_start", "started_at", "heartbeat_at", "slots", "active", "boot_id",
                  "pid_ns", "clock_offset")


def _daemon_of(row: Any) -> DaemonInfo:
    return DaemonInfo(**{k: row[k] for k in _DAEMON_FIELDS}, claiming=bool(row["claiming"]))


def _same_job_key(job: NewJob) -> tuple[Any, ...]:
    return (*(getattr(job, name) for name in _SAME_JOB_FIELDS), frozenset(workflow.edges_of_new(job).items()))


def _now(now: float | None) -> float:
    """`now` as given, or the clock's time for a caller that gave none (delete, purge)."""
    import time

    return time.time() if now is None else now


def _first_line(error: BaseException | None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__

