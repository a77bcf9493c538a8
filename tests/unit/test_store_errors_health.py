"""Store health (status's `store` object, each failure logged once) and output a full disk drops."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from queuectl import errors
from queuectld.jobs import Job, JobState
from queuectld.runner import Attempt
from queuectld.store_health import ROOM_BYTES, RepeatFilter, StoreHealth, StoreState


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(room: int = 10 * ROOM_BYTES) -> tuple[StoreHealth, Clock, list[int]]:
    clock, free = Clock(), [room]
    return StoreHealth("/state", clock=clock, room=lambda _: free[0]), clock, free


DAMAGED = errors.StoreDamaged(detail="database disk image is malformed")
FULL = errors.DiskFull(path="/state")


def test_a_damaged_page_degrades_the_store_until_restart() -> None:
    h, clock, _ = health()
    h.failed(DAMAGED)
    assert h.view() == {"state": "degraded", "detail": DAMAGED.message, "since": 1000.0}
    clock.now += 5
    h.succeeded(wrote=True)
    h.failed(FULL)  # a full disk on top does not hide the damage
    h.succeeded(wrote=True)
    assert h.state is StoreState.DEGRADED and h.since == 1000.0


def test_a_full_disk_clears_on_a_write_that_succeeds_with_room_again() -> None:
    h, clock, free = health(room=0)
    h.failed(FULL)
    assert h.state is StoreState.DISK_FULL and h.detail == FULL.message
    h.succeeded(wrote=False)  # reads work on a full disk: they prove nothing
    h.succeeded(wrote=True)  # a write that fitted in space already allocated: still full
    assert h.state is StoreState.DISK_FULL
    free[0] = ROOM_BYTES
    h.succeeded(wrote=True)
    assert h.view() == {"state": "ok", "detail": None, "since": None}


def test_an_unavailable_store_clears_on_any_success() -> None:
    h, _, _ = health()
    h.failed(errors.StoreUnavailable(detail="connection refused"))
    assert h.state is StoreState.UNAVAILABLE
    h.succeeded(wrote=False)
    assert h.state is StoreState.OK


def test_domain_answers_are_not_store_failures() -> None:
    h, _, _ = health()
    for exc in (errors.JobNotFound(job_id="x"), errors.DuplicateJob(job_id="x"), errors.StoreBusy()):
        h.failed(exc)
    assert h.state is StoreState.OK


def test_repeated_failures_are_logged_once_a_window(caplog: pytest.LogCaptureFixture) -> None:
    h, clock, _ = health(room=0)
    with caplog.at_level(logging.ERROR, logger="queuectld.store"):
        for _ in range(50):  # every request and every retry of a minute
            h.failed(FULL)
            clock.now += 1
        h.failed(DAMAGED)  # a different failure is news
        clock.now += 60
        h.failed(FULL)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "(and 49 more time(s) in the last 60s)" in lines[2]


def test_an_unrecognized_failure_keeps_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    h, _, _ = health()
    try:
        try:
            sqlite3.connect(":memory:").execute("SELECT nonsense(")
        except sqlite3.Error as cause:
            raise errors.OutcomeUnknown(detail="x") from cause
    except errors.OutcomeUnknown as exc:
        with caplog.at_level(logging.ERROR, logger="queuectld.store"):
            h.failed(exc)
            h.failed(exc)
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None


def test_repeat_filter_forgets_old_keys() -> None:
    f = RepeatFilter(window_s=10)
    for i in range(300):
        assert f.check(f"k{i}", float(i))[0]
    assert len(f._seen) <= 257


def attempt(log_file: str) -> Attempt:
    job = Job(id="j", command="true", state=JobState.PROCESSING, attempts=0, max_retries=0, priority=0,
              timeout_s=None, next_run_at=None, created_at=0.0, updated_at=0.0, run=1)
    from queuectld.proctree import ChildReaper
    from queuectld.tracking import TreeTracker

    return Attempt(job, "owner", log_file, timeout_s=None, kill_grace_s=1, output_max_bytes=1 << 20,
                   tracker=TreeTracker(ChildReaper()))


def test_output_on_a_full_disk_is_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    a = attempt("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with caplog.at_level(logging.WARNING, logger="queuectld.runner"):
        for _ in range(5):
            a._write_output(b"x" * 70_000)  # the job goes on printing; the pipe is drained
        a._write_output(b"last words\n")
    assert [r.getMessage() for r in caplog.records if "output dropped" in r.getMessage()] == [
        "job j attempt 1: output dropped from byte 0 (disk full: /dev/full); the job keeps running"
    ]
    tail = a.tail_text()
    assert tail is not None and "last words\n" in tail
    assert tail.endswith("[queuectl: output dropped from byte 0: disk full]\n")


def test_output_says_from_which_byte_it_was_dropped(tmp_path: Path) -> None:
    a = attempt(str(tmp_path / "j.1.log"))
    a._write_output(b"kept\n")
    log_fd = a._log._fd
    assert log_fd is not None
    os.close(log_fd)
    a._log._fd = os.open(tmp_path / "j.1.log", os.O_RDONLY)  # the next write fails (EBADF)
    a._write_output(b"lost\n")
    assert a.tail_text() == "kept\nlost\n\n[queuectl: output dropped from byte 5: Bad file descriptor]\n"
    assert (tmp_path / "j.1.log").read_bytes() == b"kept\n"
