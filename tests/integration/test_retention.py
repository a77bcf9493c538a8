"""Retention in a real daemon: the pruner deletes expired jobs and their log files and keeps
young ones, waiting ones and a dependency of a waiting job; `jobs clean --dry-run` changes
nothing; `enqueue --replace` starts the id with empty logs; the start-up sweep removes orphan
log files. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from queuectl.errors import InvalidValue
from tests.integration.conftest import DaemonFactory
from tests.integration.inprocess import InProcessDaemon, wait_until

HOUR_S = 3600


def _age(d: InProcessDaemon, ids: list[str], by_s: float) -> None:
    """Move the jobs' end `by_s` into the past, in the store itself (no clock is faked)."""
    engine = create_engine(d.db_url)
    try:
        with engine.begin() as conn:
            for job_id in ids:
                conn.execute(text("UPDATE jobs SET finished_at = finished_at - :s WHERE id = :id"),
                             {"s": by_s, "id": job_id})
    finally:
        engine.dispose()


def _log_files(d: InProcessDaemon, job_id: str) -> list[str]:
    return sorted(p.name for p in (d.state_dir / "logs").glob(f"{job_id}.*"))


def _done(d: InProcessDaemon, *pairs: tuple[str, str]) -> None:
    for job_id, command in pairs:
        d.enqueue(job_id, command, max_retries=0)
    d.settle(*(job_id for job_id, _ in pairs))


def test_the_pruner_deletes_expired_jobs_with_their_logs_and_keeps_the_rest(
        inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend, prune_interval_s=0.5,
                       config={"retain-completed": "1h", "retain-dead": "1h", "retain-canceled": "0"})
    _done(d, ("old-ok", "echo old output"), ("old-dead", "echo dying; exit 3"), ("young-ok", "echo young"),
          ("dep", "echo dep"))
    d.enqueue("waiter", "true", after=["dep"], hold=True)  # waits (held): its dependency must stay
    d.enqueue("later", "true", delay_s=HOUR_S)  # pending
    d.enqueue("stopped", "true", delay_s=HOUR_S)
    d.client.cancel("stopped")  # canceled, but retain-canceled 0 keeps it forever
    assert _log_files(d, "old-ok") == ["old-ok.1.log"]
    _age(d, ["old-ok", "old-dead", "dep", "stopped"], 2 * HOUR_S)
    # The files go right after the commit that deleted the jobs: wait for both.
    wait_until(lambda: not {"old-ok", "old-dead"} & set(d.jobs()) and not _log_files(d, "old-ok")
               and not _log_files(d, "old-dead"), timeout=30, what="the old jobs and their logs pruned")
    assert sorted(d.jobs()) == ["dep", "later", "stopped", "waiter", "young-ok"]
    assert _log_files(d, "young-ok") == ["young-ok.1.log"] and d.logs("young-ok") == "young\n"
    assert d.logs("dep") == "dep\n"
    retention = d.status()["daemon"]["retention"]
    assert retention["jobs"]["completed"] >= 1 and retention["jobs"]["dead"] >= 1 and retention["files"] >= 2
    assert retention["batches"] >= 1 and retention["batch_ms_max"] >= retention["batch_ms_p50"] > 0
    # Once its dependent has ended, the dependency goes at the next pass.
    d.client.cancel("waiter")
    wait_until(lambda: "dep" not in d.jobs() and not _log_files(d, "dep"), timeout=30,
               what="the dependency and its log pruned")


def test_clean_dry_run_changes_nothing_and_clean_removes(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    _done(d, ("a", "echo a"), ("b", "exit 1"), ("c", "echo c"))
    d.enqueue("p", "true", delay_s=HOUR_S)
    before = {job_id: d.job(job_id) for job_id in d.jobs()}
    dry = d.client.clean(older_than_s=0, dry_run=True)
    assert dry == {"count": 3, "counts": {"completed": 2, "canceled": 0, "dead": 1}, "ids": ["a", "c", "b"],
                   "dry_run": True}
    assert {job_id: d.job(job_id) for job_id in d.jobs()} == before
    assert _log_files(d, "a") == ["a.1.log"]
    # Default age: each state's retention (7d): nothing of these is that old.
    assert d.client.clean()["count"] == 0
    done = d.client.clean(["completed"], older_than_s=0)
    assert done["counts"] == {"completed": 2} and sorted(done["ids"]) == ["a", "c"]
    assert sorted(d.jobs()) == ["b", "p"]
    assert _log_files(d, "a") == [] and _log_files(d, "c") == []


def test_clean_refuses_states_that_have_not_ended(inproc_factory: DaemonFactory) -> None:
    d = inproc_factory()
    d.enqueue("p", "true", delay_s=HOUR_S)
    with pytest.raises(InvalidValue, match="pending jobs have not ended"):
        d.client.clean(["completed", "pending"], older_than_s=0)
    assert list(d.jobs()) == ["p"]


def test_replace_starts_the_id_with_empty_logs(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    _done(d, ("r", "echo old output; exit 1"))
    assert d.logs("r") == "old output\n"
    d.client.enqueue("echo new output", id="r", replace=True, hold=True)
    assert d.logs("r") == ""  # before: the old job's output
    assert _log_files(d, "r") == []
    d.client.release(["r"])
    d.settle("r")
    assert d.logs("r") == "new output\n"


def test_delete_and_purge_remove_the_logs(inproc_factory: DaemonFactory) -> None:
    d = inproc_factory()
    _done(d, ("gone", "echo x"), ("dead", "echo y; exit 1"))
    d.client.delete("gone")
    d.client.dlq_purge(["dead"])
    assert _log_files(d, "gone") == [] and _log_files(d, "dead") == []


def test_the_start_up_sweep_removes_orphan_log_files(inproc_factory: DaemonFactory) -> None:
    d = inproc_factory()
    _done(d, ("kept", "echo kept"))
    d.stop()
    logs = d.state_dir / "logs"
    old = time.time() - 2 * HOUR_S
    for name in ["ghost.1.log", "ghost.2.snooze", "kept.2.log", "not-an-attempt.txt"]:
        (logs / name).write_text("stale\n")
        os.utime(logs / name, (old, old))
    (logs / "fresh.1.log").write_text("an attempt that may just have begun\n")  # too young to judge
    os.utime(logs / "kept.1.log", (old, old))
    d.start()
    left = ["fresh.1.log", "kept.1.log", "not-an-attempt.txt"]
    wait_until(lambda: sorted(p.name for p in Path(logs).iterdir()) == left, timeout=30, what="the sweep")
    assert d.logs("kept") == "kept\n"
