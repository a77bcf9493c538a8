"""Worker slots and turns: claiming due jobs, running attempts, recording how they ended.

Leases, heartbeats, strays, recovery of dead peers, config refresh and checkpoints are
maintenance services (maintenance.py), apart from the slots and turns here."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from queuectl.errors import QueuectlError, StoreBusy, StoreDamaged
from queuectld import runner
from queuectld.clock import StoreClock
from queuectld.envcache import EnvCache
from queuectld.jobs import Job, JobState, LifecyclePolicy, Outcome, OutcomeKind
from queuectld.keeper_client import split_attempt_key
from queuectld.keeper_link import KeeperAttempt, KeeperLink
from queuectld.metrics import Metrics
from queuectld.runner import Attempt, KillReason
from queuectld.settings import Settings, fault_point
from queuectld.store.base import EnvSnapshot, FinishedAttempt, RunKey, SpawnedAttempt
from queuectld.store_health import RepeatFilter
from queuectld.store_threads import StoreThreads
from queuectld.tracking import Tracker

log = logging.getLogger("queuectld.scheduler")

#: Back-off before retrying a store write that found the database locked.
BUSY_RETRY_S = 0.5
#: After any other store failure (full disk, damaged page, ...) the retries slow down to this.
STORE_RETRY_MAX_S = 5.0
#: Shared environments built and kept for the next attempts of their snapshot (one per batch or
#: shell that enqueued: a few are live at a time).
SHARED_ENVIRONMENTS_KEPT = 32
#: An attempt the daemon runs: through its job keeper, or (`--no-keeper`) as its own child.
AnyAttempt = KeeperAttempt | Attempt
#: The config keys LifecyclePolicy.from_config reads: the policy is rebuilt when one changes.
POLICY_KEYS = ("backoff-base", "backoff-max", "backoff-jitter", "retry-on-exit", "no-retry-on-exit",
               "retry-on-timeout", "no-retry-on-signal", "snooze-exit", "snooze-delay")


class Scheduler:
    """Runs up to `slots` attempts at once; wakes on events, never on a polling sleep."""

    def __init__(self, db: StoreThreads, settings: Settings, owner: str, config: dict[str, Any], umask: int,
                 tracker: Tracker, clock: StoreClock | None = None, keeper: KeeperLink | None = None) -> None:
        self.db = db
        #: The job keeper that runs the attempts (None: `--no-keeper`, they are the daemon's children).
        self.keeper = keeper
        if keeper is not None:
            keeper.on_change = self.jobs_changed  # lost (its attempts ended) or back (claims resume)
        #: The store's time: every time this daemon gives the store comes from it (clock.py).
        self.clock = clock if clock is not None else StoreClock.local(time.time())
        self.tracker = tracker  #: finds and kills every process of an attempt
        self.settings = settings
        self.owner = owner
        self.config = config  #: shared with the handlers, who update it on config.set
        self.slots = int(settings.workers or config["workers"])
        self.metrics: Metrics = Metrics()  #: what `--metrics` serves (a no-op without)
        self.claiming = True
        self.running: dict[str, AnyAttempt] = {}
        self._umask = umask
        self._env = runner.base_environment(dict(os.environ))
        #: Shared environments by AttemptEnvironment.ref (see `_environment`), oldest first.
        self._shared_envs: dict[str, dict[str, str]] = {}
        #: Environment snapshots by id, shared with `show` (content-addressed: never stale).
        self.envs = EnvCache()
        self._logs_dir = str(settings.logs_dir)
        self._default_cwd = str(settings.state_dir)  #: where a job without a cwd runs
        #: `worker stop --now` or a forced stop: kill attempts that are still being spawned too
        self._kill_new: KillReason | None = None
        self._finished: list[tuple[AnyAttempt, FinishedAttempt]] = []
        self._spawned: list[SpawnedAttempt] = []
        #: Results whose write failed after it may have committed (a lost COMMIT answer): when the
        #: repeat is fenced out, the store is asked whether it holds the result already.
        self._in_doubt: set[RunKey] = set()
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()
        self._stopping = False
        self._handover = False  #: stop at once and leave the running attempts to the keeper
        self._forced = False  #: a second stop request: do not wait for a store that refuses writes
        self._fault = fault_point()
        #: Turns whose claim may have committed without their attempts in `running` yet: while
        #: one is in flight, no row of ours can be called a stray (see maintenance.StrayRelease).
        self._turns_in_flight = 0
        # After a store failure other than a lock: when to write again, the next back-off, and
        # whether turns record results only (a claim that hits a damaged row must not hold them up).
        self._retry_at = 0.0
        self._retry_s = BUSY_RETRY_S
        self._store_failing = False
        self._held_logged = False
        self._isolate = False  #: write held results one per transaction on the next turn
        self._repeats = RepeatFilter()
        self._policy = LifecyclePolicy.from_config(config)
        self._policy_key = self._policy_values()
        #: Called when a turn failed after its claim may have committed (the stray release
        #: service puts such rows back); set by the wiring (maintenance.DaemonServices).
        self.on_claim_in_doubt: Callable[[], None] = lambda: None
        #: Called when `claiming` changes (workers start / stop): the wiring renews the heartbeat
        #: at once, so peers' `explain` sees it then, not a lease third later.
        self.on_claiming_changed: Callable[[], None] = lambda: None
        #: Called when a cron schedule was added or resumed: the wiring wakes the cron ticker.
        self.on_schedules_changed: Callable[[], None] = lambda: None
        #: The longest idle sleep: a lost wake-up (a peer's NOTIFY while the listening connection
        #: reconnects) delays a claim at most this long.
        self.idle_recheck_s = settings.lease_s / 3

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

    def jobs_changed(self) -> None:
        """Jobs changed outside a turn (strays put back, a peer's attempts recovered): wake
        `job.wait` and `logs --follow`, and run a turn."""
        self._signal_changed()
        self.notify()

    def policy(self) -> LifecyclePolicy:
        """What the current config says about ended attempts; rebuilt only when it changed."""
        key = self._policy_values()
        if key != self._policy_key:
            self._policy, self._policy_key = LifecyclePolicy.from_config(self.config), key
        return self._policy

    def _policy_values(self) -> tuple[Any, ...]:
        return tuple(self.config.get(k) for k in POLICY_KEYS)

    # -- control --------------------------------------------------------------------------------

    def start_workers(self, count: int) -> None:
        """Run `count` slots and resume claiming."""
        self.slots = count
        self.claiming = True
        self._kill_new = None
        self.notify()
        self.on_claiming_changed()

    def stop_workers(self, now: bool, reason: KillReason = KillReason.REQUEUE) -> int:
        """Stop claiming; with `now`, kill running attempts to requeue them uncounted (`reason`:
        REQUEUE or SHUTDOWN). An attempt that has already ended, or whose shell has exited by
        itself, keeps its own outcome: a completed job is never run again."""
        self.claiming = False
        self._kill_new = reason if now else None
        if now:
            for attempt in self.running.values():
                attempt.kill(reason)
        self.notify()
        self.on_claiming_changed()
        return len(self.running)

    def kill_local(self, job_id: str, reason: KillReason) -> bool:
        """Kill the local attempt of a job, if one runs here (cancel: KillReason.CANCELED)."""
        attempt = self.running.get(job_id)
        if attempt is None:
            return False
        attempt.kill(KillReason(reason))
        return True

    def kill_requeued(self, keys: list[RunKey]) -> int:
        """Kill the local attempts among `keys`, which the store has already put back to pending
        (`queue pause --kill`): their results are fenced out. Returns how many run here; the
        others' daemons find their leases gone at their next renewal."""
        killed = 0
        for job_id, run in keys:
            attempt = self.running.get(job_id)
            if attempt is not None and attempt.job.run == run:
                attempt.kill(KillReason.PAUSED)
                killed += 1
        if keys:
            self._signal_changed()
            self.notify()
        return killed

    def request_stop(self, force: bool = False) -> None:
        """Drain: stop claiming and let running attempts finish. `force` kills and requeues them."""
        self._stopping = True
        self._forced = self._forced or force
        if force:
            self.stop_workers(now=True, reason=KillReason.SHUTDOWN)
        else:
            self.stop_workers(now=False)

    def request_handover(self) -> None:
        """Stop claiming and return from `run` without waiting for the running attempts: they go on
        in the job keeper, for the next daemon on this state dir to adopt (`queuectld --replace`)."""
        self._stopping = self._handover = True
        self.claiming = False
        self.notify()
        self.on_claiming_changed()

    @property
    def handing_over(self) -> bool:
        """`request_handover` was called: the running attempts are left to the keeper."""
        return self._handover

    async def adopt(self) -> int:
        """At start, before recovery: take over what the job keeper still runs (or holds the ends
        of) for a daemon of this state dir that is gone. Each attempt whose row is still
        `processing` at its run becomes ours, with a fresh lease and deadline; it goes on running,
        into the same log, and its end is recorded once. One whose job ended meanwhile (recovered
        elsewhere once its lease expired, canceled) is killed. Returns how many were adopted."""
        link = self.keeper
        if link is None:
            return 0
        listing = link.listing()
        pids = {a.key: a.pid for a in listing.attempts}
        keys = {key: split_attempt_key(key) for key in [*pids, *listing.ended]}
        adopted: dict[str, str | None] = {}
        if keys:
            renewed_from = time.monotonic()
            adopted = await self.db.write(self.db.store.adopt_attempts, self.owner, list(keys.values()),
                                          self.clock.now(), self.settings.lease_s)
            jobs = await self.db.read(lambda: {job_id: self.db.store.get(job_id) for job_id in adopted})
            policy = self.policy()
            for key, (job_id, run) in keys.items():
                job = jobs.get(job_id)
                if job is None or job.run != run:
                    continue
                attempt = self._attempt(job, policy, renewed_from)
                assert isinstance(attempt, KeeperAttempt)
                link.attempts[key] = attempt
                self.running[job.id] = attempt
                attempt.adopt(self._attempt_done, pids.get(key))
                log.info("job %s attempt %d adopted from daemon %s (%s)", job_id, run, adopted[job_id],
                         "running" if key in pids else "ended while no daemon followed it")
            link.leases_renewed([keys[k] for k in pids if keys[k][0] in adopted], renewed_from)
            gone = [key for key in pids if keys[key][0] not in adopted]
            if gone:
                log.warning("killing %d attempt(s) the job keeper ran whose jobs ended elsewhere meanwhile", len(gone))
                link.discard(gone, "its job ended elsewhere while no daemon followed it")
        link.follow()
        return len(adopted)

    @property
    def active(self) -> int:
        """Slots running an attempt now."""
        return len(self.running)

    @property
    def turns_in_flight(self) -> int:
        """Turns whose claim may have committed without their attempts in `running` yet: while
        one is in flight, no row of ours can be called a stray."""
        return self._turns_in_flight

    def running_keys(self) -> list[RunKey]:
        """(job id, run) of every attempt this daemon runs, ended ones not yet recorded included."""
        return [(a.job.id, a.job.run) for a in self.running.values()]

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Each turn: record ended attempts and claim due jobs for the free slots (one trip to
        the store thread); start them; then sleep until a new job, an ended attempt, the next
        due time, or a store retry. Returns when draining is done."""
        while True:
            if self._handover or (self._stopping and not self.running and not self._finished):
                return
            if self._gave_up_on_held_results():
                return
            busy, claimed_all, next_due = await self._turn()
            if self._stopping and not self.running and not self._finished:
                return  # the turn recorded the last attempt of a drain: do not sleep first
            if claimed_all and not self._stopping:
                continue  # there may be more due jobs; the slots decide
            timeout = self.idle_recheck_s
            if busy:
                timeout = min(timeout, BUSY_RETRY_S)
            elif next_due is not None:
                # Due times are on the store's clock (shared with other hosts); the sleep itself
                # is on the loop's monotonic clock.
                timeout = min(timeout, max(0.0, next_due - self.clock.now()))
            await self._sleep(timeout)

    def _gave_up_on_held_results(self) -> bool:
        """A forced stop while the store refuses writes (a full disk) and every attempt has ended:
        stop rather than wait for space. Those jobs stay `processing` in the store. Their ends stay
        with the job keeper (unacked), and the next start on this state dir adopts and records
        them; without a keeper (or once the keeper gave up on them) the held results are lost
        with the process, and the next start (or a peer) recovers those jobs as `worker lost` once
        their leases expire, so they run again: at least once, never lost."""
        if not (self._forced and self._store_failing and self._finished):
            return False
        if any(not attempt.ended for attempt in self.running.values()):
            return False
        if self.keeper is not None:
            log.error("stopping with %d result(s) of finished attempts that the store would not take; the job "
                      "keeper keeps them, and the next start records them", len(self._finished))
        else:
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
        claiming = self.claiming and not self._stopping and not record_only and (
            self.keeper is None or self.keeper.up)
        free = self.slots - (len(self.running) - len(batch)) if claiming else 0
        if not batch and not spawned and free <= 0:
            return self._store_failing, False, None
        policy = self.policy()
        self._turns_in_flight += 1
        try:
            results, started, next_due = await self.db.write(self._turn_in_store_thread, batch, spawned, free, policy)
        except Exception as exc:  # the daemon must outlive any store failure: hold, back off, retry
            self._finished[:0] = batch
            self._spawned[:0] = spawned
            if not isinstance(exc, StoreBusy):  # a lock refuses before anything commits
                self._in_doubt.update((fa.job_id, fa.run) for _, fa in batch)
            self._turn_failed(exc, len(batch))
            if not isinstance(exc, StoreBusy):
                # Its claim may have committed (the answer was lost, or a later step failed) with
                # nothing started: the stray release puts such rows back, so run it now.
                self.on_claim_in_doubt()
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
            log.info("job %s started (attempt %d): %s", job.id, job.run, _short(job.command),
                     extra={"job": job.id, "attempt": job.run, "queue": job.queue})
            if self.metrics.enabled and job.started_at is not None:
                self.metrics.attempt_started(job.queue, job.started_at - (job.next_run_at or job.created_at))
            if self._kill_new is not None:  # `worker stop --now` came while this one was being spawned
                attempt.kill(self._kill_new)
            attempt.watch(self._attempt_done, self._attempt_spawned)
        if batch or started:
            self._signal_changed()
        if self._store_failing:
            return True, False, None  # look again soon: the claims that waited are due
        return False, free > 0 and len(started) == free, next_due

    def _recorded(self, batch: list[tuple[AnyAttempt, FinishedAttempt]],
                  results: list[tuple[FinishedAttempt, Job | None]]) -> None:
        """The ended attempts in `batch` are written: free their slots, log how each ended."""
        for attempt, _ in batch:
            attempt.recorded()
            if self.running.get(attempt.job.id) is attempt:
                del self.running[attempt.job.id]
        by_id = {a.job.id: a for a, _ in batch}
        for fa, job in results:
            ended = by_id.get(fa.job_id)
            reason = ended.kill_reason if ended is not None else None
            log_result(fa, job, canceled=reason is KillReason.CANCELED, paused=reason is KillReason.PAUSED)
            if self.metrics.enabled and ended is not None:
                ran = ended.job  # as claimed: its queue and when it started
                self.metrics.attempt_finished(ran.queue, fa.outcome.kind.value,
                                              "lost" if job is None else job.state.value,
                                              None if ran.started_at is None else fa.finished_at - ran.started_at)

    async def _record_separately(self) -> None:
        """After a damaged page failed a turn: write each held result (and pid) alone, so that one
        whose row is damaged does not hold up the others. A result that still hits the damage
        cannot be stored until the file is repaired: it is logged and let go, freeing its slot."""
        self._isolate = False
        batch, spawned = self._finished, self._spawned
        self._finished, self._spawned = [], []
        policy = self.policy()
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
                attempt.recorded()  # as recorded as it will ever be
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
        unexpected = not isinstance(exc, QueuectlError)  # the store's own errors were logged once already
        if unexpected and self._repeats.check(f"turn:{type(exc).__name__}:{exc}", time.monotonic())[0]:
            log.error("scheduler turn failed (will retry): %s", exc, exc_info=exc)
        if held and not self._held_logged:
            self._held_logged = True
            log.warning("store: holding %d result(s) of finished attempts in memory; writing them when the "
                        "store accepts writes again (retrying every %gs at most)", held, STORE_RETRY_MAX_S)

    def _turn_in_store_thread(
        self, batch: list[tuple[AnyAttempt, FinishedAttempt]], spawned: list[SpawnedAttempt], free: int,
        policy: LifecyclePolicy,
    ) -> tuple[list[tuple[FinishedAttempt, Job | None]], list[AnyAttempt], float | None]:
        """The blocking side of a turn, in the writer thread: record, claim, and spawn the claimed
        jobs' shells right after the claim commits (no trip back to the loop in between)."""
        store = self.db.store
        done = {(fa.job_id, fa.run) for _, fa in batch}
        # A pid is worth recording only for attempts still running; read the start time here,
        # off the event loop.
        live = [replace(sp, proc_start=runner.process_start_time(sp.pid))
                for sp in spawned if (sp.job_id, sp.run) not in done]
        # Requeued attempts too: an Outcome(REQUEUED) is recorded like any other. A repeat after
        # a failed turn matches nothing (fenced on the attempt).
        claimed_from = time.monotonic()  # the claims' leases run from about here (their deadlines too)
        results, claimed = store.finish_and_claim(
            [fa for _, fa in batch], policy, live, self.owner, self.settings.host, free, self.clock.now(), self.settings.lease_s
        )
        # Committed: from here on nothing may fail the turn, or the claimed jobs would never start.
        if claimed and self._fault == "after-claim":
            _crash("after-claim")
        envs, env_problem = self._snapshots(claimed)
        started = []
        for job in claimed:
            attempt = self._attempt(job, policy, claimed_from)
            snapshot = None if job.env_id is None else envs.get(job.env_id)
            if job.env_id is not None and snapshot is None:
                attempt.cannot_start(f"its environment (snapshot {job.env_id[:12]}) could not be read: {env_problem}")
            attempt.spawn(self._environment(job, snapshot), self._umask)
            started.append(attempt)
        # After the spawns, not before: with idle slots the next due time is a read transaction
        # that the claimed jobs would otherwise wait for (dispatch latency).
        if self._in_doubt:
            results = self._already_recorded(results)
        try:
            next_due = store.next_due_at() if 0 < free and len(claimed) < free else None
        except QueuectlError:
            next_due = self.clock.now() + STORE_RETRY_MAX_S  # unknown: look again in a while
        return results, started, next_due

    def _already_recorded(self, results: list[tuple[FinishedAttempt, Job | None]]
                          ) -> list[tuple[FinishedAttempt, Job | None]]:
        """Of the results whose earlier write may have committed, those fenced out now: if the
        store holds exactly this result (ours, this run, this outcome), the earlier write did
        commit and only its answer was lost; report the job as stored, not the result as dropped."""
        store, checked = self.db.store, []
        for fa, job in results:
            key = (fa.job_id, fa.run)
            if key in self._in_doubt:
                self._in_doubt.discard(key)
                if job is None:
                    try:
                        if any(r.attempt == fa.run and r.owner == self.owner and r.outcome is fa.outcome.kind
                               and r.finished_at is not None for r in store.attempts_of(fa.job_id)):
                            job = store.get(fa.job_id)
                    except QueuectlError:
                        pass  # cannot tell: it is logged as dropped, as it may be
            checked.append((fa, job))
        return checked

    def _snapshots(self, claimed: list[Job]) -> tuple[dict[str, EnvSnapshot], str]:
        """The environment snapshots of the claimed jobs, from the cache (the common case: every
        job of a batch shares one, found without a store call), the misses with one `envs_of`.
        Never raises (the claim has committed): a snapshot it cannot read is left out, with why."""
        if not claimed:
            return {}, ""
        first = claimed[0].env_id
        if all(job.env_id == first for job in claimed):  # one dict lookup for the whole turn
            if first is None:
                return {}, ""
            cached = self.envs.get(first)
            if cached is not None:
                return {first: cached}, ""
        wanted = {job.env_id for job in claimed if job.env_id is not None}
        try:
            return self.envs.resolve(self.db.store, wanted), "not in the store"
        except Exception as exc:  # a store failure: those attempts fail to start, and retry
            message = exc.message if isinstance(exc, QueuectlError) else f"{type(exc).__name__}: {exc}"
            log.warning("could not read %d environment snapshot(s): %s", len(wanted), message)
            return {}, message

    def _environment(self, job: Job, snapshot: EnvSnapshot | None) -> runner.AttemptEnvironment:
        """The attempt's environment: the shared part built once per snapshot (a batch's jobs all
        share one) and kept for the next ones, the attempt's own variables on top."""
        ref = runner.BASE_ENVIRONMENT_REF if snapshot is None else snapshot.id
        shared = self._shared_envs.get(ref)
        if shared is None:
            shared = runner.shared_environment(self._env, snapshot)
            if len(self._shared_envs) >= SHARED_ENVIRONMENTS_KEPT:
                del self._shared_envs[next(iter(self._shared_envs))]  # the oldest built
            self._shared_envs[ref] = shared
        return runner.AttemptEnvironment(ref, shared, runner.attempt_variables(job, self.owner))

    def _attempt(self, job: Job, policy: LifecyclePolicy, lease_from: float) -> AnyAttempt:
        """The attempt of a claimed (or adopted) job, its lease set at `lease_from` (monotonic)."""
        cfg = self.config
        log_file = runner.log_path(self._logs_dir, job.id, job.run)
        terms: dict[str, Any] = {
            "timeout_s": job.timeout_s or (float(cfg["job-timeout"]) or None),
            "kill_grace_s": float(cfg["kill-grace"]), "output_max_bytes": int(cfg["output-max-bytes"]),
            "snooze_exit": policy.snooze_exit, "snooze_file": runner.snooze_path(self._logs_dir, job.id, job.run),
            "cwd": job.cwd or self._default_cwd,
        }
        if self.keeper is not None:
            return KeeperAttempt(self.keeper, job, self.owner, log_file, lease_from=lease_from, **terms)
        return Attempt(job, self.owner, log_file, tracker=self.tracker, **terms)

    def _attempt_spawned(self, attempt: AnyAttempt) -> None:
        assert attempt.pid is not None
        self._spawned.append(SpawnedAttempt(attempt.job.id, attempt.job.run, self.owner, attempt.pid, None))

    def _attempt_done(self, attempt: AnyAttempt, outcome: Outcome) -> None:
        if self._fault == "after-exit":
            _crash("after-exit")
        job = attempt.job
        self._finished.append(
            (attempt, FinishedAttempt(job.id, job.run, self.owner, outcome, self.clock.now(), attempt.tail_text()))
        )
        self.notify()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def log_result(fa: FinishedAttempt, job: Job | None, *, canceled: bool = False, paused: bool = False) -> None:
    """Log how a recorded attempt left its job (None: the write was fenced off). The record
    carries job, attempt, queue, outcome, exit_code and state for `--log-format json`."""
    extra = {"job": fa.job_id, "attempt": fa.run, "outcome": fa.outcome.kind.value, "exit_code": fa.outcome.exit_code,
             **({"queue": job.queue, "state": job.state.value} if job is not None else {})}
    if job is None and canceled:
        log.info("job %s canceled; its attempt %d was stopped", fa.job_id, fa.run, extra=extra)
    elif job is None and paused:
        log.info("job %s: its queue was paused with --kill; attempt %d was stopped (not counted)", fa.job_id, fa.run, extra=extra)
    elif job is None:
        log.warning("job %s attempt %d ended (%s) but its lease was lost; result dropped",
                    fa.job_id, fa.run, fa.outcome.describe(), extra=extra)
    elif job.state is JobState.COMPLETED:
        log.info("job %s completed", job.id, extra=extra)
    elif job.state is JobState.PENDING and fa.outcome.kind is OutcomeKind.SNOOZED:
        delay = (job.next_run_at or fa.finished_at) - fa.finished_at
        log.info("job %s snoozed (attempt %d not counted); runs again in %.1fs", job.id, fa.run, delay, extra=extra)
    elif job.state is JobState.PENDING:
        log.info("job %s returned to pending (attempt %d not counted): %s", job.id, fa.run, fa.outcome.describe(), extra=extra)
    elif job.state is JobState.FAILED:
        delay = (job.next_run_at or fa.finished_at) - fa.finished_at
        log.info("job %s failed (%s); retry %d/%d in %.1fs", job.id, fa.outcome.describe(),
                 job.attempts, job.max_retries, delay, extra=extra)
    elif job.state is JobState.DEAD:
        log.warning("job %s moved to the dead-letter queue after %d attempts: %s", job.id, job.attempts,
                    fa.outcome.describe(), extra=extra)


def _short(command: str, limit: int = 80) -> str:
    command = command.replace("\n", " ")
    return command if len(command) <= limit else command[: limit - 1] + "…"


def _crash(point: str) -> None:
    log.critical("fault point %s: killing the daemon", point)
    os.kill(os.getpid(), signal.SIGKILL)
