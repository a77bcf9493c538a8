"""Crash safety: SIGKILL and SIGTERM the real daemon, crash it at its worst moments, restart it.

Nothing is lost (every job ends completed or dead per policy), nothing is left `processing`, and
an attempt and its retry never run side by side. The helpers here (process inspection through
/proc, and the fixture that kills whatever a test's jobs left behind) are shared by the other
fault-injection modules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, executable, wait_until

# -- processes, read from /proc ------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...), or None when it no longer exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def alive(pid: int) -> bool:
    """True while the process runs; a zombie is dead (nothing reaps orphans in some containers)."""
    return proc_state(pid) not in (None, "Z", "X")


def pids_with_env(text: str) -> list[int]:
    """Live processes with `text` in an entry of their environment."""
    needle = text.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env and alive(int(name)):
            found.append(int(name))
    return found


def job_pids(daemon: Daemon) -> list[int]:
    """Processes of any job run by this test's daemons (jobs inherit the daemon's QUEUECTL_STATE_DIR)."""
    return [pid for pid in pids_with_env(f"QUEUECTL_STATE_DIR={daemon.state_dir}\0")
            if daemon.proc is None or pid != daemon.proc.pid]


def defunct_children(pid: int) -> list[int]:
    """Children of `pid` in state Z: exited, never reaped."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] == b"Z":
            out.append(int(name))
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def read_pid(path: Path, timeout: float = 20) -> int:
    """Wait for a job to write its pid to `path`, then return it."""
    return int(wait_until(lambda: path.exists() and path.read_text().strip(), timeout, what=f"pid in {path}"))


@pytest.fixture(autouse=True)
def kill_leftover_jobs(short_tmp: Path) -> Iterator[None]:
    """After the test (and after the daemons are stopped), SIGKILL any job process it left behind.

    A SIGKILLed daemon's jobs survive it in their own sessions; a failing test must not leave them
    running on a shared machine. Jobs inherit paths under the test's temp dir in their environment
    (a job that clears its environment must name that dir in it). Set up before `daemon_factory`,
    so torn down after it.
    """
    yield
    for pid in pids_with_env(f"{short_tmp}/"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- reading jobs ---------------------------------------------------------------------------------


def ts(value: str | None) -> float:
    """A UTC timestamp from the JSON output, as UNIX seconds."""
    assert value is not None
    return datetime.fromisoformat(value).timestamp()


def jobs_by_id(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """`list --json`, keyed by id."""
    return {j["id"]: j for j in daemon.json("list")}


def settled(daemon: Daemon, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Block in `queuectl wait` until the job is completed, dead or canceled (or the timeout), then
    `show` it. One call, instead of polling that takes CPU from the daemon under test."""
    daemon.cli("wait", job_id, "--timeout", f"{timeout:g}", check=False, timeout=timeout + 30)
    return daemon.job(job_id)


def job_lines(commands: dict[str, str]) -> str:
    """JSON lines for `enqueue --file -`: one job per id."""
    return "".join(json.dumps({"id": i, "command": c}) + "\n" for i, c in commands.items())


def fast_retries(daemon: Daemon, base: str = "1") -> None:
    """backoff-base 1: every retry waits 1 s (1 ** n), exactly (no jitter)."""
    daemon.cli("config", "set", "backoff-base", base)
    daemon.cli("config", "set", "backoff-jitter", "0")


# -- 1. SIGKILL the daemon while 20 jobs run ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dies", ["daemon", "daemon and keeper"])
def test_sigkill_with_20_running_jobs_loses_nothing_and_never_runs_a_job_twice_at_once(
    daemon_factory: Callable[..., Daemon], short_tmp: Path, dies: str
) -> None:
    """kill -9 of the daemon alone: its job keeper runs the 20 attempts on and the next start
    adopts them, so each runs once. kill -9 of both: the next start recovers them (killing what
    is left of each first) and each runs again, never two at once."""
    marks, go = short_tmp / "marks", short_tmp / "go"
    d = daemon_factory().start("--workers", "20", "--lease-seconds", "3")
    fast_retries(d)
    # Every attempt blocks until the test lets it go, so all 20 surely run when the daemon dies.
    command = f'echo "start $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {marks}; ' \
              f'while [ ! -e {go} ]; do sleep 0.2; done; echo "end $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {marks}'
    ids = [f"j{i:02d}" for i in range(20)]
    d.cli("enqueue", "--file", "-", input=job_lines({i: command for i in ids}))
    wait_until(lambda: marks.exists() and marks.read_text().count("start ") == 20, what="20 jobs running")
    orphans = job_pids(d)
    assert orphans, "the jobs' processes should be visible in /proc"

    if dies == "daemon":
        d.kill9()
    else:
        d.kill9_with_keeper()
    assert any(alive(p) for p in orphans), "jobs run in their own sessions and outlive the daemon"
    d.start("--workers", "20", "--lease-seconds", "3")
    owner = d.json("status")["daemon"]["owner"]

    # Adoption, or recovery, ran before the daemon answered: no job still belongs to the dead daemon.
    after = jobs_by_id(d)
    assert sorted(after) == ids
    for job in after.values():
        assert job["state"] != "processing" or job["owner"] == owner, job
    if dies == "daemon":
        assert all(job["state"] == "processing" for job in after.values()), "adopted, still running"
    else:
        for job in after.values():
            assert job["attempts"] == 1, job
        # Recovery SIGKILLed them before the daemon answered; give the kernel a moment to finish them.
        wait_until(lambda: not any(alive(p) for p in orphans), timeout=5,
                   what=f"the killed daemon's attempts to be gone: {[p for p in orphans if alive(p)]}")

    go.touch()
    d.cli("wait", *ids, "--timeout", "60", check=False, timeout=90)
    jobs = jobs_by_id(d)
    for job in jobs.values():
        assert job["state"] == "completed", job
    history = d.job("j07")["attempt_history"]
    if dies == "daemon":
        assert [(a["outcome"], a["exit_code"]) for a in history] == [("exit", 0)], history
    else:
        assert [a["reason"] for a in history][0].startswith("worker lost")

    # Per job, adopted: attempt 1 ran to its end, once. Recovered: attempt 1 started and never
    # ended (killed), attempt 2 started only after it was dead and ran to its end. An orphan that
    # outlived recovery would append "end <id> 1".
    by_job: dict[str, list[str]] = {i: [] for i in ids}
    for line in marks.read_text().splitlines():
        what, job_id, attempt = line.split()
        by_job[job_id].append(f"{what} {attempt}")
    expected = ["start 1", "end 1"] if dies == "daemon" else ["start 1", "start 2", "end 2"]
    for job_id, events in by_job.items():
        assert events == expected, (job_id, events)


def test_recovery_kills_the_recorded_process_group_of_a_job_that_cleared_its_environment(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    d = daemon_factory().start("--workers", "2")
    # Attempt 1 drops QUEUECTL_OWNER (so the environment scan cannot find it): only the process
    # group recorded in the store leads recovery to it.
    d.cli("enqueue", "--id", "hidden", "--command",
          f'if [ "$QUEUECTL_ATTEMPT" = 1 ]; then echo $$ > {short_tmp}/hidden.pid; '
          f"exec env -i LEFTOVER={short_tmp}/ sleep 300; fi")
    hidden = read_pid(short_tmp / "hidden.pid")
    # Pids are written with the next result: let another job finish to have it recorded.
    d.cli("enqueue", "--id", "flush", "--command", "true")
    settled(d, "flush")

    d.kill9_with_keeper()
    assert alive(hidden)
    d.start("--workers", "2")
    wait_until(lambda: not alive(hidden), timeout=5, what="recovery to kill the attempt's process group")
    job = settled(d, "hidden")
    assert job["state"] == "completed" and job["attempts"] == 1, job
    assert job["attempt_history"][0]["reason"].startswith("worker lost")


# -- 4. SIGTERM drains; `daemon stop` does the same over the socket -------------------------------


@pytest.mark.parametrize("how", ["SIGTERM", "daemon stop"])
def test_stopping_the_daemon_lets_running_jobs_finish_and_claims_nothing_new(
    daemon_factory: Callable[..., Daemon], short_tmp: Path, how: str
) -> None:
    go = short_tmp / "go"
    d = daemon_factory().start("--workers", "2")
    # The running jobs block until the test lets them go, so the stop surely comes first.
    for job_id in ("a", "b"):
        d.cli("enqueue", "--id", job_id, "--command", f"echo $$ > {short_tmp}/{job_id}.pid; "
              f"while [ ! -e {go} ]; do sleep 0.05; done; echo finished")
    for job_id in ("a", "b"):
        read_pid(short_tmp / f"{job_id}.pid")
    d.cli("enqueue", "--id", "queued", "--command", "true")
    first_owner = d.json("status")["daemon"]["owner"]

    assert d.proc is not None
    stopper = None
    if how == "SIGTERM":
        d.proc.send_signal(signal.SIGTERM)
    else:
        stopper = subprocess.Popen([executable("queuectl"), "daemon", "stop"], env=d.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # While it drains, the daemon still answers, and claims nothing.
    wait_until(lambda: d.json("status")["workers"]["claiming"] is False, what="the daemon to begin its drain")
    assert d.running and d.json("status")["counts"]["processing"] == 2, "it waits for its running jobs"
    go.touch()
    assert d.proc.wait(30) == 0, d.log_text()[-2000:]
    if stopper is not None:
        out, err = stopper.communicate(timeout=30)
        assert stopper.returncode == 0, err
        assert "stopped" in out

    d.start("--workers", "2")
    for job_id in ("a", "b"):
        job = d.job(job_id)
        assert job["state"] == "completed", job
        assert [a["owner"] for a in job["attempt_history"]] == [first_owner], "one attempt, by the first daemon"
        assert job["output_tail"] == "finished\n"
    queued = settled(d, "queued")
    assert [a["owner"] for a in queued["attempt_history"]] != [first_owner], "a draining daemon claims nothing"


def test_a_second_sigterm_kills_running_jobs_and_returns_them_to_pending(
    daemon: Daemon, short_tmp: Path
) -> None:
    daemon.cli("enqueue", "--id", "long", "--command",
               f'[ "$QUEUECTL_ATTEMPT" = 1 ] && {{ echo $$ > {short_tmp}/long.pid; sleep 300; }}; echo again')
    shell = read_pid(short_tmp / "long.pid")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: daemon.json("status")["workers"]["claiming"] is False, what="the drain to begin")
    assert daemon.stop(signal.SIGTERM) == 0
    assert not alive(shell), "a forced stop kills running jobs"

    daemon.start("--workers", "1")
    job = settled(daemon, "long")
    assert job["state"] == "completed" and job["attempts"] == 0, "the killed attempt is not counted"
    assert job["attempt_history"][0]["reason"].startswith("stopped by"), job["attempt_history"]


# -- 5. a restart keeps next_run_at of jobs waiting in backoff ------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_keeps_the_backoff_of_waiting_jobs(daemon: Daemon, sig: signal.Signals) -> None:
    fast_retries(daemon, "4")  # attempt 1 failing -> the retry waits 4 s
    daemon.cli("enqueue", "--id", "flaky", "--max-retries", "2",
               "--command", 'test "$QUEUECTL_ATTEMPT" -ge 2 || exit 3')
    waiting = daemon.wait_state("flaky", "failed")
    due = ts(waiting["next_run_at"])
    assert due >= ts(waiting["finished_at"]) + 4 - 0.01

    if sig == signal.SIGKILL:
        daemon.kill9()
    else:
        assert daemon.stop(sig) == 0
    daemon.start("--workers", "1")
    kept = daemon.job("flaky")
    if kept["state"] == "failed":  # not yet due (a slow restart may already have run it)
        assert ts(kept["next_run_at"]) == pytest.approx(due, abs=0.001), kept

    job = settled(daemon, "flaky")
    assert job["state"] == "completed" and job["attempts"] == 1, job
    second = job["attempt_history"][1]
    assert ts(second["started_at"]) >= due, "the retry ran before its next_run_at"


# -- 8. crashes at the worst moments --------------------------------------------------------------


@pytest.mark.parametrize("point", ["after-claim", "after-exit"])
def test_a_crash_between_claim_and_result_ends_in_a_retry_never_processing(
    daemon_factory: Callable[..., Daemon], short_tmp: Path, point: str
) -> None:
    ran = short_tmp / "ran"
    d = daemon_factory().start("--workers", "1", env={"QUEUECTL_FAULT_POINT": point})
    fast_retries(d)
    # The claim may crash the daemon before it answers the enqueue: the job is stored all the same.
    d.cli("enqueue", "--id", "victim", "--command", f"echo $QUEUECTL_ATTEMPT >> {ran}", check=False)
    assert d.proc is not None
    assert d.proc.wait(30) == -signal.SIGKILL, "the fault point should have killed the daemon"
    assert "fault point " + point in d.log_text()

    d.start("--workers", "1")
    after_restart = d.job("victim")
    assert after_restart["owner"] in (None, d.json("status")["daemon"]["owner"]), after_restart
    job = settled(d, "victim")
    reasons = [a["reason"] for a in job["attempt_history"]]
    if point == "after-claim":
        # Recovery ran before the daemon answered: the lost attempt is counted, the dead owner is
        # gone; the first attempt never started a process.
        assert after_restart["attempts"] == 1, after_restart
        assert job["state"] == "completed" and job["attempts"] == 1, job
        assert len(reasons) == 2 and reasons[0].startswith("worker lost"), reasons
        assert ran.read_text().split() == ["2"]
    else:
        # It ran to its end in the job keeper, which kept the end the daemon died before writing:
        # the next start adopts it and records it, once. Nothing runs again.
        assert job["state"] == "completed" and job["attempts"] == 0, job
        assert [(a["outcome"], a["exit_code"]) for a in job["attempt_history"]] == [("exit", 0)], job
        assert ran.read_text().split() == ["1"]


@pytest.mark.slow
def test_a_job_that_crashes_the_daemon_every_time_ends_in_the_dlq(daemon_factory: Callable[..., Daemon]) -> None:
    crash = {"QUEUECTL_FAULT_POINT": "after-claim"}
    flags = ("--workers", "1", "--sync", "full")  # and the durable setting survives crashes too
    d = daemon_factory().start(*flags, env=crash)
    fast_retries(d)
    d.cli("enqueue", "--id", "poison", "--max-retries", "1", "--command", "true", check=False)
    crashes = 0
    # Each start recovers the previous crash as a failed attempt, then claims the job and dies.
    for _ in range(6):
        state = wait_until(lambda: (not d.running and "crashed") or _dead(d), timeout=30,
                           what="the daemon to crash or the job to reach the DLQ")
        if state != "crashed":
            break
        crashes += 1
        d.start(*flags, env=crash, wait=False)
    else:
        pytest.fail(f"the job still crashes the daemon after {crashes} starts:\n{d.log_text()[-3000:]}")
    assert crashes == 2, "one crash per attempt: the first and its retry"
    job = d.job("poison")
    assert job["state"] == "dead" and job["attempts"] == 2, job
    assert [a["reason"][:11] for a in job["attempt_history"]] == ["worker lost"] * 2
    assert d.running, "with the poison job in the DLQ the daemon stays up"
    assert [j["id"] for j in d.json("dlq", "list")] == ["poison"]


def _dead(d: Daemon) -> bool:
    """The poison job is in the DLQ (asked over the socket, which may not be up yet)."""
    r = d.cli("show", "poison", "--json", check=False, timeout=10)
    return r.returncode == 0 and json.loads(r.stdout)["state"] == "dead"
