"""Store calls off the event loop: one writer thread (writes are serial anyway), one reader, and
one for the pages of `list`.

With SQLite in WAL mode the readers never wait for the writer, so `status` and `list` keep
answering while a write waits for another process's lock; and `status` never queues behind the
pages (each up to ~25 ms of reading and encoding) that many `list` clients ask for at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from queuectld.store.base import Store

T = TypeVar("T")


class StoreThreads:
    """Runs Store methods in dedicated threads and awaits them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self._pages = ThreadPoolExecutor(1, thread_name_prefix="store-pages")

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a writing store call in the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a reading store call in the reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, partial(fn, *args, **kwargs))

    async def page(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a listing's page (reading and encoding it) in the page thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pages, partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Finish queued calls and stop the threads."""
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._pages.shutdown(wait=True)
