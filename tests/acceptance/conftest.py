"""Fixtures shared by the acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.conftest import PG_SKIP_REASON, PG_URL, pg_schema


@pytest.fixture
def shared_db() -> Iterator[str]:
    """A private schema on the test PostgreSQL server, for the daemons of one test (skipped,
    with the reason, when QUEUECTL_TEST_PG_URL is not set)."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with pg_schema() as url:
        yield url
