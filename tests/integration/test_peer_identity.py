"""Which peers are dead, and whose processes may be killed: by boot id and PID namespace, never by
hostname. The real recovery service on a real SQLite store (sched_fixtures), with peers registered
as other daemons would register themselves."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from queuectld import instance
from queuectld.jobs import JobState, OutcomeKind
from queuectld.proctree import process_start_time
from queuectld.store.base import DaemonInfo, SpawnedAttempt
from tests.integration.sched_fixtures import LEASE_S, Rig, scheduler_rig

FAST_RETRY = {"backoff-base": 1, "backoff-max": 0.01, "backoff-jitter": 0}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def peer_running_a_job(rig: Rig, daemon_id: str, place: instance.Place, *, pid: int, silent_s: float,
                             job_pid: int | None = None) -> str:
    """Register a peer daemon with this rig's hostname at `place`, last heard `silent_s` ago, running
    one job (whose shell is `job_pid`) under a live lease; returns the job's id."""
    now = rig.clock.now()
    await rig.db.write(rig.store.register_daemon, DaemonInfo(
        daemon_id, rig.settings.host, pid, 12345, now - 1000, now - silent_s, 1, 1,
        boot_id=place.boot_id, pid_ns=place.pid_ns))
    job_id = await rig.enqueue("sleep 1000")
    claimed_at = max(now, time.time())  # the rig enqueues on the real clock, a moment after its fake one started
    [job] = await rig.db.write(rig.store.claim_due, daemon_id, rig.settings.host, 1, claimed_at, LEASE_S)
    assert job.id == job_id
    if job_pid is not None:
        spawned = SpawnedAttempt(job_id, job.run, daemon_id, job_pid, process_start_time(job_pid))
        await rig.db.write(rig.store.finish, [], rig.sched.policy(), [spawned])
    return job_id


def test_a_peer_with_our_hostname_in_another_pid_namespace_is_not_judged_by_its_pid(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY) as rig:
            rig.sched.stop_workers(now=False)  # this daemon claims nothing: the peer has it
            ours = instance.here()
            assert ours.boot_id and ours.pid_ns, "this test needs /proc"
            elsewhere = instance.Place(ours.boot_id, "4026531999")  # one kernel, another container
            job_id = await peer_running_a_job(rig, "d-0ther0ns0001", elsewhere, pid=dead_pid(), silent_s=1)
            assert await rig.services.recovery.recover(rig.clock.now()) == 0  # type: ignore[union-attr]
            job = await rig.job(job_id)
            assert (job.state, job.owner) == (JobState.PROCESSING, "d-0ther0ns0001"), "its attempt was left alone"
            assert "d-0ther0ns0001" in {d.id for d in await rig.db.read(rig.store.daemons)}

    asyncio.run(main())


def test_a_peer_in_our_namespace_whose_process_is_gone_is_dead_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY) as rig:
            rig.sched.stop_workers(now=False)
            pid = dead_pid()
            job_id = await peer_running_a_job(rig, "d-here0000001", instance.here(), pid=pid, silent_s=1)
            assert await rig.services.recovery.recover(rig.clock.now()) == 1  # type: ignore[union-attr]
            job = await rig.job(job_id)
            assert (job.state, job.last_outcome) == (JobState.FAILED, OutcomeKind.WORKER_LOST)
            [record] = await rig.attempts(job_id)
            assert record.error == (f"worker lost: daemon d-here0000001 on host {rig.settings.host}: "
                                    f"its process {pid} on this host is gone")
            assert "d-here0000001" not in {d.id for d in await rig.db.read(rig.store.daemons)}

    asyncio.run(main())


def test_a_silent_peer_elsewhere_is_dead_by_its_heartbeat_and_no_process_here_is_killed(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY) as rig:
            rig.sched.stop_workers(now=False)
            ours = instance.here()
            elsewhere = instance.Place(ours.boot_id, "4026531999")
            # Its job's recorded pid names a live process of ours (its own process group, as a
            # job's shell would be): in another namespace that number is not its process.
            bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
            try:
                job_id = await peer_running_a_job(rig, "d-s1lent00001", elsewhere, pid=bystander.pid,
                                                  silent_s=95, job_pid=bystander.pid)
                assert await rig.services.recovery.recover(rig.clock.now()) == 1  # type: ignore[union-attr]
                [record] = await rig.attempts(job_id)
                assert record.error == (f"worker lost: daemon d-s1lent00001 on host {rig.settings.host} stopped "
                                        "heartbeating 95 s ago (store clock)")
                await asyncio.sleep(0.3)
                assert bystander.poll() is None, "a process with the peer's pid number was killed"
            finally:
                bystander.kill()
                bystander.wait()

    asyncio.run(main())


def test_a_lost_lease_says_so(tmp_path: Path) -> None:
    async def main() -> None:
        async with scheduler_rig(tmp_path, **FAST_RETRY) as rig:
            rig.sched.stop_workers(now=False)
            elsewhere = instance.Place("another-boot", "1")
            job_id = await peer_running_a_job(rig, "d-fr0zen00001", elsewhere, pid=1, silent_s=0)
            rig.clock.advance(LEASE_S + 2)  # its lease ran out; its heartbeat is not yet 3 leases old
            assert await rig.services.recovery.recover(rig.clock.now()) == 1  # type: ignore[union-attr]
            [record] = await rig.attempts(job_id)
            assert record.error == ("worker lost: the lease of daemon d-fr0zen00001 expired 2 s ago (store clock) "
                                    "without being renewed")

    asyncio.run(main())


def test_place_holds_only_both_known_and_equal(tmp_path: Path) -> None:
    here = instance.Place("boot-a", "1")
    assert here.holds("boot-a", "1")
    assert not here.holds("boot-a", "2") and not here.holds("boot-b", "1") and not here.holds(None, None)
    assert not instance.Place(None, None).holds(None, None), "unknown is never ours"
    boot = tmp_path / "boot_id"
    boot.write_text("1a2b\n")
    assert instance.here(str(boot), str(tmp_path / "missing")) == instance.Place("1a2b", None)
    assert instance.here().pid_ns == str(os.stat("/proc/self/ns/pid").st_ino)
    assert instance.new_daemon_id().startswith("d-") and instance.new_daemon_id() != instance.new_daemon_id()
