"""A full disk under a running daemon: it keeps running, refuses enqueues with one clear line,
holds the results of attempts that end meanwhile, drops output it cannot write, and carries on
without a restart when space returns.

The disk is a real one: the state dir is a 4 MiB tmpfs (mounted as root; skipped otherwise),
filled to the last byte. The jobs record their runs in a file outside it, so a lost or repeated
run is caught.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Daemon, assert_clean_failure, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the state dir needs root")

GATED = 6
FULL = "is full; nothing was stored"


@contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (0700, as the daemon wants its state dir)."""
    path.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Append to `path` until the file system holding it has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def empty_wal(db: Path) -> None:
    """Checkpoint the daemon's WAL into the database and truncate it to 0 bytes, so that its next
    write must grow a file: on a full disk, every write then fails."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()


def fill_disk(state: Path) -> None:
    """Fill the disk and leave the daemon's WAL empty (twice: the daemon may write in between)."""
    for n in range(2):
        empty_wal(state / "queuectl.db")
        fill(state / f"filler{n}")


def test_a_full_disk_holds_results_and_everything_carries_on_when_space_returns(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory()
    marks, go = d.root / "marks", d.root / "go"
    with small_tmpfs(d.state_dir):
        try:
            run_scenario(d, marks, go)
        finally:
            d.cleanup()


def run_scenario(d: Daemon, marks: Path, go: Path) -> None:
    # Leases of 3 s: maintenance (renewal, recovery, WAL checkpoint) runs every second.
    d.start("--workers", "2", "--lease-seconds", "3")
    pid = d.json("status")["daemon"]["pid"]
    ids = [f"g{i}" for i in range(GATED)]
    for job_id in ids:
        # Waits for the go file, records its run outside the tmpfs, then prints 300 KB.
        d.cli("enqueue", "--id", job_id, "--command",
              f"while [ ! -e {go} ]; do sleep 0.05; done; echo $QUEUECTL_JOB_ID >> {marks}; "
              "head -c 300000 /dev/zero | tr '\\0' x; echo; echo tail-of-$QUEUECTL_JOB_ID")
    wait_until(lambda: d.json("status")["counts"]["processing"] == 2, what="two jobs to start")
    running = sorted(j["id"] for j in d.json("list", "--state", "processing"))

    fill_disk(d.state_dir)
    # Enqueues are refused with one line, and change nothing.
    assert_clean_failure(d.cli("enqueue", "--id", "late", "--command", "true", check=False),
                         FULL, str(d.state_dir))
    batch = "".join(f'{{"id": "b{i}", "command": "echo {"y" * 100_000}"}}\n' for i in range(20))
    assert_clean_failure(d.cli("enqueue", "--file", "-", input=batch, check=False), FULL)
    assert sorted(j["id"] for j in d.json("list")) == ids
    status = d.json("status")
    assert status["store"]["state"] == "disk full", status["store"]
    assert "queuectl status" not in d.cli("status").stdout and "disk full" in d.cli("status").stdout

    # The running jobs end: their output cannot be written, their results cannot be stored.
    go.touch()
    wait_until(lambda: marks.exists() and len(marks.read_text().split()) == 2, what="the running jobs to end")
    time.sleep(4)  # several maintenance ticks (each with a WAL checkpoint) and scheduler retries
    assert d.running, d.log_text()[-3000:]
    for job_id in running:
        assert d.job(job_id)["state"] == "processing", "its result is held in memory, not yet stored"
    log = d.log_text()
    shown = [line for line in log.splitlines() if " DEBUG " not in line]  # the test daemon logs at DEBUG
    assert sum("output dropped from byte" in line for line in shown) == 2, log[-3000:]
    assert sum("The disk holding" in line for line in shown) == 1, f"a repeated failure is logged once:\n{log[-3000:]}"
    assert sum("holding" in line and "in memory" in line for line in shown) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    # Space returns: the held results land, the waiting jobs run, new enqueues work.
    for filler in d.state_dir.glob("filler*"):
        filler.unlink()
    wait = d.cli("wait", *ids, "--timeout", "60", check=False)
    assert wait.returncode == 0, (wait.stdout, wait.stderr, d.log_text()[-3000:])
    d.cli("enqueue", "--id", "after", "--command", f"echo $QUEUECTL_JOB_ID >> {marks}")
    assert d.wait_state("after", "completed")["state"] == "completed"
    wait_until(lambda: d.json("status")["store"]["state"] == "ok", what="status to show the store ok again")

    # Every job ran exactly once and was recorded once: one attempt each, none failed.
    assert sorted(marks.read_text().split()) == sorted([*ids, "after"])
    for job_id in ids:
        job = d.job(job_id)
        assert job["state"] == "completed" and job["attempts"] == 0, job
        assert len(job["attempt_history"]) == 1, job["attempt_history"]
        if job_id in running:
            assert "[queuectl: output dropped from byte 0: disk full]" in job["output_tail"], job["output_tail"]
        else:
            assert job["output_tail"].endswith(f"tail-of-{job_id}\n"), job["output_tail"][-200:]
    assert "held result(s) of finished attempts" in d.log_text()
    assert d.running and d.json("status")["daemon"]["pid"] == pid, "the daemon never restarted"
    assert "Traceback" not in d.log_text()


def test_a_second_sigterm_on_a_full_disk_stops_the_daemon_and_the_next_start_recovers_the_jobs(
    daemon_factory: Callable[..., Daemon],
) -> None:
    # Without the forced stop, the daemon waits for space forever, holding results no one can
    # store; with it, it exits, the jobs stay `processing` in the store, and the next start records
    # the ends the job keeper kept for it.
    d = daemon_factory()
    marks = d.root / "marks"
    with small_tmpfs(d.state_dir):
        try:
            d.start("--workers", "1", "--lease-seconds", "2")
            # The job ends only once the disk is full: a fixed sleep could end it before a busy
            # machine's poll ever saw it processing.
            go = d.root / "go"
            d.cli("enqueue", "--id", "held", "--command",
                  f"while [ ! -e {go} ]; do sleep 0.05; done; echo $QUEUECTL_JOB_ID >> {marks}")
            d.wait_state("held", "processing")
            fill_disk(d.state_dir)
            go.touch()
            wait_until(lambda: marks.exists(), what="the job to end")
            wait_until(lambda: "in memory" in d.log_text(), what="its result to be held")
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(20)  # raises TimeoutExpired if the daemon keeps waiting for space
            assert "the job keeper keeps them, and the next start records them" in d.log_text()
            assert "Traceback" not in d.log_text()

            for filler in d.state_dir.glob("filler*"):
                filler.unlink()
            d.start("--workers", "1", "--lease-seconds", "2")
            job = d.wait_state("held", "completed", timeout=60)
            # The keeper kept the end the daemon could not store: the next start records it, once.
            assert marks.read_text().split() == ["held"]
            assert [(a["outcome"], a["exit_code"]) for a in job["attempt_history"]] == [("exit", 0)], job
        finally:
            d.cleanup()
