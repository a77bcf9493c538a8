"""Store contract, workflow (revision 0004): a job's context (queue, cwd, environment snapshot,
labels, hold) as enqueued; dependencies (a DAG in one batch, edges to stored jobs, refusals), their
effects when a dependency ends on every path (turn, cancel, delete, purge), cascades; release,
edit (cycles, queues, labels), restart, dlq retry with dependents; filters by queue and label.

Runs on every backend (see conftest.py). Dependencies are due at T0 + 1, T0 + 2, ... and their
dependents much later (LATER), so that a claim takes exactly the dependency a test ends, whatever
the claim statement does with jobs still waiting for others.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from queuectl.errors import (
    DependencyCycle,
    DependencyFailed,
    DependencyNotFound,
    DuplicateJob,
    InvalidParams,
    InvalidState,
    JobNotFound,
    QueueNotFound,
)
from queuectld.jobs import Job, JobState, encode_labels
from queuectld.store import pg_turn
from queuectld.store.base import DeadFilter, Dependency, EnvSnapshot, JobEdit, JobFilter, NewJob, Store
from queuectld.store.models import envs, job_deps, job_labels, queues
from tests.store.helpers import POLICY, T0, announcements, assert_counts_exact, claim, finish, new_job

LATER = T0 + 10_000


def job(job_id: str, *, at: float = LATER, after: tuple[str, ...] = (), after_any: tuple[str, ...] = (),
        labels: list[str] | None = None, **fields: Any) -> NewJob:
    """A job (due at `at`) with dependencies, labels and any other NewJob field."""
    return new_job(job_id, at=at, max_retries=fields.pop("max_retries", 0))._replace(
        after=after, after_any=after_any, labels=encode_labels(labels), **fields)


def enqueue(store: Store, *jobs: NewJob, envs: tuple[EnvSnapshot, ...] = (), replace: bool = False,
            now: float = T0) -> list[str]:
    return store.enqueue(list(jobs), replace=replace, now=now, envs=envs).ids


def add_queue(store: Store, name: str) -> None:
    """A queue beside `default` (written directly: queue_add is store-claim's part)."""
    with store.write_engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(insert(queues).values(name=name, concurrency=None, paused=0, created_at=T0))


def rows(store: Store, table: Any) -> int:
    with store.read_engine.begin() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def end(store: Store, job_id: str, exit_code: int = 0, *, now: float = T0 + 100) -> Job | None:
    """Claim the earliest due job, which must be `job_id`, and end its attempt with `exit_code`."""
    got = claim(store, now=now, limit=1)
    assert [j.id for j in got] == [job_id]
    return finish(store, got[0], exit_code, now=now)


def state(store: Store, job_id: str) -> tuple[JobState, int]:
    got = store.get(job_id)
    return got.state, got.deps_left


# -- context --------------------------------------------------------------------------------------

def test_enqueue_stores_the_context_of_each_job(store: Store) -> None:
    add_queue(store, "gpu")
    env = EnvSnapshot.make({"PATH": "/bin", "X": "1"}, clean=False)
    enqueue(store, job("a", queue="gpu", cwd="/srv", env_id=env.id, labels=["b", "a"], held=True), job("b"),
            envs=(env,))
    a = store.get("a")
    assert (a.queue, a.cwd, a.env_id, a.labels, a.held, a.deps_left, a.has_dependents) == (
        "gpu", "/srv", env.id, "a,b", True, 0, False)
    b = store.get("b")
    assert (b.queue, b.cwd, b.env_id, b.labels, b.held) == ("default", None, None, None, False)
    assert store.envs_of([env.id, "unknown"]) == {env.id: env}
    assert rows(store, job_labels) == 2


def test_enqueue_into_a_missing_queue_is_refused_and_adds_nothing(store: Store) -> None:
    with pytest.raises(QueueNotFound) as info:
        enqueue(store, job("a"), job("b", queue="nope"))
    assert "queuectl queue add nope" in info.value.message
    assert store.list_jobs(None, None) == []


def test_a_snapshot_is_stored_once_for_a_whole_batch_and_across_batches(store: Store) -> None:
    env = EnvSnapshot.make({"HOME": "/root", "LANG": "C.UTF-8"}, clean=False)
    other = EnvSnapshot.make({"HOME": "/root", "LANG": "C.UTF-8"}, clean=True)  # clean: another snapshot
    assert env.id != other.id
    batch = [new_job(f"j{i}", at=LATER)._replace(env_id=env.id) for i in range(100_000)]
    store.enqueue(batch, replace=False, now=T0, envs=[env] * 3)
    assert rows(store, envs) == 1
    store.enqueue([job("x", env_id=env.id), job("y", env_id=other.id)], replace=False, now=T0, envs=[env, other])
    assert rows(store, envs) == 2
    assert store.envs_of([env.id, other.id]) == {env.id: env, other.id: other}
    assert store.counts()["pending"] == 100_002


def test_a_repeated_enqueue_is_recognized_with_its_context_and_dependencies(store: Store) -> None:
    batch = [job("a", at=T0 + 1, labels=["x"], cwd="/w"), job("b", after=("a",), labels=["y", "x"])]
    enqueue(store, *batch)
    again = store.enqueue(batch, replace=False, now=T0 + 5)
    assert (again.ids, again.existing) == (["a", "b"], ["a", "b"])
    with pytest.raises(DuplicateJob):
        enqueue(store, job("b", after=("a",), labels=["y"]))
    with pytest.raises(DuplicateJob):
        enqueue(store, job("b", after_any=("a",), labels=["y", "x"]))
    assert rows(store, job_deps) == 1


def test_a_big_batch_with_an_id_that_exists_adds_nothing(store: Store) -> None:
    enqueue(store, job("j0500", command="other"))
    batch = [job(f"j{i:04}", labels=["x"], after=("j0000",) if i else ()) for i in range(1000)]
    with pytest.raises(DuplicateJob):
        store.enqueue(batch, replace=False, now=T0)
    assert [j.id for j in store.list_jobs(None, None)] == ["j0500"]
    assert rows(store, job_deps) == rows(store, job_labels) == 0
    batch[500] = job("j0500", command="other")
    assert store.enqueue(batch, replace=False, now=T0).existing == ["j0500"]  # the rest is added
    assert (rows(store, job_deps), rows(store, job_labels)) == (998, 999)
    assert_counts_exact(store)


def test_a_repeat_is_recognized_after_its_dependency_died(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1))
    batch = [job("b", after=("a",))]
    enqueue(store, *batch)
    end(store, "a", 1)
    assert store.enqueue(batch, replace=False, now=T0 + 200).existing == ["b"]


def test_replace_keeps_the_dependents_of_the_replaced_job(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)))
    enqueue(store, job("a", at=T0 + 1, command="echo again"), replace=True)
    assert store.get("a").has_dependents
    end(store, "a")
    assert state(store, "b") == (JobState.PENDING, 0)


# -- dependencies at enqueue ----------------------------------------------------------------------

def test_a_dag_in_one_batch(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 2, after=("a",)),
            job("c", at=T0 + 3, after=("a", "b")), job("d", after_any=("c",)), job("e", after=("a",), after_any=("a",)))
    assert {j.id: (j.deps_left, j.has_dependents) for j in store.list_jobs(None, None)} == {
        "a": (0, True), "b": (1, True), "c": (2, True), "d": (1, False), "e": (1, False)}
    assert store.dependencies_of("c") == [Dependency("a", False, JobState.PENDING), Dependency("b", False, JobState.PENDING)]
    assert store.dependencies_of("e") == [Dependency("a", False, JobState.PENDING)]
    end(store, "a")
    assert [state(store, j) for j in "bcde"] == [(JobState.PENDING, 0), (JobState.PENDING, 1),
                                                 (JobState.PENDING, 1), (JobState.PENDING, 0)]
    end(store, "b")
    assert state(store, "c") == (JobState.PENDING, 0)
    end(store, "c", 1)  # dead: an after_any edge is satisfied by any end
    assert state(store, "d") == (JobState.PENDING, 0)
    assert_counts_exact(store)


@pytest.mark.parametrize("batch, error", [
    ([job("b", after=("nope",))], DependencyNotFound),
    ([job("b", after=("c",)), job("c")], DependencyNotFound),  # later in the batch: not yet there
    ([job("b", after_any=("b",))], DependencyCycle),
])
def test_a_dependency_must_exist_before_the_job(store: Store, batch: list[NewJob], error: type[Exception]) -> None:
    enqueue(store, job("a"))
    with pytest.raises(error):
        enqueue(store, job("x"), *batch)
    assert [j.id for j in store.list_jobs(None, None)] == ["a"]
    assert rows(store, job_deps) == 0
    assert not store.get("a").has_dependents


def test_dependencies_on_stored_jobs_count_only_what_is_still_to_come(store: Store) -> None:
    enqueue(store, job("ok", at=T0 + 1), job("dead", at=T0 + 2), job("waiting"))
    end(store, "ok")
    end(store, "dead", 1)
    enqueue(store, job("a", after=("ok", "waiting"), after_any=("dead",)))
    assert state(store, "a") == (JobState.PENDING, 1)
    assert store.get("waiting").has_dependents and store.get("dead").has_dependents
    with pytest.raises(DependencyFailed) as info:
        enqueue(store, job("b", after=("dead",)))
    assert "ended dead" in info.value.message
    store.cancel("waiting", T0 + 200)
    with pytest.raises(DependencyFailed):
        enqueue(store, job("c", after=("waiting",)))
    assert state(store, "a") == (JobState.CANCELED, 1)


def test_a_big_dag_enqueues_in_seconds(store: Store) -> None:
    n = 100_000
    batch = [job("r", at=T0 + 1)] + [job(f"j{i}", after=("r" if i == 0 else f"j{i - 1}",)) for i in range(n - 1)]
    batch.append(job("last", after_any=("r",)))
    started = time.monotonic()
    store.enqueue(batch, replace=False, now=T0)
    took = time.monotonic() - started
    assert rows(store, job_deps) == n
    assert state(store, f"j{n - 2}") == (JobState.PENDING, 1)
    assert took < 30, f"{n} jobs with {n} edges took {took:.1f} s"


# -- dependency effects ---------------------------------------------------------------------------

def test_a_dead_dependency_cancels_its_dependents_transitively(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)), job("c", after=("b",)),
            job("d", after_any=("b",)), job("e", after=("c",), after_any=("a",)))
    end(store, "a", 1)
    b, c, d, e = (store.get(j) for j in "bcde")
    assert (b.state, b.last_error, b.canceled_by) == (JobState.CANCELED, "dependency a ended dead", "a")
    assert (c.state, c.last_error, c.canceled_by) == (JobState.CANCELED, "dependency b ended canceled", "b")
    assert (d.state, d.deps_left) == (JobState.PENDING, 0)
    assert (e.state, e.canceled_by) == (JobState.CANCELED, "c")
    assert b.finished_at == T0 + 100
    assert_counts_exact(store)


def test_cancel_applies_to_the_dependents(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)), job("c", after_any=("a",)))
    store.cancel("a", T0 + 50)
    assert (store.get("b").state, store.get("b").last_error) == (JobState.CANCELED, "dependency a ended canceled")
    assert state(store, "c") == (JobState.PENDING, 0)
    assert_counts_exact(store)


def test_cancel_of_a_running_dependency_applies_to_the_dependents(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)))
    assert [j.id for j in claim(store, now=T0 + 5, limit=1)] == ["a"]
    store.cancel("a", T0 + 50)
    assert store.get("b").canceled_by == "a"


def test_deleting_a_dependency_cancels_its_dependents(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1, labels=["x"]), job("b", after_any=("a",)), job("c", after=("b",)))
    store.delete("a", T0 + 50)
    b = store.get("b")
    assert (b.state, b.last_error, b.canceled_by, b.finished_at) == (
        JobState.CANCELED, "dependency a was deleted", "a", T0 + 50)
    assert store.get("c").canceled_by == "b"
    assert store.dependencies_of("b") == [Dependency("a", True, None)]
    assert rows(store, job_labels) == 0
    assert_counts_exact(store)


def test_purging_a_dead_dependency_cancels_its_waiting_dependents(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 2), job("c", after_any=("a",), after=("b",)))
    end(store, "a", 1)
    assert state(store, "c") == (JobState.PENDING, 1)
    store.dlq_purge(["a"], T0 + 300)
    assert (store.get("c").state, store.get("c").last_error) == (JobState.CANCELED, "dependency a was deleted")
    assert_counts_exact(store)


def test_purge_matching_cancels_the_dependents_too(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("c"), job("b", after_any=("a",), after=("c",)))
    end(store, "a", 1)
    assert [j.id for j in store.dlq_purge_matching(DeadFilter(), 10, T0 + 300)] == ["a"]
    assert store.get("b").state is JobState.CANCELED


def test_a_turn_without_dependents_never_looks_for_them(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from queuectld.store import sqlite

    def refuse(*args: object) -> bool:
        raise AssertionError("looked for dependents of jobs that have none")

    monkeypatch.setattr(sqlite.RawTurnWrites, "dependencies_ended", refuse)
    monkeypatch.setattr(pg_turn.PgTurnWrites, "dependencies_ended", refuse)
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 2))
    end(store, "a")
    end(store, "b", 1)
    assert store.get("b").state is JobState.DEAD


def test_a_failed_attempt_that_will_be_retried_is_not_an_end(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1, max_retries=2), job("b", after=("a",)))
    end(store, "a", 1)
    assert store.get("a").state is JobState.FAILED
    assert state(store, "b") == (JobState.PENDING, 1)


# -- release ----------------------------------------------------------------------------------------

def test_release_is_all_or_none(store: Store) -> None:
    enqueue(store, job("h1", held=True), job("h2", held=True), job("free"))
    with pytest.raises(InvalidState):
        store.release(["h1", "free"], T0 + 1)
    with pytest.raises(JobNotFound):
        store.release(["h1", "nope"], T0 + 1)
    assert store.get("h1").held
    got = store.release(["h2", "h1"], T0 + 1)
    assert [(j.id, j.held) for j in got] == [("h2", False), ("h1", False)]
    assert not store.get("h1").held and not store.get("h2").held


def test_hold_is_all_or_none_and_only_for_waiting_jobs(store: Store) -> None:
    enqueue(store, job("w1"), job("w2"), job("h", held=True))
    with pytest.raises(InvalidState):
        store.hold(["w1", "h"], T0 + 1)
    with pytest.raises(JobNotFound):
        store.hold(["w1", "nope"], T0 + 1)
    assert not store.get("w1").held
    got = store.hold(["w2", "w1"], T0 + 1)
    assert [(j.id, j.held) for j in got] == [("w2", True), ("w1", True)]
    assert store.get("w1").held and store.get("w2").held
    assert_counts_exact(store)
    store.release(["w1"], T0 + 2)
    assert not store.get("w1").held


def test_release_matching_takes_what_the_filter_says(store: Store) -> None:
    add_queue(store, "q")
    enqueue(store, job("a", held=True, queue="q", at=T0 + 1), job("b", held=True, labels=["x"], at=T0 + 2),
            job("c", held=True, queue="q", labels=["x"], at=T0 + 3), job("d", held=True, at=T0 + 4))
    assert store.release_matching(JobFilter(queue="q", label="x"), T0, 10) == ["c"]
    assert store.release_matching(JobFilter(queue="q"), T0, 10) == ["a"]
    assert store.release_matching(JobFilter(), T0, 1) == ["b"]
    assert store.release_matching(JobFilter(), T0, 10) == ["d"]
    assert store.release_matching(JobFilter(), T0, 10) == []


# -- edit -------------------------------------------------------------------------------------------

def test_edit_changes_the_fields_given(store: Store) -> None:
    add_queue(store, "q")
    enqueue(store, job("a", labels=["x", "y"], timeout_s=5.0))
    got = store.edit("a", JobEdit(command="echo 2", priority=7, queue="q", max_retries=4, clear_timeout=True,
                                  next_run_at=T0 + 9, labels="z"), T0 + 1)
    assert (got.command, got.priority, got.queue, got.max_retries, got.timeout_s, got.next_run_at, got.labels) == (
        "echo 2", 7, "q", 4, None, T0 + 9, "z")
    assert store.get("a") == got
    assert [j.id for j, _ in store.list_page(None, None, None, label="z")] == ["a"]
    assert store.list_page(None, None, None, label="x") == []
    store.edit("a", JobEdit(labels=""), T0 + 2)
    assert store.get("a").labels is None and rows(store, job_labels) == 0
    with pytest.raises(QueueNotFound):
        store.edit("a", JobEdit(queue="nope", command="never"), T0 + 3)
    assert store.get("a").command == "echo 2"


def test_edit_of_a_processing_job_is_refused(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1))
    claim(store, now=T0 + 1)
    with pytest.raises(InvalidState):
        store.edit("a", JobEdit(command="x"), T0 + 2)
    with pytest.raises(JobNotFound):
        store.edit("nope", JobEdit(command="x"), T0 + 2)


def test_edit_reschedules_a_waiting_job_but_refuses_an_ended_one(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 1))
    assert store.edit("a", JobEdit(next_run_at=T0 + 3600), T0 + 2).next_run_at == T0 + 3600
    store.cancel("b", T0 + 2)
    with pytest.raises(InvalidState, match="reschedule .it has ended; `queuectl restart b` runs it again"):
        store.edit("b", JobEdit(next_run_at=T0 + 3600, command="never"), T0 + 3)
    ended = store.get("b")
    assert ended.command != "never" and ended.state is JobState.CANCELED
    assert store.edit("b", JobEdit(command="echo later"), T0 + 4).command == "echo later"  # the rest may change


def test_edit_replaces_dependencies_and_recounts(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 2), job("c"), job("x", after=("a",)))
    end(store, "a")
    store.edit("x", JobEdit(after=("a", "b")), T0 + 200)
    assert state(store, "x") == (JobState.PENDING, 1)
    store.edit("x", JobEdit(after_any=("c",)), T0 + 201)  # the `after` edges stay
    assert state(store, "x") == (JobState.PENDING, 2)
    assert [(d.dep_id, d.any_end) for d in store.dependencies_of("x")] == [("a", False), ("b", False), ("c", True)]
    store.edit("x", JobEdit(after=(), after_any=()), T0 + 202)
    assert state(store, "x") == (JobState.PENDING, 0) and store.dependencies_of("x") == []
    with pytest.raises(DependencyNotFound):
        store.edit("x", JobEdit(after=("nope",)), T0 + 203)
    with pytest.raises(InvalidParams):
        store.edit("x", JobEdit(after=("b",), after_any=("b",)), T0 + 203)


def test_edit_refuses_a_cycle(store: Store) -> None:
    enqueue(store, job("a"), job("b", after=("a",)), job("c", after_any=("b",)))
    with pytest.raises(DependencyCycle) as info:
        store.edit("a", JobEdit(after=("c",)), T0 + 1)
    assert "'c' already waits for 'a'" in info.value.message
    with pytest.raises(DependencyCycle):
        store.edit("a", JobEdit(after_any=("a",)), T0 + 1)
    assert store.dependencies_of("a") == [] and state(store, "a") == (JobState.PENDING, 0)
    store.edit("c", JobEdit(after=("a",)), T0 + 1)  # no cycle: fine
    assert state(store, "c") == (JobState.PENDING, 2)


def test_replacing_a_job_refuses_a_cycle_through_its_dependents(store: Store) -> None:
    enqueue(store, job("a"), job("b", after=("a",)), job("c", after_any=("b",)))
    with pytest.raises(DependencyCycle):  # a replaced job keeps its dependents: b and c wait for it
        enqueue(store, job("a", after=("c",)), replace=True)
    assert store.dependencies_of("a") == [] and state(store, "b") == (JobState.PENDING, 1)
    enqueue(store, job("x"), job("a", after=("x",)), replace=True)
    assert state(store, "a") == (JobState.PENDING, 1)


def test_edits_of_dependencies_take_turns_on_postgresql(store: Store, store_url: str) -> None:
    """Two edits that together close a cycle (a after b, b after a) must not both pass their
    checks: each takes the dependency graph's lock first. Shown by holding that lock elsewhere:
    an edit of dependencies waits for it, an edit of anything else does not."""
    if store_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: its edits take turns anyway")
    enqueue(store, job("a"), job("b"))
    holder = store.write_engine.connect()  # type: ignore[attr-defined]
    try:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.job_deps'))")
        done = threading.Event()
        errors: list[BaseException] = []

        def edit() -> None:
            try:
                store.edit("a", JobEdit(after=("b",)), T0 + 1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            done.set()

        thread = threading.Thread(target=edit)
        thread.start()
        assert not done.wait(1.0), "the edit of a's dependencies did not wait for the graph's lock"
        store.edit("b", JobEdit(priority=5), T0 + 1)  # not a dependency change: no wait
        holder.exec_driver_sql("COMMIT")
        assert done.wait(10) and not errors
        thread.join()
    finally:
        holder.close()
    with pytest.raises(DependencyCycle):
        store.edit("b", JobEdit(after=("a",)), T0 + 2)


def test_edit_of_a_failed_job_waiting_for_its_retry_gets_its_dependency_end(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1, max_retries=3), job("dep"))
    end(store, "a", 1)
    store.edit("a", JobEdit(after=("dep",)), T0 + 200)
    assert state(store, "a") == (JobState.FAILED, 1)
    store.cancel("dep", T0 + 300)
    assert store.get("a").state is JobState.CANCELED


# -- restart ----------------------------------------------------------------------------------------

def test_restart_keeps_the_attempt_history(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 2))
    done = end(store, "a")
    assert done is not None
    got = store.restart(["a"], T0 + 500)
    assert [(j.state, j.attempts, j.next_run_at, j.run, j.last_outcome, j.finished_at) for j in got] == [
        (JobState.PENDING, 0, T0 + 500, 1, None, None)]
    assert len(store.attempts_of("a")) == 1
    with pytest.raises(InvalidState):
        store.restart(["b"], T0 + 500)
    with pytest.raises(InvalidState):
        store.restart(["a"], T0 + 500)  # pending now
    assert_counts_exact(store)


def test_restart_is_all_or_none_and_recounts_dependencies(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)), job("c", after=("b",)), job("other"))
    end(store, "a", 1)
    with pytest.raises(DependencyFailed):
        store.restart(["b"], T0 + 200)  # a is still dead
    with pytest.raises(InvalidState):
        store.restart(["a", "b", "other"], T0 + 200)
    assert store.get("a").state is JobState.DEAD
    got = store.restart(["c", "b", "a"], T0 + 200)
    assert [(j.id, j.state, j.deps_left, j.canceled_by) for j in got] == [
        ("c", JobState.PENDING, 1, None), ("b", JobState.PENDING, 1, None), ("a", JobState.PENDING, 0, None)]
    assert [state(store, j) for j in "abc"] == [(JobState.PENDING, 0), (JobState.PENDING, 1), (JobState.PENDING, 1)]


def test_a_finished_job_of_a_removed_queue_is_not_put_back_into_it(store: Store) -> None:
    """Its queue removed, a finished job would wait in a queue no daemon claims from: restart and
    dlq retry refuse (QueueNotFound, which says how to add it) and change nothing."""
    store.queue_add("gone", None, T0)
    enqueue(store, job("done", at=T0 + 1, queue="gone"), job("dead", at=T0 + 2, queue="gone"))
    end(store, "done")
    end(store, "dead", 1)
    store.queue_rm("gone")
    with pytest.raises(QueueNotFound, match="queue add gone"):
        store.restart(["done"], T0 + 200)
    with pytest.raises(QueueNotFound):
        store.dlq_retry(["dead"], T0 + 200)
    assert [store.get(j).state for j in ("done", "dead")] == [JobState.COMPLETED, JobState.DEAD]
    store.queue_add("gone", None, T0 + 300)
    assert [j.state for j in store.restart(["done"], T0 + 300)] == [JobState.PENDING]
    assert [j.state for j in store.dlq_retry(["dead"], T0 + 300)] == [JobState.PENDING]
    assert_counts_exact(store)


def test_restarting_a_dependency_makes_its_waiting_dependents_wait_again(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", at=T0 + 2), job("c", after=("a", "b")))
    end(store, "a")
    assert state(store, "c") == (JobState.PENDING, 1)
    store.restart(["a"], T0 + 150)
    assert state(store, "c") == (JobState.PENDING, 2)
    end(store, "b", now=T0 + 160)
    end(store, "a", now=T0 + 170)
    assert state(store, "c") == (JobState.PENDING, 0)


# -- the dead-letter queue --------------------------------------------------------------------------

def test_dlq_retry_with_dependents_brings_back_what_the_death_canceled(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)), job("c", after=("b",)),
            job("d", after_any=("a",)), job("e"))
    end(store, "a", 1)
    store.cancel("e", T0 + 150)
    got = store.dlq_retry(["a"], T0 + 200, with_dependents=True)
    assert [(j.id, j.state, j.deps_left) for j in got] == [
        ("a", JobState.PENDING, 0), ("b", JobState.PENDING, 1), ("c", JobState.PENDING, 1)]
    assert (store.get("b").canceled_by, store.get("b").last_error) == (None, None)
    assert state(store, "d") == (JobState.PENDING, 1)  # waits for a again
    assert store.get("e").state is JobState.CANCELED
    end(store, "a", now=T0 + 300)
    assert state(store, "b") == (JobState.PENDING, 0)
    assert_counts_exact(store)


def test_dlq_retry_without_dependents_leaves_them_canceled(store: Store) -> None:
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)))
    end(store, "a", 1)
    assert [j.id for j in store.dlq_retry(["a"], T0 + 200)] == ["a"]
    assert store.get("b").state is JobState.CANCELED


def test_dead_filter_by_queue_and_label(store: Store) -> None:
    add_queue(store, "q")
    enqueue(store, job("a", at=T0 + 1, queue="q"), job("b", at=T0 + 2, labels=["x"]),
            job("c", at=T0 + 3, queue="q", labels=["x"]))
    for j in "abc":
        end(store, j, 1)
    assert store.dlq_retry_matching(DeadFilter(queue="q", label="x"), T0 + 200, 10) == ["c"]
    assert [j.id for j in store.dlq_purge_matching(DeadFilter(label="x"), 10)] == ["b"]
    assert store.dlq_retry_matching(DeadFilter(queue="default"), T0 + 200, 10) == []
    assert store.dlq_retry_matching(DeadFilter(queue="q"), T0 + 200, 10) == ["a"]


# -- listing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("state_filter", [None, JobState.PENDING])
def test_list_by_queue_and_label_pages_in_order(store: Store, state_filter: JobState | None) -> None:
    add_queue(store, "q")
    enqueue(store, *(job(f"j{i:02}", at=T0 + i, queue="q" if i % 2 else "default", labels=["x"] if i % 3 == 0 else None)
                     for i in range(30)))
    seen: list[str] = []
    after = None
    while True:
        page = store.list_page(state_filter, 4, after, queue="q", label="x")
        seen += [j.id for j, _ in page]
        if len(page) < 4:
            break
        after = page[-1][1]
    assert seen == [f"j{i:02}" for i in range(30) if i % 2 and i % 3 == 0]
    assert len(store.list_page(None, None, None, queue="q")) == 15


# -- other paths that end a job ---------------------------------------------------------------------

def test_recovery_of_a_lost_attempt_applies_to_the_dependents(store: Store) -> None:
    from queuectld.jobs import Outcome, OutcomeKind
    from queuectld.store.base import FinishedAttempt

    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)), job("c", after_any=("a",)))
    [running] = claim(store, owner="peer-gone", now=T0 + 5, limit=1)
    lost = FinishedAttempt("a", running.run, "peer-gone", Outcome(OutcomeKind.WORKER_LOST, error="its daemon died"),
                           T0 + 90)
    [(_, after)] = store.finish([lost], POLICY)  # a failed attempt; no retry left
    assert after is not None and after.state is JobState.DEAD
    assert (store.get("b").state, store.get("b").canceled_by) == (JobState.CANCELED, "a")
    assert state(store, "c") == (JobState.PENDING, 0)


def test_a_dependent_that_became_claimable_is_announced(store: Store, store_url: str) -> None:


    if store_url.startswith("sqlite"):
        pytest.skip("one host uses a SQLite store: nothing to announce")
    enqueue(store, job("a", at=T0 + 1), job("b", after=("a",)), job("h", held=True))
    with announcements(store_url) as heard:
        [running] = claim(store, now=T0 + 5, limit=1)
        assert not heard.wait(1.5)
        finish(store, running, 0, now=T0 + 6)  # a completed job alone announces nothing: b is due
        assert heard.wait(10)
        heard.clear()
        store.release(["h"], T0 + 7)
        assert heard.wait(10)


def test_moving_a_job_to_another_queue_moves_its_count(store: Store) -> None:
    add_queue(store, "q")
    enqueue(store, job("a"), job("b"))
    store.edit("a", JobEdit(queue="q"), T0 + 1)
    assert (store.queue_get("q").pending, store.queue_get("default").pending) == (1, 1)


@pytest.mark.parametrize("held", [False, True])
def test_a_job_enqueued_alone_is_stored_as_the_same_job_in_a_batch(store: Store, held: bool) -> None:
    # On PostgreSQL a single job without labels has a statement of its own (pg_enqueue.ENQUEUE_ONE):
    # every field, its environment, its queue check and its count must come out as the batch's.
    store.queue_add("work", None, T0)
    env = EnvSnapshot.make({"PATH": "/bin", "TOKEN": "s3cret"}, False)

    def job(job_id: str) -> NewJob:
        return new_job(job_id, command="echo hi", max_retries=5, priority=3, timeout_s=12.5, retry_rules="e=2",
                       backoff_base=1.5, backoff_max_s=30.0)._replace(queue="work", cwd="/tmp", env_id=env.id,
                                                                       held=held)

    store.enqueue([job("alone")], replace=False, now=T0, envs=[env])
    store.enqueue([job("batch-1"), job("batch-2")], replace=False, now=T0, envs=[env])
    alone, batched = store.get("alone"), store.get("batch-1")
    assert {**vars_of(alone), "id": None} == {**vars_of(batched), "id": None}
    assert alone.env_id == env.id and store.envs_of([env.id]) == {env.id: env}
    assert store.counts()["pending"] == 3
    with pytest.raises(QueueNotFound):
        store.enqueue([job("nowhere")._replace(queue="nope")], replace=False, now=T0, envs=[env])
    with pytest.raises(JobNotFound):
        store.get("nowhere")
    assert store.counts()["pending"] == 3
    again = store.enqueue([job("alone")], replace=False, now=T0, envs=[env])  # a repeat: kept as it is
    assert again.existing == ["alone"] and store.counts()["pending"] == 3


def vars_of(job: Job) -> dict[str, Any]:
    """A job's fields by name."""
    return {name: getattr(job, name) for name in job.__dataclass_fields__}
