"""Several daemons sharing one PostgreSQL database: the multi-host mode, with real executables.

Two `queuectld` processes (separate state dirs and sockets, as on two hosts) share one schema.
Skipped, with the reason, when QUEUECTL_TEST_PG_URL is not set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_until
from tests.store.conftest import PG_SKIP_REASON, PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)


def test_two_daemons_share_one_queue_and_run_each_job_once(
    daemon_factory: Callable[..., Daemon], shared_db: str, short_tmp: Path
) -> None:
    a = daemon_factory("a", db_url=shared_db).start("--workers", "2")
    b = daemon_factory("b", db_url=shared_db).start("--workers", "2")
    out = short_tmp / "ran.txt"
    lines = "\n".join(
        f'{{"id": "m{i:03d}", "command": "echo $QUEUECTL_JOB_ID $QUEUECTL_OWNER >> {out}"}}' for i in range(200)
    )
    a.cli("enqueue", "--file", "-", input=lines + "\n")

    wait_until(lambda: a.json("status")["counts"]["completed"] == 200, timeout=120, what="200 jobs completed")
    runs = [line.split() for line in out.read_text().splitlines()]
    per_job = Counter(job_id for job_id, _ in runs)
    assert sorted(per_job) == [f"m{i:03d}" for i in range(200)]
    assert max(per_job.values()) == 1, [j for j, n in per_job.items() if n > 1]
    # Both daemons see the same queue, whichever one is asked.
    assert b.json("status")["counts"]["completed"] == 200
    workers = b.json("status")["workers"]
    assert (workers["daemons"], workers["slots"]) == (2, 4)  # its own 2 slots and its peer's 2


def test_an_idle_daemon_wakes_when_a_peer_enqueues(
    daemon_factory: Callable[..., Daemon], shared_db: str, short_tmp: Path
) -> None:
    # B's timers are minutes apart (lease 600 s: maintenance every 200 s), so only the NOTIFY
    # sent with A's enqueue can wake it within the wait below. A itself does not claim.
    a = daemon_factory("a", db_url=shared_db).start("--workers", "1")
    a.cli("worker", "stop")
    b = daemon_factory("b", db_url=shared_db).start("--workers", "1", "--lease-seconds", "600")
    marker = short_tmp / "woke"

    a.cli("enqueue", "--id", "wake", "--command", f"echo $QUEUECTL_OWNER > {marker}")
    job = a.wait_state("wake", "completed", "dead", timeout=60)
    assert job["state"] == "completed"
    owner_b = b.json("daemon", "status")["owner"]
    assert marker.read_text().strip() == owner_b
