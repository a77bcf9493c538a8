"""Store contract: cron schedules (revision 0006), on every backend. Add, look, pause, remove; a fire
enqueues its jobs and advances the schedule in one transaction; each (schedule, slot) gets one
job, ever, also when two writers fire the same slot at once, and also when the schedule's own
check is bypassed (the unique key holds by itself)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace

import pytest
from sqlalchemy import text

from queuectl.errors import CronExists, CronNotFound, JobNotFound, QueueNotFound
from queuectld.jobs import JobState
from queuectld.store.base import EnvSnapshot, Schedule, Store
from queuectld.store.open import open_store
from tests.store.helpers import T0, assert_counts_exact, claim, new_job

SLOT = T0 + 60


def schedule(name: str = "tick", *, next_fire: float = SLOT, overlap: str = "skip") -> Schedule:
    return Schedule(name, "* * * * *", "UTC", '{"command":"true"}', overlap=overlap, created_at=T0,
                    next_fire=next_fire)


def fire(store: Store, name: str, slot: float, job_id: str, *, expected: float | None = None) -> object:
    return store.cron_fire(name, slot if expected is None else expected, [(slot, new_job(job_id, at=slot))],
                           slot + 60, slot)


def jobs_per_slot(store: Store, name: str) -> Counter[float | None]:
    return Counter(j.slot for j in store.list_jobs(None, None) if j.schedule == name)


def test_add_get_list_pause_resume_rm(store: Store) -> None:
    added = store.cron_add(schedule("b"), "default")
    assert (added.name, added.next_fire, added.paused, added.last_job_id, added.fires) == ("b", SLOT, False, None, 0)
    store.cron_add(schedule("a", next_fire=SLOT + 5), "default")
    assert [s.name for s in store.cron_list()] == ["a", "b"]
    assert store.cron_get("a").next_fire == SLOT + 5
    with pytest.raises(CronExists):
        store.cron_add(schedule("a"), "default")
    with pytest.raises(QueueNotFound):
        store.cron_add(schedule("c"), "nope")
    assert store.cron_next_fire() == SLOT
    paused = store.cron_pause("b", True, None)
    assert paused.paused and store.cron_next_fire() == SLOT + 5
    assert [s.name for s in store.cron_due(SLOT + 100)] == ["a"]  # a paused schedule is never due
    resumed = store.cron_pause("b", False, SLOT + 600)
    assert not resumed.paused and resumed.next_fire == SLOT + 600
    store.cron_rm("a")
    with pytest.raises(CronNotFound):
        store.cron_get("a")
    with pytest.raises(CronNotFound):
        store.cron_rm("a")
    with pytest.raises(CronNotFound):
        store.cron_pause("a", True, None)
    assert store.cron_next_fire() == SLOT + 600


def test_due_is_earliest_first_and_only_at_or_before_now(store: Store) -> None:
    store.cron_add(schedule("late", next_fire=SLOT + 10), "default")
    store.cron_add(schedule("early", next_fire=SLOT), "default")
    assert store.cron_due(SLOT - 1) == []
    assert [s.name for s in store.cron_due(SLOT)] == ["early"]
    assert [s.name for s in store.cron_due(SLOT + 10)] == ["early", "late"]


def test_a_fire_enqueues_its_job_and_advances_the_schedule_together(store: Store) -> None:
    store.cron_add(schedule(), "default")
    env = EnvSnapshot.make({"A": "1"}, False)
    job = new_job("f1", at=SLOT)._replace(env_id=env.id)
    fired = store.cron_fire("tick", SLOT, [(SLOT, job)], SLOT + 60, SLOT + 0.2, [env])
    assert fired is not None and fired.jobs == [(SLOT, "f1")] and fired.skipped is None
    got = store.get("f1")
    assert (got.state, got.schedule, got.slot) == (JobState.PENDING, "tick", SLOT)
    assert store.envs_of([env.id])[env.id].vars == {"A": "1"}
    s = store.cron_get("tick")
    assert (s.next_fire, s.last_slot, s.last_job_id, s.last_job_state, s.last_fire_at, s.fires) == (
        SLOT + 60, SLOT, "f1", JobState.PENDING, SLOT + 0.2, 1)
    # A second try at the same slot (a stale read) changes nothing.
    assert fire(store, "tick", SLOT, "f1-again") is None
    assert jobs_per_slot(store, "tick") == {SLOT: 1}
    assert_counts_exact(store)
    [claimed] = claim(store, now=SLOT + 1, limit=10)
    assert claimed.id == "f1" and claimed.schedule == "tick"  # the claim's own columns carry it


def test_the_unique_key_holds_when_the_schedules_check_is_bypassed(store: Store, store_url: str) -> None:
    store.cron_add(schedule(overlap="allow"), "default")
    assert fire(store, "tick", SLOT, "f1") is not None
    # As if a writer had read the schedule before the first fire moved it on: put it back.
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE schedules SET next_fire = :s WHERE name = 'tick'"), {"s": SLOT})
    again = fire(store, "tick", SLOT, "f2")  # refused by ux_jobs_schedule_slot: no second job
    assert again is not None and again.jobs == [] and "already fired" in (again.skip_reason or "")
    assert jobs_per_slot(store, "tick") == {SLOT: 1}
    with pytest.raises(JobNotFound):
        store.get("f2")
    # It moved on (else the ticker would find the slot due again at once, for ever).
    s = store.cron_get("tick")
    assert (s.next_fire, s.last_job_id, s.fires, s.last_skip_slot) == (SLOT + 60, "f1", 1, SLOT)
    assert_counts_exact(store)


def test_overlap_skip_records_the_skip_and_moves_on(store: Store) -> None:
    store.cron_add(schedule(), "default")
    fire(store, "tick", SLOT, "f1")
    skipped = fire(store, "tick", SLOT + 60, "f2")  # f1 is still pending
    assert skipped is not None and skipped.jobs == [] and skipped.skipped == SLOT + 60
    assert "f1" in (skipped.skip_reason or "") and "pending" in (skipped.skip_reason or "")
    s = store.cron_get("tick")
    assert (s.next_fire, s.last_skip_slot, s.skips, s.last_job_id) == (SLOT + 120, SLOT + 60, 1, "f1")
    # Once f1 ended, the next slot fires.
    store.cancel("f1", SLOT + 100)
    assert fire(store, "tick", SLOT + 120, "f3") is not None
    assert jobs_per_slot(store, "tick") == {SLOT: 1, SLOT + 120: 1}


def test_overlap_allow_fires_anyway(store: Store) -> None:
    store.cron_add(schedule(overlap="allow"), "default")
    fire(store, "tick", SLOT, "f1")
    assert fire(store, "tick", SLOT + 60, "f2").jobs == [(SLOT + 60, "f2")]  # type: ignore[attr-defined]


def test_a_paused_or_removed_schedule_fires_nothing(store: Store) -> None:
    store.cron_add(schedule(), "default")
    store.cron_pause("tick", True, None)
    assert fire(store, "tick", SLOT, "f1") is None
    store.cron_rm("tick")
    assert fire(store, "tick", SLOT, "f1") is None
    assert jobs_per_slot(store, "tick") == {}


def test_catch_up_fires_several_slots_in_one_transaction(store: Store) -> None:
    store.cron_add(schedule(overlap="skip"), "default")
    new = [(SLOT + 60 * i, new_job(f"c{i}", at=SLOT + 300)) for i in range(3)]
    fired = store.cron_fire("tick", SLOT, new, SLOT + 360, SLOT + 300, skipped=SLOT - 60, skip_reason="missed")
    assert fired is not None and [j for _, j in fired.jobs] == ["c0", "c1", "c2"]
    s = store.cron_get("tick")
    assert (s.last_slot, s.last_job_id, s.fires, s.last_skip_slot, s.last_skip_reason) == (
        SLOT + 120, "c2", 3, SLOT - 60, "missed")


def test_a_run_by_hand_has_no_slot_and_moves_no_fire(store: Store) -> None:
    store.cron_add(schedule(), "default")
    assert store.cron_run("tick", new_job("hand", at=T0), T0) == "hand"
    assert store.cron_run("tick", new_job("hand2", at=T0), T0) == "hand2"  # NULL slots never collide
    assert (store.get("hand").schedule, store.get("hand").slot) == ("tick", None)
    s = store.cron_get("tick")
    assert (s.next_fire, s.last_slot, s.last_job_id, s.fires) == (SLOT, None, "hand2", 2)
    with pytest.raises(CronNotFound):
        store.cron_run("nope", new_job("x", at=T0), T0)


ROUNDS = 20


def test_two_writers_firing_the_same_slots_at_once_fire_each_once(store: Store, store_url: str) -> None:
    # Two stores (their own engines and connections, as two daemons have), released together by
    # a barrier at every slot; each fires what it read as due.
    other = open_store(store_url)
    try:
        store.cron_add(replace(schedule(overlap="allow"), next_fire=SLOT), "default")
        barrier = threading.Barrier(2)
        won: list[list[str]] = [[], []]
        errors: list[BaseException] = []

        def writer(i: int, s: Store) -> None:
            try:
                for r in range(ROUNDS):
                    slot = SLOT + 60 * r
                    barrier.wait(timeout=30)
                    fired = fire(s, "tick", slot, f"w{i}-{r}")
                    if fired is not None:
                        won[i].append(f"w{i}-{r}")
                    barrier.wait(timeout=30)  # both are done with this slot before the next
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=writer, args=(i, s)) for i, s in enumerate((store, other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert len(won[0]) + len(won[1]) == ROUNDS  # every slot fired, by one of them
        assert jobs_per_slot(store, "tick") == {SLOT + 60 * r: 1 for r in range(ROUNDS)}
        assert store.cron_get("tick").fires == ROUNDS
        assert_counts_exact(store)
    finally:
        other.close()
