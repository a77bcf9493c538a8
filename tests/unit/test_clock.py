"""One clock: the store's time (clock.StoreClock) on fake clocks, and the real maintenance services
on a real SQLite store with this host's wall clock stepped an hour either way while they run:
lease renewal and heartbeats go on at their interval and stamp the store's time, which no step
moves (before, a step back stopped renewals for the hour)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from queuectld.clock import StoreClock
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
    scheduler = Scheduler(db, settings, owner, config, 0o022, TreeTracker(ChildReaper()), StoreClock.local(now))
    scheduler.claiming = False
    services = DaemonServices(scheduler, db, settings, config)
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


@pytest.mark.parametrize("step_s", [-3600.0, 3600.0], ids=["back", "forward"])
def test_lease_renewal_and_heartbeats_go_on_when_the_wall_clock_steps_an_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_s: float
) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(time, "time", clock)
    after, heartbeat = asyncio.run(renewals_after_a_step(tmp_path, clock, step_s))
    unstepped = clock() - step_s
    # Every 0.1 s: about ten in a second; at least three even on a loaded machine, and no burst.
    assert 3 <= len(after) <= 15, f"{len(after)} renewals in the second after the clock stepped"
    assert all(abs(at - unstepped) < 5 for at in after), "renewals stamp the store's time, which the step did not move"
    assert abs(heartbeat - unstepped) < 5, "the heartbeat was written after the step, in the store's time"


# -- StoreClock on fake clocks ------------------------------------------------------------------


class Fake:
    """A monotonic clock and a database clock that move only when the test says; `trip_s` is how
    long a read of the database takes (the database reads its clock half way)."""

    def __init__(self, database: float = 1_800_000_000.0) -> None:
        self.mono = 500.0
        self.database = database
        self.trip_s = 0.002

    def monotonic(self) -> float:
        return self.mono

    def read_database(self) -> float:
        self.mono += self.trip_s / 2
        self.database += self.trip_s / 2
        seen = self.database
        self.mono += self.trip_s / 2
        self.database += self.trip_s / 2
        return seen

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.database += seconds


@pytest.mark.parametrize("host_skew_s", [-3600.0, 0.0, 3600.0])
def test_on_a_shared_database_leases_are_in_the_databases_time_whatever_the_hosts_clock(
    monkeypatch: pytest.MonkeyPatch, host_skew_s: float
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0 + host_skew_s)  # this host's wall clock, skewed
    fake = Fake()
    clock = StoreClock.of_database(fake.read_database, monotonic=fake.monotonic)
    assert clock.shared
    for _ in range(5):
        fake.advance(10.0)
        assert abs(clock.now() - fake.database) <= clock.uncertainty_s() < 0.01
        clock.sync(fake.read_database)  # with each heartbeat
        assert abs(clock.now() - fake.database) <= clock.uncertainty_s() <= 0.001 + 1e-9
        lease_expires_at = clock.now() + 30.0  # what LeaseRenewal stores
        assert abs(lease_expires_at - (fake.database + 30.0)) < 0.01


@pytest.mark.parametrize("host_skew_s", [-3600.0, 0.0, 3600.0])
def test_a_wall_instant_lands_on_the_database_time_base_by_this_hosts_clock(host_skew_s: float) -> None:
    """`--at 22:30`: due when this host's clock shows 22:30, stored in the database's time (its
    offset from the host cancels out); an instant already past is due now."""
    fake = Fake()
    clock = StoreClock.of_database(fake.read_database, monotonic=fake.monotonic)
    wall_now = fake.database + host_skew_s  # the host's clock, off by the skew
    due = clock.from_wall(wall_now + 600.0, wall_now)
    assert abs(due - (fake.database + 600.0)) < 0.01
    assert abs(clock.from_wall(wall_now - 600.0, wall_now) - clock.now()) < 1e-9


def test_a_wall_instant_after_a_wall_clock_step_keeps_its_distance_on_a_local_store() -> None:
    mono = [100.0]
    clock = StoreClock.local(1_800_000_000.0, monotonic=lambda: mono[0])
    mono[0] += 50.0  # 50 s later; meanwhile the wall clock was stepped an hour back
    wall_now = 1_800_000_050.0 - 3600.0
    assert clock.from_wall(wall_now + 60.0, wall_now) == 1_800_000_050.0 + 60.0


def test_a_slow_sample_does_not_spoil_a_good_estimate() -> None:
    fake = Fake()
    clock = StoreClock.of_database(fake.read_database, monotonic=fake.monotonic)
    fake.trip_s = 2.0  # a round trip of 2 s: its midpoint could be a second off
    assert clock.sync(fake.read_database) is False
    assert abs(clock.now() - fake.database) < 0.002
    fake.advance(3600.0)  # an hour later the old estimate may have drifted by 0.7 s: a 1 s-certain one is not better
    assert clock.sync(fake.read_database) is False
    fake.advance(3 * 3600.0)  # 2.9 s of possible drift: now the slow sample is the better one
    assert clock.sync(fake.read_database) is True
    assert abs(clock.now() - fake.database) <= 1.0


def test_the_database_clock_is_followed_when_it_is_stepped() -> None:
    fake = Fake()
    clock = StoreClock.of_database(fake.read_database, monotonic=fake.monotonic)
    fake.database += 120.0  # the database server's clock was corrected
    fake.advance(10.0)
    assert clock.sync(fake.read_database)
    assert abs(clock.now() - fake.database) < 0.002


def test_a_failed_sample_keeps_the_estimate() -> None:
    fake = Fake()
    clock = StoreClock.of_database(fake.read_database, monotonic=fake.monotonic)

    def down() -> float:
        raise ConnectionError("the database is down")

    with pytest.raises(ConnectionError):
        clock.sync(down)
    fake.advance(30.0)
    assert abs(clock.now() - fake.database) < 0.002


def test_a_local_clock_ignores_wall_clock_steps_and_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake()
    wall = 1_800_000_000.0
    clock = StoreClock.local(wall, monotonic=fake.monotonic)
    assert not clock.shared
    renewals = []
    for step in range(6):  # LeaseRenewal every 10 s, stamping the store's time
        if step == 2:
            monkeypatch.setattr(time, "time", lambda: wall - 3600.0)  # stepped back an hour: nothing changes
        renewals.append(clock.now())
        fake.mono += 10.0
    assert renewals == [wall + 10.0 * i for i in range(6)]


def test_a_local_clock_adopts_the_time_base_of_a_peer_of_this_boot() -> None:
    fake = Fake()
    first = StoreClock.local(1_800_000_000.0, monotonic=fake.monotonic)
    fake.mono += 100.0
    # The wall clock was stepped forward an hour before the second daemon started on the file:
    # it keeps the first one's time, so neither sees the other's leases expire early.
    second = StoreClock.local(1_800_003_700.0, 1_800_000_090.0, peer_offset=first.offset, monotonic=fake.monotonic)
    assert second.now() == first.now() == 1_800_000_100.0


def test_a_local_clock_never_starts_before_what_the_store_recorded() -> None:
    fake = Fake()
    recorded = 1_800_000_000.0
    # The wall clock was stepped back an hour between two starts: due times stay where they were.
    assert StoreClock.local(recorded - 3600.0, recorded, monotonic=fake.monotonic).now() == recorded
    assert StoreClock.local(recorded + 5.0, recorded, monotonic=fake.monotonic).now() == recorded + 5.0
    assert StoreClock.local(recorded + 5.0, None, monotonic=fake.monotonic).now() == recorded + 5.0
