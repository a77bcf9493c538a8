"""The real Scheduler on a real SQLite store, in one event loop, with a short lease: jobs complete,
fail, retry, die, are requeued by `worker stop --now` and recovered from a dead owner; and the
maintenance services run on their own intervals by an injected clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from queuectl.errors import StoreBusy
from queuectld.jobs import JobState, OutcomeKind
from queuectld.maintenance import Service
from queuectld.runner import KillReason, Phase
from queuectld.store.base import DaemonInfo
from tests.integration.sched_fixtures import LEASE_S, Rig, scheduler_rig, until

FAST_RETRY = {"backoff-base": 1, "backoff-max": 0.01, "backoff-jitter": 0}


async def running(rig: Rig, job_id: str) -> None:
    """Until the job's shell runs here."""
    await until(lambda: (a := rig.sched.running.get(job_id)) is not None and a.phase is Phase.RUNNING,
                f"job {job_id} to run")


def test_a_job_completes(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            job_id = await rig.enqueue("echo hello")
            job = await rig.until_state(job_id, JobState.COMPLETED)
            assert (job.attempts, job.last_outcome, job.exit_code) == (0, OutcomeKind.EXIT, 0)
            assert job.output_tail == "hello\n"
            [record] = await rig.attempts(job_id)
            assert (record.outcome, record.exit_code, record.owner) == (OutcomeKind.EXIT, 0, rig.owner)
            # The end commits in the writer thread before the loop frees the slot: wait for that.
            await until(lambda: rig.sched.running == {}, "its slot to be free", timeout_s=5)

    asyncio.run(main())


def test_a_failing_job_retries_then_dies(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY) as rig:
            job_id = await rig.enqueue("exit 3", max_retries=2)
            job = await rig.until_state(job_id, JobState.DEAD)
            assert (job.attempts, job.run, job.last_outcome, job.exit_code) == (3, 3, OutcomeKind.EXIT, 3)
            records = await rig.attempts(job_id)
            assert [(r.attempt, r.outcome, r.exit_code) for r in records] == [
                (1, OutcomeKind.EXIT, 3), (2, OutcomeKind.EXIT, 3), (3, OutcomeKind.EXIT, 3)]

    asyncio.run(main())


def test_a_retry_rule_from_the_config_sends_an_excluded_exit_straight_to_the_dlq(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY, **{"no-retry-on-exit": "2"}) as rig:
            job_id = await rig.enqueue("exit 2", max_retries=5)
            job = await rig.until_state(job_id, JobState.DEAD)
            assert job.attempts == 1 and "no-retry-on-exit" in (job.last_error or "")

    asyncio.run(main())


def test_stop_now_requeues_uncounted_and_the_job_runs_again(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            marker = tmp_path / "ran-once"
            job_id = await rig.enqueue(f"test -e {marker} && exit 0; touch {marker}; sleep 30")
            await running(rig, job_id)
            await until(marker.exists, "the first run to begin its work")
            rig.sched.stop_workers(now=True)
            job = await rig.until_state(job_id, JobState.PENDING)
            assert (job.attempts, job.last_outcome) == (0, OutcomeKind.REQUEUED)
            rig.sched.start_workers(1)
            job = await rig.until_state(job_id, JobState.COMPLETED)
            assert job.attempts == 0, "the requeued attempt did not count"
            records = await rig.attempts(job_id)
            assert [r.outcome for r in records] == [OutcomeKind.REQUEUED, OutcomeKind.EXIT]

    asyncio.run(main())


def test_race_a_stop_now_between_the_end_and_its_record_leaves_the_job_completed(tmp_path: Path) -> None:
    """Regression (issue 9): `worker stop --now` while an ended attempt's result waits to be
    recorded (here: the store refuses the turn that would record it) records the real outcome;
    the completed job is not requeued and never runs again."""
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            # Hold results: turns that would record one fail as on a locked store, until the test
            # lets them; the claim (a turn with nothing to record) goes through.
            real_turn = rig.store.finish_and_claim
            refusing = True

            def finish_and_claim(finished, *args, **kwargs):  # type: ignore[no-untyped-def]
                if refusing and finished:
                    raise StoreBusy()
                return real_turn(finished, *args, **kwargs)

            rig.store.finish_and_claim = finish_and_claim  # type: ignore[method-assign]
            job_id = await rig.enqueue("exit 0")
            await until(lambda: (a := rig.sched.running.get(job_id)) is not None and a.ended,
                        "the attempt to end, its result held")
            rig.sched.stop_workers(now=True)  # the attempt is still in `running`: ended, not recorded
            refusing = False
            job = await rig.until_state(job_id, JobState.COMPLETED, JobState.PENDING)
            assert job.state is JobState.COMPLETED, f"a completed job was requeued: {job}"
            assert [r.outcome for r in await rig.attempts(job_id)] == [OutcomeKind.EXIT]

    asyncio.run(main())


def test_recovery_ends_a_dead_owners_attempts_as_worker_lost(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY) as rig:
            rig.sched.stop_workers(now=False)  # this daemon claims nothing: the dead one had it
            job_id = await rig.enqueue("true")
            now = time.time()
            dead = "elsewhere:4242:dead"
            await rig.db.write(rig.store.register_daemon, DaemonInfo(dead, "elsewhere", 4242, None, now - 60,
                                                                     now - 10 * LEASE_S, 1, 1))
            [claimed] = await rig.db.write(rig.store.claim_due, dead, "elsewhere", 1, now, LEASE_S)
            assert claimed.id == job_id
            recovered = await rig.services.recovery.recover(now)  # type: ignore[union-attr]
            assert recovered == 1
            job = await rig.job(job_id)
            assert (job.state, job.attempts, job.last_outcome) == (JobState.FAILED, 1, OutcomeKind.WORKER_LOST)
            [record] = await rig.attempts(job_id)
            assert record.outcome is OutcomeKind.WORKER_LOST and dead in (record.error or "")
            assert dead not in {d.id for d in await rig.db.read(rig.store.daemons)}, "the dead daemon is forgotten"

    asyncio.run(main())


def test_maintenance_services_run_on_their_own_intervals_by_the_injected_clock(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            services = rig.services
            assert services is not None
            job_id = await rig.enqueue("sleep 30")
            await running(rig, job_id)

            async def heartbeat() -> float:
                return next(d.heartbeat_at for d in await rig.db.read(rig.store.daemons) if d.id == rig.owner)

            await rig.maintain()  # everything is due at first
            t0 = rig.clock.now()
            assert await heartbeat() == t0
            assert (await rig.job(job_id)).lease_expires_at == t0 + LEASE_S

            interval = services.leases.interval_s
            assert interval == LEASE_S / 3
            rig.clock.advance(interval / 2)
            await rig.maintain()
            assert await heartbeat() == t0, "not due yet: no renewal"

            await rig.db.write(rig.store.config_set, "kill-grace", 0.5)  # as a peer's `config set`
            rig.clock.advance(interval / 2)
            next_due = await rig.maintain()
            t1 = rig.clock.now()
            assert await heartbeat() == t1
            assert (await rig.job(job_id)).lease_expires_at == t1 + LEASE_S
            assert rig.config["kill-grace"] == 0.5, "the config was refreshed"
            now = rig.clock.monotonic()
            assert services.maintenance.due_at(services.leases) == now + interval
            # SQLite's checkpoint runs more often than the lease third (CHECKPOINT_EVERY_S): the next due
            checkpoint_s = services.checkpoint.interval_s
            assert checkpoint_s == min(interval, rig.store.checkpoint_every_s or interval)
            assert services.maintenance.due_at(services.checkpoint) == now + checkpoint_s
            assert next_due == now + min(interval, checkpoint_s)

    asyncio.run(main())


def test_a_failing_service_is_retried_on_its_own_while_the_others_keep_their_interval(tmp_path: Path) -> None:
    class Flaky(Service):
        name = "flaky"

        def __init__(self) -> None:
            super().__init__(60.0)
            self.calls = 0

        async def run(self, now: float) -> float | None:
            self.calls += 1
            raise RuntimeError("disk on fire")

    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            services = rig.services
            assert services is not None
            flaky = Flaky()
            services.maintenance.services.append(flaky)
            services.maintenance._due[id(flaky)] = 0.0
            await rig.maintain()
            assert flaky.calls == 1
            assert services.maintenance.due_at(flaky) == rig.clock.monotonic() + flaky.retry_s
            rig.clock.advance(flaky.retry_s)
            await rig.maintain()
            assert flaky.calls == 2, "retried after retry_s, not after its 60 s interval"
            assert services.maintenance.due_at(services.leases) > rig.clock.monotonic(), "renewal kept its interval"

    asyncio.run(main())


def test_a_lost_lease_kills_the_attempt_as_killed(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            job_id = await rig.enqueue("sleep 30")
            await running(rig, job_id)
            attempt = rig.sched.running[job_id]
            await rig.db.write(rig.store.cancel, job_id, time.time())  # a peer canceled it: no kill here
            await rig.maintain()
            assert attempt.kill_reason is KillReason.LEASE_LOST
            await until(lambda: job_id not in rig.sched.running, "the killed attempt's slot to free")
            assert (await rig.job(job_id)).state is JobState.CANCELED

    asyncio.run(main())


def test_a_snoozing_job_runs_again_uncounted_after_the_delay_it_asked(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **{"snooze-exit": 75}) as rig:
            marker = tmp_path / "snoozed-once"
            job_id = await rig.enqueue(
                f'test -e {marker} && exit 0; touch {marker}; echo 50ms > "$QUEUECTL_SNOOZE_FILE"; exit 75')
            job = await rig.until_state(job_id, JobState.COMPLETED)
            assert job.attempts == 0
            assert [r.outcome for r in await rig.attempts(job_id)] == [OutcomeKind.SNOOZED, OutcomeKind.EXIT]

    asyncio.run(main())


def test_a_drain_returns_once_its_last_attempt_is_recorded_not_at_the_next_idle_recheck(tmp_path: Path) -> None:
    # Regression: the turn that recorded a drain's last attempt was followed by a sleep until the
    # idle re-check (lease/3: 10 s by default) before run() saw that nothing was left.
    async def main() -> None:
        async with scheduler_rig(tmp_path) as rig:
            rig.sched.idle_recheck_s = 3600.0  # a sleep to the re-check would outlast the test
            job_id = await rig.enqueue("sleep 0.3")
            await running(rig, job_id)
            assert rig._task is not None
            rig.sched.request_stop()  # drain: the attempt finishes, then run() returns
            await asyncio.wait_for(asyncio.shield(rig._task), 20)
            assert (await rig.job(job_id)).state is JobState.COMPLETED

    asyncio.run(main())
