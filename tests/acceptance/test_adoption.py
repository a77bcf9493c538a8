"""Running jobs survive a daemon restart: a daemon started (after kill -9, or by `daemon
restart` / `queuectld --replace`) on a state dir whose job keeper still runs attempts adopts
them: they keep running, their output continues in the same log, and their end is recorded once,
with no attempt counted twice. Jobs record their runs, so a repeated run is caught."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_until


def test_a_daemon_killed_with_minus_9_and_started_again_adopts_its_running_jobs(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    d = daemon_factory().start("--workers", "2")
    runs = short_tmp / "runs"
    go = short_tmp / "go"
    ids = ["keep0", "keep1"]
    for job_id in ids:
        d.cli("enqueue", "--id", job_id, "--command",
              f"echo start {job_id} >> {runs}; echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after")
    wait_until(lambda: runs.exists() and len(runs.read_text().split("\n")) > len(ids), timeout=30,
               what="both jobs running")
    d.kill9()
    d.start("--workers", "2")
    go.touch()
    for job_id in ids:
        job = d.wait_state(job_id, "completed", "dead", timeout=60)
        assert job["state"] == "completed", job.get("last_error")
        assert len(job["attempt_history"]) == 1, job["attempt_history"]
        assert d.cli("logs", job_id).stdout == "before\nafter\n"
    assert sorted(runs.read_text().split("\n")[:-1]) == [f"start {j}" for j in ids], "each ran once"


def test_a_job_keeper_killed_with_minus_9_costs_its_running_job_one_attempt_and_nothing_else(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    """The keeper dies (kill -9, an OOM kill): the daemon kills what its attempt left (no process
    of it runs on unseen), records the attempt as killed, starts a new keeper, and the retry runs."""
    import os
    import signal
    import time

    d = daemon_factory().start("--workers", "1")
    runs = short_tmp / "runs"
    d.cli("enqueue", "--id", "k", "--max-retries", "2", "--command",
          f"echo start $QUEUECTL_ATTEMPT >> {runs}; sleep 4; echo end $QUEUECTL_ATTEMPT >> {runs}")
    wait_until(lambda: runs.exists() and "start 1" in runs.read_text(), timeout=30, what="attempt 1 running")
    [keeper] = d.keeper_pids()
    from queuectld.cgroups import cgroup_base

    base = cgroup_base()[0]  # the keeper's cgroups sit beside ours (it is our descendant)
    keeper_cgroups = list(Path(base).glob(f"queuectl-{keeper}-*")) if base else []
    os.kill(keeper, signal.SIGKILL)
    job = d.wait_state("k", "completed", "dead", timeout=60)
    assert job["state"] == "completed", job.get("last_error")
    first, second = job["attempt_history"]
    assert first["outcome"] == "killed" and "job keeper stopped" in first["error"], first
    assert second["outcome"] == "exit" and second["exit_code"] == 0
    time.sleep(0.5)
    assert runs.read_text().split("\n")[:-1] == ["start 1", "start 2", "end 2"], "attempt 1 never ran on"
    assert d.keeper_pids() not in ([], [keeper]), "a new keeper serves the daemon"
    assert not [c for c in keeper_cgroups if c.exists()], "the dead keeper's cgroups are removed"
