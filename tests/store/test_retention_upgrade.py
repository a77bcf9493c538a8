"""Revision 0007 on a database with jobs in place, and SQLite's space given back.

A revision-0006 database (made by the revisions up to 0006, then used by the store as that
release would, with ended and waiting jobs and attempts) upgrades in place: every job is still
there, the new index serves the pruner, the retention keys are 0 (an upgrade deletes nothing by
itself), and on SQLite the file is switched to incremental auto-vacuum. After a prune, SQLite's
`reclaim_space` makes the file smaller.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from queuectld.jobs import JobState
from queuectld.store import schema
from queuectld.store.base import CleanFilter
from queuectld.store.open import _construct, open_store, sqlite_path
from queuectld.store.sqlite import SqliteStore
from tests.conftest import wait_until
from tests.store.helpers import T0, add, assert_counts_exact, claim, finish, new_job
from tests.store.test_migrations import raw


def test_a_0006_database_with_jobs_upgrades_to_0007_in_place(store_url: str) -> None:
    with raw(store_url) as conn:
        schema._run(conn, "upgrade", "0006")
        conn.execute(text("UPDATE meta SET value = '6' WHERE key = 'schema_version'"))
    path = sqlite_path(store_url)
    if path is not None:  # made by that release: no incremental auto-vacuum
        assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone() == (0,)
    old = _construct(store_url, "normal", writable=True)
    try:
        add(old, new_job("done", at=T0), new_job("dead", at=T0 + 1, max_retries=0), new_job("waiting", at=T0 + 1e6))
        for job_id, code in [("done", 0), ("dead", 1)]:
            [job] = claim(old, now=T0 + 10, limit=1)
            assert job.id == job_id
            finish(old, job, code, now=T0 + 20)
    finally:
        old.close()
    store = open_store(store_url)
    try:
        assert store.schema_plan().current == schema.head_revision()
        assert {j.id: j.state for j in store.list_jobs(None, None)} == {
            "done": JobState.COMPLETED, "dead": JobState.DEAD, "waiting": JobState.PENDING}
        assert [a.exit_code for a in store.attempts_of("dead")] == [1]
        assert {k: v for k, v in store.config_all().items() if k.startswith("retain-")} == {
            "retain-completed": 0, "retain-canceled": 0, "retain-dead": 0}
        with raw(store_url) as conn:
            if path is not None:
                indexes = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))}
            else:
                indexes = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs' "
                                                "AND schemaname = current_schema()")).scalars())
        assert "ix_jobs_ended" in indexes
        if path is not None:
            assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
        # The upgraded store prunes (by hand: its retention keeps everything).
        assert [p.id for p in store.prune(CleanFilter(JobState.COMPLETED, finished_before=T0 + 30), 10)] == ["done"]
        assert_counts_exact(store)
    finally:
        store.close()


def test_a_new_sqlite_database_is_made_with_incremental_auto_vacuum(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path / 'q.db'}").close()
    assert sqlite3.connect(tmp_path / "q.db").execute("PRAGMA auto_vacuum").fetchone() == (2,)


def test_reclaim_space_gives_pruned_pages_back_to_the_file_system(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = open_store(f"sqlite:///{db}")
    assert isinstance(store, SqliteStore)
    try:
        n = 3000
        add(store, *(new_job(f"j{i:05}", command="echo " + "x" * 2000, at=T0) for i in range(n)))
        for job in claim(store, now=T0, limit=n):
            finish(store, job, 0, now=T0 + 1)
        store.checkpoint()
        where = CleanFilter(JobState.COMPLETED, finished_before=T0 + 10)
        while len(store.prune(where, 500)) == 500:
            pass
        store.checkpoint()
        full = db.stat().st_size
        pages, free = store.space()
        assert free > pages / 2  # the pruned rows' pages, free but still in the file
        steps = 0
        while store.reclaim_space(100, 0.1) > 0:
            steps += 1
        store.checkpoint()
        pages_after, free_after = store.space()
        assert steps >= 1
        assert free_after < free / 10  # what is kept is a tenth of the file as it was at each step
        assert db.stat().st_size < full / 2
    finally:
        store.close()


def test_postgresql_reclaim_vacuums_where_autovacuum_is_off(store_url: str) -> None:
    if store_url.startswith("sqlite"):
        return  # SQLite's is the test above
    store = open_store(store_url)
    try:
        n = 600
        add(store, *(new_job(f"v{i:04}", at=T0) for i in range(n)))
        for job in claim(store, now=T0, limit=n):
            finish(store, job, 0, now=T0 + 1)
        while len(store.prune(CleanFilter(JobState.COMPLETED, finished_before=T0 + 10), 500)) == 500:
            pass
        with raw(store_url) as conn:
            autovacuum = conn.execute(text("SHOW autovacuum")).scalar()
            before = conn.execute(text("SELECT coalesce(vacuum_count, 0) FROM pg_stat_user_tables WHERE relname = "
                                       "'jobs' AND schemaname = current_schema()")).scalar() or 0
        assert store.reclaim_space(2000, 0.1) == 0
        assert store.reclaim_space(2000, 0.1) == 0  # the second within a minute does nothing

        def vacuums() -> int:
            with raw(store_url) as conn:
                return int(conn.execute(text("SELECT coalesce(vacuum_count, 0) FROM pg_stat_user_tables WHERE "
                                             "relname = 'jobs' AND schemaname = current_schema()")).scalar() or 0)

        if autovacuum == "off":  # then the store vacuumed, once (statistics arrive within a second or so)
            wait_until(lambda: vacuums() - before >= 1, timeout=10, what="the jobs table vacuumed")
            assert vacuums() - before == 1
        else:
            assert store._autovacuum is True  # type: ignore[attr-defined]
    finally:
        store.close()
