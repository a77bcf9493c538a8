"""What PostgreSQL needs that other dialects do not: SKIP LOCKED claims and contention-free counters.

Several daemons on several hosts share one database. Claims take `FOR UPDATE SKIP LOCKED`, so
two daemons never wait on (or take) the same row; a job that becomes due is announced with
NOTIFY, so idle daemons wake at once instead of at their next timer (so is an attempt of a
limited queue that ends, which frees room a full queue lacked). Queue limits hold across daemons:
a claim locks the limited queues' rows first. The per-(queue, state, held) counters are
append-only delta rows written by statement-level triggers (no hot row to lock), folded together
by `checkpoint()`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Float, cast, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError

from queuectld.store import pg_enqueue, pg_turn, workflow
from queuectld.store.base import EnvSnapshot, NewJob
from queuectld.store.errors import is_driver_error, to_domain_error
from queuectld.store.sql import SqlStore, translate_db_errors
from queuectld.store.turn import TurnWrites

log = logging.getLogger(__name__)

#: Where daemons sharing a database announce jobs that became due: this name in the `public`
#: schema, suffixed by a hash of the schema elsewhere. NOTIFY channels are per database, not per
#: schema, so two queues in two schemas of one database would otherwise wake each other.
CHANNEL = "queuectl_jobs"


def channel_of(schema: str) -> str:
    """The NOTIFY channel of the queue stored in `schema` (a valid identifier, well under 63 bytes)."""
    if schema == "public":
        return CHANNEL
    return f"{CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"

# The earliest due time of a job the claim could take: claimable, in a queue neither paused nor
# full; one probe of ix_jobs_next per such queue.
_NEXT_DUE = text(
    """
    SELECT min((SELECT min(j.next_run_at) FROM jobs j
                 WHERE j.queue = q.name AND j.state IN ('pending', 'failed') AND j.held = 0 AND j.deps_left = 0))
      FROM queues q
     WHERE q.paused = 0
       AND (q.concurrency IS NULL OR q.concurrency > (SELECT count(*) FROM jobs r
                                                       WHERE r.queue = q.name AND r.state = 'processing'))
    """
)

#: pg_advisory_lock key held while a daemon migrates, so daemons starting together migrate once.
MIGRATION_LOCK = 7438190
#: Where autovacuum is off, retention vacuums its tables itself at most this often (seconds).
VACUUM_EVERY_S = 60.0


#: The database's clock, in seconds since the epoch: clock_timestamp() is the time the statement
#: reads it (now() would be the transaction's start).
_DB_NOW = cast(func.extract("epoch", func.clock_timestamp()), Float)


#: A pooled connection unused for this long is pinged before it is used again, so that one the
#: server dropped meanwhile (a restart, an idle timeout) is replaced instead of failing the call
#: it was taken for. One in steady use is not pinged: the ping was a sixth of an enqueue's round
#: trips, and a connection lost while busy fails its statement with or without one.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pool_pre_ping, only for connections idle for PING_AFTER_IDLE_S or more."""
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    def connected(dbapi_conn: Any, record: Any) -> None:
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get("used_at", float("-inf")) < PING_AFTER_IDLE_S:
            return
        try:
            alive = dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error:
            alive = False
        if not alive:
            raise DisconnectionError("the pooled connection is gone")  # the pool connects anew

    @event.listens_for(engine, "checkin")
    def checkin(dbapi_conn: Any, record: Any) -> None:
        record.info["used_at"] = time.monotonic()


class PostgresStore(SqlStore):
    """PostgreSQL: the multi-host store."""

    #: Every host's daemons share the database's clock (see `clock_now`).
    shared_clock = True
    #: Writers wait only for the rows they touch: enqueues may run beside the scheduler's turns
    #: (StoreThreads gives them a thread of their own), as other daemons' writes do anyway.
    concurrent_writes = True

    def __init__(self, url: str) -> None:
        engine = create_engine(url, pool_size=4, max_overflow=4)
        _ping_when_idle(engine)
        super().__init__(engine, engine)
        self.where = f"the PostgreSQL database {engine.url.database or ''} on {engine.url.host or 'localhost'}"
        self._channel: str | None = None  #: channel_of(the schema), read at the first announce
        #: The payload of this store's announcements: its own listener skips them (the writes that
        #: made them wake this daemon's scheduler themselves, as on SQLite), so an enqueue does not
        #: also wake the listening thread, the loop and a turn that competes with it for the GIL.
        self.announcer = os.urandom(8).hex()
        self._autovacuum: bool | None = None  #: the server's `autovacuum`, read at the first reclaim
        self._vacuumed_at = float("-inf")

    @contextmanager
    def _schema_lock(self) -> Iterator[Connection]:
        """A transaction run while holding the migration advisory lock (a session lock, taken
        before the transaction and released after it, so a waiting daemon sees the upgrade done)."""
        with self.write_engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            conn.commit()
            try:
                with conn.begin():
                    yield conn
            finally:
                try:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                    conn.commit()
                except DBAPIError:
                    conn.invalidate()  # the session is gone, and its lock with it

    def _count_rows(self, conn: Connection) -> Any:
        return conn.exec_driver_sql("SELECT state, sum(n) FROM queue_count_deltas GROUP BY state").all()

    def _queue_count_rows(self, conn: Connection) -> Any:
        return conn.exec_driver_sql(
            "SELECT queue, state, held, sum(n) FROM queue_count_deltas GROUP BY queue, state, held HAVING sum(n) <> 0"
        ).all()

    @contextmanager
    def _turn_writes(self) -> Iterator[TurnWrites]:
        """The turn on a pooled connection's psycopg connection, pipelined, its BEGIN and COMMIT
        queued with its statements (pg_turn.py). An error that ends the connection or the
        session while the COMMIT was on its way is OutcomeUnknown; any other error (an ERROR
        with a SQLSTATE) aborted the transaction: nothing was written, and it is translated."""
        import psycopg

        with translate_db_errors(where=self.where):
            conn = self.write_engine.connect()
        try:
            with translate_db_errors(where=self.where):
                channel = self._channel_of(conn)
                conn.rollback()  # the channel's read began a transaction (once per store)
                raw: Any = conn.connection.dbapi_connection
                raw.autocommit = True
            writes = pg_turn.PgTurnWrites(conn, channel, self.announcer)
            try:
                with translate_db_errors(where=self.where):
                    writes.begin()
                    try:
                        yield writes
                    except BaseException:
                        writes.rollback()
                        raise
                    try:
                        writes.commit()
                    except psycopg.Error as exc:
                        lost = pg_enqueue.answer_lost(exc)
                        if lost is not None:
                            log.error("the commit's outcome is unknown: %s", lost.fields["detail"])
                            raise lost from None
                        writes.rollback()
                        raise
                self._after_commit()
            finally:
                if pg_turn.unusable(raw) or raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.invalidate()  # gone, or in a state nobody should inherit
                else:
                    raw.autocommit = False  # back to the pool as SQLAlchemy left it
        finally:
            conn.close()

    def clock_now(self) -> float:
        """The database server's clock now (clock_timestamp()), in seconds since the epoch."""
        with self._read() as conn:
            return float(conn.execute(select(_DB_NOW)).scalar_one())

    def _judging_now(self, now: float | None) -> Any:
        """`now` as a bound value, or (None) the database's clock in the statement itself."""
        return _DB_NOW if now is None else super()._judging_now(now)

    def next_due_at(self) -> float | None:
        """When the earliest job the claim could take becomes due: claimable (not held, not
        blocked) in a queue neither paused nor full; None if there is none."""
        with self._read() as conn:
            return conn.execute(_NEXT_DUE).scalar()

    def _channel_of(self, conn: Connection) -> str:
        if self._channel is None:
            self._channel = channel_of(conn.exec_driver_sql("SELECT current_schema()").scalar_one())
        return self._channel

    def _announce(self, conn: Connection) -> None:
        # Delivered at commit, and only if the transaction commits.
        conn.exec_driver_sql(f"NOTIFY {self._channel_of(conn)}, '{self.announcer}'")

    def _add_plain(self, new: Sequence[NewJob], now: float, envs: Sequence[EnvSnapshot]) -> bool:
        """A batch smaller than COPY's, without dependencies, in one autocommit statement on the
        driver (see pg_enqueue); others take the shared path."""
        if len(new) >= workflow.COPY_FROM or any(j.after or j.after_any for j in new):
            return False
        import psycopg

        with translate_db_errors(where=self.where), self.write_engine.connect() as conn:
            channel = self._channel_of(conn)
            conn.rollback()  # the channel's read began a transaction (once per store)
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            raw: Any = conn.connection.dbapi_connection
            try:
                if len(new) == 1 and not new[0].labels and all(e.id == new[0].env_id for e in envs):
                    statement = pg_enqueue.ENQUEUE_ONE
                    values = pg_enqueue.one_params(new[0], now, envs, channel, self.announcer)
                else:
                    statement, values = pg_enqueue.ENQUEUE, pg_enqueue.params(new, now, envs, channel, self.announcer)
                with raw.cursor() as cur:
                    found = cur.execute(statement, values).fetchone()[0]
            except psycopg.Error as exc:
                if pg_turn.unusable(raw):
                    conn.invalidate()
                lost = pg_enqueue.answer_lost(exc)
                if lost is not None:
                    log.error("the enqueue's outcome is unknown: %s", lost.fields["detail"])
                    raise lost from None
                if isinstance(exc, psycopg.errors.IntegrityError):  # as SQLAlchemy raises it: the caller knows it
                    raise IntegrityError("INSERT INTO jobs", None, exc) from exc
                raise
        pg_enqueue.check_queues([j.queue for j in new], found)
        self._after_commit()
        return True

    def listen(self, on_jobs: Callable[[], None]) -> Callable[[], None]:
        """LISTEN on a connection of its own, in a thread; reconnects after a failure. `on_jobs`
        runs for every other store's announcement (this one's own are skipped: see `announcer`),
        and once on each (re)connection."""
        stop = threading.Event()
        conninfo = self.write_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

        def run() -> None:
            import psycopg

            failing: str | None = None  # the last failure logged: a server that stays down is logged once
            channel = CHANNEL  # until the schema is known
            while not stop.is_set():
                try:
                    with psycopg.connect(conninfo, autocommit=True) as conn:
                        row = conn.execute("SELECT current_schema()").fetchone()
                        channel = channel_of(row[0] if row else "public")
                        conn.execute(f"LISTEN {channel}")
                        if failing is not None:
                            log.info("LISTEN %s works again", channel)
                            failing = None
                        on_jobs()  # anything announced while we were not listening
                        while not stop.is_set():
                            for note in conn.notifies(timeout=1.0, stop_after=1):
                                if note.payload != self.announcer:  # a peer's, or an older daemon's ('')
                                    on_jobs()
                except Exception as exc:  # the database restarted, the network dropped, ...
                    driver = is_driver_error(exc)
                    message = (to_domain_error(exc, where=self.where, writing=False).message if driver
                               else f"{type(exc).__name__}: {exc}")
                    if message != failing:
                        log.warning("LISTEN %s failed: %s Retrying every 2 s.", channel, message,
                                    exc_info=None if driver else exc)
                        failing = message
                    stop.wait(2.0)

        thread = threading.Thread(target=run, name="store-listen", daemon=True)
        thread.start()

        def stop_listening() -> None:
            stop.set()
            thread.join(timeout=3.0)

        return stop_listening

    def checkpoint(self) -> None:
        """Fold the counter deltas into one row per (queue, state, held), dropping keys that sum to
        nothing (rows added meanwhile stay for next time)."""
        with translate_db_errors(where=self.where), self.write_engine.begin() as conn:
            conn.exec_driver_sql(
                """WITH gone AS (DELETE FROM queue_count_deltas RETURNING queue, state, held, n)
                   INSERT INTO queue_count_deltas (queue, state, held, n)
                   SELECT queue, state, held, sum(n) FROM gone GROUP BY queue, state, held HAVING sum(n) <> 0"""
            )

    def reclaim_space(self, max_pages: int, keep_fraction: float) -> int:
        """Where the server's autovacuum is off, vacuum the tables retention deletes from, at most
        every VACUUM_EVERY_S (plain VACUUM: it blocks neither reads nor writes; SKIP_LOCKED: a
        table a peer vacuums now is left to it). With autovacuum on (PostgreSQL's default) it does
        nothing: the batches commit apart, so autovacuum reclaims their rows as it goes."""
        if self._autovacuum is None:
            with self._read() as conn:
                self._autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar() == "on"
        now = time.monotonic()
        if self._autovacuum or now - self._vacuumed_at < VACUUM_EVERY_S:
            return 0
        self._vacuumed_at = now
        with translate_db_errors(where=self.where), self.write_engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
            conn.exec_driver_sql("VACUUM (SKIP_LOCKED) jobs, attempts, job_labels, job_deps")
        return 0

    def close(self) -> None:
        self.write_engine.dispose()

