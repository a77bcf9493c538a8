"""A real Scheduler and its maintenance services on a real SQLite store in a temp dir, in the test's
event loop, with a short lease. No daemon process, no socket: what runs is the scheduler's own
code, the runner's real shells and the store's production turn.

The maintenance services run on fake clocks that a test advances (`rig.clock`); they never run
by themselves: a test calls `rig.maintain()` (Maintenance.run_due) when it wants them to.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from queuectld import instance, tracking
from queuectld.jobs import Job, JobState
from queuectld.maintenance import DaemonServices
from queuectld.proctree import ChildReaper, process_start_time
from queuectld.scheduler import Scheduler
from queuectld.settings import Settings
from queuectld.store.base import AttemptRecord, DaemonInfo, NewJob, Store
from queuectld.store.open import open_store
from queuectld.store_threads import StoreThreads

LEASE_S = 3.0


class FakeClocks:
    """A monotonic and a wall clock that move only when the test says."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = time.time()

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Rig:
    """One scheduler's world: store, threads, scheduler, services, fake clocks."""

    def __init__(self, tmp_path: Path, store: Store, tracker: tracking.Tracker) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.db = StoreThreads(store)
        self.settings = Settings(state_dir=tmp_path, socket_path=tmp_path / "q.sock", db_url="", lease_s=LEASE_S)
        self.owner = instance.new_daemon_id()
        self.tracker = tracker
        self.clock = FakeClocks()
        self.config: dict[str, Any] = {}
        self.scheduler: Scheduler | None = None
        self.services: DaemonServices | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, **config: Any) -> None:
        """Set config keys (in the store, as `config set` would), register, and run the scheduler."""
        for key, value in config.items():
            await self.db.write(self.store.config_set, key, value)
        self.config = await self.db.read(self.store.config_all)
        self.scheduler = Scheduler(self.db, self.settings, self.owner, self.config, 0o022, self.tracker)
        self.services = DaemonServices(self.scheduler, self.db, self.settings, self.config,
                                       monotonic=self.clock.monotonic, store_time=self.clock.now)
        now = time.time()
        await self.db.write(self.store.register_daemon, DaemonInfo(
            self.owner, self.settings.host, os.getpid(), process_start_time(os.getpid()), now, now,
            self.scheduler.slots, 0))
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run(), name="scheduler")

    @property
    def sched(self) -> Scheduler:
        assert self.scheduler is not None
        return self.scheduler

    async def maintain(self) -> float:
        """Run the maintenance services that are due by the fake clocks."""
        assert self.services is not None
        return await self.services.maintenance.run_due()

    async def enqueue(self, command: str, *, max_retries: int = 3, timeout_s: float | None = None) -> str:
        job_id = f"j{secrets.token_hex(4)}"
        now = time.time()
        await self.db.write(self.store.enqueue, [NewJob(job_id, command, max_retries, 0, timeout_s, now, now)],
                            replace=False, now=now)
        self.sched.notify()
        return job_id

    async def job(self, job_id: str) -> Job:
        return await self.db.read(self.store.get, job_id)

    async def attempts(self, job_id: str) -> list[AttemptRecord]:
        return await self.db.read(self.store.attempts_of, job_id)

    async def until_state(self, job_id: str, *states: JobState, timeout_s: float = 10.0) -> Job:
        """Poll the store until the job is in one of `states`."""
        async def check() -> Job | None:
            job = await self.job(job_id)
            return job if job.state in states else None

        return await until(check, f"job {job_id} to be {'/'.join(s.value for s in states)}", timeout_s)

    async def close(self) -> None:
        try:
            if self._task is not None:
                self.sched.request_stop(force=True)
                await asyncio.wait_for(self._task, 10)
        finally:
            self.db.shutdown()
            self.store.close()


async def until(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """Await `check()` (a coroutine function or a plain one) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def scheduler_rig(tmp_path: Path, **config: Any) -> AsyncIterator[Rig]:
    """A started Rig; stopped (forced) and closed at the end."""
    (tmp_path / "logs").mkdir(mode=0o700, exist_ok=True)
    config.setdefault("kill-grace", 0.2)  # a killed attempt whose leftovers linger ends soon
    store = await asyncio.to_thread(open_store, f"sqlite:///{tmp_path / 'queuectl.db'}")
    tracker = tracking.open_tracker(f"test:{os.getpid()}:{secrets.token_hex(4)}", ChildReaper())
    rig = Rig(tmp_path, store, tracker)
    try:
        await rig.start(**config)
        yield rig
    finally:
        try:
            await rig.close()
        finally:
            tracker.close()
