"""Store calls off the event loop: one writer thread (writes are serial anyway), one reader, one
for the pages of `list`, one for long maintenance calls (retention's vacuum), and on PostgreSQL
one for new jobs.

With SQLite in WAL mode the readers never wait for the writer, so `status` and `list` keep
answering while a write waits for another process's lock; and `status` never queues behind the
pages (each up to ~25 ms of reading and encoding) that many `list` clients ask for at once.

This is also where every store call ends: a driver error that escaped the store's own
translation still becomes a queuectl error here (nothing raw reaches the scheduler or a
handler), and each outcome is reported to the store's health (`status`, logging once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from queuectl.errors import QueuectlError
from queuectld.metrics import Metrics
from queuectld.store.base import Store
from queuectld.store.errors import is_driver_error, to_domain_error
from queuectld.store_health import StoreHealth

T = TypeVar("T")


class StoreThreads:
    """Runs Store methods in dedicated threads and awaits them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.health = StoreHealth(getattr(store, "data_dir", None))
        self.metrics: Metrics = Metrics()  #: what `--metrics` serves (a no-op without)
        self._where: str = getattr(store, "where", "the database")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self._pages = ThreadPoolExecutor(1, thread_name_prefix="store-pages")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="store-background")
        # Where the database takes concurrent writers (PostgreSQL: row locks, not a file lock), new
        # jobs go in through a thread of their own: an enqueue then never waits behind a turn.
        self._adder = (ThreadPoolExecutor(1, thread_name_prefix="store-enqueue")
                       if getattr(store, "concurrent_writes", False) else self._writer)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a writing store call in the writer thread."""
        return await self._run(self._writer, True, fn, args, kwargs)

    async def add(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an enqueue (without replace): in the enqueue thread where the store takes
        concurrent writes, else in the writer thread."""
        return await self._run(self._adder, True, fn, args, kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a reading store call in the reader thread."""
        return await self._run(self._reader, False, fn, args, kwargs)

    async def _run(self, pool: ThreadPoolExecutor, writing: bool, fn: Callable[..., T], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(pool, self._guarded, writing, fn, args, kwargs)
        except QueuectlError as exc:
            self.health.failed(exc)
            self.metrics.store_error(type(exc).__name__)
            raise
        self.health.succeeded(wrote=writing)
        return result

    def _guarded(self, writing: bool, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            return fn(*args, **kwargs)
        except QueuectlError:
            raise
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise to_domain_error(exc, where=self._where, writing=writing) from exc

    async def background(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a long maintenance call that holds no lock the scheduler's writes wait for
        (PostgreSQL's VACUUM; SQLite's incremental vacuum steps, which take its write lock for
        well under a millisecond each) in a thread of its own, so the writer thread stays free."""
        return await self._run(self._background, True, fn, args, kwargs)

    async def page(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a listing's page (reading and encoding it) in the page thread."""
        return await self._run(self._pages, False, fn, args, kwargs)

    def shutdown(self) -> None:
        """Finish queued calls and stop the threads."""
        self._writer.shutdown(wait=True)
        self._adder.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._pages.shutdown(wait=True)
        self._background.shutdown(wait=True)
