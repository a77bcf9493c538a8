"""Local deadlines run on the monotonic clock: with the wall clock stepped back an hour while the
maintenance services run, lease renewal and heartbeats go on at their interval (before, they
stopped for the hour). In-process: the real services on a real SQLite store, on the real
monotonic clock, with the wall clock they are given stepped."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from queuectld.maintenance import DaemonServices
from queuectld.proctree import ChildReaper, process_start_time
from queuectld.scheduler import Scheduler
from queuectld.settings import Settings
from queuectld.store.base import DaemonInfo
from queuectld.store.open import open_store
from queuectld.store_threads import StoreThreads
from queuectld.tracking import TreeTracker

LEASE_S = 0.3  #: maintenance every 0.1 s


class SteppedClock:
    """`time.time` with an offset that a test changes, as `date -s` would."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._real = time.time

    def __call__(self) -> float:
        return self._real() + self.offset


async def renewals_after_a_step(tmp_path: Path, clock: SteppedClock, step_s: float) -> tuple[list[float], float]:
    """Run the maintenance services, step the wall clock by `step_s`, and return the `now` of every lease
    renewal in the second after the step, with the heartbeat stored last."""
    store = open_store(f"sqlite:///{tmp_path / 'queuectl.db'}")
    db = StoreThreads(store)
    settings = Settings(state_dir=tmp_path, socket_path=tmp_path / "q.sock", db_url="", lease_s=LEASE_S)
    owner = f"{settings.host}:{os.getpid()}:c10c"
    config = await db.read(store.config_all)
    now = time.time()
    await db.write(store.register_daemon, DaemonInfo(owner, settings.host, os.getpid(),
                                                      process_start_time(os.getpid()), now, now, 1, 0))
    scheduler = Scheduler(db, settings, owner, config, 0o022, TreeTracker(ChildReaper()))
    scheduler.claiming = False
    services = DaemonServices(scheduler, db, settings, config, wall=clock)
    renewals: list[float] = []
    real_renew = store.renew_leases

    def renew(owner_id: str, running: Any, at: float, *args: Any) -> set[str]:
        renewals.append(at)
        return real_renew(owner_id, running, at, *args)

    store.renew_leases = renew  # type: ignore[method-assign]
    task = asyncio.create_task(services.maintenance.run())
    try:
        for _ in range(200):
            if len(renewals) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(renewals) >= 2, "the services renew leases at all"
        clock.offset = step_s
        seen = len(renewals)
        await asyncio.sleep(1.0)
        after = renewals[seen:]
        heartbeat = next(d.heartbeat_at for d in await db.read(store.daemons) if d.id == owner)
    finally:
        services.maintenance.stop()
        await asyncio.wait_for(task, 10)
        db.shutdown()
        store.close()
    return after, heartbeat


def test_lease_renewal_and_heartbeats_go_on_when_the_wall_clock_steps_back_an_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(time, "time", clock)
    after, heartbeat = asyncio.run(renewals_after_a_step(tmp_path, clock, -3600.0))
    # Every 0.1 s: about ten in a second; at least three even on a loaded machine, and no burst.
    assert 3 <= len(after) <= 15, f"{len(after)} renewals in the second after the clock stepped"
    assert all(abs(at - clock()) < 5 for at in after), "renewals stamp the (stepped) wall time the store keeps"
    assert abs(heartbeat - clock()) < 5, "the heartbeat was written after the step"
