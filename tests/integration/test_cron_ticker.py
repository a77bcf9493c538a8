"""The cron ticker (cron_service.CronTicker) among a real scheduler's maintenance services, on a real
SQLite store, with fake clocks: it sleeps until the earliest next fire (never polling jobs), fires a
due slot once, runs the job, skips missed slots after an outage, and is woken by a new schedule."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from queuectld.jobs import JobState
from queuectld.store.base import Schedule
from tests.integration.sched_fixtures import Rig, scheduler_rig, until

pytest.importorskip("croniter", reason="croniter (the `cron` extra) is not installed")

EVERY_S = 3


async def add_schedule(rig: Rig, name: str = "tick", spec: str = f"* * * * * */{EVERY_S}") -> float:
    """A schedule whose first slot is the next after the fake clock's now; returns that slot."""
    now = rig.clock.now()
    first = float(math.floor(now / EVERY_S) * EVERY_S + EVERY_S)
    await rig.db.write(rig.store.cron_add, Schedule(name, spec, "UTC", '{"command":"true"}', created_at=now,
                                                     next_fire=first), "default")
    return first


def test_the_ticker_sleeps_until_the_next_fire_fires_it_once_and_the_job_runs(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            ticker = rig.services.cron  # type: ignore[union-attr]
            assert await ticker.run(rig.clock.now()) is None  # no schedule: the interval (MAX_SLEEP_S)
            first = await add_schedule(rig)
            wait = await ticker.run(rig.clock.now())
            assert wait == pytest.approx(first - rig.clock.now())  # until the slot, not a poll
            rig.clock.advance(wait)  # type: ignore[arg-type]
            assert await ticker.run(rig.clock.now()) == pytest.approx(EVERY_S)  # fired; on to the next
            s = await rig.db.read(rig.store.cron_get, "tick")
            assert (s.last_slot, s.next_fire, s.fires) == (first, first + EVERY_S, 1)
            assert s.last_job_id is not None
            job = await rig.until_state(s.last_job_id, JobState.COMPLETED)
            assert (job.schedule, job.slot) == ("tick", first)
            # Looking again at the same time fires nothing more.
            await ticker.run(rig.clock.now())
            assert (await rig.db.read(rig.store.cron_get, "tick")).fires == 1

    asyncio.run(main())


def test_after_an_outage_the_default_fires_nothing_and_moves_on(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            ticker = rig.services.cron  # type: ignore[union-attr]
            first = await add_schedule(rig)
            rig.clock.advance(12 * 3600 + 1.5)  # twelve hours with no look at it
            await ticker.run(rig.clock.now())
            s = await rig.db.read(rig.store.cron_get, "tick")
            assert s.next_fire is not None and s.next_fire > rig.clock.now() > first + 11 * 3600
            # Only the slots of the last few seconds (a late look, not an outage) fire; never a burst.
            assert s.fires <= 10 // EVERY_S + 1 and "missed" in (s.last_skip_reason or "")
            assert s.last_skip_slot is not None and s.last_skip_slot < rig.clock.now() - 10

    asyncio.run(main())


def test_a_new_schedule_wakes_the_ticker(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            services = rig.services
            assert services is not None
            await rig.maintain()  # every service ran: the ticker is due again only later
            assert services.maintenance.due_at(services.cron) > rig.clock.monotonic()
            rig.sched.on_schedules_changed()  # what cron.add and cron.resume call
            assert services.maintenance.due_at(services.cron) == 0.0
            await until(lambda: True, "nothing")

    asyncio.run(main())
