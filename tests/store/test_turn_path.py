"""The scheduler's turn has one write path per dialect, and the contract suite runs exactly it.

On SQLite the turn (finish, finish_and_claim, claim_due, release_strays) runs on the sqlite3
driver (sqlite.RawTurnWrites), on PostgreSQL on psycopg, pipelined (pg_turn.PgTurnWrites); the
logic above the statements (turn.py) is shared, and SqlStore has no turn of its own to fall back
to. The tests here show that, and what a turn costs on each: its statements, none of them through
SQLAlchemy, and on PostgreSQL its round trips to the server.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from queuectld.jobs import Job, JobState, Outcome, OutcomeKind
from queuectld.store import pg_turn, postgres
from queuectld.store import sqlite as sqlite_store
from queuectld.store.base import FinishedAttempt, SpawnedAttempt, Store
from queuectld.store.open import open_store
from queuectld.store.sql import SqlStore
from tests.acceptance.pgproxy import PgProxy
from tests.store.helpers import HOST, LEASE_S, OWNER, POLICY, T0, add, claim, new_job


def _is_sqlite(store_url: str) -> bool:
    return store_url.startswith("sqlite")


def test_the_shared_store_has_no_turn_to_fall_back_to(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    add(store, "a")
    monkeypatch.setattr(type(store), "_turn_writes", SqlStore._turn_writes)
    with pytest.raises(NotImplementedError):
        claim(store)
    assert store.get("a").state is JobState.PENDING


def test_postgresql_turns_run_on_the_driver(store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if _is_sqlite(store_url):
        pytest.skip("SQLite runs its own")
    made: list[pg_turn.PgTurnWrites] = []
    original = pg_turn.PgTurnWrites.__init__

    def counting(self: pg_turn.PgTurnWrites, *args: Any) -> None:
        made.append(self)
        original(self, *args)

    monkeypatch.setattr(pg_turn.PgTurnWrites, "__init__", counting)
    add(store, "a", new_job("b", at=T0 + 1))
    [a] = claim(store, limit=1)
    store.finish_and_claim([FinishedAttempt("a", a.run, OWNER, Outcome(OutcomeKind.EXIT, exit_code=0), T0 + 2)],
                           POLICY, [], OWNER, HOST, 1, T0 + 2, LEASE_S)
    store.release_strays(OWNER, [], T0 + 3)
    assert len(made) == 3


def _turn_of_two_ends_and_a_spawn(store: Store, a: Job, b: Job, c: Job) -> tuple[Any, list[Job], list[str]]:
    """One turn: `a` completed, `b` failed, `c`'s pid recorded, two jobs claimed. Returns its
    results, the claimed jobs, and every statement that went through SQLAlchemy meanwhile."""
    through_sqlalchemy: list[str] = []
    engine = store.write_engine  # type: ignore[attr-defined]

    def listener(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        through_sqlalchemy.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        results, claimed = store.finish_and_claim(
            [FinishedAttempt(a.id, a.run, OWNER, Outcome(OutcomeKind.EXIT, exit_code=0), T0 + 2),
             FinishedAttempt(b.id, b.run, OWNER, Outcome(OutcomeKind.EXIT, exit_code=1), T0 + 2)],
            POLICY, [SpawnedAttempt(c.id, c.run, OWNER, pid=42, proc_start=7)], OWNER, HOST, 2, T0 + 2, LEASE_S)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return results, claimed, through_sqlalchemy


def test_a_postgresql_turn_is_ten_statements_in_three_round_trips(store_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if _is_sqlite(store_url):
        pytest.skip("PostgreSQL's pipelined turn")
    monkeypatch.setattr(postgres, "PING_AFTER_IDLE_S", 3600.0)  # no pool ping in the count
    proxy = PgProxy(capture=True)
    store = open_store(proxy.url(store_url))
    try:
        add(store, *(new_job(f"j{i}", at=T0 + i / 10) for i in range(6)))
        a, b, c = claim(store, limit=3, now=T0 + 1)
        proxy.messages.clear()
        results, claimed, through_sqlalchemy = _turn_of_two_ends_and_a_spawn(store, a, b, c)
        sent = list(proxy.messages)
        assert [job.state for _, job in results if job is not None] == [JobState.COMPLETED, JobState.FAILED]
        assert [j.id for j in claimed] == ["j3", "j4"]
        assert store.get(c.id).pid == 42
        assert store.attempts_of("j3")[-1].owner == OWNER
    finally:
        store.close()
        proxy.close()
    assert through_sqlalchemy == []
    statements = [" ".join(text.split())[:24] for kind, text in sent if kind in ("P", "Q")]
    assert statements == [
        "BEGIN ISOLATION LEVEL RE", "UPDATE jobs SET pid = u.", "SELECT id, command, stat", "WITH e AS ( SELECT * FRO",
        "SELECT pg_notify($1, $2)", "SELECT name FROM queues ", "WITH room AS ( SELECT q.",
        "INSERT INTO attempts (jo", "COMMIT"]
    # What makes the client wait for the server: a Flush before each read, and the Sync that
    # ends the pipeline (sent with a Flush after it, in the same round trip). No simple query:
    # BEGIN and COMMIT are pipelined with the statements.
    waits = [kind for kind, _ in sent if kind in ("S", "H", "Q")]
    assert waits == ["H", "H", "S", "H"], waits


class _CountingCursor:
    """A sqlite3 cursor that records each execute / executemany call (one statement each)."""

    def __init__(self, cur: Any, calls: list[str]) -> None:
        self._cur = cur
        self._calls = calls

    def execute(self, sql: str, *args: Any) -> Any:
        self._calls.append(" ".join(sql.split())[:40])
        return self._cur.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._calls.append(" ".join(sql.split())[:40])
        return self._cur.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def test_a_sqlite_turn_runs_on_the_driver_in_seven_statements(store: Store, store_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if not _is_sqlite(store_url):
        pytest.skip("SQLite's raw turn")
    add(store, *(new_job(f"j{i}", at=T0 + i / 10) for i in range(6)))
    a, b, c = claim(store, limit=3, now=T0 + 1)
    calls: list[str] = []
    original = sqlite_store.RawTurnWrites.__init__
    monkeypatch.setattr(sqlite_store.RawTurnWrites, "__init__",
                        lambda self, cur: original(self, _CountingCursor(cur, calls)))  # type: ignore[arg-type]
    results, claimed, through_sqlalchemy = _turn_of_two_ends_and_a_spawn(store, a, b, c)
    assert [job.state for _, job in results if job is not None] == [JobState.COMPLETED, JobState.FAILED]
    assert [j.id for j in claimed] == ["j3", "j4"]
    # Spawn records, the locked read, job ends, attempt ends, the queues' room, the claim, its attempt rows:
    # however many attempts a turn holds (BEGIN IMMEDIATE and COMMIT around them are _raw_write's).
    assert [sql.split(" SET ")[0].split(" (")[0] for sql in calls] == [
        "UPDATE jobs", "SELECT id, command, state, attempts, max", "UPDATE jobs", "UPDATE attempts",
        "SELECT name, CASE WHEN concurrency IS NU", "UPDATE jobs", "INSERT INTO attempts"]
    assert through_sqlalchemy == []
    assert store.get(c.id).pid == 42
