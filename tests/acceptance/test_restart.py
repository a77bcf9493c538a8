"""`queuectl daemon restart` and `queuectld --replace`: the running daemon hands over and exits
0, a new one (same flags, detached) takes its place on the same state dir, store and socket, with
a new pid; with no daemon running, `--replace` just starts and `daemon restart` refuses in one
line; a new daemon that cannot start leaves the old one running and says so. With the job keeper
wired into the daemon, a job running across the restart keeps running and ends with one attempt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_faults import kill_leftover_jobs, settled
from tests.conftest import Daemon, assert_clean_failure, executable, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too

RESTARTED = re.compile(r"^queuectld restarted \(pid (\d+) -> (\d+)\); (\d+) running job\(s\) kept$")


def answering_pid(d: Daemon) -> int | None:
    """The pid of the daemon answering on `d`'s socket, or None when none does."""
    r = d.cli("daemon", "status", "--json", check=False, timeout=30)
    return int(json.loads(r.stdout)["pid"]) if r.returncode == 0 else None


@pytest.fixture
def d(daemon_factory: Callable[..., Daemon]) -> Iterator[Daemon]:
    """A started daemon; at the end the daemon then answering on its socket (a detached
    replacement the fixture did not start) is stopped too."""
    daemon = daemon_factory().start("--workers", "1")
    yield daemon
    pid = answering_pid(daemon)
    if pid is not None and (daemon.proc is None or pid != daemon.proc.pid):
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=60,
                   what=f"the replacement daemon (pid {pid}) to exit")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def restart(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """`queuectl daemon restart`, which must succeed."""
    return d.cli("daemon", "restart", *args, timeout=150)


def test_restart_puts_a_new_daemon_in_place_of_the_old_one(d: Daemon) -> None:
    assert d.proc is not None
    old_pid = d.proc.pid
    d.cli("enqueue", "--id", "before", "--command", "echo before")
    assert settled(d, "before")["state"] == "completed"

    out = restart(d).stdout.strip().splitlines()
    assert len(out) == 1, out
    match = RESTARTED.match(out[0])
    assert match is not None, out
    assert int(match[1]) == old_pid and int(match[3]) == 0
    new_pid = int(match[2])
    assert new_pid != old_pid

    assert d.proc.wait(30) == 0, "the old daemon hands over and exits 0"
    assert answering_pid(d) == new_pid
    status = d.json("daemon", "status")
    assert status["state_dir"] == str(d.state_dir) and status["socket"] == str(d.socket)
    assert "--replace" in status["argv"] and "--detach" in status["argv"]
    assert d.job("before")["state"] == "completed", "the same store"
    d.cli("enqueue", "--id", "after", "--command", "echo after")
    job = settled(d, "after")
    assert job["state"] == "completed" and job["output_tail"] == "after\n"


def test_restart_json_and_a_second_restart(d: Daemon) -> None:
    assert d.proc is not None
    first = json.loads(restart(d, "--json").stdout)
    assert first["old_pid"] == d.proc.pid and first["pid"] != first["old_pid"] and first["running"] == 0
    assert first["log"] == str(d.state_dir / "queuectld.log")
    # The replacement was itself started with --replace --detach: restarting it adds neither twice.
    second = json.loads(restart(d, "--json").stdout)
    assert second["old_pid"] == first["pid"] and second["pid"] not in (first["pid"], first["old_pid"])
    argv = d.json("daemon", "status")["argv"]
    assert argv.count("--replace") == 1 and argv.count("--detach") == 1, argv
    wait_until(lambda: not os.path.exists(f"/proc/{first['pid']}") or _zombie(first["pid"]), timeout=30,
               what="the first replacement to exit")


def test_replace_in_the_foreground_takes_over_from_a_running_daemon(d: Daemon) -> None:
    old = d.proc
    assert old is not None
    d.start("--replace", "--workers", "1")  # the same state dir and socket, in the foreground
    assert old.wait(30) == 0
    assert d.proc is not None and d.proc is not old
    assert answering_pid(d) == d.proc.pid
    wait_until(lambda: f"queuectld (pid {old.pid}) has exited; taking over" in d.log_text(),
               what="the new daemon's log line about the handover")


def test_replace_refuses_a_daemon_of_another_state_dir(d: Daemon, daemon_factory: Callable[..., Daemon]) -> None:
    assert d.proc is not None
    other = daemon_factory("other")
    result = subprocess.run([executable("queuectld"), "--replace", "--state-dir", str(other.state_dir), "--socket",
                             str(d.socket)], env=other.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"queuectld: Could not take over with --replace: the daemon on {d.socket} (pid {d.proc.pid}) serves the "
        f"state dir {d.state_dir}, not {other.state_dir}; give --state-dir {d.state_dir} to replace it, or another "
        "--socket")
    assert d.running and answering_pid(d) == d.proc.pid, "asked nothing: it runs on"


def test_replace_with_no_daemon_running_just_starts(daemon_factory: Callable[..., Daemon]) -> None:
    fresh = daemon_factory("fresh")
    started = subprocess.run([executable("queuectld"), "--replace", "--detach"], env=fresh.env,
                             capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0, started
        assert started.stdout.startswith("queuectld started (pid "), started.stdout
        pid = answering_pid(fresh)
        assert pid is not None
        log = (fresh.state_dir / "queuectld.log").read_text()
        assert f"--replace: no daemon was running on {fresh.state_dir}; starting" in log
    finally:
        fresh.cli("daemon", "stop", check=False, timeout=60)


def test_restart_with_no_daemon_running_is_one_line_and_fails(daemon_factory: Callable[..., Daemon]) -> None:
    none = daemon_factory("none")
    result = none.cli("daemon", "restart", check=False)
    assert_clean_failure(result, f"No daemon is running at {none.socket}", "nothing to restart",
                         "`queuectld --detach`")


def test_a_new_daemon_that_cannot_start_leaves_the_old_one_running(d: Daemon) -> None:
    assert d.proc is not None
    os.chmod(d.state_dir, 0o755)  # the new daemon refuses a state dir others could reach
    try:
        result = d.cli("daemon", "restart", check=False, timeout=150)
    finally:
        os.chmod(d.state_dir, 0o700)
    line = assert_clean_failure(result, "queuectld was not restarted", "has mode 0755",
                                f"the old one (pid {d.proc.pid}) still runs", str(d.state_dir / "queuectld.log"))
    assert "chmod 700" in line
    assert d.running and answering_pid(d) == d.proc.pid


def test_a_new_daemon_that_fails_after_the_handover_says_none_runs_and_how_to_start_it(d: Daemon) -> None:
    assert d.proc is not None
    old_pid = d.proc.pid
    queue_id = d.state_dir / "queue-id"
    recorded = queue_id.read_text()
    queue_id.write_text("0" * 32 + "\n")  # another queue's id: the new daemon refuses the store
    result = d.cli("daemon", "restart", check=False, timeout=150)
    line = assert_clean_failure(result, "queuectld was not restarted", "Refusing to open the job store",
                                f"the old one (pid {old_pid}) has handed over and exited, so none runs now",
                                str(d.state_dir / "queuectld.log"))
    assert d.proc.wait(30) == 0
    assert answering_pid(d) is None
    command = line.split("start it again with `", 1)[1].split("`", 1)[0]
    assert command.endswith(" --replace --detach"), command

    queue_id.write_text(recorded)  # the problem fixed: the command it gave starts the daemon
    again = subprocess.run(command, shell=True, env=d.env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again
    assert answering_pid(d) not in (None, old_pid)


def test_a_job_running_across_the_restart_completes_with_exactly_one_attempt(d: Daemon, short_tmp: Path) -> None:
    assert d.proc is not None
    runs = short_tmp / "runs"
    go = short_tmp / "go"
    d.cli("enqueue", "--id", "across", "--command",
          f"echo start >> {runs}; echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after")
    wait_until(lambda: runs.exists() and d.job("across")["state"] == "processing", timeout=30,
               what="the job running")
    try:
        result = d.cli("daemon", "restart", check=False, timeout=150)
        assert result.returncode == 0, result.stderr
        match = RESTARTED.match(result.stdout.strip())
        assert match is not None and int(match[3]) == 1, result.stdout
        assert d.proc.wait(30) == 0
        assert d.job("across")["state"] == "processing", "still running under the new daemon"
    finally:
        go.touch()
    job = settled(d, "across")
    assert job["state"] == "completed", job.get("last_error")
    assert len(job["attempt_history"]) == 1, job["attempt_history"]
    assert job["attempt_history"][0]["outcome"] == "exit" and job["exit_code"] == 0
    assert d.cli("logs", "across").stdout == "before\nafter\n"
    assert runs.read_text() == "start\n", "it ran once"
