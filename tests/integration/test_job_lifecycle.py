"""A job's whole life through the daemon's serve loop, in process, driven by the real Client.

Moved from tests/acceptance/test_lifecycle.py (the subprocess was incidental there): completion
and logs, a missing command, backoff into the DLQ and back, a restart that keeps everything,
200 jobs on 4 slots each run exactly once, worker stop/start, and `job.wait`. The CLI's own
rendering of these stays in acceptance. Every test polls a condition, none asserts on speed.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import JobNotFound
from tests.integration.conftest import DaemonFactory
from tests.integration.inprocess import InProcessDaemon, gate, wait_until


def ts(value: str) -> float:
    """An ISO 8601 timestamp of the protocol as UNIX seconds."""
    return datetime.fromisoformat(value).timestamp()


# -- a job completes; a missing command is an ordinary failure -------------------------------------


def test_job_completes_and_logs_show_its_output(inproc: InProcessDaemon) -> None:
    inproc.enqueue("ok", "echo out; echo err >&2")
    job = inproc.settle("ok")["ok"]
    assert job["state"] == "completed"
    assert job["exit_code"] == 0
    assert job["attempts"] == 0
    assert job["last_error"] is None
    out = inproc.logs("ok")
    assert "out\n" in out and "err\n" in out


def test_missing_command_is_an_ordinary_failure_with_exit_127(inproc: InProcessDaemon) -> None:
    inproc.enqueue("nx", "no-such-command-qctl", max_retries=0)
    job = inproc.settle("nx")["nx"]
    assert job["state"] == "dead"
    assert job["exit_code"] == 127
    assert "127" in (job["last_error"] or "")
    assert "not found" in inproc.logs("nx")
    # The daemon shrugs it off: it still answers and runs the next job.
    assert inproc.running
    inproc.enqueue("after", "true")
    assert inproc.settle("after")["after"]["state"] == "completed"


# -- retries with growing backoff, the DLQ, and dlq retry ------------------------------------------


def test_failing_job_backs_off_exponentially_then_dlq_retry_runs_it_again(
    inproc_factory: DaemonFactory, short_root: Path,
) -> None:
    # delays: min(1.5**1, 2) = 1.5 s, then min(1.5**2, 2) = 2 s (capped): growing, and long
    # enough for a poll through the client to see each wait even on a loaded machine.
    d = inproc_factory(config={"backoff-base": "1.5", "backoff-max": "2"})
    assert d.client.config_get("backoff-base") == 1.5
    assert d.client.config_get("backoff-max") == 2
    ok_file = short_root / "ok"
    d.enqueue("flaky", f"test -e {ok_file} || exit 3", max_retries=2)

    waiting: dict[int, dict[str, Any]] = {}  # attempts -> the job as seen while it waited

    def dead() -> dict[str, Any] | None:
        job = d.job("flaky")
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
    assert delays[0] == pytest.approx(1.5, abs=0.05)
    assert delays[1] == pytest.approx(2.0, abs=0.05)  # 1.5**2 = 2.25, capped by backoff-max
    assert delays[1] > delays[0]

    # max-retries counts retries after the first attempt: 1 + 2 runs, then the DLQ.
    assert job["attempts"] == 3
    assert job["exit_code"] == 3
    assert job["next_run_at"] is None
    history = job["attempt_history"]
    assert [a["exit_code"] for a in history] == [3, 3, 3]
    for n in (1, 2):  # no retry ran before its next_run_at
        assert ts(history[n]["started_at"]) >= ts(waiting[n]["next_run_at"]) - 0.01

    assert [j["id"] for j in d.client.dlq_list()] == ["flaky"]

    # Stop claiming so the retried job is seen in pending before it runs.
    d.client.workers_stop()
    ok_file.touch()
    d.dlq_retry("flaky")
    job = d.job("flaky")
    assert job["state"] == "pending"
    assert job["attempts"] == 0
    assert d.client.dlq_list() == []
    d.client.workers_start(1)
    job = d.wait_state("flaky", "completed", "failed", "dead")
    assert job["state"] == "completed"
    assert job["attempts"] == 0
    assert len(job["attempt_history"]) == 4


# -- a restart keeps everything --------------------------------------------------------------------


def without_relative_times(job: dict[str, Any]) -> dict[str, Any]:
    """The job without blocked_by's message, whose "(in 40 s)" moves with the wall clock (its
    not_before, compared, does not)."""
    blocked = {k: v for k, v in (job["blocked_by"] or {}).items() if k != "message"}
    return {**job, "blocked_by": blocked}


def test_restart_keeps_jobs_dlq_config_and_backoff_times(inproc_factory: DaemonFactory, short_root: Path) -> None:
    d = inproc_factory()
    for key, value in (("backoff-base", "40"), ("backoff-max", "50"), ("max-retries", "4"), ("kill-grace", "1"),
                       ("workers", "2")):
        d.client.config_set(key, value)
    d.enqueue("done", "echo done")
    d.enqueue("doomed", "exit 9", max_retries=0)
    d.enqueue("backoff", "exit 5")  # max-retries 4 from config
    d.enqueue("later", "true", delay_s=600)
    d.enqueue("gone", "true", delay_s=600)
    d.client.cancel("gone")
    d.settle("done", "doomed")
    waiting = d.wait_state("backoff", "failed")
    assert waiting["attempts"] == 1 and waiting["max_retries"] == 4
    assert ts(waiting["next_run_at"]) > time.time() + 20  # still far in the future
    go = short_root / "go"
    d.enqueue("drain", gate(go))  # runs across the stop
    d.wait_state("drain", "processing")

    def snapshot() -> dict[str, Any]:
        return {
            "list": [j for j in d.client.list_jobs() if j["id"] != "drain"],
            "dlq": d.client.dlq_list(),
            "config": d.client.config_list(),
            "backoff": without_relative_times(d.job("backoff")),  # with its attempt history
        }

    before = snapshot()
    d.request_stop()  # what SIGTERM does: drain, the running job may finish
    go.touch()
    d.stop()  # waits for the serve loop to return, and re-raises anything it raised
    assert not d.socket.exists()

    d.workers = None  # no --workers: the stored config decides
    d.start()
    after = snapshot()
    assert after["config"] == before["config"]
    assert after["dlq"] == before["dlq"] and [j["id"] for j in after["dlq"]] == ["doomed"]
    assert after["list"] == before["list"]
    assert after["backoff"] == before["backoff"]  # same attempts, same next_run_at
    assert d.status()["workers"]["slots"] == 2
    drained = d.job("drain")
    assert drained["state"] == "completed" and drained["attempts"] == 0
    assert d.logs("done") == "done\n"


# -- concurrency without duplicates ----------------------------------------------------------------


def test_200_jobs_on_4_slots_each_run_exactly_once(inproc_factory: DaemonFactory, short_root: Path,
                                                   backend: str) -> None:
    d = inproc_factory(workers=4, backend=backend)
    out = short_root / "out.txt"
    locks = short_root / "locks"
    locks.mkdir()
    ids = [f"j{i:03d}" for i in range(200)]
    # Each run records itself, holding its job's lock while it lives: a second run of the same
    # job at the same time would find the lock taken and say so.
    jobs = [{"id": i, "command": f"flock -n {locks}/{i} sh -c 'echo {i} >> {out}; sleep 0.01' "
                                 f"|| echo {i}-twice-at-once >> {out}"} for i in ids]
    answers = list(d.client.enqueue_many(jobs))
    assert sum(len(a["ids"]) for a in answers) == 200 and all(a["existing"] == 0 for a in answers)
    assert d.status()["workers"]["slots"] == 4
    d.settle(*ids, timeout=90)

    written = out.read_text().splitlines()
    assert len(written) == 200
    twice = [i for i, n in Counter(written).items() if n > 1]
    assert twice == []
    assert set(written) == set(ids)
    listed = d.client.list_jobs()
    assert len(listed) == 200
    assert all(j["state"] == "completed" and j["attempts"] == 0 for j in listed)
    assert d.status()["counts"]["completed"] == 200
    assert all(len(d.job(i)["attempt_history"]) == 1 for i in ids[::20])


# -- worker stop / start ---------------------------------------------------------------------------


def test_worker_stop_lets_running_jobs_finish_and_claims_nothing_until_start(
    inproc_factory: DaemonFactory, short_root: Path,
) -> None:
    d = inproc_factory(workers=2)
    go = short_root / "go"
    d.enqueue("r1", gate(go))
    d.enqueue("r2", gate(go))
    wait_until(lambda: d.status()["workers"]["busy"] == 2, what="both gated jobs to run")

    d.client.workers_stop()
    workers = d.status()["workers"]
    assert workers["claiming"] is False
    assert workers["busy"] == 2  # running jobs are not killed
    d.enqueue("held", "true")
    go.touch()
    jobs = d.settle("r1", "r2")
    assert [jobs["r1"]["state"], jobs["r2"]["state"]] == ["completed", "completed"]
    wait_until(lambda: d.status()["workers"]["busy"] == 0, what="workers.busy to drop to 0")

    # A negative: the freed slots must not claim `held`. Watch it for a moment.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert d.job("held")["state"] == "pending"
    assert d.status()["counts"]["pending"] == 1

    d.client.workers_start(3)
    assert d.settle("held")["held"]["state"] == "completed"
    workers = d.status()["workers"]
    assert workers["claiming"] is True and workers["slots"] == 3


# -- wait ------------------------------------------------------------------------------------------


def test_wait_is_done_only_when_all_are_terminal_and_reports_each_state(inproc: InProcessDaemon) -> None:
    inproc.enqueue("w-a", "true")
    inproc.enqueue("w-b", "echo b")
    inproc.enqueue("bad", "exit 4", max_retries=0)
    inproc.enqueue("dropped", "true", delay_s=600)
    inproc.client.cancel("dropped")
    assert inproc.client.wait(["w-a", "w-b"], 30) == {"done": True, "states": {"w-a": "completed",
                                                                             "w-b": "completed"}}
    # Terminal but not completed still ends the wait (the CLI then exits non-zero).
    assert inproc.client.wait(["w-a", "bad", "dropped"], 30) == {
        "done": True, "states": {"w-a": "completed", "bad": "dead", "dropped": "canceled"}}


def test_wait_times_out_with_the_current_states_and_changes_nothing(inproc: InProcessDaemon) -> None:
    inproc.enqueue("slow", "true", delay_s=600)
    inproc.enqueue("quick", "true")
    inproc.settle("quick")
    assert inproc.client.wait(["slow", "quick"], 0.3) == {"done": False,
                                                          "states": {"slow": "pending", "quick": "completed"}}
    assert inproc.job("slow")["state"] == "pending"  # waiting changes nothing
    with pytest.raises(JobNotFound):
        inproc.client.wait(["slow", "no-such-job"], 0.3)


# -- output: per attempt, and past the cap (moved from tests/acceptance/test_output.py) -------------

TRUNCATED = "[queuectl: output truncated at {} bytes: {} bytes left out here; the last {} bytes follow]"


def test_logs_of_a_given_attempt(inproc_factory: DaemonFactory) -> None:
    d = inproc_factory(config={"backoff-base": "1"})
    d.enqueue("twice", 'echo "attempt $QUEUECTL_ATTEMPT"; [ "$QUEUECTL_ATTEMPT" = 2 ]', max_retries=1)
    assert d.settle("twice")["twice"]["state"] == "completed"
    assert d.logs("twice", attempt=1) == "attempt 1\n"
    assert d.logs("twice") == "attempt 2\n"


def test_output_past_the_cap_keeps_its_head_and_its_tail(inproc: InProcessDaemon) -> None:
    inproc.client.config_set("output-max-bytes", "2048")
    inproc.enqueue("chatty", 'i=0; while [ $i -lt 1000 ]; do echo "line $i"; i=$((i+1)); done; echo END')
    job = inproc.settle("chatty")["chatty"]
    assert job["state"] == "completed", job
    printed = "".join(f"line {i}\n" for i in range(1000)) + "END\n"
    marker = TRUNCATED.format(2048, len(printed) - 2048, 1024)
    kept = (inproc.state_dir / "logs" / "chatty.1.log").read_text()
    assert kept == printed[:1024] + f"\n{marker}\n" + printed[-1024:]
    assert inproc.logs("chatty") == kept
    assert inproc.client.logs("chatty", None, 0, False)["truncated"] is True
    assert job["output_tail"].endswith("line 999\nEND\n"), "show keeps the tail of all output, past the cap"


# -- run-at times ----------------------------------------------------------------------------------


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_run_at_puts_a_job_at_that_instant_and_a_past_one_runs_now(inproc: InProcessDaemon) -> None:
    at = time.time() + 3600
    later = inproc.enqueue("later", "true", run_at=at)
    assert later["state"] == "pending" and abs(_epoch(later["next_run_at"]) - at) < 5
    assert inproc.client.call("job.explain", {"id": "later"})["kind"] == "not-before"
    inproc.enqueue("past", "echo ran", run_at=time.time() - 3600)
    assert inproc.settle("past")["past"]["state"] == "completed"
    batch = inproc.client.call("job.enqueue_batch", {"jobs": [{"command": "true", "id": "b1", "run_at": at}]})
    assert batch["ids"] == ["b1"] and abs(_epoch(inproc.job("b1")["next_run_at"]) - at) < 5


def test_edit_run_at_reschedules_a_waiting_job_and_refuses_an_ended_one(inproc: InProcessDaemon) -> None:
    from queuectl.errors import InvalidState, InvalidValue

    inproc.enqueue("w", "true", delay_s=3600)
    at = time.time() + 7200
    assert abs(_epoch(inproc.client.edit("w", run_at=at)["next_run_at"]) - at) < 5
    soon = inproc.client.edit("w", run_at=time.time() + 0.2)
    assert soon["state"] == "pending"
    assert inproc.settle("w")["w"]["state"] == "completed"
    with pytest.raises(InvalidState, match="reschedule"):
        inproc.client.edit("w", run_at=time.time() + 60)
    with pytest.raises(InvalidValue, match="run_at or delay_s, not both"):
        inproc.client.edit("w", run_at=time.time() + 60, delay_s=5)
    with pytest.raises(InvalidValue, match="run_at or delay_s, not both"):
        inproc.enqueue("both", "true", run_at=time.time() + 60, delay_s=5)
