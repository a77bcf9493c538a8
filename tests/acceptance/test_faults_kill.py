"""Killing attempts: a SIGKILLed job, timeouts (SIGTERM, then SIGKILL after kill-grace), cancel,
and `worker stop --now`. Every check looks at real processes in /proc: a job's children and
grandchildren die with it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.test_faults import alive, kill_leftover_jobs, read_pid, settled, ts
from tests.conftest import Daemon, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too


def family(tmp: Path, on_term: str | None = None) -> str:
    """A job that starts a child and a grandchild, writes the three pids, and runs until killed.

    With `on_term` (a command, or "" to do nothing) the shell traps SIGTERM and its descendants
    ignore it, so only SIGKILL ends them.
    """
    shell_trap = "" if on_term is None else f"trap '{on_term}' TERM; "
    child_trap = "" if on_term is None else 'trap "" TERM; '
    return (
        f"{shell_trap}echo $$ > {tmp}/shell.pid; "
        f"sh -c '{child_trap}sleep 300 & echo $! > {tmp}/grandchild.pid; wait' & echo $! > {tmp}/child.pid; "
        "while :; do sleep 0.1; done"
    )


def family_pids(tmp: Path) -> list[int]:
    """The shell, child and grandchild pids of a `family` job, once it wrote them."""
    return [read_pid(tmp / f"{who}.pid") for who in ("shell", "child", "grandchild")]


# -- 2. SIGKILL one job's process ------------------------------------------------------------------


def test_a_sigkilled_job_fails_its_attempt_and_is_retried(daemon: Daemon, short_tmp: Path) -> None:
    daemon.cli("config", "set", "backoff-base", "1")
    daemon.cli("enqueue", "--id", "k", "--max-retries", "1", "--command",
               f'if [ "$QUEUECTL_ATTEMPT" = 1 ]; then {family(short_tmp)}; fi; echo second')
    shell, child, grandchild = family_pids(short_tmp)
    os.kill(shell, signal.SIGKILL)

    job = settled(daemon, "k")
    assert job["state"] == "completed" and job["attempts"] == 1, job
    first, second = job["attempt_history"]
    assert (first["outcome"], first["signal"], first["exit_code"]) == ("signal", "SIGKILL", None), first
    assert "SIGKILL" in first["error"], first
    assert second["outcome"] == "exit" and second["exit_code"] == 0 and second["error"] is None, second
    assert not alive(child) and not alive(grandchild), "the attempt's process group dies with it"


# -- 3. timeouts -------------------------------------------------------------------------------------


def test_a_timeout_sends_sigterm_then_sigkill_after_the_grace_and_kills_the_whole_family(
    daemon: Daemon, short_tmp: Path
) -> None:
    daemon.cli("config", "set", "kill-grace", "2.5")
    got_term = short_tmp / "got-term"
    # Everything ignores SIGTERM; the shell notes that it arrived (a trap is not a death).
    daemon.cli("enqueue", "--id", "hung", "--timeout", "1", "--max-retries", "0",
               "--command", family(short_tmp, on_term=f"touch {got_term}"))
    pids = family_pids(short_tmp)
    wait_until(got_term.exists, what="SIGTERM when the timeout fires")
    assert all(alive(p) for p in pids), "SIGTERM is ignored; only SIGKILL, after the grace, ends them"

    job = settled(daemon, "hung")
    assert job["state"] == "dead", job
    (attempt,) = job["attempt_history"]
    assert "timed out after 1s" in attempt["reason"], attempt
    assert ts(attempt["finished_at"]) - ts(attempt["started_at"]) >= 1 + 2.5 - 0.1, "SIGKILL before the grace ended"
    wait_until(lambda: not any(alive(p) for p in pids), timeout=10, what=f"{pids} to die")


def test_config_job_timeout_applies_to_jobs_without_their_own(daemon: Daemon, short_tmp: Path) -> None:
    daemon.cli("config", "set", "job-timeout", "1")
    daemon.cli("enqueue", "--id", "slow", "--max-retries", "0", "--command", family(short_tmp))
    pids = family_pids(short_tmp)
    job = settled(daemon, "slow")
    assert "timed out after 1s" in job["last_error"], job
    wait_until(lambda: not any(alive(p) for p in pids), timeout=10, what=f"{pids} to die")


# -- cancel ------------------------------------------------------------------------------------------


def test_cancel_a_pending_job(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "later", "--delay", "600", "--command", "true")
    assert daemon.cli("cancel", "later").stdout.strip() == "canceled later"
    job = daemon.job("later")
    assert job["state"] == "canceled" and job["attempt_history"] == [], job
    waited = daemon.cli("wait", "later", check=False)
    assert waited.returncode != 0 and "later: canceled" in waited.stdout
    again = daemon.cli("cancel", "later", check=False)
    assert again.returncode != 0 and "canceled" in again.stderr, "canceled is terminal"


def test_cancel_a_running_job_kills_its_process_group_and_never_retries_it(daemon: Daemon, short_tmp: Path) -> None:
    daemon.cli("config", "set", "backoff-base", "1")
    daemon.cli("enqueue", "--id", "run", "--max-retries", "3", "--command", family(short_tmp))
    pids = family_pids(short_tmp)
    daemon.cli("cancel", "run")
    wait_until(lambda: not any(alive(p) for p in pids), timeout=10, what=f"{pids} to die")

    # The slot is free again, and a turn of the scheduler later the job is still canceled.
    daemon.cli("enqueue", "--id", "next", "--command", "true")
    assert settled(daemon, "next")["state"] == "completed"
    job = daemon.job("run")
    assert job["state"] == "canceled" and job["attempts"] == 0, job
    assert [a["reason"] for a in job["attempt_history"]] == ["canceled while running"]
    waited = daemon.cli("wait", "run", check=False)
    assert waited.returncode != 0 and "run: canceled" in waited.stdout


# -- worker stop --now ----------------------------------------------------------------------------


def test_worker_stop_now_kills_running_jobs_and_returns_them_to_pending_uncounted(
    daemon_factory: Callable[..., Daemon], short_tmp: Path
) -> None:
    d = daemon_factory().start("--workers", "2")
    go = short_tmp / "go"
    for job_id in ("x", "y"):
        d.cli("enqueue", "--id", job_id, "--command",
              f"[ -e {go} ] && exit 0; echo $$ > {short_tmp}/{job_id}.pid; sleep 300")
    shells = [read_pid(short_tmp / f"{job_id}.pid") for job_id in ("x", "y")]
    out = d.cli("worker", "stop", "--now").stdout
    assert "2 running job(s) killed" in out, out
    wait_until(lambda: all(d.job(i)["state"] == "pending" for i in ("x", "y")), what="both back to pending")
    assert not any(alive(p) for p in shells)
    for job_id in ("x", "y"):
        job = d.job(job_id)
        assert job["attempts"] == 0 and job["owner"] is None, job
        assert job["attempt_history"][0]["reason"].startswith("stopped by `worker stop --now`")
    assert d.json("status")["workers"]["claiming"] is False
    assert d.job("x")["state"] == "pending", "stopped workers claim nothing"

    go.touch()
    d.cli("worker", "start")
    for job_id in ("x", "y"):
        job = settled(d, job_id)
        assert job["state"] == "completed" and job["attempts"] == 0 and len(job["attempt_history"]) == 2, job


def test_a_job_that_leaves_a_background_process_completes_and_the_leftover_dies(
    daemon: Daemon, short_tmp: Path
) -> None:
    # The background sleep keeps the output pipe open long after the shell exited.
    daemon.cli("enqueue", "--id", "bg", "--command", f"sleep 300 & echo $! > {short_tmp}/bg.pid; echo started")
    leftover = read_pid(short_tmp / "bg.pid")
    job = settled(daemon, "bg", timeout=20)
    assert job["state"] == "completed" and job["output_tail"] == "started\n", job
    wait_until(lambda: not alive(leftover), timeout=10, what="the background sleep to be killed")
