"""End to end: a job's whole life through the real `queuectld` and `queuectl` executables.

Completion, retries with exponential backoff into the DLQ and back, restarts that keep everything,
concurrency without duplicates, worker stop/start, `wait`, and the daemon's own start/stop rules.
Every test polls a condition (never a fixed sleep) and none asserts on wall-clock speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_clean_failure, executable, wait_until


def ts(value: str) -> float:
    """An ISO 8601 timestamp from the JSON output as UNIX seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def gate(path: Path) -> str:
    """A command that runs until `path` exists: lets a test decide when a job finishes."""
    return f"while [ ! -e {path} ]; do sleep 0.02; done; echo released"


def settle(d: Daemon, *ids: str) -> dict[str, dict[str, Any]]:
    """Block until the jobs are terminal (one `wait` call), then return them by id (one `list`)."""
    r = d.cli("wait", "--timeout", "60", *ids, check=False, timeout=90)
    assert r.returncode in (0, 1), f"wait failed: {r.stderr}"
    return {j["id"]: j for j in d.json("list") if j["id"] in ids}


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- 1, 11: a job completes; a missing command is an ordinary failure ------------------------------


def test_job_completes_and_logs_show_its_output(module_daemon: Daemon) -> None:
    daemon = module_daemon
    daemon.cli("enqueue", "--id", "ok", "--command", "echo out; echo err >&2")
    job = settle(daemon, "ok")["ok"]
    assert job["state"] == "completed"
    assert job["exit_code"] == 0
    assert job["attempts"] == 0
    assert job["last_error"] is None
    out = daemon.cli("logs", "ok").stdout
    assert "out\n" in out and "err\n" in out


def test_missing_command_is_an_ordinary_failure_with_exit_127(module_daemon: Daemon) -> None:
    daemon = module_daemon
    daemon.cli("enqueue", "--id", "nx", "--max-retries", "0", "--command", "no-such-command-qctl")
    job = settle(daemon, "nx")["nx"]
    assert job["state"] == "dead"
    assert job["exit_code"] == 127
    assert "127" in (job["last_error"] or "")
    assert "not found" in daemon.cli("logs", "nx").stdout
    # The daemon shrugs it off: it still answers and runs the next job.
    assert daemon.running
    daemon.cli("enqueue", "--id", "after", "--command", "true")
    assert settle(daemon, "after")["after"]["state"] == "completed"


# -- 2: retries with growing backoff, the DLQ, and dlq retry ---------------------------------------


def test_failing_job_backs_off_exponentially_then_dlq_retry_runs_it_again(daemon: Daemon) -> None:
    # delays: min(2**1, 3) = 2 s, then min(2**2, 3) = 3 s (capped): growing, quick, and long
    # enough for a poll through the CLI to see each wait even on a loaded machine.
    assert daemon.cli("config", "set", "backoff-base", "2").stdout.strip() == "backoff-base=2"
    assert daemon.cli("config", "set", "backoff-max", "3").stdout.strip() == "backoff-max=3"
    # Without jitter (default 0.1) the delays are exact; test_retry_rules checks the jitter.
    assert daemon.cli("config", "set", "backoff-jitter", "0").stdout.strip() == "backoff-jitter=0"
    ok_file = daemon.root / "ok"
    daemon.cli("enqueue", "--id", "flaky", "--max-retries", "2", "--command", f"test -e {ok_file} || exit 3")

    waiting: dict[int, dict[str, Any]] = {}  # attempts -> the job as seen while it waited

    def dead() -> dict[str, Any] | None:
        job = daemon.job("flaky")
        if job["state"] == "failed":
            waiting.setdefault(job["attempts"], job)
        return job if job["state"] == "dead" else None

    job = wait_until(dead, timeout=30, what="flaky to reach the DLQ")
    assert sorted(waiting) == [1, 2], "should have waited in backoff after attempts 1 and 2"
    delays = []
    for n in (1, 2):
        seen = waiting[n]
        failed_at = ts(seen["attempt_history"][n - 1]["finished_at"])
        delays.append(ts(seen["next_run_at"]) - failed_at)
    assert delays[0] == pytest.approx(2.0, abs=0.05)
    assert delays[1] == pytest.approx(3.0, abs=0.05)  # 2**2 = 4, capped by backoff-max
    assert delays[1] > delays[0]

    # max-retries counts retries after the first attempt: 1 + 2 runs, then the DLQ.
    assert job["attempts"] == 3
    assert job["exit_code"] == 3
    assert job["next_run_at"] is None
    history = job["attempt_history"]
    assert [a["exit_code"] for a in history] == [3, 3, 3]
    for n in (1, 2):  # no retry ran before its next_run_at
        assert ts(history[n]["started_at"]) >= ts(waiting[n]["next_run_at"]) - 0.01

    assert [j["id"] for j in daemon.json("dlq", "list")] == ["flaky"]
    assert "flaky" in daemon.cli("dlq", "list").stdout

    # Stop claiming so the retried job is seen in pending before it runs.
    daemon.cli("worker", "stop")
    ok_file.touch()
    assert "flaky" in daemon.cli("dlq", "retry", "flaky").stdout
    job = daemon.job("flaky")
    assert job["state"] == "pending"
    assert job["attempts"] == 0
    assert daemon.json("dlq", "list") == []
    daemon.cli("worker", "start", "--count", "1")
    job = daemon.wait_state("flaky", "completed", "failed", "dead")
    assert job["state"] == "completed"
    assert job["attempts"] == 0
    assert len(job["attempt_history"]) == 4


# -- 3: a restart keeps everything -----------------------------------------------------------------


def test_restart_keeps_jobs_dlq_config_and_backoff_times(daemon: Daemon) -> None:
    for key, value in (("backoff-base", "40"), ("backoff-max", "50"), ("max-retries", "4"), ("kill-grace", "1"),
                       ("workers", "2")):
        daemon.cli("config", "set", key, value)
    daemon.cli("enqueue", "--id", "done", "--command", "echo done")
    daemon.cli("enqueue", "--id", "doomed", "--max-retries", "0", "--command", "exit 9")
    daemon.cli("enqueue", "--id", "backoff", "--command", "exit 5")  # max-retries 4 from config
    daemon.cli("enqueue", "--id", "later", "--delay", "600", "--command", "true")
    daemon.cli("enqueue", "--id", "gone", "--delay", "600", "--command", "true")
    daemon.cli("cancel", "gone")
    settle(daemon, "done", "doomed")
    waiting = daemon.wait_state("backoff", "failed")
    assert waiting["attempts"] == 1 and waiting["max_retries"] == 4
    assert ts(waiting["next_run_at"]) > time.time() + 20  # still far in the future
    go = daemon.root / "go"
    daemon.cli("enqueue", "--id", "drain", "--command", gate(go))  # runs across the SIGTERM
    daemon.wait_state("drain", "processing")

    def snapshot() -> dict[str, Any]:
        return {
            "list": [j for j in daemon.json("list") if j["id"] != "drain"],
            "dlq": daemon.json("dlq", "list"),
            "config": daemon.json("config", "list"),
            "backoff": daemon.job("backoff"),  # with its attempt history
        }

    before = snapshot()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    go.touch()  # SIGTERM drains: the running job may finish
    assert daemon.proc.wait(60) == 0
    assert not daemon.socket.exists()

    daemon.start()  # no --workers: the stored config decides
    after = snapshot()
    assert after["config"] == before["config"]
    assert after["dlq"] == before["dlq"] and [j["id"] for j in after["dlq"]] == ["doomed"]
    assert after["list"] == before["list"]
    assert after["backoff"] == before["backoff"]  # same attempts, same next_run_at
    assert daemon.json("status")["workers"]["slots"] == 2
    drained = daemon.job("drain")
    assert drained["state"] == "completed" and drained["attempts"] == 0
    assert daemon.cli("logs", "done").stdout == "done\n"


# -- 4: concurrency without duplicates -------------------------------------------------------------


def test_200_jobs_on_4_slots_each_run_exactly_once(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "4")
    out = d.root / "out.txt"
    ids = [f"j{i:03d}" for i in range(200)]
    lines = "".join(f'{{"id": "{i}", "command": "echo {i} >> {out}"}}\n' for i in ids)
    assert d.cli("enqueue", "--file", "-", input=lines).stdout.strip() == "enqueued 200 job(s)"
    assert d.json("status")["workers"]["slots"] == 4
    d.cli("wait", "--timeout", "90", *ids, timeout=120)

    written = out.read_text().splitlines()
    assert len(written) == 200
    twice = [i for i, n in Counter(written).items() if n > 1]
    assert twice == []
    assert set(written) == set(ids)
    jobs = d.json("list")
    assert len(jobs) == 200
    assert all(j["state"] == "completed" and j["attempts"] == 0 for j in jobs)
    assert d.json("status")["counts"]["completed"] == 200


# -- 7: worker stop / start ------------------------------------------------------------------------


def test_worker_stop_lets_running_jobs_finish_and_claims_nothing_until_start(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory().start("--workers", "2")
    go = d.root / "go"
    d.cli("enqueue", "--id", "r1", "--command", gate(go))
    d.cli("enqueue", "--id", "r2", "--command", gate(go))
    wait_until(lambda: d.json("status")["workers"]["active"] == 2, what="both gated jobs to run")

    d.cli("worker", "stop")
    workers = d.json("status")["workers"]
    assert workers["claiming"] is False
    assert workers["active"] == 2  # running jobs are not killed
    d.cli("enqueue", "--id", "held", "--command", "true")
    go.touch()
    jobs = settle(d, "r1", "r2")
    assert [jobs["r1"]["state"], jobs["r2"]["state"]] == ["completed", "completed"]
    wait_until(lambda: d.json("status")["workers"]["active"] == 0, what="workers.active to drop to 0")

    # A negative: the freed slots must not claim `held`. Watch it for a moment.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert d.job("held")["state"] == "pending"
    assert d.json("status")["counts"]["pending"] == 1

    assert d.cli("worker", "start", "--count", "3").stdout.strip() == "started 3 worker slot(s)"
    assert settle(d, "held")["held"]["state"] == "completed"
    workers = d.json("status")["workers"]
    assert workers["claiming"] is True and workers["slots"] == 3


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
