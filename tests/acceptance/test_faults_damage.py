"""A page of the SQLite file damaged under a running daemon: the daemon stays up and serves what
it can; requests that touch the damage get one clear error; `status` says the store is degraded.

The damage is real: the jobs table's leaf pages in the middle of the file (found with dbstat)
are overwritten with random bytes while the daemon runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, assert_clean_failure, wait_until

JOBS = 6000
DAMAGED_PAGES = 8
#: The message every request that hits the damage gets (queuectl.errors.StoreDamaged).
DAMAGED = "The job store is damaged"


def damage_jobs_pages(db: Path, *, holding: str | None = None) -> list[str]:
    """Overwrite DAMAGED_PAGES leaf pages of the jobs table two fifths into the file (or, with
    `holding`, the one page holding that job); return the ids of the jobs that lived on them
    (rows are in insertion order: job j<n> is rowid n + 1)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # every page is in the file itself
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = conn.execute(
            "SELECT pageno, ncell FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf' ORDER BY path"
        ).fetchall()
        rowid = holding and conn.execute("SELECT rowid FROM jobs WHERE id = ?", (holding,)).fetchone()[0]
    finally:
        conn.close()
    # Just past the start of the middle third (the urgent jobs): claims reach it after a few
    # hundred jobs rather than a thousand.
    first, count = len(leaves) * 2 // 5, DAMAGED_PAGES
    if rowid:
        first, count = next(i for i in range(len(leaves)) if sum(n for _, n in leaves[: i + 1]) >= rowid), 1
    rows_before = sum(n for _, n in leaves[:first])
    hit = leaves[first : first + count]
    assert all(pageno > 2 for pageno, _ in hit), "the header and schema pages stay intact"
    fd = os.open(db, os.O_WRONLY)
    try:
        for pageno, _ in hit:
            os.pwrite(fd, os.urandom(page_size), (pageno - 1) * page_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return [f"j{n:05d}" for n in range(rows_before, rows_before + sum(n for _, n in hit))]


def enqueue_many(d: Daemon, command: Callable[[int], str], priority: Callable[[int], int]) -> None:
    """JOBS jobs j00000... Commands are padded so the table far outgrows SQLite's page cache:
    the damage is read from disk."""
    d.cli("enqueue", "--file", "-", input="".join(
        json.dumps({"id": f"j{i:05d}", "command": f"{command(i)} # {'x' * 600}", "priority": priority(i)}) + "\n"
        for i in range(JOBS)
    ))


def test_a_damaged_page_fails_only_the_requests_that_touch_it(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "1")
    d.cli("worker", "stop")
    marks = d.root / "marks"
    enqueue_many(d, lambda i: f"echo $QUEUECTL_JOB_ID >> {marks}", lambda i: 1 if JOBS // 3 <= i < 2 * JOBS // 3 else 0)
    damaged = damage_jobs_pages(d.state_dir / "queuectl.db")
    assert damaged and JOBS // 3 <= int(damaged[0][1:]) and int(damaged[-1][1:]) < 2 * JOBS // 3, damaged[:3]

    # Claims go to the priority-1 jobs, in the middle of the table: they run until a claim reaches
    # the damaged pages (the daemon used to die there).
    d.cli("worker", "start")
    status = wait_until(lambda: (s := d.json("status"))["store"]["state"] == "degraded" and s, timeout=20,
                        what="status to show the store degraded")
    assert "database disk image is malformed" in status["store"]["detail"], status["store"]
    assert status["store"]["since"]
    assert d.running, d.log_text()[-3000:]

    # A request that touches the damage gets one clear line; one that does not is served.
    assert_clean_failure(d.cli("show", damaged[len(damaged) // 2], check=False), DAMAGED, "restore")
    assert_clean_failure(d.cli("list", check=False), DAMAGED)
    assert d.job("j00001")["state"] == "pending"
    assert d.cli("config", "get", "max-retries").stdout.strip() == "3"
    text = d.cli("status").stdout
    assert "degraded" in text and "JOBS" in text, text

    # Other jobs still run: a new, more urgent job lives on a healthy page and is claimed first.
    d.cli("enqueue", "--id", "urgent", "--priority", "5", "--command", f"echo urgent >> {marks}")
    assert d.wait_state("urgent", "completed")["state"] == "completed"
    ran = marks.read_text().split()
    assert len(ran) == len(set(ran)), "no job ran twice"
    assert "urgent" in ran and not set(damaged) & set(ran), "jobs on healthy pages ran, none on the damage"

    # Every request above hit the same damage: it is logged once, without a traceback.
    log = d.log_text()
    assert d.running, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    assert log.count("database disk image is malformed") == 1, log[-5000:]
    assert d.json("status")["store"]["state"] == "degraded"  # it stays so until a restart


def test_a_result_whose_row_is_damaged_does_not_hold_up_the_others(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "2")
    d.cli("worker", "stop")
    go = d.root / "go"
    gated = f"while [ ! -e {go} ]; do sleep 0.05; done"
    mid = f"j{JOBS // 2:05d}"
    enqueue_many(d, lambda i: gated if i == JOBS // 2 else "true", lambda i: 2 if i == JOBS // 2 else 0)
    d.cli("enqueue", "--id", "last", "--priority", "2", "--command", gated)
    d.cli("worker", "start", "--count", "2")
    wait_until(lambda: {j["id"] for j in d.json("list", "--state", "processing")} == {mid, "last"},
               what="both urgent jobs to start")

    assert mid in damage_jobs_pages(d.state_dir / "queuectl.db", holding=mid)
    # Another process writes: SQLite drops the daemon's page caches, so it reads the damaged page.
    with sqlite3.connect(d.state_dir / "queuectl.db") as conn:
        conn.execute("UPDATE meta SET value = value")
    d.cli("worker", "stop")  # only the two results are written from here on
    go.touch()

    # Both end together; one result cannot be stored, the other is.
    assert d.wait_state("last", "completed")["state"] == "completed"
    wait_until(lambda: d.json("status")["workers"]["busy"] == 0, what="both slots to be free")
    log = d.log_text()
    assert d.running, log[-3000:]
    assert log.count(f"job {mid} attempt 1 ended (exit code 0) but its row is on a damaged page") == 1, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    assert d.json("status")["store"]["state"] == "degraded"
