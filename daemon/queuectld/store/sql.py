"""The store over SQLAlchemy Core: one implementation for every dialect.

Subclasses in sqlite.py / postgres.py override only what differs: engines, the claim statement,
the per-state counters, maintenance. Every public method is one transaction; SQLAlchemy errors are
translated to queuectl errors here and never leave the package.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from queuectl.errors import DuplicateJob, InvalidState, JobNotFound, StoreBusy, StoreUnavailable
from queuectld.config import DEFAULTS
from queuectld.jobs import TERMINAL_STATES, Job, JobState, Outcome, RetryPolicy
from queuectld.store import models
from queuectld.store.base import (
    AttemptRecord, DaemonInfo, FinishedAttempt, ListPosition, LostAttempt, NewJob, SpawnedAttempt,
)
from queuectld.store.models import attempts, config, daemons, jobs, meta

log = logging.getLogger(__name__)

_WAITING = (JobState.PENDING.value, JobState.FAILED.value)
_LIST_COLUMNS = [c for c in jobs.c if c.name != "output_tail"]
_LIST_NAMES = tuple(c.name for c in _LIST_COLUMNS)
_IN_CHUNK = 500


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn SQLAlchemy's exceptions into the queuectl errors a user can act on."""
    try:
        yield
    except IntegrityError:
        raise  # the caller knows which constraint means what
    except OperationalError as exc:
        text = str(exc.orig).lower()
        if any(word in text for word in ("locked", "busy", "deadlock", "could not serialize")):
            raise StoreBusy() from None
        log.exception("store operation failed")
        raise StoreUnavailable(detail=str(exc.orig).splitlines()[0]) from None
    except DBAPIError as exc:
        log.exception("store operation failed")
        raise StoreUnavailable(detail=str(exc.orig).splitlines()[0]) from None


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    data["state"] = JobState(data["state"])
    data.setdefault("output_tail", None)
    return Job(**data)


class SqlStore:
    """The Store implementation shared by every dialect."""

    def __init__(self, write_engine: Engine, read_engine: Engine) -> None:
        self.write_engine = write_engine
        self.read_engine = read_engine

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with translate_db_errors(), self.write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate_db_errors(), self.read_engine.begin() as conn:
            yield conn

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema to models.SCHEMA_VERSION."""
        with self._write() as conn:
            self._lock_schema(conn)
            models.Base.metadata.create_all(conn)
            version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if version is None:
                self._install_counters(conn)
                conn.execute(insert(meta).values(key="schema_version", value=str(models.SCHEMA_VERSION)))
            elif int(version) > models.SCHEMA_VERSION:
                raise StoreUnavailable(
                    detail=f"the database has schema {version}, newer than this queuectld "
                    f"({models.SCHEMA_VERSION}); upgrade queuectld"
                )

    def _announce(self, conn: Connection) -> None:
        """A job became due now: tell other daemons sharing the store (dialect specific)."""

    def listen(self, on_jobs: Callable[[], None]) -> Callable[[], None]:
        """Call `on_jobs` (from another thread) when another daemon makes a job due; returns a
        function that stops listening. A store only one daemon uses needs nothing: its own
        requests already wake its scheduler."""
        return lambda: None

    def _lock_schema(self, conn: Connection) -> None:
        """Serialize migrations of daemons starting together (SQLite's BEGIN IMMEDIATE already does)."""

    def _install_counters(self, conn: Connection) -> None:
        """Create the per-state counters and whatever keeps them current (dialect specific)."""
        raise NotImplementedError

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

    def enqueue(self, new: Sequence[NewJob], *, replace: bool, now: float) -> list[str]:
        """Insert jobs in one transaction; with replace, overwrite any that are not running."""
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
        except IntegrityError:
            raise DuplicateJob(job_id=self._first_existing(ids) or ids[0]) from None
        return ids

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

    def renew_leases(self, owner: str, now: float, lease_s: float, active: int, slots: int) -> set[str]:
        """Extend this owner's leases and heartbeat; returns the ids it still holds."""
        with self._write() as conn:
            held = conn.execute(
                update(jobs)
                .where(jobs.c.owner == owner, jobs.c.state == JobState.PROCESSING.value)
                .values(lease_expires_at=now + lease_s)
                .returning(jobs.c.id)
            ).scalars().all()
            conn.execute(
                update(daemons).where(daemons.c.id == owner).values(heartbeat_at=now, active=active, slots=slots)
            )
        return set(held)

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


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]

