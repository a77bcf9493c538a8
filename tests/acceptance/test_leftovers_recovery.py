"""After kill -9 of the daemon, the next one kills the processes of the attempts that were
running, and nothing else: not a process that merely names the dead daemon as QUEUECTL_OWNER,
not one with the identity of an attempt that had ended. With both ways of tracking processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_faults import alive, kill_leftover_jobs, read_pid, settled
from tests.acceptance.test_leftovers import MODES, none_alive, start_tracked
from tests.conftest import Daemon, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too


@pytest.fixture
def bystanders(short_tmp: Path) -> Iterator[Callable[[dict[str, str]], int]]:
    """Start processes that are no job's (killed at teardown)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> int:
        proc = subprocess.Popen(["sleep", "300"], env={"PATH": os.environ["PATH"], "MARK": f"{short_tmp}/", **env},
                                start_new_session=True)
        started.append(proc)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("mode", MODES)
def test_recovery_kills_the_running_attempts_processes_and_nothing_else(
    daemon_factory: Callable[..., Daemon], short_tmp: Path, bystanders: Callable[[dict[str, str]], int], mode: str
) -> None:
    d = start_tracked(daemon_factory(), mode)
    d.cli("config", "set", "backoff-base", "1")
    # A job that completed, leaving a background process: killed at its end, before the crash.
    d.cli("enqueue", "--id", "done", "--command", f"sleep 300 > /dev/null 2>&1 & echo $! > {short_tmp}/done.pid")
    done_leftover = read_pid(short_tmp / "done.pid")
    assert settled(d, "done")["state"] == "completed"
    assert none_alive([done_leftover]), "a completed job's leftover is killed at its end"
    # A job running at the crash, with a child in a session of its own (the second attempt ends at once).
    d.cli("enqueue", "--id", "run", "--command",
          f'[ "$QUEUECTL_ATTEMPT" = 1 ] || exit 0; echo $$ > {short_tmp}/run.pid; '
          f"sh -c 'setsid sleep 300 & echo $! > {short_tmp}/run-gc.pid; wait' & sleep 300")
    running = [read_pid(short_tmp / "run.pid"), read_pid(short_tmp / "run-gc.pid")]
    owner = d.job("run")["owner"]
    assert owner and d.job("done")["owner"] in (None, owner)
    # Not any attempt's: one names the dead daemon as its owner, one the attempt that completed.
    named_owner = bystanders({"QUEUECTL_OWNER": owner})
    ended_attempt = bystanders({"QUEUECTL_ATTEMPT_ID": f"{owner}/done/1", "QUEUECTL_OWNER": owner,
                                "QUEUECTL_JOB_ID": "done", "QUEUECTL_ATTEMPT": "1"})

    d.kill9_with_keeper()
    assert all(alive(p) for p in running), "the attempt's processes outlive a SIGKILLed daemon and keeper"
    start_tracked(d, mode)
    job = settled(d, "run")
    assert job["state"] == "completed" and [a["reason"] for a in job["attempt_history"]][0].startswith("worker lost"), job
    assert none_alive(running), f"still alive: {[p for p in running if alive(p)]}"
    assert alive(named_owner), "a process that only names the dead owner was killed"
    assert alive(ended_attempt), "a process with the identity of an attempt that had ended was killed"
    if mode == "cgroup":
        suffix = "-".join(owner.rsplit(":", 2)[-2:])
        from queuectld.cgroups import cgroup_base

        base = cgroup_base()[0]
        assert base is not None
        wait_until(lambda: not os.path.exists(f"{base}/queuectl-{suffix}"), timeout=5,
                   what="the dead daemon's cgroup to be removed")
    assert d.stop(signal.SIGTERM) == 0
