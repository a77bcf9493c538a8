"""StoreThread: calls run in order in one thread, their outcomes reach the awaiting coroutine,
a cancelled waiter does not break the thread, and shutdown runs what is queued first."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from queuectld.store_threads import StoreThread


def test_calls_run_in_order_in_one_thread_and_return_their_results() -> None:
    thread = StoreThread("test-store")
    seen: list[tuple[int, str]] = []

    def call(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 10

    async def main() -> list[int]:
        return list(await asyncio.gather(*(thread.submit(lambda i=i: call(i)) for i in range(50))))

    try:
        assert asyncio.run(main()) == [i * 10 for i in range(50)]
    finally:
        thread.shutdown()
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-store"}


def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    thread = StoreThread("test-store")

    def fail() -> None:
        raise KeyError("boom")

    async def main() -> int:
        with pytest.raises(KeyError, match="boom"):
            await thread.submit(fail)
        return await thread.submit(lambda: 7)

    try:
        assert asyncio.run(main()) == 7
    finally:
        thread.shutdown()


def test_a_cancelled_waiter_leaves_the_call_to_finish_and_the_next_ones_answered() -> None:
    thread = StoreThread("test-store")
    release = threading.Event()
    finished: list[str] = []

    def slow() -> str:
        release.wait(5)
        finished.append("slow")
        return "slow"

    async def main() -> str:
        waiter = asyncio.ensure_future(thread.submit(slow))
        await asyncio.sleep(0.01)
        waiter.cancel()
        release.set()
        return await thread.submit(lambda: "next")

    try:
        assert asyncio.run(main()) == "next"
    finally:
        thread.shutdown()
    assert finished == ["slow"]


def test_shutdown_runs_what_is_queued_then_refuses_more() -> None:
    thread = StoreThread("test-store")
    done: list[int] = []

    async def main() -> None:
        for i in range(5):
            thread.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
        thread.shutdown()  # from the loop's thread, as the daemon does at its end
        with pytest.raises(RuntimeError, match="after shutdown"):
            thread.submit(lambda: None)

    asyncio.run(main())
    assert done == [0, 1, 2, 3, 4]
