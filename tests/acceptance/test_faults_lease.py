"""Leases and fencing: a daemon that stops answering (SIGSTOP) loses its attempts to a live peer
sharing the store, and when it wakes up its stale result is dropped: one job is never completed
twice or by two owners.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.test_faults import alive, kill_leftover_jobs, read_pid, settled
from tests.conftest import Daemon, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too


def freeze(daemon: Daemon, db: Path) -> None:
    """SIGSTOP the daemon at a moment it holds no SQLite write lock.

    Stopped inside a write transaction it would keep the lock, and no peer could write at all
    (SQLite is one host's store; the test only borrows it to play two daemons).
    """
    assert daemon.proc is not None
    for _ in range(50):
        daemon.proc.send_signal(signal.SIGSTOP)
        conn = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            daemon.proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            conn.close()
    pytest.fail("the daemon always held the SQLite write lock")


@pytest.mark.slow
def test_a_frozen_daemon_loses_its_lease_to_a_peer_and_its_late_result_is_dropped(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    db = f"sqlite:///{short_tmp}/shared.db"
    marks = short_tmp / "marks"
    a = daemon_factory("a").start("--workers", "1", "--lease-seconds", "1", "--db", db)
    a.cli("config", "set", "backoff-base", "1")
    a.cli("enqueue", "--id", "j", "--command",
          f'echo "start $QUEUECTL_ATTEMPT" >> {marks}; '
          f'[ "$QUEUECTL_ATTEMPT" = 1 ] && {{ echo $$ > {short_tmp}/first.pid; sleep 300; }}; '
          f'echo "end $QUEUECTL_ATTEMPT" >> {marks}')
    first = read_pid(short_tmp / "first.pid")
    owner_a = a.json("status")["daemon"]["owner"]
    assert a.proc is not None
    freeze(a, short_tmp / "shared.db")
    try:
        b = daemon_factory("b").start("--workers", "1", "--lease-seconds", "1", "--db", db)
        owner_b = b.json("status")["daemon"]["owner"]
        # b sees the lease expire, kills the attempt's processes on this host, and retries the job.
        job = settled(b, "j")
        assert not alive(first), "the attempt whose lease was lost must be killed before its retry runs"
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert job["state"] == "completed" and job["attempts"] == 1, job
    history = [(h["owner"], h["reason"][:11]) for h in job["attempt_history"]]
    assert history == [(owner_a, "worker lost"), (owner_b, "exit")], history

    # a wakes up, finds its lease gone, and ends its attempt without touching the job.
    wait_until(lambda: a.json("status")["workers"]["busy"] == 0, what="the frozen daemon to drop its attempt")
    again = b.job("j")
    assert (again["state"], again["attempts"], len(again["attempt_history"])) == ("completed", 1, 2), again
    assert again["attempt_history"][0]["reason"].startswith("worker lost"), "a's stale result overwrote it"
    assert marks.read_text().split("\n") == ["start 1", "start 2", "end 2", ""]
    assert a.running and b.running
