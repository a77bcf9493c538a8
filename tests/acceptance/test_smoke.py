"""The shortest path a user takes: start the daemon, enqueue, see it complete."""

from __future__ import annotations

from tests.conftest import Daemon


def test_a_job_completes(daemon: Daemon) -> None:
    out = daemon.cli("enqueue", "--id", "hello", "--command", "echo hello world").stdout
    assert out.strip() == "enqueued hello"
    job = daemon.wait_state("hello", "completed", "dead")
    assert job["state"] == "completed"
    assert job["exit_code"] == 0
    assert daemon.cli("logs", "hello").stdout == "hello world\n"
