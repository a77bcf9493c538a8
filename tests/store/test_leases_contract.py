"""Store contract, answers that never arrive: leases renew only what runs, strays go back, a lost
COMMIT answer is OutcomeUnknown, and a repeated enqueue is harmless.

Runs on every backend (see conftest.py). A lost answer is injected for real: on PostgreSQL by a
proxy that lets the COMMIT through and drops the server's answer (tests/acceptance/pgproxy.py),
on SQLite by the `lose-commit-answer:` fault point (the COMMIT commits, then the driver call
fails). The last test runs the real scheduler against the store to check its use of them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queuectl.errors import DuplicateJob, OutcomeUnknown, QueuectlError
from queuectld.jobs import JobState, OutcomeKind
from queuectld.maintenance import DaemonServices
from queuectld.proctree import ChildReaper
from queuectld.scheduler import Scheduler
from queuectld.settings import Settings
from queuectld.store.base import Store
from queuectld.store.open import open_store
from queuectld.store.sql import STRAY_ERROR
from queuectld.store_threads import StoreThreads
from queuectld.tracking import TreeTracker
from tests.acceptance.pgproxy import PgProxy
from tests.store.helpers import HOST, OWNER, POLICY, T0, add, assert_counts_exact, claim, claim_one, finish, new_job

# -- renewing only what runs ----------------------------------------------------------------------


def test_renew_leases_renews_exactly_the_attempts_given(store: Store) -> None:
    add(store, *(new_job(x, at=T0 + i / 10) for i, x in enumerate(["runs", "stray", "theirs"])))
    runs, stray = claim(store, now=T0 + 1, limit=2, lease_s=10)
    theirs = claim(store, owner="daemon-2", now=T0 + 1, limit=1, lease_s=10)[0]
    # Ours and running; ours but not running; a wrong run of ours; another owner's.
    given = [(runs.id, runs.run), (stray.id, stray.run + 1), (theirs.id, theirs.run)]
    assert store.renew_leases(OWNER, given, T0 + 8, 30, active=1, slots=2) == {"runs"}
    assert store.get("runs").lease_expires_at == T0 + 38
    assert store.get("stray").lease_expires_at == T0 + 11  # not renewed: it expires
    assert store.get("theirs").lease_expires_at == T0 + 11
    assert store.renew_leases(OWNER, [], T0 + 9, 30, active=0, slots=2) == set()
    assert store.get("runs").lease_expires_at == T0 + 38


def test_renew_leases_handles_many_attempts(store: Store) -> None:
    ids = [f"j{i:03d}" for i in range(450)]  # more than one statement's worth of pairs
    add(store, *(new_job(x, at=T0 + i * 1e-3) for i, x in enumerate(ids)))
    claimed = claim(store, now=T0 + 1, limit=450, lease_s=10)
    running = [(j.id, j.run) for j in claimed if j.id != "j007"]
    assert store.renew_leases(OWNER, running, T0 + 5, 30, 450, 450) == set(ids) - {"j007"}


# -- adopting a gone daemon's attempts (its job keeper still runs them) ------------------------------


def test_adopt_attempts_takes_over_exactly_the_attempts_still_processing_at_their_run(store: Store) -> None:
    add(store, *(new_job(x, at=T0 + i / 10) for i, x in enumerate(["kept", "ended", "rerun", "waits"])))
    kept, ended, rerun = claim(store, owner="gone", now=T0 + 1, limit=3, lease_s=10)
    assert finish(store, ended, 0, now=T0 + 2, owner="gone") is not None  # ended meanwhile
    given = [(kept.id, kept.run), (ended.id, ended.run), (rerun.id, rerun.run + 1), ("waits", 1), ("nope", 1)]

    assert store.adopt_attempts(OWNER, given, T0 + 5, 30) == {"kept": "gone"}

    row = store.get("kept")
    assert (row.state, row.owner, row.lease_expires_at, row.run) == (JobState.PROCESSING, OWNER, T0 + 35, kept.run)
    assert store.get("rerun").owner == "gone", "another run of the job is not adopted"
    assert store.get("waits").state is JobState.PENDING
    # The new owner's fenced writes now land; the old owner's are dropped.
    assert finish(store, kept, 0, now=T0 + 6, owner="gone") is None
    assert finish(store, kept, 0, now=T0 + 6, owner=OWNER) is not None
    assert store.get("kept").state is JobState.COMPLETED
    assert store.adopt_attempts(OWNER, [], T0 + 7, 30) == {}
    assert_counts_exact(store)


# -- putting strays back ------------------------------------------------------------------------


def test_release_strays_puts_back_what_the_owner_holds_but_does_not_run(store: Store) -> None:
    add(store, new_job("runs"), new_job("stray", at=T0 + 0.1), new_job("theirs", at=T0 + 0.2),
        new_job("waits", at=T0 + 50))
    runs, stray = claim(store, now=T0 + 1, limit=2)
    theirs = claim(store, owner="daemon-2", now=T0 + 1, limit=1)[0]
    before = {j: store.get(j) for j in ("runs", "theirs", "waits")}

    assert store.release_strays(OWNER, [(runs.id, runs.run)], T0 + 2) == [("stray", 1)]

    back = store.get("stray")
    assert (back.state, back.attempts, back.owner, back.lease_expires_at, back.next_run_at, back.updated_at) == (
        JobState.PENDING, 0, None, None, T0 + 0.1, T0 + 2)  # due when it was: it keeps its place
    [record] = store.attempts_of("stray")
    assert (record.attempt, record.finished_at, record.outcome, record.error) == (
        1, T0 + 2, OutcomeKind.REQUEUED, STRAY_ERROR)
    assert (record.owner, record.host) == (OWNER, HOST)
    assert {j: store.get(j) for j in ("runs", "theirs", "waits")} == before  # nothing else touched
    assert_counts_exact(store)
    # It runs again as the next attempt, and nothing was counted against its retries.
    again = claim_one(store, "stray", now=T0 + 3)
    assert (again.run, again.attempts) == (2, 0)
    assert finish(store, again, 0, now=T0 + 4).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert store.release_strays(OWNER, [(runs.id, runs.run)], T0 + 5) == []
    assert theirs.owner == "daemon-2" and store.get("theirs").state is JobState.PROCESSING


def test_release_strays_keeps_the_failed_attempts_already_counted(store: Store) -> None:
    add(store, new_job("flaky", max_retries=3))
    finish(store, claim_one(store, "flaky", now=T0), 1, now=T0 + 1)  # attempt 1 failed: retry at T0 + 3
    second = claim_one(store, "flaky", now=T0 + 3)
    # A stale (id, run) pair does not protect the row: the fence is on the run too.
    assert store.release_strays(OWNER, [("flaky", second.run - 1)], T0 + 4) == [("flaky", 2)]
    back = store.get("flaky")
    assert (back.state, back.attempts, back.run) == (JobState.PENDING, 1, 2)
    assert [a.outcome for a in store.attempts_of("flaky")] == [OutcomeKind.EXIT, OutcomeKind.REQUEUED]
    assert (back.last_error, back.next_run_at) == ("exit code 1", T0 + 3)  # kept: the requeue was not a failure
    assert_counts_exact(store)


def test_release_strays_leaves_nothing_for_recovery_to_count(store: Store) -> None:
    add(store, "stray")
    claim(store, now=T0)
    store.release_strays(OWNER, [], T0 + 1)
    assert store.lost_attempts(T0 + 1_000, [OWNER]) == []


# -- a repeated enqueue ---------------------------------------------------------------------------


def test_an_identical_repeat_returns_the_existing_job(store: Store) -> None:
    first = store.enqueue([new_job("a", command="echo a", max_retries=2, priority=5, timeout_s=1.5)],
                          replace=False, now=T0)
    assert (first.ids, first.existing) == (["a"], [])
    stored = store.get("a")
    # Same id and fields; other times (a retry is made later): the same job, not an error.
    again = store.enqueue([new_job("a", command="echo a", max_retries=2, priority=5, timeout_s=1.5, at=T0 + 9)],
                          replace=False, now=T0 + 9)
    assert (again.ids, again.existing) == (["a"], ["a"])
    assert store.get("a") == stored
    assert assert_counts_exact(store)["pending"] == 1


@pytest.mark.parametrize("field", ["command", "max_retries", "priority", "timeout_s"])
def test_a_different_job_under_an_existing_id_is_refused(store: Store, field: str) -> None:
    add(store, new_job("a", command="echo a", max_retries=2, priority=5, timeout_s=1.5))
    other = {"command": "echo b", "max_retries": 3, "priority": 6, "timeout_s": None}[field]
    spec = {"command": "echo a", "max_retries": 2, "priority": 5, "timeout_s": 1.5, field: other}
    with pytest.raises(DuplicateJob, match="'a'"):
        add(store, new_job("a", **spec), now=T0 + 1)  # type: ignore[arg-type]
    assert store.get("a").command == "echo a"
    assert_counts_exact(store)


def test_a_batch_skips_its_jobs_identical_to_existing_ones(store: Store) -> None:
    add(store, new_job("b", command="echo b"), new_job("d", command="echo d", at=T0 + 1))
    done = store.enqueue(
        [new_job(x, command=f"echo {x}", at=T0 + 5) for x in ["a", "b", "c", "d", "e"]], replace=False, now=T0 + 5
    )
    assert (done.ids, done.existing) == (["a", "b", "c", "d", "e"], ["b", "d"])
    assert [j.id for j in store.list_jobs(None, None)] == ["b", "d", "a", "c", "e"]
    assert store.get("b").created_at == T0  # the existing one, untouched
    assert_counts_exact(store)
    # All of them already there: nothing added, nothing refused.
    assert store.enqueue([new_job(x, command=f"echo {x}") for x in "abcde"], replace=False, now=T0 + 6).existing == [
        "a", "b", "c", "d", "e"]
    assert assert_counts_exact(store)["pending"] == 5
    # One different job refuses the whole batch, identical ones included.
    with pytest.raises(DuplicateJob, match="'c'"):
        add(store, new_job("f"), new_job("b", command="echo b"), new_job("c", command="other"), now=T0 + 7)
    assert len(store.list_jobs(None, None)) == 5


def test_replace_still_overwrites_an_identical_job(store: Store) -> None:
    add(store, new_job("a"))
    finish(store, claim_one(store, "a"), 0, now=T0 + 1)
    done = store.enqueue([new_job("a", at=T0 + 5)], replace=True, now=T0 + 5)
    assert done.existing == []
    assert store.get("a").state is JobState.PENDING


# -- a COMMIT whose answer is lost ----------------------------------------------------------------

Arm = Callable[[str], Callable[[], bool]]


@pytest.fixture
def lossy(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Callable[[], Store], Arm]]:
    """(open, arm): `arm(needle)` makes the next COMMIT of a transaction that ran SQL containing
    `needle` commit and lose its answer; it returns a check that the loss happened. Arm first."""
    opened: list[Store] = []
    proxy = PgProxy() if store_url.startswith("postgresql") else None
    traps: list[Callable[[], bool]] = []

    def arm(needle: str) -> Callable[[], bool]:
        if proxy is not None:
            trap = proxy.lose_commit_answer(needle)
            traps.append(lambda: trap.fired.wait(5) and trap.committed)
        else:
            monkeypatch.setenv("QUEUECTL_FAULT_POINT", f"lose-commit-answer:{needle}")
            traps.append(lambda: opened[0]._lost_answer.armed is False)  # type: ignore[attr-defined]
        return traps[-1]

    def open_() -> Store:
        opened.append(open_store(proxy.url(store_url) if proxy is not None else store_url))
        return opened[-1]

    try:
        yield open_, arm
    finally:
        for s in opened:
            s.close()
        if proxy is not None:
            proxy.close()


def test_a_lost_commit_answer_on_enqueue_is_outcome_unknown(lossy: tuple[Callable[[], Store], Arm]) -> None:
    open_, arm = lossy
    lost = arm("INSERT INTO jobs")
    store = open_()
    with pytest.raises(OutcomeUnknown) as info:
        add(store, new_job("a", command="echo a"))
    assert lost()
    assert "may or may not" in info.value.message and "Nothing was changed" not in info.value.message
    # It was committed; the same request again is answered with that job.
    assert store.get("a").command == "echo a"
    assert store.enqueue([new_job("a", command="echo a")], replace=False, now=T0 + 1).existing == ["a"]
    assert assert_counts_exact(store)["pending"] == 1


def test_a_lost_commit_answer_on_a_claim_leaves_a_stray_to_put_back(
    lossy: tuple[Callable[[], Store], Arm],
) -> None:
    open_, arm = lossy
    lost = arm("INSERT INTO attempts")  # in a claim's transaction only when it claimed something
    store = open_()
    add(store, "a", new_job("b", at=T0 + 1))
    with pytest.raises(OutcomeUnknown):
        store.finish_and_claim([], POLICY, [], OWNER, HOST, 1, T0 + 2, 30)
    assert lost()
    assert store.get("a").state is JobState.PROCESSING  # committed, though its claimer never heard
    assert store.release_strays(OWNER, [], T0 + 3) == [("a", 1)]
    assert [j.id for j in claim(store, now=T0 + 4)] == ["a", "b"]
    assert_counts_exact(store)


# -- the scheduler's use of them --------------------------------------------------------------------


@pytest.mark.parametrize("first", ["maintenance", "turn"])
def test_maintenance_during_a_claim_does_not_put_the_claimed_attempt_back(
    store: Store, tmp_path: Path, first: str
) -> None:
    # A turn's claim commits in the writer thread before its attempt joins `running` on the loop.
    # Maintenance overlapping a turn (run() never does this; here on purpose, both orders) must
    # not call that row a stray. With maintenance first, its lease renewal is in the writer
    # thread when the turn queues its claim behind it; maintenance then comes back to put strays
    # back while the claim is in flight.
    marker = tmp_path / "ran"
    add(store, new_job("j", command=f"echo $QUEUECTL_ATTEMPT >> {marker}"))

    async def scenario() -> None:
        db = StoreThreads(store)
        settings = Settings(state_dir=tmp_path, socket_path=tmp_path / "q.sock", db_url="unused", workers=1,
                            host=HOST)
        settings.logs_dir.mkdir()
        sched = Scheduler(db, settings, OWNER, store.config_all(), os.umask(0o077), TreeTracker(ChildReaper()))
        services = DaemonServices(sched, db, settings, sched.config)

        async def maintain() -> None:
            await services.leases.run(time.time())
            await services.strays.run(time.time())

        try:
            steps = [maintain(), sched._turn()]
            await asyncio.gather(*(steps if first == "maintenance" else steps[::-1]))
            assert "j" in sched.running
            assert store.get("j").state is JobState.PROCESSING
            deadline = time.monotonic() + 20
            while not sched._finished and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await sched._turn()  # record its end
            # Once it is in `running`, maintenance renews it and leaves it alone.
            await maintain()
        finally:
            db.shutdown()

    asyncio.run(scenario())
    job = store.get("j")
    assert (job.state, job.run) == (JobState.COMPLETED, 1)
    assert marker.read_text().split() == ["1"]
    assert [a.outcome for a in store.attempts_of("j")] == [OutcomeKind.EXIT]


def test_a_full_disk_at_commit_on_sqlite_is_not_an_unknown_outcome(tmp_path: Path) -> None:
    # SQLite's COMMIT appends the transaction's pages to the WAL, the commit record last; a write
    # that runs out of space never completes it, so this error means nothing was stored (checked
    # below), and must not be reported as OutcomeUnknown. The job is bigger than the WAL the
    # migration left (a checkpointed WAL is reused from its start without growing).
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    store = None
    try:
        store = open_store(f"sqlite:///{mount / 'queuectl.db'}")
        add(store, "before")
        store.checkpoint()
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        with pytest.raises(QueuectlError) as info:
            add(store, new_job("big", command="x" * 300_000), now=T0 + 1)
        assert not isinstance(info.value, OutcomeUnknown), info.value
        (mount / "filler").unlink()
        assert [j.id for j in store.list_jobs(None, None)] == ["before"]
        add(store, new_job("big", command="x" * 300_000), now=T0 + 2)  # space is back: it works again
        assert assert_counts_exact(store)["pending"] == 2
    finally:
        if store is not None:
            store.close()
        subprocess.run(["umount", str(mount)], check=True)
