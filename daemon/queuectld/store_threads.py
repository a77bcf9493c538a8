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
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from queuectl.errors import QueuectlError
from queuectld.metrics import Metrics
from queuectld.store.base import Store
from queuectld.store.errors import is_driver_error, to_domain_error
from queuectld.store_health import StoreHealth

T = TypeVar("T")

#: What a StoreThread's queue carries: the call, and the loop and future its outcome goes to.
_Call = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class StoreThread:
    """One thread running calls in order, each outcome handed straight to an asyncio future.

    What run_in_executor does, with less on the way: no concurrent.futures.Future between the
    thread and the loop, no chaining of two futures' states. Every store call of the daemon comes
    through here (a turn, an enqueue), so this was a tenth of the event loop's time per job."""

    def __init__(self, name: str) -> None:
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Queue `call`; its result (or exception) settles the returned future on the caller's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new store calls after shutdown")
            if not self._started:
                self._started = True
                self._thread.start()
            self._calls.put((call, loop, future))
        return future

    def shutdown(self) -> None:
        """Run what is queued, then stop the thread (waits for it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
            self._calls.put(None)
        if started:
            self._thread.join()

    def _wait_for_call(self) -> _Call | None:
        # A frame of its own: py-spy shows the C wait as this frame, so a profile can tell the
        # thread idle (bench/profile.py) rather than busy in _serve.
        return self._calls.get()

    def _serve(self) -> None:
        while (item := self._wait_for_call()) is not None:
            call, loop, future = item
            settle: Callable[[asyncio.Future[Any], Any], None]
            try:
                outcome: Any = call()
                settle = _set_result
            except BaseException as exc:  # to the awaiting coroutine, as run_in_executor does
                outcome, settle = exc, _set_exception
            try:
                loop.call_soon_threadsafe(settle, future, outcome)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this outcome any more
            del item, call, outcome  # not kept alive until the next call


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the awaiting task may have been cancelled meanwhile
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class StoreThreads:
    """Runs Store methods in dedicated threads and awaits them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.health = StoreHealth(getattr(store, "data_dir", None))
        self.metrics: Metrics = Metrics()  #: what `--metrics` serves (a no-op without)
        self._where: str = getattr(store, "where", "the database")
        self._writer = StoreThread("store-write")
        self._reader = StoreThread("store-read")
        self._pages = StoreThread("store-pages")
        self._background = StoreThread("store-background")
        # Where the database takes concurrent writers (PostgreSQL: row locks, not a file lock), new
        # jobs go in through a thread of their own: an enqueue then never waits behind a turn.
        self._adder = (StoreThread("store-enqueue") if getattr(store, "concurrent_writes", False)
                       else self._writer)

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

    async def _run(self, thread: StoreThread, writing: bool, fn: Callable[..., T], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> T:
        try:
            result = await thread.submit(lambda: self._guarded(writing, fn, args, kwargs))
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
        self._writer.shutdown()
        self._adder.shutdown()  # the writer itself where there is no enqueue thread (a no-op then)
        self._reader.shutdown()
        self._pages.shutdown()
        self._background.shutdown()
