"""What SQLite needs that other dialects do not: WAL, BEGIN IMMEDIATE, triggers, checkpoints."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, literal_column, text
from sqlalchemy.engine import make_url

from queuectl.errors import InvalidParams, StoreBusy, StoreUnavailable
from queuectld.jobs import Job, JobState, RetryPolicy
from queuectld.store.base import FinishedAttempt, ListPosition, NewJob, SpawnedAttempt
from queuectld.store.sql import SqlStore, settle_attempts, translate_db_errors

#: How long a write waits for another process's lock before the request fails with StoreBusy.
BUSY_TIMEOUT_S = 5.0
#: After a checkpoint the WAL is truncated to at most this size.
WAL_LIMIT_BYTES = 64 * 1024 * 1024

# INDEXED BY: without statistics SQLite may pick ix_jobs_state_created and sort every waiting
# row (0.5 s per claim at a million jobs); the partial indexes answer in microseconds.
_JOB_COLUMNS = (
    "id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at,"
    " started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host"
)
# INDEXED BY: without statistics SQLite may pick ix_jobs_state_created and sort every waiting
# row (0.5 s per claim at a million jobs); the partial indexes answer in microseconds.
_CLAIM = f"""
    UPDATE jobs
       SET state = 'processing', owner = :owner, host = :host, lease_expires_at = :lease,
           run = run + 1, started_at = :now, updated_at = :now, pid = NULL, proc_start = NULL
     WHERE id IN (SELECT id FROM jobs INDEXED BY ix_jobs_due
                   WHERE state IN ('pending', 'failed') AND next_run_at <= :now
                   ORDER BY priority DESC, next_run_at
                   LIMIT :limit)
    RETURNING {_JOB_COLUMNS}
"""
# The scheduler's turn runs these through the driver directly: SQLAlchemy's per-statement work
# was five times SQLite's own on this path.
_INSERT_ATTEMPT = "INSERT INTO attempts (job_id, attempt, started_at, owner) VALUES (?, ?, ?, ?)"
_RECORD_PROCESS = (
    "UPDATE jobs SET pid = ?, proc_start = ? WHERE id = ? AND run = ? AND owner = ? AND state = 'processing'"
)
_SELECT_PROCESSING = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'processing' AND id IN "
_FINISH_JOB = (
    "UPDATE jobs SET owner = NULL, lease_expires_at = NULL, pid = NULL, proc_start = NULL, exit_code = ?,"
    " state = ?, attempts = ?, next_run_at = ?, last_error = ?, updated_at = ?, finished_at = ?, output_tail = ?"
    " WHERE id = ? AND run = ? AND owner = ? AND state = 'processing'"
)
_FINISH_ATTEMPT = "UPDATE attempts SET finished_at = ?, exit_code = ?, reason = ?, error = ? WHERE job_id = ? AND attempt = ?"

#: Insertion order, which `list` without a state pages on: a new row's rowid is above every row's
#: there is (max + 1). VACUUM, which may renumber rowids, is never run.
_ROWID = literal_column("jobs.rowid")

_NEXT_DUE = text(
    "SELECT min(next_run_at) FROM jobs INDEXED BY ix_jobs_next WHERE state IN ('pending', 'failed')"
)
# NewJob tuples bind as they are: (id, command, max_retries, priority, timeout_s, next_run_at, created_at).
_INSERT = (
    "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at,"
    " updated_at, run) VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6, ?7, ?7, 0)"
)
_COUNTERS = """CREATE TABLE IF NOT EXISTS state_counts (state VARCHAR(16) PRIMARY KEY, n INTEGER NOT NULL)"""
# Inserts are counted by the store in one statement per batch (a per-row insert trigger cost
# three quarters of batch-enqueue throughput); changes and deletes by triggers.
_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS jobs_count_delete AFTER DELETE ON jobs BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state; END""",
    """CREATE TRIGGER IF NOT EXISTS jobs_count_update AFTER UPDATE OF state ON jobs
         WHEN OLD.state <> NEW.state BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
         UPDATE state_counts SET n = n + 1 WHERE state = NEW.state; END""",
]


class SqliteStore(SqlStore):
    """SQLite in WAL mode: a writer engine that takes the lock up front, a reader that never blocks on it."""

    def __init__(self, url: str, *, sync: str = "normal") -> None:
        path = make_url(url).database
        if path and path != ":memory:":
            _create_private(Path(path))
            _enable_wal(Path(path))
        super().__init__(_engine(url, immediate=True, sync=sync), _engine(url, immediate=False, sync=sync))
        self.migrate()

    def _install_counters(self, conn: Connection) -> None:
        """One row per state, kept exact by triggers in the same transaction as each change."""
        conn.exec_driver_sql(_COUNTERS)
        for state in JobState:
            conn.execute(
                text("INSERT INTO state_counts (state, n) SELECT :s, count(*) FROM jobs WHERE state = :s"),
                {"s": state.value},
            )
        for ddl in _TRIGGERS:
            conn.exec_driver_sql(ddl)

    def _count_rows(self, conn: Connection) -> Any:
        return conn.exec_driver_sql("SELECT state, n FROM state_counts").all()

    def _insert_jobs(self, conn: Connection, new: Sequence[NewJob], now: float) -> None:
        # Straight to the driver: SQLAlchemy's per-row parameter processing doubled the cost.
        conn.exec_driver_sql(_INSERT, new)
        conn.exec_driver_sql("UPDATE state_counts SET n = n + ? WHERE state = 'pending'", (len(new),))

    def _claim(self, conn: Connection, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        cursor = conn.connection.driver_connection.cursor()
        return _claim_raw(cursor, owner, host, limit, now, lease_s)

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
        with self._raw_write() as cur:
            if spawned:
                cur.executemany(_RECORD_PROCESS, [(sp.pid, sp.proc_start, sp.job_id, sp.run, sp.owner) for sp in spawned])
            settled: list[tuple[FinishedAttempt, Job | None, dict[str, Any]]] = []
            if finished:
                current: dict[str, Job] = {}
                ids = list({fa.job_id for fa in finished})
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    cur.execute(_SELECT_PROCESSING + f"({', '.join('?' * len(chunk))})", chunk)
                    current.update((row[0], _row_job(row)) for row in cur.fetchall())
                settled = settle_attempts(finished, current, policy)
                done = [(fa, v) for fa, _, v in settled if v]
                cur.executemany(_FINISH_JOB, [
                    (v["exit_code"], v["state"], v["attempts"], v["next_run_at"], v["last_error"], v["updated_at"],
                     v["finished_at"], v["output_tail"], fa.job_id, fa.run, fa.owner) for fa, v in done
                ])
                cur.executemany(_FINISH_ATTEMPT, [
                    (fa.finished_at, fa.outcome.exit_code, fa.outcome.reason,
                     None if fa.outcome.succeeded else fa.outcome.describe(), fa.job_id, fa.run) for fa, _ in done
                ])
            claimed = _claim_raw(cur, owner, host, limit, now, lease_s) if limit > 0 else []
            if claimed:
                cur.executemany(_INSERT_ATTEMPT, [(j.id, j.run, now, owner) for j in claimed])
        claimed.sort(key=lambda j: (-j.priority, j.next_run_at or 0.0))
        return [(fa, job) for fa, job, _ in settled], claimed

    @contextmanager
    def _raw_write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction on the writer's own driver connection (BEGIN IMMEDIATE ... COMMIT)."""
        raw = self.write_engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            cur = dbapi.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if dbapi.in_transaction:
                    dbapi.execute("ROLLBACK")
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreBusy() from None
                raise StoreUnavailable(detail=str(exc)) from None
            finally:
                cur.close()
        finally:
            raw.close()

    def _list_order(self, state: JobState | None) -> tuple[Any, ...]:
        # Without a state filter: rowid is insertion order, which is creation order (no index needed).
        return super()._list_order(state) if state is not None else (_ROWID,)

    def _list_after(self, state: JobState | None, after: ListPosition) -> Any:
        if state is not None:
            return super()._list_after(state, after)
        if after.rowid is None:
            raise InvalidParams(detail="cursor: not from this daemon's listing; list again without it")
        return _ROWID > after.rowid

    def _list_extra(self) -> tuple[Any, ...]:
        return (_ROWID.label("list_rowid"),)

    def next_due_at(self) -> float | None:
        with self._read() as conn:
            return conn.execute(_NEXT_DUE).scalar()

    def checkpoint(self) -> None:
        """Copy the WAL back into the database so it cannot grow while the daemon runs."""
        # Outside any transaction: SQLite refuses to checkpoint inside one.
        with translate_db_errors(), self.write_engine.connect() as conn:
            conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()


def _row_job(row: Sequence[Any]) -> Job:
    return Job(row[0], row[1], JobState(row[2]), *row[3:])


def _claim_raw(cur: sqlite3.Cursor, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
    cur.execute(_CLAIM, {"owner": owner, "host": host, "lease": now + lease_s, "now": now, "limit": limit})
    return [_row_job(row) for row in cur.fetchall()]


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files copy the mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists() and (p.stat().st_mode & 0o077) and p.stat().st_uid == os.getuid():
            os.chmod(p, 0o600)


def _enable_wal(path: Path) -> None:
    """Switch the file to WAL once (it persists). Done apart from the engines: the switch needs an
    exclusive lock for which SQLite does not wait, so daemons opening a new file together retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise StoreUnavailable(detail=f"{path}: {exc}") from None
            if time.monotonic() > deadline:
                raise StoreBusy() from None
            time.sleep(0.05)
        finally:
            conn.close()


def _engine(url: str, *, immediate: bool, sync: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's implicit transactions would defer the lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
