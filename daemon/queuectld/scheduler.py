"""Worker slots: claiming due jobs, running attempts, recording their ends, leases and recovery."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import replace
from typing import Any

from queuectl.errors import QueuectlError, StoreBusy, StoreDamaged
from queuectld import runner, tracking
from queuectld.jobs import Job, JobState, Outcome, RetryPolicy
from queuectld.runner import Attempt
from queuectld.settings import Settings, fault_point
from queuectld.store.base import FinishedAttempt, LostAttempt, SpawnedAttempt
from queuectld.store_health import STORE_FAULTS, RepeatFilter
from queuectld.store_threads import StoreThreads
from queuectld.tracking import Tracker

log = logging.getLogger("queuectld.scheduler")

#: Back-off before retrying a store write that found the database locked.
BUSY_RETRY_S = 0.5
#: After any other store failure (full disk, damaged page, ...) the retries slow down to this.
STORE_RETRY_MAX_S = 5.0


class Scheduler:
    """Runs up to `slots` attempts at once; wakes on events, never on a polling sleep."""

    def __init__(self, db: StoreThreads, settings: Settings, owner: str, config: dict[str, Any], umask: int,
                 tracker: Tracker) -> None:
        self.db = db
        self.tracker = tracker  #: finds and kills every process of an attempt
        self.settings = settings
        self.owner = owner
        self.config = config  #: shared with the handlers, who update it on config.set
        self.slots = int(settings.workers or config["workers"])
        self.claiming = True
        self.running: dict[str, Attempt] = {}
        self._umask = umask
        self._env = runner.base_environment(dict(os.environ))
        self._logs_dir = str(settings.logs_dir)
        self._kill_new = False  #: `worker stop --now`: kill attempts that are still being spawned too
        self._finished: list[tuple[Attempt, FinishedAttempt]] = []
        self._spawned: list[SpawnedAttempt] = []
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()
        self._stopping = False
        self._forced = False  #: a second stop request: do not wait for a store that refuses writes
        self._fault = fault_point()
        #: Turns whose claim may have committed without their attempts in `running` yet: while
        #: one is in flight, no row of ours can be called a stray (see `_maintain`).
        self._turns_in_flight = 0
        # After a store failure other than a lock: when to write again, the next back-off, and
        # whether turns record results only (a claim that hits a damaged row must not hold them up).
        self._retry_at = 0.0
        self._retry_s = BUSY_RETRY_S
        self._store_failing = False
        self._held_logged = False
        self._isolate = False  #: write held results one per transaction on the next turn
        self._repeats = RepeatFilter()
        #: The next maintenance tick on the monotonic clock: a wall clock stepped back (or
        #: forward) neither stops nor hurries lease renewal and heartbeats.
        self._maintenance_due = 0.0

    # -- events ---------------------------------------------------------------------------------

    def notify(self) -> None:
        """Something happened (new job, config change, stop): run a turn soon."""
        self._woken = True
        if self._waiter is not None:
            _resolve(self._waiter)

    def changed(self) -> asyncio.Event:
        """An event set the next time any job changes state (for `job.wait` and `logs --follow`)."""
        return self._changed

    def _signal_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- control --------------------------------------------------------------------------------

    def start_workers(self, count: int) -> None:
        """Run `count` slots and resume claiming."""
        self.slots = count
        self.claiming = True
        self._kill_new = False
        self.notify()

    def stop_workers(self, now: bool) -> int:
        """Stop claiming; with `now`, kill running attempts and requeue them uncounted."""
        self.claiming = False
        self._kill_new = now
        if now:
            for attempt in self.running.values():
                if not attempt.ended:  # one that just ended is recorded as it ended, not re-run
                    attempt.requeue = True
                    attempt.kill("worker stop --now")
        self.notify()
        return len(self.running)

    def kill_local(self, job_id: str, reason: str) -> bool:
        """Kill the local attempt of a job, if one runs here (cancel)."""
        attempt = self.running.get(job_id)
        if attempt is None:
            return False
        attempt.kill(reason)
        return True

    def request_stop(self, force: bool = False) -> None:
        """Drain: stop claiming and let running attempts finish. `force` kills and requeues them."""
        self._stopping = True
        self._forced = self._forced or force
        self.stop_workers(now=force)

    @property
    def active(self) -> int:
        """Slots running an attempt now."""
        return len(self.running)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Each turn: maintain leases when due; record ended attempts and claim due jobs for the
        free slots (one trip to the store thread); start them; then sleep until a new job, an
        ended attempt, the next due time, or maintenance."""
        while True:
            if self._stopping and not self.running and not self._finished:
                return
            if self._gave_up_on_held_results():
                return
            if time.monotonic() >= self._maintenance_due:
                self.tracker.reaper.reap()  # orphans that exited while no attempt ended
                await self._maintain(time.time())
            busy, claimed_all, next_due = await self._turn()
            if claimed_all and not self._stopping:
                continue  # there may be more due jobs; the slots decide
            timeout = max(0.0, self._maintenance_due - time.monotonic())
            if busy:
                timeout = min(timeout, BUSY_RETRY_S)
            elif next_due is not None:
                # Due times are stored as wall time (shared with other hosts); the sleep itself
                # is on the loop's monotonic clock.
                timeout = min(timeout, max(0.0, next_due - time.time()))
            await self._sleep(timeout)

    def _gave_up_on_held_results(self) -> bool:
        """A forced stop while the store refuses writes (a full disk) and every attempt has ended:
        stop rather than wait for space. The held results are lost with the process; those jobs
        stay `processing` in the store, and the next start (or a peer) recovers them as `worker
        lost` once their leases expire, so they run again: at least once, never lost."""
        if not (self._forced and self._store_failing and self._finished):
            return False
        if any(not attempt.ended for attempt in self.running.values()):
            return False
        log.error("stopping with %d result(s) of finished attempts that the store would not take; the next "
                  "start recovers those jobs as `worker lost` and runs them again", len(self._finished))
        return True

    async def _sleep(self, timeout: float) -> None:
        """Until notify() or `timeout` seconds; not at all if something happened since the last
        sleep. (A bare future and a timer: cheaper than wait_for, which makes a task each time.)"""
        if self._woken or timeout <= 0:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._woken = False

    async def _turn(self) -> tuple[bool, bool, float | None]:
        """Record, claim and start. Returns (store busy, every free slot filled, next due time).

        When the store fails (full disk, damaged page, lost connection), the ended attempts stay
        in memory and are written on a later turn, with a back-off up to STORE_RETRY_MAX_S; until a
        turn succeeds, a turn with results to record claims nothing. Writing a result twice is
        harmless: every write is fenced on the attempt, so a repeat matches nothing."""
        if time.monotonic() < self._retry_at:
            return True, False, None
        if self._isolate:
            await self._record_separately()
        batch, spawned = self._finished, self._spawned
        self._finished, self._spawned = [], []
        record_only = self._store_failing and bool(batch or spawned)
        claiming = self.claiming and not self._stopping and not record_only
        free = self.slots - (len(self.running) - len(batch)) if claiming else 0
        if not batch and not spawned and free <= 0:
            return self._store_failing, False, None
        policy = RetryPolicy(float(self.config["backoff-base"]), float(self.config["backoff-max"]))
        self._turns_in_flight += 1
        try:
            results, started, next_due = await self.db.write(self._turn_in_store_thread, batch, spawned, free, policy)
        except Exception as exc:  # the daemon must outlive any store failure: hold, back off, retry
            self._finished[:0] = batch
            self._spawned[:0] = spawned
            self._turn_failed(exc, len(batch))
            if not isinstance(exc, StoreBusy):
                # Its claim may have committed (the answer was lost, or a later step failed) with
                # nothing started: maintenance puts such rows back, so run it now.
                self._maintenance_due = 0.0
            return True, False, None
        finally:
            self._turns_in_flight -= 1
        if self._store_failing:
            if batch and self._held_logged:
                log.warning("store: wrote %d held result(s) of finished attempts", len(batch))
                self._held_logged = False
            self._store_failing = record_only  # the claims held back go next turn; then all is normal
            self._retry_s = BUSY_RETRY_S
        self._recorded(batch, results)
        for attempt in started:
            self.running[attempt.job.id] = attempt
            job = attempt.job
            log.info("job %s started (attempt %d): %s", job.id, job.run, _short(job.command))
            if self._kill_new:  # `worker stop --now` came while this one was being spawned
                attempt.requeue = True
                attempt.kill("worker stop --now")
            attempt.watch(self._attempt_done, self._attempt_spawned)
        if batch or started:
            self._signal_changed()
        if self._store_failing:
            return True, False, None  # look again soon: the claims that waited are due
        return False, free > 0 and len(started) == free, next_due

    def _recorded(self, batch: list[tuple[Attempt, FinishedAttempt]],
                  results: list[tuple[FinishedAttempt, Job | None]]) -> None:
        """The ended attempts in `batch` are written: free their slots, log how each ended."""
        for attempt, _ in batch:
            if self.running.get(attempt.job.id) is attempt:
                del self.running[attempt.job.id]
        canceled = {a.job.id for a, _ in batch if a.kill_reason == "canceled"}
        for fa, job in results:
            _log_result(fa, job, canceled=fa.job_id in canceled)

    async def _record_separately(self) -> None:
        """After a damaged page failed a turn: write each held result (and pid) alone, so that one
        whose row is damaged does not hold up the others. A result that still hits the damage
        cannot be stored until the file is repaired: it is logged and let go, freeing its slot."""
        self._isolate = False
        batch, spawned = self._finished, self._spawned
        self._finished, self._spawned = [], []
        policy = RetryPolicy(float(self.config["backoff-base"]), float(self.config["backoff-max"]))
        for sp in spawned:
            try:
                await self.db.write(self._turn_in_store_thread, [], [sp], 0, policy)
            except StoreDamaged:
                pass  # only crash recovery reads a pid, and this row cannot be read anyway
            except Exception:
                self._spawned.append(sp)
        for item in batch:
            try:
                results, _, _ = await self.db.write(self._turn_in_store_thread, [item], [], 0, policy)
            except StoreDamaged:
                attempt, fa = item
                log.error("job %s attempt %d ended (%s) but its row is on a damaged page of the store: the "
                          "result cannot be stored", fa.job_id, fa.run, fa.outcome.describe())
                if self.running.get(attempt.job.id) is attempt:
                    del self.running[attempt.job.id]
            except Exception:
                self._finished.append(item)
            else:
                self._recorded([item], results)
                self._signal_changed()

    def _turn_failed(self, exc: Exception, held: int) -> None:
        """Back off after a failed turn, and say so once per failure rather than once per retry
        (StoreThreads has logged the store's own error once already)."""
        if isinstance(exc, StoreBusy):
            self._retry_at = time.monotonic() + BUSY_RETRY_S
            return
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, STORE_RETRY_MAX_S)
        self._store_failing = True
        # A damaged row fails every transaction that touches it: find it by writing one at a time.
        self._isolate = isinstance(exc, StoreDamaged) and bool(self._finished or self._spawned)
        if not isinstance(exc, QueuectlError):
            if self._repeats.check(f"turn:{type(exc).__name__}:{exc}", time.time())[0]:
                log.error("scheduler turn failed (will retry): %s", exc, exc_info=exc)
        if held and not self._held_logged:
            self._held_logged = True
            log.warning("store: holding %d result(s) of finished attempts in memory; writing them when the "
                        "store accepts writes again (retrying every %gs at most)", held, STORE_RETRY_MAX_S)

    def _turn_in_store_thread(
        self, batch: list[tuple[Attempt, FinishedAttempt]], spawned: list[SpawnedAttempt], free: int,
        policy: RetryPolicy,
    ) -> tuple[list[tuple[FinishedAttempt, Job | None]], list[Attempt], float | None]:
        """The blocking side of a turn, in the writer thread: record, claim, and spawn the claimed
        jobs' shells right after the claim commits (no trip back to the loop in between)."""
        store = self.db.store
        done = {(fa.job_id, fa.run) for _, fa in batch}
        # A pid is worth recording only for attempts still running; read the start time here,
        # off the event loop.
        live = [replace(sp, proc_start=runner.process_start_time(sp.pid))
                for sp in spawned if (sp.job_id, sp.run) not in done]
        for attempt, fa in batch:
            # A repeat after a failed turn matches nothing (fenced) and is not logged again.
            if attempt.requeue and store.release(fa.job_id, fa.run, fa.owner, time.time()):
                log.info("job %s returned to pending (attempt %d not counted)", fa.job_id, fa.run)
        ended = [fa for a, fa in batch if not a.requeue]
        results, claimed = store.finish_and_claim(
            ended, policy, live, self.owner, self.settings.host, free, time.time(), self.settings.lease_s
        )
        # Committed: from here on nothing may fail the turn, or the claimed jobs would never start.
        try:
            next_due = store.next_due_at() if 0 < free and len(claimed) < free else None
        except QueuectlError:
            next_due = time.time() + STORE_RETRY_MAX_S  # unknown: look again in a while
        if claimed and self._fault == "after-claim":
            _crash("after-claim")
        started = []
        for job in claimed:
            attempt = self._attempt(job)
            attempt.spawn(runner.job_environment(self._env, job, self.owner), self._umask)
            started.append(attempt)
        return results, started, next_due

    def _attempt(self, job: Job) -> Attempt:
        cfg = self.config
        return Attempt(
            job,
            self.owner,
            runner.log_path(self._logs_dir, job.id, job.run),
            timeout_s=job.timeout_s or (float(cfg["job-timeout"]) or None),
            kill_grace_s=float(cfg["kill-grace"]),
            output_max_bytes=int(cfg["output-max-bytes"]),
            tracker=self.tracker,
        )

    def _attempt_spawned(self, attempt: Attempt) -> None:
        assert attempt.pid is not None
        self._spawned.append(SpawnedAttempt(attempt.job.id, attempt.job.run, self.owner, attempt.pid, None))

    def _attempt_done(self, attempt: Attempt, outcome: Outcome) -> None:
        if self._fault == "after-exit":
            _crash("after-exit")
        job = attempt.job
        self._finished.append(
            (attempt, FinishedAttempt(job.id, job.run, self.owner, outcome, time.time(), attempt.tail_text()))
        )
        self.notify()

    # -- leases, heartbeat, recovery ------------------------------------------------------------

    async def _maintain(self, now: float) -> None:
        """Renew the leases of the attempts we run and heartbeat; put back rows of ours that we do
        not run; recover attempts of dead daemons; refresh config."""
        self._maintenance_due = time.monotonic() + self.settings.lease_s / 3
        store = self.db.store
        try:
            renewing = self._running_keys()
            held = await self.db.write(store.renew_leases, self.owner, renewing, now, self.settings.lease_s,
                                       len(self.running), self.slots)
            for job_id, run in renewing:  # not attempts that joined `running` during the renewal
                attempt = self.running.get(job_id)
                if attempt is None or attempt.job.run != run or job_id in held:
                    continue
                if attempt.pid is not None and not attempt.kill_reason and not attempt.ended:
                    log.warning("job %s: lease lost (canceled or recovered elsewhere); killing its process", job_id)
                    attempt.kill("lease lost")
            # A row of ours is a stray only if no claim of ours can be on its way to `running`: a
            # turn's claim commits in the writer thread before its attempts join `running` on the
            # loop. `run()` awaits turns and maintenance one after the other, so none is in flight
            # there; the check keeps it so. Between the check and the submission to the writer
            # thread (FIFO) nothing else runs on the loop, so a later turn's claim comes after.
            strays: list[tuple[str, int]] = []
            if self._turns_in_flight == 0:
                try:
                    strays = list(await self.db.write(store.release_strays, self.owner, self._running_keys(),
                                                      time.time()))
                except QueuectlError as exc:
                    # E.g. a stray on a damaged page: it must not stop recovery and the rest below.
                    log.debug("putting strays back failed: %s", exc.message)
                for job_id, run in strays:
                    log.warning("job %s: claimed by this daemon (attempt %d) but not running here, e.g. the "
                                "answer to its claim was lost; returned to pending (not counted)", job_id, run)
                if strays:
                    self._signal_changed()
                    self.notify()
            await self.recover(now)
            self.config.update(await self.db.read(store.config_all))
            await self.db.write(store.checkpoint)
        except Exception as exc:  # a full disk or a damaged page must not end the daemon: retry soon
            message = exc.message if isinstance(exc, QueuectlError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, STORE_FAULTS):
                log.debug("maintenance skipped: %s", message)  # StoreThreads logged it once already
            elif self._repeats.check(f"maintain:{message}", time.time())[0]:
                log.warning("maintenance skipped (retrying every %gs): %s", BUSY_RETRY_S * 4, message,
                            exc_info=None if isinstance(exc, QueuectlError) else exc)
            self._maintenance_due = time.monotonic() + BUSY_RETRY_S * 4

    def _running_keys(self) -> list[tuple[str, int]]:
        """(job id, run) of every attempt this daemon runs, ended ones not yet recorded included."""
        return [(a.job.id, a.job.run) for a in self.running.values()]

    async def recover(self, now: float) -> int:
        """End attempts whose daemon is gone as failed ("worker lost"), killing first the processes
        of those attempts that ran on this host (and no other process: see tracking.kill_orphans)."""
        store = self.db.store
        dead = await self._dead_daemons(now)
        lost = [
            la for la in await self.db.read(store.lost_attempts, now, dead)
            if la.owner != self.owner
        ]
        if not lost and not dead:
            return 0
        host = self.settings.host
        orphaned = [tracking.OrphanedAttempt(la.owner, la.job_id, la.run, la.pid, la.proc_start)
                    for la in lost if la.host == host]
        dead_here = {d for d in dead if d.startswith(host + ":")}
        if orphaned or dead_here:
            killed = await asyncio.get_running_loop().run_in_executor(None, tracking.kill_orphans, orphaned, dead_here)
            if killed:
                log.warning("killed %d process(es) of attempts that were running when their daemon stopped", killed)
        policy = RetryPolicy(float(self.config["backoff-base"]), float(self.config["backoff-max"]))
        ended = [_lost(la, now) for la in lost]
        if ended:
            results = await self.db.write(store.finish, ended, policy)
            for fa, job in results:
                _log_result(fa, job)
            self._signal_changed()
            self.notify()
        await self.db.write(store.forget_daemons, dead)
        return len(ended)

    async def _dead_daemons(self, now: float) -> list[str]:
        """Daemon rows whose process is gone (this host) or whose heartbeat stopped (any host)."""
        dead = []
        for d in await self.db.read(self.db.store.daemons):
            if d.id == self.owner:
                continue
            if d.host == self.settings.host and runner.process_start_time(d.pid) != d.proc_start:
                dead.append(d.id)
            elif d.heartbeat_at < now - 3 * self.settings.lease_s:
                dead.append(d.id)
        return dead


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _lost(la: LostAttempt, now: float) -> FinishedAttempt:
    return FinishedAttempt(
        la.job_id, la.run, la.owner,
        Outcome(None, "worker lost", f"worker lost: daemon {la.owner} stopped during the attempt"), now,
    )


def _log_result(fa: FinishedAttempt, job: Job | None, *, canceled: bool = False) -> None:
    if job is None and canceled:
        log.info("job %s canceled; its attempt %d was stopped", fa.job_id, fa.run)
    elif job is None:
        log.warning("job %s attempt %d ended (%s) but its lease was lost; result dropped",
                    fa.job_id, fa.run, fa.outcome.describe())
    elif job.state is JobState.COMPLETED:
        log.info("job %s completed", job.id)
    elif job.state is JobState.FAILED:
        delay = (job.next_run_at or fa.finished_at) - fa.finished_at
        log.info("job %s failed (%s); retry %d/%d in %.1fs", job.id, fa.outcome.describe(),
                 job.attempts, job.max_retries, delay)
    elif job.state is JobState.DEAD:
        log.warning("job %s moved to the dead-letter queue after %d attempts: %s", job.id, job.attempts,
                    fa.outcome.describe())


def _short(command: str, limit: int = 80) -> str:
    command = command.replace("\n", " ")
    return command if len(command) <= limit else command[: limit - 1] + "…"


def _crash(point: str) -> None:
    log.critical("fault point %s: killing the daemon", point)
    os.kill(os.getpid(), signal.SIGKILL)
