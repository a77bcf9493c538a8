"""Regression tests, at the level of the whole daemon, for two races of an attempt's end:

- `worker stop --now` arriving as a job completes must never re-run the completed job (an
  attempt that has ended is recorded as it ended, not requeued);
- a job whose shell exits 0 while a background child keeps its output pipe open past the job's
  timeout is completed, not timed out (the timeout counts the shell, not the output drain).

Each job records every run of itself to a file, so a re-run shows as a second line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from queuectld.runner import DRAIN_AFTER_EXIT_S
from tests.integration.conftest import DaemonFactory
from tests.integration.inprocess import gate, outcome_of, store_writes_held, wait_until

ROUNDS = 25
SLOTS = 4


def recorded_runs(runs: Path) -> list[tuple[str, int]]:
    """(job id, shell pid) of every run the jobs recorded, in order."""
    if not runs.exists():
        return []
    return [(job_id, int(pid)) for job_id, pid in (line.split() for line in runs.read_text().splitlines())]


def reaped(pid: int) -> bool:
    """Whether the process is gone from /proc, zombie included: the daemon reaps a job's shell
    (and so has seen its attempt end) in the same step that reports the attempt's outcome."""
    return not os.path.exists(f"/proc/{pid}")


def all_reaped(recorded: list[tuple[str, int]], ids: list[str]) -> list[tuple[str, int]] | None:
    """The runs of `ids` once each has recorded one and every one's shell has been reaped."""
    mine = [run for run in recorded if run[0] in ids]
    return mine if len(mine) == len(ids) and all(reaped(pid) for _, pid in mine) else None


def test_worker_stop_now_after_jobs_ended_but_before_they_are_recorded_reruns_none(
    inproc_factory: DaemonFactory, short_root: Path, backend: str,
) -> None:
    """The window made wide: the store's writes are held, so attempts that have ended wait
    unrecorded; `worker stop --now` arrives then. They completed: none may be requeued. (A lease
    long enough that the held renewals do not have the job keeper kill them first, as it must
    when the store takes no write for most of a lease.)"""
    d = inproc_factory(workers=SLOTS, backend=backend, lease_s=10)
    runs = short_root / "runs"
    for n in range(3):
        go = short_root / f"go{n}"
        ids = [f"w{n}-{k}" for k in range(SLOTS)]
        for job_id in ids:
            d.enqueue(job_id, f"{gate(go)} >/dev/null; echo {job_id} $$ >> {runs}")
        wait_until(lambda: d.status()["workers"]["busy"] == SLOTS, what=f"round {n}: {SLOTS} jobs running")
        with store_writes_held(d):
            go.touch()
            ended = wait_until(lambda ids=ids: all_reaped(recorded_runs(runs), ids),  # type: ignore[misc]
                               what=f"round {n}: the shells to be reaped")
            assert sorted(job_id for job_id, _ in ended) == sorted(ids)
            d.client.workers_stop(now=True)
            assert d.status()["counts"].get("processing") == SLOTS, "the ends are not recorded yet"
        d.client.workers_start(SLOTS)
        jobs = d.settle(*ids)
        for job_id in ids:
            job = jobs[job_id]
            assert job["state"] == "completed" and job["attempts"] == 0, (n, job)
            assert [outcome_of(a) for a in job["attempt_history"]] == ["exit"], f"round {n}: {job}"
        assert [x for x in recorded_runs(runs) if x[0] in ids] == ended, f"round {n}: a job ran again"


def test_worker_stop_now_as_jobs_complete_never_reruns_a_completed_job(
    inproc_factory: DaemonFactory, short_root: Path, backend: str,
) -> None:
    """The race as it comes: the stop lands anywhere around the jobs' ends. A job still running
    is killed and requeued uncounted (and runs again: at least once); one whose attempt ended
    is recorded as it ended. So each job's history is requeued attempts, then one that exited 0,
    and nothing after it."""
    d = inproc_factory(workers=SLOTS, backend=backend)
    runs = short_root / "runs"
    for n in range(ROUNDS):
        go = short_root / f"go{n}"
        ids = [f"r{n:02d}-{k}" for k in range(SLOTS)]
        for job_id in ids:
            d.enqueue(job_id, f"{gate(go)} >/dev/null; echo {job_id} $$ >> {runs}")
        wait_until(lambda: d.status()["workers"]["busy"] == SLOTS, what=f"round {n}: {SLOTS} jobs running")
        go.touch()
        for _ in range(n % 5):  # a little later each round: the stop lands anywhere in the end
            d.status()
        d.client.workers_stop(now=True)
        wait_until(lambda: d.status()["workers"]["busy"] == 0, what=f"round {n}: the slots to empty")
        d.client.workers_start(SLOTS)
        jobs = d.settle(*ids)
        for job_id in ids:
            job = jobs[job_id]
            assert job["state"] == "completed" and job["attempts"] == 0, (n, job)
            outcomes = [outcome_of(a) for a in job["attempt_history"]]
            assert outcomes[-1] == "exit" and set(outcomes[:-1]) <= {"requeued"}, f"round {n}: {job}"
            assert job["attempt_history"][-1]["exit_code"] == 0
            runs_of_job = [pid for i, pid in recorded_runs(runs) if i == job_id]
            assert len(runs_of_job) <= len(outcomes), f"round {n}: {job_id} ran more often than it was started"


@pytest.mark.parametrize(("child", "what"), [
    (f"sleep {DRAIN_AFTER_EXIT_S * 10:g}", "keeps the pipe open past the drain"),
    (f"sleep {DRAIN_AFTER_EXIT_S / 2:g}", "closes the pipe after the timeout, within the drain"),
])
def test_a_shell_that_exits_0_while_its_child_holds_the_output_past_the_timeout_is_completed(
    inproc_factory: DaemonFactory, short_root: Path, child: str, what: str,
) -> None:
    d = inproc_factory()
    timeout_s = DRAIN_AFTER_EXIT_S / 4  # well before the output drain ends
    runs = short_root / "runs"
    for n in range(3):
        job_id = f"bg{n}"
        d.enqueue(job_id, f"echo {job_id} >> {runs}; {child} & echo started", timeout_s=timeout_s, max_retries=2)
        job = d.settle(job_id)[job_id]
        assert job["state"] == "completed", (what, job)
        assert job["exit_code"] == 0 and job["attempts"] == 0 and job["last_error"] is None, (what, job)
        assert [outcome_of(a) for a in job["attempt_history"]] == ["exit"], (what, job)
        assert runs.read_text().splitlines().count(job_id) == 1, "ran once"
        assert d.logs(job_id) == "started\n"
        wait_until(lambda: not d.processes_left(), timeout=10, what=f"the background child to be killed ({what})")


def test_a_shell_that_itself_runs_past_the_timeout_is_timed_out(inproc_factory: DaemonFactory) -> None:
    """The contrast to the test above: the same timeout, but the shell itself is still running."""
    d = inproc_factory()
    d.enqueue("slow", f"sleep {DRAIN_AFTER_EXIT_S * 10:g}", timeout_s=DRAIN_AFTER_EXIT_S / 4, max_retries=0)
    job = d.settle("slow")["slow"]
    assert job["state"] == "dead", job
    assert [outcome_of(a) for a in job["attempt_history"]] == ["timeout"], job
    assert "timed out" in (job["last_error"] or ""), job
