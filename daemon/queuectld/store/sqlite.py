"""What SQLite needs that other dialects do not: WAL, BEGIN IMMEDIATE, triggers, checkpoints."""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import ColumnClause, Connection, Engine, create_engine, event, literal_column, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from queuectl.errors import InvalidParams, OutcomeUnknown
from queuectld.jobs import Job, JobState
from queuectld.settings import fault_point
from queuectld.store import queues, sqlite_file, workflow
from queuectld.store.base import EnvSnapshot, ListPosition, NewJob, RunKey, SpawnedAttempt
from queuectld.store.errors import StoreFault, classify, to_domain_error
from queuectld.store.rows import IN_CHUNK, JOB_COLUMNS_SQL, chunks, row_job
from queuectld.store.schema import SchemaPlan
from queuectld.store.sql import SqlStore, translate_db_errors
from queuectld.store.turn import Settled, TurnWrites

log = logging.getLogger(__name__)

#: How long a write waits for another process's lock before the request fails with StoreBusy.
BUSY_TIMEOUT_S = 5.0
#: After a checkpoint the WAL is truncated to at most this size.
WAL_LIMIT_BYTES = 64 * 1024 * 1024
#: SQLite checkpoints inside the COMMIT that takes the WAL past this many pages. At its default,
#: 1,000, that was a turn every ~45 jobs (some 20 WAL frames a job) copying 4 MB and syncing
#: the file in the writer thread: 3-5 ms a slot waited through, the dispatch p99. The daemon
#: checkpoints every CHECKPOINT_EVERY_S in a thread of its own instead (SqliteStore.checkpoint,
#: PASSIVE: writers go on meanwhile); this is only the backstop should that fall behind.
WAL_AUTOCHECKPOINT_PAGES = 16_384
#: SQLite's primary result codes for which a failed COMMIT committed nothing. SQLITE_BUSY: "the
#: transaction remains active and the COMMIT can be retried later" (lang_transaction.html).
#: SQLITE_FULL: in WAL mode the commit record is the last frame a COMMIT appends, so a write
#: that ran out of space never completed it (SQLite then rolls the transaction back).
_COMMIT_FAILED_CLEANLY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_FULL)
#: The fault point that makes a COMMIT commit and then fail as if its answer had been lost.
LOSE_COMMIT_ANSWER = "lose-commit-answer:"

# The claim, in two statements under BEGIN IMMEDIATE (which holds the only write lock, so what
# the first reads holds for the second). First, what each queue may take: nothing when paused,
# else its limit minus its running jobs (ix_jobs_running: as many entries as run) or, without a
# limit, the whole claim (NULL: no limit).
_CLAIM_ROOM = """
    SELECT name, CASE WHEN concurrency IS NULL THEN NULL
                      ELSE concurrency - (SELECT count(*) FROM jobs INDEXED BY ix_jobs_running
                                           WHERE queue = queues.name AND state = 'processing') END
      FROM queues WHERE paused = 0 ORDER BY name
"""
# Then one statement: each queue with room contributes at most its share of due rows, walked in
# order on ix_jobs_due (INDEXED BY: without statistics SQLite may pick ix_jobs_state_created and
# sort every waiting row, 0.5 s per claim at a million jobs); of those, priority first, then a
# fair turn between queues (the n-th due job of each queue at that priority before any queue's
# n+1-th), then due time. SQLite has no LATERAL and no correlated LIMIT: one branch per queue.
_CLAIM_BRANCH = """SELECT * FROM (SELECT id, queue, priority, next_run_at FROM jobs INDEXED BY ix_jobs_due
                      WHERE queue = :q{i} AND state IN ('pending', 'failed') AND held = 0 AND deps_left = 0
                        AND next_run_at <= :now
                      ORDER BY priority DESC, next_run_at LIMIT :n{i})"""
_CLAIM = f"""
    UPDATE jobs
       SET state = 'processing', owner = :owner, host = :host, lease_expires_at = :lease,
           run = run + 1, started_at = :now, updated_at = :now, pid = NULL, proc_start = NULL
     WHERE id IN (SELECT id FROM (SELECT id, priority, next_run_at,
                                         row_number() OVER (PARTITION BY queue, priority ORDER BY next_run_at) AS turn
                                    FROM ({{branches}}))
                   ORDER BY priority DESC, turn, next_run_at
                   LIMIT :limit)
    RETURNING {JOB_COLUMNS_SQL}
"""


#: Branches per compound SELECT: SQLite refuses more than 500 (SQLITE_MAX_COMPOUND_SELECT), so
#: more queues than this are unioned in groups, each a compound of its own.
_COMPOUND = 400


@functools.lru_cache(maxsize=64)
def _claim_sql(queues: int) -> str:
    """The claim statement for `queues` queues with room (:q0/:n0, :q1/:n1, ...)."""
    branches = [_CLAIM_BRANCH.format(i=i) for i in range(queues)]
    groups = [" UNION ALL ".join(branches[i : i + _COMPOUND]) for i in range(0, queues, _COMPOUND)]
    union = groups[0] if len(groups) == 1 else " UNION ALL ".join(f"SELECT * FROM ({g})" for g in groups)
    return _CLAIM.format(branches=union)


# The scheduler's turn runs these through the driver directly (RawTurnWrites): SQLAlchemy's
# per-statement work was five times SQLite's own on this path.
_INSERT_ATTEMPT = "INSERT INTO attempts (job_id, attempt, started_at, owner, host) VALUES (?, ?, ?, ?, ?)"
_RECORD_PROCESS = (
    "UPDATE jobs SET pid = ?, proc_start = ? WHERE id = ? AND run = ? AND owner = ? AND state = 'processing'"
)
_SELECT_PROCESSING = f"SELECT {JOB_COLUMNS_SQL} FROM jobs WHERE state = 'processing' AND id IN "
_SELECT_HELD = "SELECT id, run FROM jobs WHERE owner = ? AND state = 'processing'"
_END_JOB = (
    "UPDATE jobs SET state = ?, attempts = ?, next_run_at = ?, last_error = ?, exit_code = ?, signal = ?,"
    " last_outcome = ?, finished_at = ?, updated_at = ?, output_tail = ?, owner = NULL, lease_expires_at = NULL,"
    " pid = NULL, proc_start = NULL"
    " WHERE id = ? AND run = ? AND owner = ? AND state = 'processing'"
)
_END_ATTEMPT = (
    "UPDATE attempts SET finished_at = ?, outcome = ?, exit_code = ?, signal = ?, error = ?"
    " WHERE job_id = ? AND attempt = ?"
)

#: Insertion order, which `list` without a state pages on: a new row's rowid is above every row's
#: there is (max + 1). VACUUM, which may renumber rowids, is never run.
_ROWID: ColumnClause[Any] = literal_column("jobs.rowid")

# The earliest due time of a job the claim could take: claimable (not held, not blocked), in a
# queue that is not paused and not full. One index probe per queue (ix_jobs_next's first entry).
_NEXT_DUE = text("""
    SELECT min((SELECT min(next_run_at) FROM jobs INDEXED BY ix_jobs_next
                 WHERE queue = q.name AND state IN ('pending', 'failed') AND held = 0 AND deps_left = 0))
      FROM queues q
     WHERE q.paused = 0
       AND (q.concurrency IS NULL OR q.concurrency > (SELECT count(*) FROM jobs INDEXED BY ix_jobs_running
                                                       WHERE queue = q.name AND state = 'processing'))
""")
_COUNT_INSERTED = (
    "INSERT INTO queue_counts (queue, state, held, n) VALUES (?, 'pending', ?, ?)"
    " ON CONFLICT (queue, state, held) DO UPDATE SET n = n + excluded.n"
)
_RUNNING_IN = "SELECT id, run, owner FROM jobs INDEXED BY ix_jobs_running WHERE state = 'processing'"
# NewJob tuples bind by position, their first 15 fields: (id, command, max_retries, priority, timeout_s,
# next_run_at, created_at, retry_rules, backoff_base, backoff_max_s, queue, cwd, env_id, labels, held); a
# batch with dependencies adds (deps_left, has_dependents).
_INSERT_COLUMNS = (
    "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at,"
    " updated_at, run, retry_rules, backoff_base, backoff_max_s, queue, cwd, env_id, labels, held, deps_left,"
    " has_dependents) VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6, ?7, ?7, 0, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
)
_INSERT = _INSERT_COLUMNS + "0, 0)"
_INSERT_LINKED = _INSERT_COLUMNS + "?16, ?17)"
_BOUND = 15
assert NewJob._fields[:_BOUND] == (
    "id", "command", "max_retries", "priority", "timeout_s", "next_run_at", "created_at", "retry_rules",
    "backoff_base", "backoff_max_s", "queue", "cwd", "env_id", "labels", "held",
), "_INSERT binds NewJob by position"
# A batch whose jobs differ only in id, command and times (every plain `enqueue --file`): the
# shared fields bound once, the rest read from one JSON array by SQLite, in order. Measured per
# 100,000 jobs: 0.55 s against 1.15 s for binding 15 parameters a row (pysqlite's binding is the
# cost). A float read back by `->>` is the same double (json.dumps writes repr).
_INSERT_UNIFORM = (
    "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at,"
    " updated_at, run, retry_rules, backoff_base, backoff_max_s, queue, cwd, env_id, labels, held, deps_left,"
    " has_dependents) SELECT value->>0, value->>1, 'pending', 0, ?1, ?2, ?3, value->>2, value->>3, value->>3, 0,"
    " ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, 0 FROM json_each(?12)"
)
#: The NewJob fields _INSERT_UNIFORM binds once: max_retries, priority, timeout_s, retry_rules,
#: backoff_base, backoff_max_s, queue, cwd, env_id, labels, held.
_SHARED_FIELDS = operator.itemgetter(2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14)
#: Below this many jobs the plain insert is as cheap, and one statement fewer to reason about.
UNIFORM_MIN_JOBS = 100
_INSERT_EDGE = "INSERT INTO job_deps (job_id, dep_id, any_end) VALUES (?, ?, ?)"
_INSERT_LABEL = "INSERT INTO job_labels (label, job_id) VALUES (?, ?)"
_INSERT_ENV = "INSERT INTO envs (id, clean, vars) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING"
#: The most jobs `_add_plain` takes (a bigger batch goes the general way, uniform or not).
PLAIN_MAX_JOBS = 99
# The dependency effects of a turn (workflow.apply_dependency_ends), on the driver as the turn is.
_WAITING_DEPENDENTS = (
    "SELECT d.job_id, d.dep_id, d.any_end, j.state, j.deps_left, j.held, j.has_dependents"
    " FROM job_deps d JOIN jobs j ON j.id = d.job_id"
    " WHERE j.state IN ('pending', 'failed') AND d.dep_id IN "
)
_SATISFY = "UPDATE jobs SET deps_left = deps_left - ?, updated_at = ? WHERE id = ?"
_CANCEL_DEPENDENT = (
    "UPDATE jobs SET state = 'canceled', next_run_at = NULL, last_error = ?, canceled_by = ?, finished_at = ?,"
    " updated_at = ? WHERE id = ? AND state IN ('pending', 'failed')"
)


#: PRAGMA auto_vacuum's value for INCREMENTAL.
_INCREMENTAL = 2


#: How often the daemon checkpoints a SQLite store (maintenance.Checkpoint, off the writer thread):
#: the WAL holds at most a few seconds' frames, and a hot page is copied back once per interval,
#: not once per 1,000 frames.
CHECKPOINT_EVERY_S = 0.5


class SqliteStore(SqlStore):
    """SQLite in WAL mode: a writer engine that takes the lock up front, a reader that never blocks on it."""

    #: maintenance.Checkpoint runs at least this often (see CHECKPOINT_EVERY_S).
    checkpoint_every_s = CHECKPOINT_EVERY_S

    def __init__(self, url: str, *, sync: str = "normal", switch_to_wal: bool = True) -> None:
        database = make_url(url).database
        #: The database file (None in memory). Opening creates it when missing: open_store decides
        #: before that whether a missing or damaged file may be (re)created.
        self.path = Path(database) if database and database != ":memory:" else None
        if self.path is not None:
            self.data_dir = str(self.path.resolve().parent)
            self.where = self.data_dir
            _create_private(self.path)
            if switch_to_wal:  # not for a look that must change nothing (`migrate --dry-run`)
                _enable_wal(self.path)
        point = fault_point() or ""
        self._lost_answer = _LostAnswer(point[len(LOSE_COMMIT_ANSWER):]) if point.startswith(LOSE_COMMIT_ANSWER) else None
        super().__init__(_engine(url, immediate=True, sync=sync, trace=self._lost_answer),
                         _engine(url, immediate=False, sync=sync))

    def _commit_failed_cleanly(self, error: BaseException | None) -> bool:
        return _committed_nothing(error)

    def _after_commit(self) -> None:
        if self._lost_answer is not None and self._lost_answer.fires():
            raise OperationalError("COMMIT", None, self._lost_answer.error())

    def quick_check(self) -> str | None:
        """SQLite's `PRAGMA quick_check`: None when the file is sound, else its first complaint."""
        try:
            with self.read_engine.connect() as conn:
                rows = _driver(conn).execute("PRAGMA quick_check").fetchall()
        except DBAPIError as exc:
            return str(exc.orig).splitlines()[0]
        except sqlite3.DatabaseError as exc:  # the driver's own, from the raw connection
            return str(exc).splitlines()[0]
        problems = [row[0] for row in rows if row[0] != "ok"]
        return None if not problems else f"{problems[0]} ({len(problems)} problem(s) in all)"

    def _before_upgrade(self, plan: SchemaPlan) -> None:
        """Copy an existing database aside (`<file>.bak-<revision>`) before any revision touches it."""
        if plan.current is not None and self.path is not None:
            backup = sqlite_file.backup(self.path, plan.current)
            log.info("backed up %s to %s before upgrading it from revision %s to %s",
                     self.path, backup, plan.current, plan.head)

    def _count_rows(self, conn: Connection) -> Any:
        return conn.exec_driver_sql("SELECT state, sum(n) FROM queue_counts GROUP BY state").all()

    def _queue_count_rows(self, conn: Connection) -> Any:
        return conn.exec_driver_sql("SELECT queue, state, held, n FROM queue_counts WHERE n <> 0").all()

    def _insert_jobs(self, conn: Connection, new: Sequence[NewJob], now: float, links: workflow.Links) -> None:
        # Straight to the driver: SQLAlchemy's per-row parameter processing doubled the cost.
        if links.deps_left is None and links.has_dependents is None:
            shared = _shared_fields(new)
            if shared is not None:
                rows = json.dumps([(n.id, n.command, n.next_run_at, n.created_at) for n in new],
                                  ensure_ascii=False, check_circular=False)
                conn.exec_driver_sql(_INSERT_UNIFORM, (*shared, rows))
            else:
                conn.exec_driver_sql(_INSERT, [n[:_BOUND] for n in new])
        else:
            left = links.deps_left or [0] * len(new)
            marked = links.has_dependents or [0] * len(new)
            conn.exec_driver_sql(_INSERT_LINKED, [(*n[:_BOUND], left[i], marked[i]) for i, n in enumerate(new)])
        count_inserted(_driver(conn), new)

    def _add_plain(self, new: Sequence[NewJob], now: float, envs: Sequence[EnvSnapshot]) -> bool:
        # A small batch without dependencies (every single `enqueue`) on the driver, as the turn
        # is: through SQLAlchemy the statements' preparation cost more than SQLite's own work.
        if len(new) > PLAIN_MAX_JOBS or any(j.after or j.after_any for j in new):
            return False
        with self._raw_write() as cur:
            queues.require_queue_names(cur.execute, sorted({j.queue for j in new}))
            if envs:
                cur.executemany(_INSERT_ENV, workflow.env_rows(envs))
            try:
                cur.executemany(_INSERT, [n[:_BOUND] for n in new])
            except sqlite3.IntegrityError as exc:  # an id that exists: the caller sorts out repeats
                raise IntegrityError(_INSERT, None, exc) from None
            labels = workflow.label_rows(new)
            if labels:
                cur.executemany(_INSERT_LABEL, labels)
            count_inserted(cur, new)
        return True

    def _insert_links(self, conn: Connection, links: workflow.Links) -> None:
        if links.edges:
            conn.exec_driver_sql(_INSERT_EDGE, links.edges)
        if links.labels:
            conn.exec_driver_sql(_INSERT_LABEL, links.labels)
        workflow.mark_has_dependents(conn, links.outside or ())

    @contextmanager
    def _turn_writes(self) -> Iterator[TurnWrites]:
        """The turn on the writer's own driver connection: the same statements as PostgreSQL's
        (a turn costs the same four to six), without SQLAlchemy's per-statement work."""
        with self._raw_write() as cur:
            yield RawTurnWrites(cur)

    @contextmanager
    def _raw_write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction on the writer's own driver connection (BEGIN IMMEDIATE ... COMMIT).
        An error from COMMIT is OutcomeUnknown unless SQLite guarantees nothing was committed."""
        raw = self.write_engine.raw_connection()
        try:
            dbapi = cast(sqlite3.Connection, raw.driver_connection)
            cur = dbapi.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    if dbapi.in_transaction:  # SQLite rolls back by itself on SQLITE_FULL, IOERR, ...
                        cur.execute("ROLLBACK")
                    raise
                try:
                    cur.execute("COMMIT")
                    if self._lost_answer is not None and self._lost_answer.fires():
                        raise self._lost_answer.error()
                except sqlite3.Error as exc:
                    if not _committed_nothing(exc):
                        if dbapi.in_transaction:
                            try:
                                dbapi.execute("ROLLBACK")
                            except sqlite3.Error:
                                pass
                        raise OutcomeUnknown(detail=str(exc)) from None
                    raise
            except sqlite3.Error as exc:
                if dbapi.in_transaction:
                    try:
                        dbapi.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite rolled back itself (it does on SQLITE_FULL, IOERR, ...)
                raise to_domain_error(exc, where=self.where, writing=True) from exc
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

    def _list_before(self, state: JobState | None, after: ListPosition) -> Any:
        if state is not None:
            return super()._list_before(state, after)
        if after.rowid is None:
            raise InvalidParams(detail="cursor: not from this daemon's listing; list again without it")
        return _ROWID < after.rowid

    def _list_extra(self) -> tuple[Any, ...]:
        return (_ROWID.label("list_rowid"),)

    def next_due_at(self) -> float | None:
        """When the earliest job the claim could take becomes due: claimable (not held, not
        blocked) in a queue neither paused nor full; None if there is none."""
        with self._read() as conn:
            return conn.execute(_NEXT_DUE).scalar()

    def migrate(self, *, may_create: bool = True, queue_id: str | None = None) -> SchemaPlan:
        """As SqlStore.migrate; then a file made before revision 0007, without incremental
        auto-vacuum, is switched to it (one VACUUM, which rewrites the file once)."""
        plan = super().migrate(may_create=may_create, queue_id=queue_id)
        self.ensure_incremental_vacuum()
        return plan

    def ensure_incremental_vacuum(self) -> bool:
        """Switch the file to `auto_vacuum=INCREMENTAL` if it is not (SQLite takes the switch
        only with a VACUUM, outside any transaction); returns whether it had to."""
        if self.path is None:
            return False
        with translate_db_errors(where=self.where), self.write_engine.connect() as conn:
            dbapi = _driver(conn)
            if dbapi.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
                return False
            started = time.monotonic()
            size = self.path.stat().st_size
            dbapi.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall()
            dbapi.execute("VACUUM").fetchall()
            log.info("switched %s to incremental auto-vacuum (one VACUUM of %.1f MB in %.1f s)", self.path,
                     size / 1e6, time.monotonic() - started)
        return True

    def reclaim_space(self, max_pages: int, keep_fraction: float) -> int:
        """Give free pages back to the file system, keeping `keep_fraction` of the file's pages
        free (new jobs reuse them without growing the file) and at most `max_pages` in this step
        (`PRAGMA incremental_vacuum`, a short write transaction of its own); returns how many
        free pages are still above what is kept (0: done)."""
        with translate_db_errors(where=self.where), self.write_engine.connect() as conn:
            dbapi = _driver(conn)
            pages = int(dbapi.execute("PRAGMA page_count").fetchone()[0])
            free = int(dbapi.execute("PRAGMA freelist_count").fetchone()[0])
            extra = free - int(pages * keep_fraction)
            if extra <= 0:
                return 0
            step = min(extra, int(max_pages))
            # Through sqlite3_exec (executescript), which steps the pragma to its end: the driver's
            # execute() steps a statement without result columns once, which frees one page.
            dbapi.executescript(f"PRAGMA incremental_vacuum({step});")
            return max(0, extra - step)

    def space(self) -> tuple[int, int]:
        """(pages in the file, of them free): what `reclaim_space` may give back."""
        with translate_db_errors(where=self.where, writing=False), self.read_engine.connect() as conn:
            dbapi = _driver(conn)
            return (int(dbapi.execute("PRAGMA page_count").fetchone()[0]),
                    int(dbapi.execute("PRAGMA freelist_count").fetchone()[0]))

    def checkpoint(self) -> None:
        """Copy the WAL back into the database so it cannot grow while the daemon runs. PASSIVE:
        it takes no lock a writer waits for, so the daemon runs it beside its writer thread."""
        # Outside any transaction: SQLite refuses to checkpoint inside one. The statement goes to
        # the driver directly, so translate_db_errors sees sqlite3's own errors (SQLITE_FULL, ...).
        with translate_db_errors(where=self.where), self.write_engine.connect() as conn:
            _driver(conn).execute("PRAGMA wal_checkpoint(PASSIVE)").close()


def _driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one."""
    return cast(sqlite3.Connection, conn.connection.dbapi_connection)


def _committed_nothing(error: BaseException | None) -> bool:
    """Whether a COMMIT that raised `error` is known to have committed nothing."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _COMMIT_FAILED_CLEANLY


class _LostAnswer:
    """Fault point `lose-commit-answer:NEEDLE` (tests only; QUEUECTL_FAULT_POINT): the first COMMIT
    of a write transaction that ran SQL containing NEEDLE commits, then fails as a lost answer does."""

    def __init__(self, needle: str) -> None:
        self.needle = needle
        self.armed = True
        self.statements: list[str] = []

    def trace(self, sql: str) -> None:
        """The writer connections' trace callback: remember the statements since BEGIN."""
        if sql.startswith("BEGIN"):
            self.statements = []
        elif sql != "COMMIT":
            self.statements.append(sql)

    def fires(self) -> bool:
        """True once, at the commit of the first transaction that matches."""
        if self.armed and any(self.needle in sql for sql in self.statements):
            self.armed = False
            return True
        return False

    def error(self) -> sqlite3.OperationalError:
        """What the driver raises when the storage under it fails during the commit."""
        exc = sqlite3.OperationalError("disk I/O error (fault point: the answer to COMMIT was lost)")
        exc.sqlite_errorcode = sqlite3.SQLITE_IOERR
        return exc


class RawTurnWrites:
    """TurnWrites on a sqlite3 cursor inside BEGIN IMMEDIATE (SQLite's one write path of a turn)."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur

    def record_processes(self, spawned: Sequence[SpawnedAttempt]) -> None:
        """See TurnWrites."""
        self.cur.executemany(_RECORD_PROCESS, [(sp.pid, sp.proc_start, sp.job_id, sp.run, sp.owner) for sp in spawned])

    def processing(self, ids: Sequence[str]) -> dict[str, Job]:
        """See TurnWrites. (BEGIN IMMEDIATE already holds the only write lock.)"""
        current: dict[str, Job] = {}
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i : i + IN_CHUNK]
            self.cur.execute(_SELECT_PROCESSING + f"({', '.join('?' * len(chunk))})", chunk)
            current.update((row[0], row_job(row)) for row in self.cur.fetchall())
        return current

    def held_by(self, owner: str) -> list[RunKey]:
        """See TurnWrites."""
        self.cur.execute(_SELECT_HELD, (owner,))
        return [(row[0], row[1]) for row in self.cur.fetchall()]

    def write_ends(self, settled: Sequence[Settled]) -> None:
        """See TurnWrites."""
        self.cur.executemany(_END_JOB, [
            (s.decision.state.value, s.decision.attempts, s.decision.next_run_at, s.decision.last_error,
             s.finished.outcome.exit_code, s.finished.outcome.signal, s.finished.outcome.kind.value,
             s.finished.finished_at, s.finished.finished_at, s.finished.output_tail,
             s.finished.job_id, s.finished.run, s.finished.owner)
            for s in settled
        ])
        self.cur.executemany(_END_ATTEMPT, [
            (s.finished.finished_at, s.finished.outcome.kind.value, s.finished.outcome.exit_code,
             s.finished.outcome.signal, s.attempt_error, s.finished.job_id, s.finished.run)
            for s in settled
        ])

    def claim(self, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        """See TurnWrites."""
        self.cur.execute(_CLAIM_ROOM)
        shares = [(name, limit if room is None else min(room, limit)) for name, room in self.cur.fetchall()]
        shares = [(name, n) for name, n in shares if n > 0]
        if not shares:
            return []
        params: dict[str, Any] = {"owner": owner, "host": host, "lease": now + lease_s, "now": now, "limit": limit}
        for i, (name, n) in enumerate(shares):
            params[f"q{i}"] = name
            params[f"n{i}"] = n
        self.cur.execute(_claim_sql(len(shares)), params)
        claimed = [row_job(row) for row in self.cur.fetchall()]
        if claimed:
            self.cur.executemany(_INSERT_ATTEMPT, [(j.id, j.run, now, owner, host) for j in claimed])
        return claimed

    def announce(self) -> None:
        """Nothing to do: one host uses a SQLite store, and its own requests wake its scheduler."""

    def dependencies_ended(self, ended: Sequence[tuple[str, JobState]], now: float) -> bool:
        """See TurnWrites."""
        return workflow.apply_dependency_ends(RawDependencyWrites(self.cur), ended, now)


    def announce_freed(self, queues: Collection[str]) -> None:
        """Nothing to do (as `announce`): the daemon that ended the attempt claims next itself."""

    def running_in(self, queues: Sequence[str] | None) -> list[tuple[str, int, str]]:
        """See TurnWrites."""
        if queues is None:
            self.cur.execute(_RUNNING_IN)
            return [(row[0], row[1], row[2] or "") for row in self.cur.fetchall()]
        out: list[tuple[str, int, str]] = []
        for chunk in chunks(list(queues)):
            self.cur.execute(_RUNNING_IN + f" AND queue IN ({', '.join('?' * len(chunk))})", list(chunk))
            out.extend((row[0], row[1], row[2] or "") for row in self.cur.fetchall())
        return out


class RawDependencyWrites:
    """workflow.DependencyWrites on the turn's sqlite3 cursor (the write lock is already held)."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur

    def waiting_dependents(self, dep_ids: Sequence[str]) -> list[workflow.WaitingDependent]:
        """See workflow.DependencyWrites."""
        out: list[workflow.WaitingDependent] = []
        for i in range(0, len(dep_ids), IN_CHUNK):
            chunk = dep_ids[i : i + IN_CHUNK]
            self.cur.execute(_WAITING_DEPENDENTS + f"({', '.join('?' * len(chunk))}) ORDER BY d.job_id", chunk)
            out.extend(workflow.WaitingDependent(r[0], r[1], bool(r[2]), JobState(r[3]), r[4], bool(r[5]), bool(r[6]))
                       for r in self.cur.fetchall())
        return out

    def satisfy(self, counts: Sequence[tuple[str, int]], now: float) -> None:
        """See workflow.DependencyWrites."""
        self.cur.executemany(_SATISFY, [(n, now, job_id) for job_id, n in counts])

    def cancel(self, canceled: Sequence[tuple[str, str, str]], now: float) -> None:
        """See workflow.DependencyWrites."""
        self.cur.executemany(_CANCEL_DEPENDENT, [(why, by, now, now, job_id) for job_id, why, by in canceled])


def _shared_fields(new: Sequence[NewJob]) -> tuple[Any, ...] | None:
    """The fields every job of the batch shares (see _INSERT_UNIFORM), or None: a small batch,
    or jobs that differ in more than id, command and times."""
    if len(new) < UNIFORM_MIN_JOBS:
        return None
    distinct = set(map(_SHARED_FIELDS, new))
    return distinct.pop() if len(distinct) == 1 else None


def count_inserted(dbapi: sqlite3.Connection | sqlite3.Cursor, new: Sequence[NewJob]) -> None:
    """Count newly inserted pending jobs in queue_counts: one upsert per (queue, held) of the
    batch (the insert path's counting; changes and deletes are counted by triggers)."""
    by_key = Counter((j.queue, int(j.held)) for j in new)
    dbapi.executemany(_COUNT_INSERTED, [(queue, held, n) for (queue, held), n in by_key.items()])


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files copy the mode).

    A new file is made whole (header written, in WAL mode) under a temporary name and linked into
    place, so another process opening the same path never sees an empty file (which it refuses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        partial = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
        os.close(os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            conn = sqlite3.connect(partial)
            try:
                # Before any table exists, so that it takes effect without a VACUUM (retention
                # frees pages; `reclaim_space` gives them back to the file system).
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall()
                conn.execute("PRAGMA journal_mode=WAL").fetchall()
            finally:
                conn.close()
            os.link(partial, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            os.unlink(partial)
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists() and (p.stat().st_mode & 0o077) and p.stat().st_uid == os.getuid():
            os.chmod(p, 0o600)


def _enable_wal(path: Path) -> None:
    """Switch the file to WAL once (it persists). Done apart from the engines: the switch needs an
    exclusive lock for which SQLite does not wait, so daemons opening a new file together retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.Error as exc:
            if classify(exc) is not StoreFault.BUSY or time.monotonic() > deadline:
                raise to_domain_error(exc, where=str(path.parent), writing=True, subject=str(path)) from exc
            time.sleep(0.05)
        finally:
            if conn is not None:
                conn.close()


def _engine(url: str, *, immediate: bool, sync: str, trace: _LostAnswer | None = None) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's implicit transactions would defer the lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.close()
        if trace is not None:
            dbapi_conn.set_trace_callback(trace.trace)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
