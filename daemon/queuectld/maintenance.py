"""The daemon's maintenance services, apart from the scheduler's slots and turns.

Each duty is a small service with its own interval: lease renewal and heartbeat, putting back
rows of ours that no attempt runs (strays), recovery of dead peers' attempts, config refresh,
the store's checkpoint, reaping adopted orphans, and retention (retention.Pruner, which keeps
each run short so that the others are never held up). `Maintenance` runs them one after another
on the event loop, each when it is due by an injected monotonic clock, and passes each the time
by an injected store clock (clock.StoreClock.now: never this host's wall clock, so a step of
the wall clock neither pauses nor hurries anything). Tests drive `run_due()` with fake clocks.

A service that fails (a full disk, a damaged page, a lost connection) is retried after
`retry_s`, logged once per distinct failure; the others go on at their own intervals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queuectl.errors import QueuectlError
from queuectld import instance, runner, tracking
from queuectld.jobs import Outcome, OutcomeKind
from queuectld.proctree import ChildReaper
from queuectld.runner import KillReason
from queuectld.settings import Settings
from queuectld.store.base import FinishedAttempt, LostAttempt
from queuectld.store_health import STORE_FAULTS, RepeatFilter
from queuectld.store_threads import StoreThreads

if TYPE_CHECKING:
    from queuectld.scheduler import Scheduler

log = logging.getLogger("queuectld.maintenance")

#: After a failed run, a service tries again this soon (or at its interval, if that is sooner).
FAILED_RETRY_S = 2.0

Clock = Callable[[], float]


class Service:
    """One maintenance duty: `run(now)` every `interval_s` seconds (monotonic), `now` being the
    store's time. `run` may return a delay to be run again sooner (or later) than the interval."""

    name = "service"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.retry_s = min(interval_s, FAILED_RETRY_S)

    async def run(self, now: float) -> float | None:
        """Do the duty once; return None to run again after `interval_s`."""
        raise NotImplementedError


class Maintenance:
    """Runs services, each when due on the `monotonic` clock; see the module docstring."""

    def __init__(self, services: Sequence[Service], *, monotonic: Clock = time.monotonic,
                 store_time: Clock) -> None:
        self.services = list(services)
        self._monotonic = monotonic
        self._store_time = store_time
        self._due = {id(s): 0.0 for s in self.services}  #: each service's next run; 0: at once
        self._repeats = RepeatFilter()
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def due_at(self, service: Service) -> float:
        """When `service` runs next, on the monotonic clock."""
        return self._due[id(service)]

    def run_soon(self, service: Service) -> None:
        """Run `service` at the next chance rather than at its interval."""
        self._due[id(service)] = 0.0
        if self._wake is not None:
            self._wake.set()

    async def run_due(self) -> float:
        """Run every service that is due now, in order; return when the next one is due."""
        for service in self.services:
            if self._monotonic() < self._due[id(service)]:
                continue
            try:
                delay = await service.run(self._store_time())
            except Exception as exc:  # no failure may end maintenance: retry that duty soon
                self._failed(service, exc)
                delay = service.retry_s
            self._due[id(service)] = self._monotonic() + (service.interval_s if delay is None else delay)
        return min(self._due.values(), default=self._monotonic() + 60.0)

    def _failed(self, service: Service, exc: Exception) -> None:
        message = exc.message if isinstance(exc, QueuectlError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, STORE_FAULTS):
            log.debug("%s skipped: %s", service.name, message)  # StoreThreads logged it once already
        elif self._repeats.check(f"{service.name}:{message}", self._monotonic())[0]:
            log.warning("%s skipped (retrying every %gs): %s", service.name, service.retry_s, message,
                        exc_info=None if isinstance(exc, QueuectlError) else exc)

    async def run(self) -> None:
        """Until `stop()`: run what is due, then sleep until the next is due or `run_soon`."""
        self._wake = asyncio.Event()
        while not self._stopping:
            next_due = await self.run_due()
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_due - self._monotonic()))
            except TimeoutError:
                pass
            self._wake.clear()

    def stop(self) -> None:
        """Stop after the service running now (if any) has finished."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()


# -- the services --------------------------------------------------------------------------------


class LeaseRenewal(Service):
    """Renew the leases of the attempts this daemon runs, and heartbeat; kill an attempt whose
    lease is gone (canceled, or recovered by a peer that thought us dead)."""

    name = "lease renewal"

    def __init__(self, scheduler: Scheduler, db: StoreThreads, lease_s: float) -> None:
        super().__init__(lease_s / 3)
        self.scheduler = scheduler
        self.db = db
        self.lease_s = lease_s

    async def run(self, now: float) -> float | None:
        """One renewal and heartbeat."""
        sched = self.scheduler
        renewing = sched.running_keys()
        renewed_from = time.monotonic()  # the renewed leases run from about here (`now` was read just before)
        held = await self.db.write(self.db.store.renew_leases, sched.owner, renewing, now, self.lease_s,
                                   sched.active, sched.slots, sched.claiming)
        if sched.keeper is not None:  # committed: the keeper may let those attempts run that much longer
            sched.keeper.leases_renewed([key for key in renewing if key[0] in held], renewed_from)
        if sched.clock.shared:  # follow the database's clock (a sample no better than ours is dropped)
            try:
                await self.db.read(sched.clock.sync, self.db.store.clock_now)
            except Exception as exc:  # the renewal committed; the clock keeps its estimate until the next one
                log.debug("clock sample skipped: %s", exc)
        sched.metrics.leases(renewed=sum(1 for key in renewing if key[0] in held),
                             lost=sum(1 for key in renewing if key[0] not in held))
        for job_id, run in renewing:  # not attempts that joined `running` during the renewal
            attempt = sched.running.get(job_id)
            if attempt is None or attempt.job.run != run or job_id in held:
                continue
            if attempt.pid is not None and attempt.kill_reason is None and not attempt.ended:
                log.warning("job %s: lease lost (canceled or recovered elsewhere); killing its process", job_id)
                attempt.kill(KillReason.LEASE_LOST)
        return None


class StrayRelease(Service):
    """Put back rows this daemon holds as `processing` but runs no attempt for (the answer to a
    claim was lost, ...): pending again, uncounted (the store records them as requeued)."""

    name = "stray release"
    #: While a turn is in flight, look again this soon.
    BUSY_RETRY_S = 0.1

    def __init__(self, scheduler: Scheduler, db: StoreThreads, interval_s: float) -> None:
        super().__init__(interval_s)
        self.scheduler = scheduler
        self.db = db

    async def run(self, now: float) -> float | None:
        """Release the strays, unless a claim of ours may be on its way to `running`."""
        sched = self.scheduler
        # A row of ours is a stray only if no claim of ours can be on its way to `running`: a
        # turn's claim commits in the writer thread before its attempts join `running` on the
        # loop. Between this check and the submission to the writer thread (FIFO) nothing else
        # runs on the loop, so a later turn's claim commits after the release.
        if sched.turns_in_flight:
            return self.BUSY_RETRY_S
        strays = await self.db.write(self.db.store.release_strays, sched.owner, sched.running_keys(), now)
        for job_id, run in strays:
            log.warning("job %s: claimed by this daemon (attempt %d) but not running here, e.g. the answer to "
                        "its claim was lost; returned to pending (not counted)", job_id, run)
        if strays:
            sched.jobs_changed()
        return None


class PeerRecovery(Service):
    """End the attempts of dead daemons as `worker lost`, killing first the processes of those
    that ran on this host (our boot and PID namespace; see tracking.kill_orphans). A peer is dead
    when its heartbeat is older than 3 leases, or, only where its pid is provably ours to look
    at, when its process is gone. On a shared database both the leases and the heartbeats are
    judged by the database's clock, in SQL: no host's clock takes part."""

    name = "recovery"

    def __init__(self, scheduler: Scheduler, db: StoreThreads, settings: Settings,
                 place: instance.Place | None = None) -> None:
        super().__init__(settings.lease_s / 3)
        self.scheduler = scheduler
        self.db = db
        self.settings = settings
        #: Where this daemon runs: whose pids it may look at.
        self.place = place if place is not None else instance.here()

    async def run(self, now: float) -> float | None:
        """One recovery pass."""
        await self.recover(now)
        return None

    async def recover(self, now: float) -> int:
        """Recover what dead daemons left; returns how many attempts were ended."""
        store = self.db.store
        owner = self.scheduler.owner
        # On a shared database the database's own clock judges, in SQL; else the store clock's `now`.
        judge_now = None if self.scheduler.clock.shared else now
        dead = await self._dead_daemons(judge_now)
        lost = [la for la in await self.db.read(store.lost_attempts, judge_now, list(dead)) if la.owner != owner]
        if not lost and not dead:
            return 0
        here = [la for la in lost if self.place.holds(la.boot_id, la.pid_ns)]
        orphaned = [tracking.OrphanedAttempt(la.owner, la.job_id, la.run, la.pid, la.proc_start) for la in here]
        dead_here = {d for d, why in dead.items() if why.here}
        if orphaned or dead_here:
            killed = await asyncio.get_running_loop().run_in_executor(None, tracking.kill_orphans, orphaned, dead_here)
            if killed:
                log.warning("killed %d process(es) of attempts that were running when their daemon stopped", killed)
        ended = [_lost(la, now, lost_because(la, dead.get(la.owner), self._clock_name())) for la in lost]
        if ended:
            from queuectld.scheduler import log_result

            results = await self.db.write(store.finish, ended, self.scheduler.policy())
            self.scheduler.metrics.rescued(len(ended))
            for fa, job in results:
                log_result(fa, job)
            for la in here:  # a snooze file the dead daemon could not remove
                _remove(runner.snooze_path(self.settings.logs_dir, la.job_id, la.run))
            self.scheduler.jobs_changed()
        for why in dead.values():
            log.warning("%s; forgetting it", why.text)
        await self.db.write(store.forget_daemons, list(dead))
        return len(ended)

    def _clock_name(self) -> str:
        return "database clock" if self.scheduler.clock.shared else "store clock"

    async def _dead_daemons(self, judge_now: float | None) -> dict[str, PeerDeath]:
        """Daemon rows whose process is gone (provably ours to look at) or whose heartbeat
        stopped (any host), with what was observed."""
        dead: dict[str, PeerDeath] = {}
        limit_s = 3 * self.settings.lease_s
        for d, silent_s in await self.db.read(self.db.store.daemon_silences, judge_now):
            if d.id == self.scheduler.owner:
                continue
            ours = self.place.holds(d.boot_id, d.pid_ns)
            if ours and runner.process_start_time(d.pid) != d.proc_start:
                dead[d.id] = PeerDeath(f"daemon {d.id} on host {d.host}: its process {d.pid} on this host is gone",
                                       here=True)
            elif silent_s > limit_s:
                dead[d.id] = PeerDeath(f"daemon {d.id} on host {d.host} stopped heartbeating {silent_s:.0f} s ago "
                                       f"({self._clock_name()})", here=ours)
        return dead


@dataclass(frozen=True, slots=True)
class PeerDeath:
    """Why a peer is taken for dead (`text`, what was observed), and whether it ran here."""

    text: str
    here: bool


def lost_because(la: LostAttempt, death: PeerDeath | None, clock_name: str) -> str:
    """What was observed about a lost attempt, for its attempt row and the job's last error."""
    if death is not None:
        return death.text
    expired = "" if la.lease_expired_s is None else f" {max(0.0, la.lease_expired_s):.0f} s ago"
    return f"the lease of daemon {la.owner} expired{expired} ({clock_name}) without being renewed"


class ConfigRefresh(Service):
    """Read the run-time config again: a peer sharing the store may have changed it."""

    name = "config refresh"

    def __init__(self, config: dict[str, Any], db: StoreThreads, interval_s: float) -> None:
        super().__init__(interval_s)
        self.config = config
        self.db = db

    async def run(self, now: float) -> float | None:
        """Update the shared config dict in place."""
        self.config.update(await self.db.read(self.db.store.config_all))
        return None


class Checkpoint(Service):
    """The store's periodic checkpoint (SQLite: copy the WAL back so it cannot grow forever; at
    least every `store.checkpoint_every_s`). In the background thread, not the writer's: it takes
    no lock the scheduler's writes wait for, and its copy and sync would be a turn's delay."""

    name = "checkpoint"

    def __init__(self, db: StoreThreads, interval_s: float) -> None:
        every = db.store.checkpoint_every_s
        super().__init__(interval_s if every is None else min(interval_s, every))
        self.db = db

    async def run(self, now: float) -> float | None:
        """One checkpoint."""
        await self.db.background(self.db.store.checkpoint)
        return None


class OrphanReaping(Service):
    """Reap adopted orphans that exited while no attempt ended (attempt ends reap them too)."""

    name = "orphan reaping"

    def __init__(self, reaper: ChildReaper, interval_s: float) -> None:
        super().__init__(interval_s)
        self.reaper = reaper

    async def run(self, now: float) -> float | None:
        """Reap (never blocks)."""
        self.reaper.reap()
        return None


class DaemonServices:
    """The standard services of one daemon, by name, and the Maintenance that runs them."""

    def __init__(self, scheduler: Scheduler, db: StoreThreads, settings: Settings, config: dict[str, Any], *,
                 monotonic: Clock = time.monotonic, store_time: Clock | None = None,
                 place: instance.Place | None = None) -> None:
        every = settings.lease_s / 3
        self.leases = LeaseRenewal(scheduler, db, settings.lease_s)
        self.strays = StrayRelease(scheduler, db, every)
        self.recovery = PeerRecovery(scheduler, db, settings, place)
        self.config = ConfigRefresh(config, db, every)
        self.checkpoint = Checkpoint(db, every)
        self.reaping = OrphanReaping(scheduler.tracker.reaper, every)
        from queuectld.cron_service import CronTicker  # they import Service from here
        from queuectld.retention import Pruner

        self.cron = CronTicker(scheduler, db, config)
        self.pruner = Pruner(db, config, settings.logs_dir, interval_s=settings.prune_interval_s)
        self.maintenance = Maintenance(
            [self.reaping, self.leases, self.strays, self.recovery, self.config, self.checkpoint, self.cron,
             self.pruner],
            monotonic=monotonic, store_time=scheduler.clock.now if store_time is None else store_time,
        )
        # A turn whose claim may have committed with nothing started: put such rows back now.
        scheduler.on_claim_in_doubt = lambda: self.maintenance.run_soon(self.strays)
        # Workers started or stopped: the heartbeat's `claiming` tells peers at once.
        scheduler.on_claiming_changed = lambda: self.maintenance.run_soon(self.leases)
        # A schedule added or resumed: the ticker looks at the store's earliest next fire now.
        scheduler.on_schedules_changed = lambda: self.maintenance.run_soon(self.cron)


def _lost(la: LostAttempt, now: float, why: str) -> FinishedAttempt:
    return FinishedAttempt(la.job_id, la.run, la.owner, Outcome(OutcomeKind.WORKER_LOST, error=f"worker lost: {why}"),
                           now)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
