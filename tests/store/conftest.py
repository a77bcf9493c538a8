"""One store per test, on every backend: SQLite in a temp file, and PostgreSQL when its URL is set.

Each PostgreSQL test gets a private schema (`qt_<random>`, selected through the connection's
search_path), dropped with everything in it afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from queuectld.store.base import Store
from queuectld.store.open import open_store

# Asserts inside the shared helpers explain themselves like those in the tests.
pytest.register_assert_rewrite("tests.store.helpers")

PG_URL = os.environ.get("QUEUECTL_TEST_PG_URL")
PG_SKIP_REASON = "QUEUECTL_TEST_PG_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema on the test server; yields a URL whose connections use only that schema."""
    assert PG_URL is not None
    schema = f"qt_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database on each backend (no store opened yet). Each dialect's turn
    runs on its own driver; SqlStore has none to fall back to (test_turn_path.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queuectl.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with pg_schema() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated store on each backend."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()
