"""Output into a closed pipe (`queuectl list | head -1`): every command stops quietly with exit
status 141 (128 + SIGPIPE), no traceback, no message; `queuectld --detach` too (its daemon runs on).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.test_faults import kill_leftover_jobs, settled
from tests.conftest import Daemon, executable, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too

CLOSED_PIPE = 141


def into_closed_pipe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run with stdout on a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def with_a_job(module_daemon: Daemon) -> Daemon:
    """The module's daemon with a completed job `many` that printed 100,000 lines."""
    module_daemon.cli("enqueue", "--id", "many", "--command", "seq 1 100000")
    assert settled(module_daemon, "many")["state"] == "completed"
    return module_daemon


@pytest.mark.parametrize("args", [
    ["status"], ["status", "--json"], ["enqueue", "--command", "true"], ["list"], ["list", "--json"],
    ["show", "many"], ["logs", "many"], ["daemon", "status"], ["config", "list"], ["--help"],
], ids=" ".join)
def test_a_client_command_into_a_closed_pipe_ends_quietly(with_a_job: Daemon, args: list[str]) -> None:
    done = into_closed_pipe([executable("queuectl"), *args], with_a_job.env)
    assert (done.returncode, done.stderr) == (CLOSED_PIPE, "")


@pytest.mark.parametrize("command", ["logs many", "show many"])
def test_head_1_reads_the_first_line_and_the_client_exits_141(with_a_job: Daemon, command: str) -> None:
    # A real `| head -1`, closing the pipe while the client may still be writing.
    done = subprocess.run(["bash", "-c", f'{executable("queuectl")} {command} | head -1; echo "${{PIPESTATUS[0]}}" >&2'],
                          capture_output=True, text=True, env=with_a_job.env, timeout=60)
    first, *rest = done.stderr.splitlines() or [""]
    assert done.stdout.count("\n") == 1 and "Traceback" not in done.stderr, done
    assert rest == [] and first in ("0", str(CLOSED_PIPE)), done.stderr  # 0 when it all fit in the pipe


def test_detach_into_a_closed_pipe_ends_quietly_and_the_daemon_runs(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    done = into_closed_pipe([executable("queuectld"), "--detach"], d.env)
    try:
        assert (done.returncode, done.stderr) == (CLOSED_PIPE, "")
        wait_until(lambda: d.cli("status", check=False).returncode == 0, what="the detached daemon")
    finally:
        d.cli("daemon", "stop", check=False)
