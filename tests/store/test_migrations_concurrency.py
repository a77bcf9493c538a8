"""Several daemons opening one fresh database at the same moment migrate it exactly once.

PostgreSQL: the first takes pg_advisory_lock and applies every revision; the others wait on the
lock and then find the database at head. SQLite: BEGIN IMMEDIATE serializes them the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from queuectld.store import schema
from queuectld.store.open import open_store
from tests.store.helpers import T0, assert_counts_exact, new_job
from tests.store.test_concurrency import PROCESSES, Children


@pytest.fixture(scope="module")
def openers() -> Iterator[Children]:
    """Child processes (see tests/store/claimer.py) that each open the store at a shared barrier."""
    started = Children()
    try:
        yield started
    finally:
        started.stop()


def test_daemons_starting_together_migrate_once(openers: Children, store_url: str) -> None:
    reports = openers.run("open_store_once", [(store_url, f"opener-{n}") for n in range(PROCESSES)])
    errors = [err for _, _, _, err in reports if err]
    assert not errors, f"{len(errors)} of {PROCESSES} concurrent first opens failed; the first:\n{errors[0]}"
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                schema.head_revision()]
            assert len(conn.execute(text("SELECT value FROM meta WHERE key = 'queue_id'")).scalars().all()) == 1
    finally:
        engine.dispose()
    store = open_store(store_url)
    try:
        store.enqueue([new_job("after")], replace=False, now=T0)
        assert assert_counts_exact(store)["pending"] == 1  # counters made once
    finally:
        store.close()
