"""SQLite under another process's write lock: writes fail with StoreBusy (changing nothing); reads go on.

SQLite only: it is the backend with one database-wide write lock. The busy timeout is shortened
so the test waits a fraction of a second instead of the daemon's five.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import StoreBusy
from queuectld.jobs import JobState
from queuectld.store import sqlite as sqlite_store
from queuectld.store.base import Store
from queuectld.store.open import open_store
from tests.store.helpers import OWNER, T0, add, claim, claim_one, finish, new_job


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queuectl.db"


@pytest.fixture
def store(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    # Read when the engines are made, so it must be patched before opening.
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    opened = open_store(f"sqlite:///{db_path}")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def locker(db_path: Path, store: Store) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding the write lock: BEGIN IMMEDIATE."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


WRITES: dict[str, Callable[[Store], Any]] = {
    "enqueue": lambda s: add(s, new_job("new", at=T0)),
    "claim": lambda s: claim(s, now=T0 + 100),
    "cancel": lambda s: s.cancel("waiting", T0 + 1),
    "delete": lambda s: s.delete("waiting"),
    "config_set": lambda s: s.config_set("workers", 9),
    "renew_leases": lambda s: s.renew_leases(OWNER, [("running", 1)], T0 + 1, 30, 1, 1),
    "release_strays": lambda s: s.release_strays(OWNER, [("running", 1)], T0 + 1),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_write_under_a_foreign_lock_raises_store_busy(store: Store, locker: sqlite3.Connection, write: str) -> None:
    add(store, new_job("running", at=T0), new_job("waiting", at=T0 + 50))
    running = claim_one(store, "running", now=T0)
    before = (store.list_jobs(None, None), store.counts(), store.config_all())

    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreBusy) as info:
        WRITES[write](store)
    assert "Try again" in info.value.message

    # Reads are served from the WAL snapshot while the writer waits.
    assert (store.list_jobs(None, None), store.counts(), store.config_all()) == before
    assert store.get("running") == running
    assert store.next_due_at() == T0 + 50
    assert store.lost_attempts(T0 + 1_000, []) != []
    # A finishing attempt is a write too; it must be refused the same way, not lost silently.
    with pytest.raises(StoreBusy):
        finish(store, running, 0, now=T0 + 2)

    locker.execute("ROLLBACK")
    # Once the lock is gone the same store works again (no connection left in a broken state).
    WRITES[write](store)
    after = finish(store, running, 0, now=T0 + 3)
    assert after is not None and after.state is JobState.COMPLETED


def test_commits_do_not_checkpoint_at_a_thousand_pages_the_daemons_checkpoint_does(db_path: Path) -> None:
    # SQLite's default auto-checkpoint copied the WAL back inside every ~45th turn's COMMIT, in the
    # writer thread (the dispatch p99). The daemon checkpoints in a thread of its own instead.
    store = open_store(f"sqlite:///{db_path}")
    try:
        for i in range(150):  # one job's claim and finish: each a commit of several pages
            add(store, new_job(f"j{i}", at=T0))
            finish(store, claim_one(store, f"j{i}", now=T0 + 1), 0, now=T0 + 2)
        reader = sqlite3.connect(db_path, isolation_level=None)
        try:
            # (busy, frames in the WAL, frames checkpointed): no commit has checkpointed, so the WAL
            # holds every frame since the first; the read connection's own checkpoint copies them.
            busy, frames, copied = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            reader.close()
        assert busy == 0 and frames > 1000 and copied == frames
        store.checkpoint()  # and the store's own works (nothing left to copy)
    finally:
        store.close()


def test_the_daemon_checkpoints_a_sqlite_store_often_and_off_the_writer_thread() -> None:
    from queuectld.maintenance import Checkpoint

    class Db:
        store = sqlite_store.SqliteStore.__new__(sqlite_store.SqliteStore)
        threads: list[str] = []

        async def background(self, fn: Callable[[], None]) -> None:
            self.threads.append("background")

        async def write(self, fn: Callable[[], None]) -> None:
            self.threads.append("writer")

    import asyncio

    db = Db()
    service = Checkpoint(db, interval_s=100.0)  # type: ignore[arg-type]
    assert service.interval_s == sqlite_store.CHECKPOINT_EVERY_S <= 1.0
    asyncio.run(service.run(0.0))
    assert db.threads == ["background"]
