"""Named queues in the store: the claim's priority, fair turn between queues, concurrency limits,
pauses, held and blocked jobs; next_due_at; the per-(queue, state, held) counters; queue
add/set/rm/pause; requeue_running; daemons' `claiming`; revision 0004 on an older database. On
every backend (see conftest.py).

Jobs are enqueued into `default` and moved (queue, held, deps_left) behind the store's back with
a plain UPDATE, as an edit would: the counters follow by the dialect's triggers.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from queuectl.errors import InvalidParams, QueueExists, QueueNotEmpty, QueueNotFound
from queuectld.jobs import JobState, OutcomeKind
from queuectld.store import pg_turn, schema, turn
from queuectld.store import queues as store_queues
from queuectld.store.base import DaemonInfo, Store
from queuectld.store.open import open_store
from tests.store.helpers import (
    HOST,
    LEASE_S,
    OWNER,
    T0,
    add,
    announcements,
    assert_counts_exact,
    claim,
    finish,
    new_job,
)


def move(store: Store, *ids: str, queue: str | None = None, held: bool | None = None,
         deps_left: int | None = None) -> None:
    """Change jobs' queue / held / deps_left directly, as store-jobs' edit, hold and deps do."""
    values: dict[str, Any] = {}
    if queue is not None:
        values["queue"] = queue
    if held is not None:
        values["held"] = int(held)
    if deps_left is not None:
        values["deps_left"] = deps_left
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        for job_id in ids:
            conn.execute(text(f"UPDATE jobs SET {sets} WHERE id = :id"), {**values, "id": job_id})


def counts_by_queue(store: Store) -> dict[str, dict[str, int]]:
    """What queues() says, as {name: {pending, held, running}}."""
    return {q.name: {"pending": q.pending, "held": q.held, "running": q.running} for q in store.queues()}


def real_by_queue(store: Store) -> dict[str, dict[str, int]]:
    """The same, counted from the rows."""
    out = {q.name: {"pending": 0, "held": 0, "running": 0} for q in store.queues()}
    for job in store.list_jobs(None, None):
        if job.queue not in out:
            continue
        if job.state in (JobState.PENDING, JobState.FAILED):
            out[job.queue]["pending"] += 1
            out[job.queue]["held"] += int(job.held)
        elif job.state is JobState.PROCESSING:
            out[job.queue]["running"] += 1
    return out


def assert_queue_counts_exact(store: Store) -> None:
    assert counts_by_queue(store) == real_by_queue(store)
    assert_counts_exact(store)


# -- the claim ----------------------------------------------------------------------------------


def test_a_busy_queue_does_not_starve_another(store: Store) -> None:
    store.queue_add("other", None, T0)
    add(store, *(new_job(f"busy-{i:04}", at=T0 - 100 + i / 1000) for i in range(1000)))
    add(store, *(new_job(f"other-{i}", at=T0) for i in range(3)), now=T0)
    move(store, *(f"other-{i}" for i in range(3)), queue="other")
    got = claim(store, limit=4, now=T0 + 1)
    assert Counter(j.queue for j in got) == {"default": 2, "other": 2}
    # The busy queue's oldest due first, and the other queue's too.
    assert sorted(j.id for j in got) == ["busy-0000", "busy-0001", "other-0", "other-1"]
    got = claim(store, limit=2, now=T0 + 1)
    assert sorted(j.id for j in got) == ["busy-0002", "other-2"]
    assert_queue_counts_exact(store)


def test_priority_comes_before_the_turn(store: Store) -> None:
    store.queue_add("b", None, T0)
    add(store, new_job("a-urgent-1", priority=5), new_job("a-urgent-2", priority=5), new_job("a-low-1", at=T0 - 9),
        new_job("a-low-2", at=T0 - 8), new_job("b-low-1", at=T0 - 1), new_job("b-low-2"))
    move(store, "b-low-1", "b-low-2", queue="b")
    # Both urgent jobs of `default` first, though `b` has had no turn; then at priority 0 the
    # first of each queue (b-low-1 before a-low-2, which is due earlier but second in its queue).
    got = claim(store, limit=4, now=T0)
    assert sorted(j.id for j in got) == ["a-low-1", "a-urgent-1", "a-urgent-2", "b-low-1"]
    assert [j.priority for j in got][:2] == [5, 5]
    assert sorted(j.id for j in claim(store, limit=10, now=T0)) == ["a-low-2", "b-low-2"]


def test_concurrency_limit_holds_across_claims_and_frees_on_end(store: Store) -> None:
    store.queue_add("two", 2, T0)
    add(store, *(new_job(f"t{i}", at=T0 + i / 10) for i in range(5)))
    move(store, *(f"t{i}" for i in range(5)), queue="two")
    first = claim(store, limit=10, now=T0 + 1)
    assert [j.id for j in first] == ["t0", "t1"]
    assert claim(store, limit=10, now=T0 + 1, owner="daemon-2") == []
    assert store.next_due_at() is None  # full: nothing the scheduler could take
    finish(store, first[0], 0, now=T0 + 2)
    assert store.next_due_at() == T0 + 0.2
    assert [j.id for j in claim(store, limit=10, now=T0 + 2, owner="daemon-2")] == ["t2"]
    assert store.queue_get("two").running == 2
    # A raised limit makes room at once; a lowered one starts nothing until under it.
    store.queue_set("two", 3)
    assert [j.id for j in claim(store, limit=10, now=T0 + 3)] == ["t3"]
    store.queue_set("two", 1)
    assert claim(store, limit=10, now=T0 + 3) == []
    assert_queue_counts_exact(store)


def test_a_paused_queue_is_not_claimed_and_resumes(store: Store) -> None:
    store.queue_add("p", None, T0)
    add(store, "d1", "p1")
    move(store, "p1", queue="p")
    [info] = store.queue_pause(["p"], True)
    assert info.paused and info.name == "p"
    assert [j.id for j in claim(store, now=T0)] == ["d1"]
    assert store.next_due_at() is None
    store.queue_pause(None, False)
    assert store.next_due_at() == T0
    assert [j.id for j in claim(store, now=T0)] == ["p1"]
    paused = store.queue_pause(None, True)
    assert [q.name for q in paused] == ["default", "p"] and all(q.paused for q in paused)
    with pytest.raises(QueueNotFound):
        store.queue_pause(["p", "nope"], False)
    assert store.queue_get("p").paused  # nothing changed


def test_held_and_blocked_jobs_are_not_claimed_nor_due(store: Store) -> None:
    add(store, new_job("held", at=T0 - 10), new_job("blocked", at=T0 - 5), new_job("free", at=T0 + 50))
    move(store, "held", held=True)
    move(store, "blocked", deps_left=2)
    assert store.next_due_at() == T0 + 50
    assert claim(store, now=T0) == []
    assert store.queue_get("default").held == 1
    assert store.queue_get("default").pending == 3
    move(store, "held", held=False)
    move(store, "blocked", deps_left=0)
    assert store.next_due_at() == T0 - 10
    assert [j.id for j in claim(store, now=T0)] == ["held", "blocked"]
    assert_queue_counts_exact(store)


def test_next_due_at_is_the_earliest_of_queues_that_may_claim(store: Store) -> None:
    assert store.next_due_at() is None
    store.queue_add("late", None, T0)
    add(store, new_job("d", at=T0 + 30), new_job("l", at=T0 + 10))
    move(store, "l", queue="late")
    assert store.next_due_at() == T0 + 10
    store.queue_pause(["late"], True)
    assert store.next_due_at() == T0 + 30


def test_a_job_in_a_removed_queue_is_never_claimed(store: Store) -> None:
    store.queue_add("gone", None, T0)
    add(store, "x")
    move(store, "x", queue="gone")
    with pytest.raises(QueueNotEmpty):
        store.queue_rm("gone")
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("DELETE FROM queues WHERE name = 'gone'"))
    assert claim(store, now=T0) == [] and store.next_due_at() is None


# -- queue management ---------------------------------------------------------------------------


def test_queue_add_set_get_rm(store: Store) -> None:
    assert [q.name for q in store.queues()] == ["default"]
    info = store.queue_add("gpu", 2, T0)
    assert (info.name, info.concurrency, info.paused, info.pending) == ("gpu", 2, False, 0)
    with pytest.raises(QueueExists):
        store.queue_add("gpu", None, T0)
    with pytest.raises(InvalidParams):
        store.queue_add("zero", 0, T0)
    assert store.queue_set("gpu", None).concurrency is None
    with pytest.raises(QueueNotFound):
        store.queue_set("nope", 1)
    with pytest.raises(QueueNotFound):
        store.queue_get("nope")
    with pytest.raises(InvalidParams):
        store.queue_rm("default")
    add(store, new_job("g1", at=T0 + 5, created_at=T0 - 7), new_job("g2", at=T0, created_at=T0 - 3))
    move(store, "g1", "g2", queue="gpu")
    gpu = store.queue_get("gpu")
    assert (gpu.pending, gpu.running, gpu.oldest_waiting_at) == (2, 0, T0)  # g2 has been due since T0; g1 is due later
    with pytest.raises(QueueNotEmpty) as refused:
        store.queue_rm("gpu")
    assert "2 unfinished" in refused.value.message
    [job] = claim(store, now=T0)
    with pytest.raises(QueueNotEmpty):
        store.queue_rm("gpu")
    finish(store, job, 0, now=T0 + 1)
    move(store, "g1", queue="default")
    store.queue_rm("gpu")  # its completed job keeps the name
    assert [q.name for q in store.queues()] == ["default"]
    assert store.get("g2").queue == "gpu"
    assert_counts_exact(store)
    with pytest.raises(QueueNotFound):
        store.queue_rm("gpu")


def test_require_queues_names_the_missing_one(store: Store) -> None:
    store.queue_add("a", None, T0)
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        store_queues.require_queues(conn, ["default", "a", "a"])
        with pytest.raises(QueueNotFound) as missing:
            store_queues.require_queues(conn, ["a", "b"])
    assert "queuectl queue add b" in missing.value.message


def test_counters_follow_claims_ends_moves_and_deletes(store: Store) -> None:
    store.queue_add("q", None, T0)
    add(store, *(new_job(f"j{i}", max_retries=0) for i in range(6)))
    move(store, "j0", "j1", "j2", queue="q")
    move(store, "j3", held=True)
    assert_queue_counts_exact(store)
    got = claim(store, now=T0)
    assert_queue_counts_exact(store)
    assert store.queue_get("q").running == 3 and store.queue_get("default").running == 2
    finish(store, got[0], 0, now=T0 + 1)
    finish(store, got[1], 1, now=T0 + 1)  # dead: no retries
    assert_queue_counts_exact(store)
    store.delete(got[0].id)
    move(store, "j3", queue="q")
    assert_queue_counts_exact(store)
    store.checkpoint()  # PostgreSQL folds its deltas: the same numbers
    assert_queue_counts_exact(store)
    assert store.queue_get("q").held == 1


def test_queue_counts_are_every_queues_jobs_per_state_as_the_rows_say(store: Store) -> None:
    store.queue_add("q", 2, T0)
    store.queue_add("empty", None, T0)
    add(store, *(new_job(f"j{i}", max_retries=0) for i in range(7)))
    move(store, "j0", "j1", "j2", queue="q")
    move(store, "j6", held=True)
    got = claim(store, now=T0)
    finish(store, got[0], 0, now=T0 + 1)
    finish(store, got[1], 1, now=T0 + 1)  # dead: no retries

    def rows() -> dict[tuple[str, str], int]:
        return dict(Counter((job.queue, job.state.value) for job in store.list_jobs(None, None)))

    for _ in range(2):  # and again once PostgreSQL has folded its deltas
        counts = store.queue_counts()
        assert counts.by_state == rows()
        assert [(q.name, q.pending, q.held, q.running) for q in counts.queues] == [
            (q.name, q.pending, q.held, q.running) for q in store.queues()]
        assert {q.name for q in counts.queues} == {"default", "empty", "q"}
        store.checkpoint()


# -- requeue_running, daemons -------------------------------------------------------------------


def test_requeue_running_ends_a_queues_attempts_as_requeued(store: Store) -> None:
    store.queue_add("k", None, T0)
    add(store, "k1", "k2", "d1")
    move(store, "k1", "k2", queue="k")
    got = {j.id: j for j in claim(store, now=T0)}
    assert sorted(store.requeue_running(["k"], T0 + 5)) == [("k1", 1), ("k2", 1)]
    for job_id in ("k1", "k2"):
        job = store.get(job_id)
        assert job.state is JobState.PENDING and job.attempts == 0 and job.next_run_at == T0
        assert job.last_outcome is OutcomeKind.REQUEUED
        assert store.attempts_of(job_id)[-1].error == turn.PAUSED_ERROR
    assert store.get("d1").state is JobState.PROCESSING
    # The owner finds the lease gone at its next renewal.
    running = [(j.id, j.run) for j in got.values()]
    assert store.renew_leases(OWNER, running, T0 + 6, LEASE_S, 3, 4) == {"d1"}
    assert store.requeue_running(None, T0 + 7) == [("d1", 1)]
    with pytest.raises(QueueNotFound):
        store.requeue_running(["nope"], T0 + 8)
    assert_queue_counts_exact(store)


def test_renew_leases_stores_whether_a_daemon_claims(store: Store) -> None:
    store.register_daemon(DaemonInfo(OWNER, HOST, 1, None, T0, T0, 4, 0))
    assert [d.claiming for d in store.daemons()] == [True]
    store.renew_leases(OWNER, [], T0 + 1, LEASE_S, 0, 4, claiming=False)
    [d] = store.daemons()
    assert d.claiming is False and d.heartbeat_at == T0 + 1
    store.renew_leases(OWNER, [], T0 + 2, LEASE_S, 0, 4)
    assert store.daemons()[0].claiming is True


# -- two daemons against one limit (PostgreSQL) -------------------------------------------------


def test_two_daemons_claiming_at_once_never_exceed_a_limit(store_url: str, store: Store) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store (BEGIN IMMEDIATE serializes its claims anyway)")
    store.queue_add("two", 2, T0)
    n = 40
    add(store, *(new_job(f"c{i:02}", at=T0 + i / 100) for i in range(n)))
    move(store, *(f"c{i:02}" for i in range(n)), queue="two")
    stores = [open_store(store_url) for _ in range(2)]
    watcher = create_engine(store.write_engine.url)  # type: ignore[attr-defined]
    over: list[int] = []
    done: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def daemon(s: Store, owner: str) -> None:
        try:
            barrier.wait(10)
            for step in range(400):
                if len(done) >= n:
                    return
                got = s.claim_due(owner, HOST, 2, T0 + 1, 600.0)
                with watcher.connect() as conn:
                    running = conn.execute(text(
                        "SELECT count(*) FROM jobs WHERE queue = 'two' AND state = 'processing'")).scalar_one()
                if running > 2:
                    over.append(running)
                for job in got:
                    finish(s, job, 0, now=T0 + 2 + step / 1000)
                    done.append(job.id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=daemon, args=(s, f"d{i}")) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for s in stores:
            s.close()
        watcher.dispose()
    assert errors == []
    assert over == []
    assert sorted(done) == [f"c{i:02}" for i in range(n)]  # each once, all of them


def test_claims_racing_with_held_claims_stay_under_the_limit(store_url: str, store: Store) -> None:
    """A claim that holds the limited queue's lock makes a second daemon's claim wait, which then
    sees the first one's jobs: with a limit of 2 and 2 taken, it takes none."""
    if store_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's queue lock")
    store.queue_add("two", 2, T0)
    add(store, *(new_job(f"r{i}") for i in range(6)))
    move(store, *(f"r{i}" for i in range(6)), queue="two")
    other = open_store(store_url)
    try:
        first_in = threading.Event()
        release = threading.Event()
        result: dict[str, Any] = {}

        writes_cls = pg_turn.PgTurnWrites
        original_claim = writes_cls.claim

        def slow_claim(self: Any, *args: Any) -> Any:
            got = original_claim(self, *args)
            if args[0] == "slow":
                first_in.set()
                release.wait(10)
            return got

        writes_cls.claim = slow_claim  # type: ignore[method-assign,assignment]
        try:
            t = threading.Thread(target=lambda: result.setdefault("slow", store.claim_due("slow", HOST, 2, T0, 60)))
            t.start()
            assert first_in.wait(10)
            u = threading.Thread(target=lambda: result.setdefault("fast", other.claim_due("fast", HOST, 2, T0, 60)))
            u.start()
            u.join(0.5)
            assert u.is_alive()  # waiting on the queue's lock
            release.set()
            t.join(10)
            u.join(10)
        finally:
            writes_cls.claim = original_claim  # type: ignore[method-assign]
        assert len(result["slow"]) == 2 and result["fast"] == []
    finally:
        other.close()


# -- the index and the schema -------------------------------------------------------------------


def test_the_sqlite_claim_walks_the_claim_index(store_url: str, store: Store) -> None:
    if not store_url.startswith("sqlite"):
        pytest.skip("SQLite's query plan")
    from queuectld.store import sqlite as sqlite_store

    with store.write_engine.connect() as conn:  # type: ignore[attr-defined]
        driver = conn.connection.driver_connection
        sql = sqlite_store._claim_sql(2)
        params = {"owner": "o", "host": "h", "lease": 1.0, "now": 1.0, "limit": 3, "q0": "a", "n0": 3,
                  "q1": "b", "n1": 3}
        plan = [row[3] for row in driver.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
        due = [p for p in plan if "ix_jobs_due" in p]
        assert len(due) == 2 and all("queue=?" in p for p in due), plan
        assert not any("SCAN jobs" in p and "ix_jobs_due" not in p for p in plan), plan
        next_plan = [row[3] for row in driver.execute("EXPLAIN QUERY PLAN " + str(sqlite_store._NEXT_DUE)).fetchall()]
        assert any("ix_jobs_next" in p for p in next_plan) and any("ix_jobs_running" in p for p in next_plan), \
            next_plan
        room = [row[3] for row in driver.execute("EXPLAIN QUERY PLAN " + sqlite_store._CLAIM_ROOM).fetchall()]
        assert any("ix_jobs_running" in p for p in room), room
        oldest = [row[3] for row in driver.execute(
            "EXPLAIN QUERY PLAN " + str(store_queues._OLDEST_WAITING).replace(":queue", "'a'")).fetchall()]
        assert any("ix_jobs_next" in p for p in oldest), oldest


def test_an_older_database_upgrades_with_its_jobs_and_downgrades(store_url: str) -> None:
    from tests.store.test_migrations import load_baseline, raw

    load_baseline(store_url, "baseline-0002")
    store = open_store(store_url)
    try:
        jobs = store.list_jobs(None, None)
        assert jobs and {j.queue for j in jobs} == {"default"}
        assert_queue_counts_exact(store)
        before = store.counts()
        [default] = store.queues()
        assert default.pending == before["pending"] + before["failed"]
        assert default.running == before["processing"]
    finally:
        store.close()
    with raw(store_url) as conn:
        schema._run(conn, "downgrade", "0003")
    with raw(store_url) as conn:
        if store_url.startswith("sqlite"):
            counted = dict(conn.execute(text("SELECT state, n FROM state_counts")).all())
            names = set(conn.execute(text("SELECT name FROM sqlite_master")).scalars())
        else:
            counted = dict(conn.execute(text("SELECT state, sum(n) FROM state_count_deltas GROUP BY state")).all())
            names = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                          " UNION SELECT indexname FROM pg_indexes"
                                          " WHERE schemaname = current_schema()")).scalars())
            # The triggers still count, into the old table.
            conn.execute(text("DELETE FROM attempts WHERE job_id = 'exit-ok'"))
            conn.execute(text("DELETE FROM jobs WHERE id = 'exit-ok'"))
            before = {**before, "completed": before["completed"] - 1}
            counted = dict(conn.execute(text("SELECT state, sum(n) FROM state_count_deltas GROUP BY state")).all())
        assert {s: int(n) for s, n in counted.items() if n} == {s: n for s, n in before.items() if n}
        assert {"ix_jobs_due", "ix_jobs_next"} <= names
        assert not {"queues", "queue_counts", "queue_count_deltas", "ix_jobs_running", "ix_jobs_waiting"} & names
    again = open_store(store_url)  # and up again
    try:
        assert_queue_counts_exact(again)
        assert again.schema_plan().pending == ()  # type: ignore[attr-defined]
    finally:
        again.close()


def test_an_end_in_a_limited_queue_and_a_resume_are_announced(store: Store, store_url: str) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store: nothing to announce")
    store.queue_add("lim", 1, T0)
    add(store, "free", "limited")
    move(store, "limited", queue="lim")
    got = {j.id: j for j in claim(store, now=T0)}
    with announcements(store_url) as heard:
        finish(store, got["free"], 0, now=T0 + 1)  # completed, in a queue without a limit: nothing
        assert not heard.wait(1.5)
        finish(store, got["limited"], 0, now=T0 + 1)  # completed, but it frees room in `lim`
        assert heard.wait(10)
        heard.clear()
        store.queue_pause(["lim"], True)
        assert not heard.wait(1.5)
        store.queue_pause(["lim"], False)
        assert heard.wait(10)


def test_canceling_a_running_job_of_a_limited_queue_is_announced(store: Store, store_url: str) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store: nothing to announce")
    store.queue_add("lim", 1, T0)
    add(store, "free", "limited", "waiting")
    move(store, "limited", queue="lim")
    got = {j.id: j for j in claim(store, now=T0, limit=2)}
    with announcements(store_url) as heard:
        store.cancel("free", T0 + 1)  # its queue has no limit: nothing freed that a peer skipped
        assert not heard.wait(1.5)
        store.cancel("limited", T0 + 1)  # a peer's next_due_at skipped `lim` while it was full
        assert heard.wait(10)
    assert set(got) == {"free", "limited"}


def test_a_claim_takes_from_hundreds_of_queues(store: Store) -> None:
    names = [f"q{i:03}" for i in range(900)]  # more than SQLite's 500 branches of one compound SELECT
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("INSERT INTO queues (name, concurrency, paused, created_at) VALUES (:n, 1, 0, 0)"),
                     [{"n": n} for n in names])
    add(store, *(new_job(f"job-{n}") for n in names), *(new_job(f"more-{n}") for n in names))
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE jobs SET queue = substr(id, length(id) - 3, 4)"))
    got = claim(store, limit=2000, now=T0)
    assert Counter(j.queue for j in got) == dict.fromkeys(names, 1)  # each its limit of 1
    assert_counts_exact(store)


def test_queues_in_two_schemas_of_one_database_do_not_wake_each_other(store: Store, store_url: str) -> None:
    # NOTIFY channels are per database: each schema's queue announces on a channel of its own.
    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store: nothing to announce")
    from tests.store.conftest import pg_schema

    with pg_schema() as other_url:
        other = open_store(other_url)
        try:
            with announcements(other_url) as heard:
                store.enqueue([new_job("elsewhere")], replace=False, now=T0)
                assert not heard.wait(1.5)
                other.enqueue([new_job("here")], replace=False, now=T0)
                assert heard.wait(10)
        finally:
            other.close()


# -- ended_per_minute ---------------------------------------------------------------------------


def test_ended_per_minute_counts_completed_and_dead_jobs_by_the_minute_they_ended(store: Store) -> None:
    # Ends (seconds after T0) and the minute of a 60-minute window from T0 each falls in. 119 s
    # is minute 1, not 2 (PostgreSQL's CAST would round it up: floor it is).
    ends = {"e-before": (-5, 0), "e0": (10, 0), "e70": (70, 0), "e119": (119, 0), "e-dead": (130, 1),
            "e59": (3590, 0), "e-now": (3600, 0)}
    add(store, *(new_job(job_id, max_retries=0, at=T0 - 100) for job_id in [*ends, "still-running", "e-canceled"]),
        now=T0 - 100)
    got = {j.id: j for j in claim(store, now=T0 - 10)}
    for job_id, (offset, code) in ends.items():
        finish(store, got[job_id], code, now=T0 + offset)
    store.cancel("e-canceled", T0 + 20)  # canceled is not counted (as in `top` and the queue counts)
    counts = store.ended_per_minute(T0 + 3600, 60)
    expected = [0] * 60
    expected[0], expected[1], expected[2], expected[59] = 1, 2, 1, 1
    assert counts == expected
    assert store.ended_per_minute(T0 + 3600, 1) == [1]
    assert sum(store.ended_per_minute(T0 + 7200, 1440)) == 7  # every one of them, e-before included


def test_a_store_does_not_hear_its_own_announcements_but_hears_a_peers(store: Store, store_url: str) -> None:
    # Its own writes wake its daemon's scheduler themselves (as on SQLite); hearing them too cost
    # an enqueue a wake-up of the listening thread, the loop and a turn (PostgresStore.announcer).
    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store: nothing to announce")
    heard: list[int] = []
    connected = threading.Event()

    def on_jobs() -> None:
        heard.append(1)
        connected.set()

    stop = store.listen(on_jobs)
    peer = open_store(store_url)
    try:
        assert connected.wait(10)  # the listener calls once on connecting
        heard.clear()
        for i in range(3):  # three announcements of its own, first
            add(store, f"mine-{i}")
        add(peer, "theirs")  # delivered after those (NOTIFYs come in commit order)
        deadline = threading.Event()
        for _ in range(100):
            if heard:
                break
            deadline.wait(0.1)
        deadline.wait(1.0)  # any announcement of its own would have come before the peer's
        assert heard == [1]
    finally:
        stop()
        peer.close()
