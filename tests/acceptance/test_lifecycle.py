"""End to end through the real `queuectld` and `queuectl` executables: what `wait` prints and
how it exits, and the daemon's own start/stop rules (--detach, one daemon per state dir and
socket, a stale socket after kill -9).

A job's life itself (completion, backoff into the DLQ and back, restarts, concurrency without
duplicates, worker stop/start, `job.wait`) is tested in process: tests/integration/test_job_lifecycle.py.
Every test polls a condition (never a fixed sleep) and none asserts on wall-clock speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, assert_clean_failure, executable, wait_until


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- 8: wait -------------------------------------------------------------------------------------


def test_wait_exits_zero_only_when_all_completed(module_daemon: Daemon) -> None:
    daemon = module_daemon
    daemon.cli("enqueue", "--id", "w-a", "--command", "true")
    daemon.cli("enqueue", "--id", "w-b", "--command", "echo b")
    r = daemon.cli("wait", "w-a", "w-b", "--timeout", "30")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["w-a: completed", "w-b: completed"]
    assert daemon.json("wait", "w-a", "w-b") == {"done": True, "states": {"w-a": "completed", "w-b": "completed"}}


def test_wait_fails_when_a_job_is_dead_or_canceled(module_daemon: Daemon) -> None:
    daemon = module_daemon
    daemon.cli("enqueue", "--id", "good", "--command", "true")
    daemon.cli("enqueue", "--id", "bad", "--max-retries", "0", "--command", "exit 4")
    daemon.cli("enqueue", "--id", "dropped", "--delay", "600", "--command", "true")
    daemon.cli("cancel", "dropped")

    r = daemon.cli("wait", "good", "bad", "--timeout", "30", check=False)
    assert r.returncode != 0
    assert "bad: dead" in r.stdout and "good: completed" in r.stdout
    assert "Traceback" not in r.stderr

    r = daemon.cli("wait", "good", "dropped", "--timeout", "30", check=False)
    assert r.returncode != 0
    assert "dropped: canceled" in r.stdout
    assert "Traceback" not in r.stderr


def test_wait_timeout_gives_a_clear_message(module_daemon: Daemon) -> None:
    daemon = module_daemon
    daemon.cli("enqueue", "--id", "slow", "--delay", "600", "--command", "true")
    r = daemon.cli("wait", "slow", "--timeout", "0.5", check=False)
    line = assert_clean_failure(r, "0.5")
    assert "timed out" in line.lower()
    assert daemon.job("slow")["state"] == "pending"  # waiting changes nothing


# -- 9: the daemon's own start and stop ------------------------------------------------------------


@pytest.fixture
def detached_pids() -> Iterator[list[int]]:
    """Pids of daemons a test started with --detach; any still alive are stopped afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def run_daemon(d: Daemon, *args: str, state_dir: Path | None = None, socket: Path | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `queuectld ARGS` to completion (killing it if it wrongly keeps running)."""
    cmd = [executable("queuectld"), "--state-dir", str(state_dir or d.state_dir),
           "--socket", str(socket or d.socket), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=d.env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"queuectld {' '.join(args)} did not exit within {timeout}s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_detach_returns_once_ready_and_daemon_stop_stops_it(
    daemon_factory: Callable[..., Daemon], detached_pids: list[int]
) -> None:
    d = daemon_factory()
    r = run_daemon(d, "--detach", "--workers", "1")
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.split("pid ", 1)[1].split(")", 1)[0])
    detached_pids.append(pid)
    # Ready means ready: the very first request succeeds, with no retrying.
    status = d.cli("status", "--json", check=False)
    assert status.returncode == 0, status.stderr
    assert d.json("daemon", "status")["pid"] == pid
    d.cli("enqueue", "--id", "x", "--command", "true")
    assert d.wait_state("x", "completed", "dead")["state"] == "completed"

    r = d.cli("daemon", "stop")
    assert "stopped" in r.stdout
    wait_until(lambda: not pid_alive(pid), what=f"detached queuectld {pid} to exit")
    assert not d.socket.exists()
    assert_clean_failure(d.cli("status", check=False), "queuectld --detach")


def test_second_daemon_on_same_state_dir_or_socket_is_refused(module_daemon: Daemon, short_tmp: Path) -> None:
    daemon = module_daemon
    pid = str(daemon.proc.pid) if daemon.proc else "?"
    # Same state dir (and socket), detached and in the foreground.
    for args in (("--detach",), ()):
        r = run_daemon(daemon, *args)
        assert r.returncode != 0
        assert "already running" in r.stderr and pid in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    # Same socket, another state dir.
    other = short_tmp / "other-state"
    r = run_daemon(daemon, state_dir=other)
    assert r.returncode != 0
    assert "already running" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # The first daemon is untouched by the attempts.
    assert daemon.running
    assert daemon.json("status")["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_stale_socket_after_kill9_is_cleaned_up_on_next_start(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "kept", "--command", "true")
    daemon.wait_state("kept", "completed")
    daemon.kill9()
    assert daemon.socket.exists(), "precondition: SIGKILL leaves the socket file behind"
    # A client facing the stale socket says the daemon is not running, and how to start it.
    assert_clean_failure(daemon.cli("status", check=False), "not running", "queuectld --detach")

    daemon.start("--workers", "1")
    assert "removing stale socket" in daemon.log_text()
    assert daemon.job("kept")["state"] == "completed"
