"""Signals to the daemon: SIGHUP reopens the log file (logrotate renames it, then signals), and
in the foreground without a log file it is ignored; the daemon lives on and keeps running jobs.
(TERM and INT, drain and force, are tested in test_faults.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.acceptance.test_faults import kill_leftover_jobs, settled
from tests.conftest import Daemon, executable, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too


@pytest.fixture
def detached(daemon_factory) -> Iterator[Daemon]:  # type: ignore[no-untyped-def]
    """A daemon started the way a user would, with `queuectld --detach` (logging to its file)."""
    d = daemon_factory()
    started = subprocess.run([executable("queuectld"), "--detach", "--log-level", "DEBUG"], env=d.env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started
    yield d
    d.cli("daemon", "stop", check=False, timeout=60)


def daemon_pid(d: Daemon) -> int:
    """The detached daemon's pid, from `daemon status`."""
    return int(d.json("daemon", "status")["pid"])


def test_sighup_reopens_the_log_file_after_logrotate_renamed_it(detached: Daemon) -> None:
    log = detached.state_dir / "queuectld.log"
    rotated = log.with_name("queuectld.log.1")
    detached.cli("enqueue", "--id", "before", "--command", "true")
    assert settled(detached, "before")["state"] == "completed"
    wait_until(lambda: "job before completed" in log.read_text(), what="the first job in the log")

    log.rename(rotated)  # what logrotate does, before it sends SIGHUP
    pid = daemon_pid(detached)
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: log.exists() and "reopened the log file" in log.read_text(), what="a new log file")
    detached.cli("enqueue", "--id", "after", "--command", "true")
    assert settled(detached, "after")["state"] == "completed"

    wait_until(lambda: "job after completed" in log.read_text(), what="the second job in the new log")
    assert "job after" not in rotated.read_text(), "new lines go to the new file only"
    assert "job before completed" in rotated.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert daemon_pid(detached) == pid, "the same daemon, alive"


def test_sighup_in_the_foreground_without_a_log_file_is_ignored(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP ignored" in daemon.log_text(), what="the daemon to log the SIGHUP")
    assert daemon.running
    daemon.cli("enqueue", "--id", "still", "--command", "echo still here")
    job = settled(daemon, "still")
    assert job["state"] == "completed" and job["output_tail"] == "still here\n"
    assert daemon.stop() == 0, "SIGTERM still drains and exits 0"
    assert not daemon.socket.exists()
