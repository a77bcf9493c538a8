"""Issue 10 through the daemon's serve loop, on each store: dependencies (after, after-any, a
cascade cancel on a dead dependency, dlq retry --with-dependents), holds, edits, restarts, and
explain for each blocker a running daemon can show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import DependencyFailed, DependencyNotFound, InvalidState
from tests.integration.conftest import DaemonFactory
from tests.integration.inprocess import InProcessDaemon, gate


def call(d: InProcessDaemon, method: str, **params: Any) -> Any:
    """One request with exactly these params."""
    return d.client.call(method, params)


def add(d: InProcessDaemon, job_id: str, command: str, **fields: Any) -> dict[str, Any]:
    """job.enqueue with the protocol's fields."""
    result: dict[str, Any] = d.client.call("job.enqueue", {"command": command, "id": job_id, **fields})
    return result


def explain(d: InProcessDaemon, job_id: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = d.client.call("job.explain", {"id": job_id})
    return result


# -- dependencies --------------------------------------------------------------------------------


def test_after_runs_a_job_once_its_dependencies_completed(inproc_factory: DaemonFactory, backend: str,
                                                          short_root: Path) -> None:
    d = inproc_factory(backend=backend, workers=3)
    order = short_root / "order"
    add(d, "a", f"sleep 0.3; echo a >> {order}")
    add(d, "b", f"echo b >> {order}", after=["a"])
    add(d, "x", "false", max_retries=0)
    add(d, "c", f"echo c >> {order}", after=["b"], after_any=["x"])
    jobs = d.settle("a", "b", "c", "x")
    assert [jobs[i]["state"] for i in "abcx"] == ["completed", "completed", "completed", "dead"]
    assert order.read_text().splitlines() == ["a", "b", "c"]
    assert sorted((dep["id"], dep["any_end"], dep["state"]) for dep in d.job("c")["dependencies"]) == [
        ("b", False, "completed"), ("x", True, "dead")]


def test_a_dependent_after_any_starts_at_once_when_its_dependency_is_canceled(
        inproc_factory: DaemonFactory, backend: str) -> None:
    # A long lease: the scheduler's idle recheck (a third of it) is 100 s, so the dependent
    # starts within the settle's time only if the cancel itself wakes the scheduler. On
    # PostgreSQL it used to be woken by its own NOTIFY, which its listener now skips.
    d = inproc_factory(backend=backend, lease_s=300)
    add(d, "x", "true", hold=True)
    add(d, "j", "true", after_any=["x"])
    assert explain(d, "j")["kind"] == "dependency"
    call(d, "job.cancel", id="x")
    assert d.settle("j", timeout=20)["j"]["state"] == "completed"


def test_a_batch_may_name_earlier_jobs_of_the_same_batch(inproc_factory: DaemonFactory, backend: str,
                                                         short_root: Path) -> None:
    d = inproc_factory(backend=backend, workers=4)
    order = short_root / "order"
    jobs = [{"id": "n0", "command": f"echo n0 >> {order}"}]
    jobs += [{"id": f"n{i}", "command": f"echo n{i} >> {order}", "after": [f"n{i - 1}"]} for i in range(1, 8)]
    call(d, "job.enqueue_batch", jobs=jobs)
    d.settle(*(j["id"] for j in jobs))
    assert order.read_text().splitlines() == [f"n{i}" for i in range(8)]


def test_unknown_and_dead_dependencies_are_refused(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    with pytest.raises(DependencyNotFound):
        add(d, "j", "true", after=["nope"])
    add(d, "dead", "false", max_retries=0)
    d.settle("dead")
    with pytest.raises(DependencyFailed):
        add(d, "j", "true", after=["dead"])
    add(d, "j", "true", after_any=["dead"])  # any end satisfies it
    assert d.settle("j")["j"]["state"] == "completed"


def test_a_dead_dependency_cancels_its_dependents_and_retry_with_dependents_brings_them_back(
        inproc_factory: DaemonFactory, backend: str, short_root: Path) -> None:
    d = inproc_factory(backend=backend)
    flag, added = short_root / "fixed", short_root / "added"
    # d1 fails only once the chain is queued: dead sooner, it would cancel d2 before d3 could
    # be added after it (and the enqueue of d3 is refused then, rightly).
    add(d, "d1", f"while [ ! -e {added} ]; do sleep 0.01; done; [ -e {flag} ]", max_retries=0)
    add(d, "d2", "true", after=["d1"])
    add(d, "d3", "true", after=["d2"])
    added.touch()
    jobs = d.settle("d1", "d2", "d3")
    assert [jobs[i]["state"] for i in ("d1", "d2", "d3")] == ["dead", "canceled", "canceled"]
    assert (jobs["d2"]["last_error"], jobs["d2"]["canceled_by"]) == ("dependency d1 ended dead", "d1")
    assert jobs["d3"]["canceled_by"] == "d2"
    flag.touch()
    answer = call(d, "dlq.retry", ids=["d1"], with_dependents=True)
    assert answer["count"] >= 1 and "d1" in (answer["ids"] or [])
    jobs = d.settle("d1", "d2", "d3")
    assert [jobs[i]["state"] for i in ("d1", "d2", "d3")] == ["completed"] * 3


def test_a_dependent_waits_and_explains_why(inproc_factory: DaemonFactory, backend: str,
                                            short_root: Path) -> None:
    d = inproc_factory(backend=backend, workers=2)
    add(d, "build-1", gate(short_root / "open"))
    add(d, "test", "true", after=["build-1"])
    d.wait_state("build-1", "processing")
    blocked = explain(d, "test")
    assert blocked == {**blocked, "kind": "dependency", "dependency": "build-1", "dependency_state": "processing",
                       "message": "waiting for dependency build-1 (processing)"}
    assert d.job("test")["blocked_by"]["kind"] == "dependency"
    assert d.client.call("job.wait", {"ids": ["test"], "timeout_s": 0.2})["done"] is False
    (short_root / "open").touch()
    assert d.settle("test")["test"]["state"] == "completed"
    assert explain(d, "test") is None


# -- holds, edits, restarts ----------------------------------------------------------------------


def test_a_held_job_waits_for_release(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    call(d, "queue.add", name="q")
    add(d, "h1", "true", hold=True)
    add(d, "h2", "true", hold=True, queue="q")
    add(d, "h3", "true", hold=True, queue="q")
    add(d, "free", "true")
    d.settle("free")
    assert [d.job(i)["held"] for i in ("h1", "h2")] == [True, True]
    assert explain(d, "h1") == {**(explain(d, "h1") or {}), "kind": "held",
                                "message": "held: release it with `queuectl release h1`"}
    assert call(d, "job.release", ids=["h1"])["count"] == 1
    assert d.settle("h1")["h1"]["state"] == "completed"
    assert call(d, "job.release", filter={"queue": "q"}) == {"count": 2, "ids": ["h2", "h3"]}
    jobs = d.settle("h2", "h3")
    assert {j["state"] for j in jobs.values()} == {"completed"}


def test_hold_keeps_a_waiting_job_until_release(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    add(d, "later", "true", delay_s=600)
    assert call(d, "job.hold", ids=["later"]) == {"count": 1, "ids": ["later"]}
    assert d.job("later")["held"] is True
    assert (explain(d, "later") or {})["kind"] == "held"
    assert call(d, "job.release", ids=["later"])["count"] == 1
    assert d.job("later")["held"] is False
    daemons = call(d, "daemon.list")["daemons"]
    assert len(daemons) == 1 and daemons[0]["slots"] >= 1 and daemons[0]["heartbeat_at"]


def test_edit_changes_a_waiting_job_and_refuses_a_running_one(inproc_factory: DaemonFactory, backend: str,
                                                              short_root: Path) -> None:
    d = inproc_factory(backend=backend)
    out = short_root / "out"
    add(d, "e", "echo old", delay_s=600)
    blocked = explain(d, "e")
    assert blocked is not None and blocked["kind"] == "not-before" and "(in 10 min)" in blocked["message"]
    edited = call(d, "job.edit", id="e", command=f"echo new > {out}", priority=5, labels=["x", "y"])
    assert (edited["command"], edited["priority"], edited["labels"]) == (f"echo new > {out}", 5, ["x", "y"])
    assert d.job("e")["state"] == "pending"
    call(d, "job.edit", id="e", delay_s=0)
    assert d.settle("e")["e"]["state"] == "completed" and out.read_text() == "new\n"
    add(d, "r", gate(short_root / "open"))
    d.wait_state("r", "processing")
    with pytest.raises(InvalidState):
        call(d, "job.edit", id="r", command="true")
    (short_root / "open").touch()
    d.settle("r")


def test_restart_runs_a_finished_job_again_keeping_its_history(inproc_factory: DaemonFactory, backend: str,
                                                               short_root: Path) -> None:
    d = inproc_factory(backend=backend)
    runs = short_root / "runs"
    add(d, "r", f"echo run >> {runs}")
    d.settle("r")
    assert call(d, "job.restart", ids=["r"]) == {"count": 1, "ids": ["r"]}
    job = d.settle("r")["r"]
    assert job["state"] == "completed" and job["attempts"] == 0 and len(job["attempt_history"]) == 2
    assert runs.read_text().splitlines() == ["run", "run"]
    add(d, "p", "sleep 30")
    d.wait_state("p", "processing")
    with pytest.raises(InvalidState):
        call(d, "job.restart", ids=["p"])
    call(d, "job.cancel", id="p")


# -- explain, blocker by blocker -----------------------------------------------------------------


def test_explain_names_a_full_queue_busy_slots_and_no_daemon(inproc_factory: DaemonFactory, backend: str,
                                                             short_root: Path) -> None:
    d = inproc_factory(backend=backend, workers=2)
    call(d, "queue.add", name="one", concurrency=1)
    add(d, "running", gate(short_root / "open"), queue="one")
    d.wait_state("running", "processing")
    add(d, "waits", "true", queue="one")
    assert explain(d, "waits") == {**(explain(d, "waits") or {}), "kind": "queue-full", "running": 1, "limit": 1,
                                   "message": "queue at its concurrency (1/1)"}
    add(d, "busy", gate(short_root / "open"))
    d.wait_state("busy", "processing")
    add(d, "slotless", "true")
    blocked = explain(d, "slotless")
    assert blocked is not None and (blocked["kind"], blocked["message"]) == (
        "slots-busy", "every slot busy on every live daemon (2/2)")
    d.client.workers_stop(False)
    blocked = explain(d, "slotless")
    assert blocked is not None and (blocked["kind"], blocked["message"]) == (
        "no-daemon", "no daemon is claiming (all stopped or none running)")
    (short_root / "open").touch()
    d.settle("running", "busy")
    d.client.workers_start(None)
    d.settle("waits", "slotless")
