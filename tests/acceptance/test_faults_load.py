"""The store under pressure: another process holding SQLite's write lock, and 2,000 jobs through
8 slots (each runs exactly once, and the daemon leaves no zombie behind).
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.test_faults import alive, defunct_children, kill_leftover_jobs, read_pid, settled
from tests.conftest import Daemon, executable, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too

#: Holds SQLite's write lock (BEGIN IMMEDIATE) from "locked" until a line arrives on stdin.
LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""

STORE_BUSY = "The job store is locked by another process; nothing was changed."


class WriteLock:
    """Another process holding the write lock on the daemon's SQLite file."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        """Commit (an empty transaction) and exit."""
        self.proc.communicate("\n", timeout=30)
        assert self.proc.returncode == 0


def counts(daemon: Daemon) -> dict[str, int]:
    """Jobs per state, from `status --json`."""
    return daemon.json("status")["counts"]


def enqueue_in_background(daemon: Daemon, job_id: str) -> subprocess.Popen[str]:
    """`queuectl enqueue` that may block on the lock: run it beside the test."""
    return subprocess.Popen([executable("queuectl"), "enqueue", "--id", job_id, "--command", f"echo {job_id}"],
                            env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- 6. another process holds the SQLite write lock -----------------------------------------------


@pytest.mark.slow
def test_a_foreign_write_lock_keeps_reads_answering_loses_nothing_and_the_daemon_catches_up(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    go = short_tmp / "go"
    d = daemon_factory().start("--workers", "2")
    d.cli("enqueue", "--id", "running", "--command",
          f"echo $$ > {short_tmp}/running.pid; while [ ! -e {go} ]; do sleep 0.05; done; echo done")
    shell = read_pid(short_tmp / "running.pid")

    lock = WriteLock(d.state_dir / "queuectl.db")
    try:
        # Reads keep answering: SQLite's WAL lets them go past a writer.
        assert d.json("status")["counts"]["processing"] == 1
        assert [j["id"] for j in d.json("list")] == ["running"]
        # A write held up longer than the daemon waits for the lock fails clearly and changes nothing.
        busy = enqueue_in_background(d, "refused")
        _, err = busy.communicate(timeout=60)
        assert busy.returncode != 0 and STORE_BUSY in err, err
        missing = d.cli("show", "refused", check=False)
        assert missing.returncode != 0 and "refused" in missing.stderr, "a refused enqueue left a job behind"
        go.touch()  # the job ends now; its result has to wait for the lock
        wait_until(lambda: not alive(shell), what="the job to exit")
        assert d.job("running")["state"] == "processing", "its result cannot be written yet"
        # A write that is waiting when the lock goes away succeeds.
        waiting = enqueue_in_background(d, "patient")
        time.sleep(0.5)  # give it time to reach the lock; without the lock it succeeds all the same
    finally:
        lock.release()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and "enqueued patient" in out, err
    assert d.running

    d.cli("enqueue", "--id", "refused", "--command", "echo refused")
    for job_id in ("running", "patient", "refused"):
        job = settled(d, job_id)
        assert job["state"] == "completed" and len(job["attempt_history"]) == 1, job
    assert d.job("running")["output_tail"] == "done\n"
    assert counts(d)["total"] == 3


# -- 9. 2,000 jobs through 8 slots -----------------------------------------------------------------


@pytest.mark.slow
def test_2000_jobs_through_8_slots_each_run_exactly_once_and_leave_no_zombie(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    marks = short_tmp / "marks"
    d = daemon_factory().start("--workers", "8")
    ids = [f"t{i:04d}" for i in range(2000)]
    d.cli("enqueue", "--file", "-", input="".join(
        json.dumps({"id": i, "command": f'true && echo "$QUEUECTL_JOB_ID" >> {marks}'}) + "\n" for i in ids))
    # Watch the marker file (cheap) rather than ask the daemon (each `queuectl` costs CPU it needs).
    wait_until(lambda: marks.exists() and marks.read_bytes().count(b"\n") >= 2000, timeout=100, interval=0.2,
               what="2,000 markers")
    wait_until(lambda: counts(d)["completed"] == 2000, timeout=15, interval=0.5, what="2,000 jobs to complete")

    seen = collections.Counter(marks.read_text().split())
    assert sorted(seen) == ids, "a job never ran, or something else ran"
    twice = [i for i, n in seen.items() if n != 1]
    assert not twice, f"jobs that ran more than once: {twice[:10]}"
    final = counts(d)
    assert final == {**{state: 0 for state in final}, "completed": 2000, "total": 2000}, final
    assert d.proc is not None
    assert not defunct_children(d.proc.pid), "the daemon left defunct (zombie) children"
