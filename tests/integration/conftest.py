"""The integration tier: the daemon's real serve loop in the test process, and a real Client.

Fixtures:
- `inproc_factory(name="d", workers=1, config=None, lease_s=LEASE_S, backend="sqlite")` starts an
  `InProcessDaemon` on a fresh private temp dir and returns it; every daemon it made is stopped
  at teardown (forced: running jobs are killed), and the test fails if one of its jobs' processes
  is left behind. `backend="postgresql"` uses a private schema on QUEUECTL_TEST_PG_URL (skipped
  when that is not set).
- `inproc`: one started daemon with 1 slot.
- `backend`: "sqlite" and "postgresql", for tests that should run on both stores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.inprocess import (
    LEASE_S,
    InProcessDaemon,
    remove_sqlite_template,
    wait_until,
)
from tests.store.conftest import PG_SKIP_REASON, PG_URL, pg_schema

DaemonFactory = Callable[..., InProcessDaemon]


@pytest.fixture(scope="session", autouse=True)
def _sqlite_template_removed() -> Iterator[None]:
    """The template store is made on first use; it goes at the end of the session."""
    yield
    remove_sqlite_template()


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A private temp dir with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qctl-i-", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each store backend; PostgreSQL only when QUEUECTL_TEST_PG_URL is set."""
    if request.param == "postgresql" and not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    return str(request.param)


@pytest.fixture
def inproc_factory(short_root: Path) -> Iterator[DaemonFactory]:
    """Start in-process daemons on fresh temp dirs; stop them all (forced) at teardown and check
    that nothing their jobs started is still alive."""
    made: list[InProcessDaemon] = []
    with ExitStack() as schemas:

        def make(name: str = "d", *, workers: int = 1, config: dict[str, str] | None = None,
                 lease_s: float = LEASE_S, backend: str = "sqlite", **kwargs: Any) -> InProcessDaemon:
            root = short_root / name
            root.mkdir(mode=0o700)
            db_url = None
            if backend == "postgresql":
                if not PG_URL:
                    pytest.skip(PG_SKIP_REASON)
                db_url = schemas.enter_context(pg_schema())
            d = InProcessDaemon(root, workers=workers, config=config, lease_s=lease_s, db_url=db_url, **kwargs)
            made.append(d)
            return d.start()

        yield make
        errors: list[BaseException] = []
        for d in made:
            try:
                d.stop(force=True)
            except BaseException as exc:  # noqa: BLE001 - stop the others first, then report
                errors.append(exc)
        for d in made:
            if d.owner is not None:
                wait_until(lambda d=d: not d.processes_left(), timeout=10,  # type: ignore[misc]
                           what=f"the processes of {d.root.name}'s jobs to be gone: {d.processes_left()}")
        if errors:
            raise errors[0]


@pytest.fixture
def inproc(inproc_factory: DaemonFactory) -> InProcessDaemon:
    """A started in-process daemon with 1 slot and quick retries and kills (FAST_CONFIG)."""
    return inproc_factory()
