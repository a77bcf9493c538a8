"""Issue 10 through the daemon's serve loop, on each store: a job runs in its cwd with its
environment; a cwd that is gone is a spawn-failed attempt; a queue's concurrency holds; pause,
resume, pause --kill (requeued, uncounted) and a drain (queue.wait); status per queue.

Requests go through `client.call` with the protocol's own params, so these tests say exactly what
reaches the daemon."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import QueueNotFound
from tests.integration.conftest import DaemonFactory
from tests.integration.inprocess import InProcessDaemon, gate, outcome_of, wait_until


def call(d: InProcessDaemon, method: str, **params: Any) -> Any:
    """One request with exactly these params."""
    return d.client.call(method, params)


def add(d: InProcessDaemon, job_id: str, command: str, **fields: Any) -> dict[str, Any]:
    """job.enqueue with the protocol's fields (queue, cwd, env, after, hold, ...)."""
    result: dict[str, Any] = d.client.call("job.enqueue", {"command": command, "id": job_id, **fields})
    return result


# -- where and with what a job runs --------------------------------------------------------------


def test_a_job_runs_in_its_cwd_with_its_environment(inproc_factory: DaemonFactory, backend: str,
                                                    short_root: Path) -> None:
    d = inproc_factory(backend=backend)
    work = short_root / "project"
    work.mkdir()
    out = short_root / "out"
    path = os.environ["PATH"]
    add(d, "whole", f'pwd > {out}.1; echo "$FOO" >> {out}.1; echo "${{HOME-unset}}" >> {out}.1',
        cwd=str(work), env={"FOO": "bar baz", "PATH": path})
    add(d, "clean", f'pwd > {out}.2; echo "$FOO" >> {out}.2; echo "$QUEUECTL_JOB_ID" >> {out}.2; '
        f'[ -n "$PATH" ] && echo has-path >> {out}.2', env={"FOO": "over"}, clean_env=True)
    jobs = d.settle("whole", "clean")
    assert [jobs[i]["state"] for i in ("whole", "clean")] == ["completed", "completed"]
    # The whole environment is the job's: no HOME was sent, so none is set.
    assert (out.parent / "out.1").read_text().splitlines() == [str(work), "bar baz", "unset"]
    # A clean one is laid over the daemon's base; no cwd: the daemon's state dir.
    assert (out.parent / "out.2").read_text().splitlines() == [str(d.state_dir), "over", "clean", "has-path"]
    shown = d.job("whole")
    assert (shown["cwd"], shown["env_names"], shown["clean_env"]) == (str(work), ["FOO", "PATH"], False)


def test_a_batch_shares_its_context_and_a_job_may_replace_it(inproc_factory: DaemonFactory, backend: str,
                                                             short_root: Path) -> None:
    d = inproc_factory(backend=backend, workers=2)
    (short_root / "a").mkdir()
    (short_root / "b").mkdir()
    out = short_root / "out"
    base = {"PATH": os.environ["PATH"], "FOO": "batch"}
    jobs = [{"id": f"j{i}", "command": f'echo "$(pwd) $FOO" > {out}.{i}'} for i in range(20)]
    jobs.append({"id": "own", "command": f'echo "$(pwd) $FOO $BAR" > {out}.own', "cwd": str(short_root / "b"),
                 "env": {"FOO": "job", "BAR": "x"}})
    call(d, "job.enqueue_batch", jobs=jobs, cwd=str(short_root / "a"), env=base)
    d.settle(*(j["id"] for j in jobs))
    assert {(short_root / f"out.{i}").read_text() for i in range(20)} == {f"{short_root / 'a'} batch\n"}
    assert (short_root / "out.own").read_text() == f"{short_root / 'b'} job x\n"


def test_a_cwd_that_is_gone_is_a_spawn_failed_attempt(inproc_factory: DaemonFactory, backend: str,
                                                      short_root: Path) -> None:
    d = inproc_factory(backend=backend)
    gone = short_root / "gone"
    gone.mkdir()
    add(d, "j", "true", cwd=str(gone), max_retries=1, hold=True)
    gone.rmdir()
    call(d, "job.release", ids=["j"])
    job = d.settle("j")["j"]
    assert job["state"] == "dead" and job["attempts"] == 2
    assert [outcome_of(a) for a in job["attempt_history"]] == ["spawn-failed", "spawn-failed"]
    assert job["attempt_history"][0]["error"] == f"cwd {gone} does not exist"
    add(d, "after", "true")  # the daemon shrugs it off
    assert d.settle("after")["after"]["state"] == "completed"


def test_show_masks_secret_looking_values(inproc: InProcessDaemon) -> None:
    add(inproc, "s", "true", env={"API_TOKEN": "t0k", "PLAIN": "v"}, hold=True)
    assert inproc.job("s")["env"] == {"API_TOKEN": "***", "PLAIN": "v"}
    assert inproc.client.call("job.get", {"id": "s", "reveal_env": True})["env"]["API_TOKEN"] == "t0k"
    inproc.client.config_set("secret-env-patterns", "none")
    assert inproc.job("s")["env"]["API_TOKEN"] == "t0k"


# -- queues: concurrency, pause, resume, kill, drain ---------------------------------------------


def overlap_command(lock: Path, log: Path) -> str:
    """A job that records whether another job held `lock` while it ran."""
    return (f"if mkdir {lock} 2>/dev/null; then echo alone >> {log}; sleep 0.15; rmdir {lock}; "
            f"else echo overlap >> {log}; fi")


def test_a_queue_with_concurrency_1_runs_one_job_at_a_time(inproc_factory: DaemonFactory, backend: str,
                                                           short_root: Path) -> None:
    d = inproc_factory(backend=backend, workers=4)
    call(d, "queue.add", name="serial", concurrency=1)
    lock, log = short_root / "lock", short_root / "log"
    ids = [f"s{i}" for i in range(6)]
    call(d, "job.enqueue_batch", jobs=[{"id": i, "command": overlap_command(lock, log), "queue": "serial"}
                                       for i in ids])
    add(d, "free", gate(short_root / "never-made"))  # another queue's job still gets a slot
    jobs = d.settle(*ids)
    assert {j["state"] for j in jobs.values()} == {"completed"}
    assert log.read_text().splitlines() == ["alone"] * 6
    assert d.job("free")["state"] == "processing"
    call(d, "job.cancel", id="free")


def test_pause_holds_new_starts_until_resume(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    call(d, "queue.add", name="q")
    paused = call(d, "queue.pause", names=["q"])
    assert [(q["name"], q["paused"]) for q in paused["queues"]] == [("q", True)]
    add(d, "p", "true", queue="q")
    add(d, "other", "true")
    assert d.settle("other")["other"]["state"] == "completed"
    assert d.job("p")["state"] == "pending"
    assert call(d, "job.explain", id="p")["kind"] == "queue-paused"
    assert call(d, "queue.get", name="q")["paused"] is True
    assert {q["name"]: q["paused"] for q in d.status()["queues"]} == {"default": False, "q": True}
    call(d, "queue.resume", names=["q"])
    assert d.settle("p")["p"]["state"] == "completed"


def test_pause_kill_requeues_running_jobs_uncounted(inproc_factory: DaemonFactory, backend: str,
                                                    short_root: Path) -> None:
    d = inproc_factory(backend=backend)
    call(d, "queue.add", name="q")
    done = short_root / "done"
    add(d, "k", f"echo started >> {short_root / 'runs'}; " + gate(done), queue="q", max_retries=0)
    d.wait_state("k", "processing")
    wait_until(lambda: (short_root / "runs").exists(), what="the job to start")
    call(d, "queue.pause", names=["q"], kill=True)
    job = d.wait_state("k", "pending")
    assert job["attempts"] == 0  # uncounted
    wait_until(lambda: not d.processes_left(), what="the killed job's processes to be gone")
    job = wait_until(lambda: (j := d.job("k"))["attempt_history"] and
                     outcome_of(j["attempt_history"][-1]) == "requeued" and j, what="the requeued attempt")
    time.sleep(0.3)
    assert d.job("k")["state"] == "pending"  # paused: not started again
    done.touch()
    call(d, "queue.resume", all=True)
    job = d.settle("k")["k"]
    assert job["state"] == "completed" and (short_root / "runs").read_text().splitlines() == ["started"] * 2


def test_queue_wait_returns_when_the_queue_is_drained(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend, workers=2)
    call(d, "queue.add", name="q")
    call(d, "job.enqueue_batch", jobs=[{"id": f"w{i}", "command": "sleep 0.1", "queue": "q"} for i in range(5)])
    add(d, "held", "true", queue="q", hold=True)  # held jobs do not count
    deadline = time.monotonic() + 30
    while not call(d, "queue.wait", queue="q", timeout_s=5)["done"]:
        assert time.monotonic() < deadline
    assert {d.job(f"w{i}")["state"] for i in range(5)} == {"completed"}
    assert d.job("held")["state"] == "pending"


def test_queues_are_listed_and_removed_only_when_empty(inproc: InProcessDaemon) -> None:
    call(inproc, "queue.add", name="q", concurrency=2)
    assert call(inproc, "queue.set", name="q", concurrency=3)["concurrency"] == 3
    add(inproc, "h", "true", queue="q", hold=True)
    listed = {q["name"]: q for q in call(inproc, "queue.list")["queues"]}
    assert (listed["q"]["concurrency"], listed["q"]["pending"], listed["q"]["held"]) == (3, 1, 1)
    from queuectl.errors import QueueNotEmpty

    with pytest.raises(QueueNotEmpty):
        call(inproc, "queue.rm", name="q")
    call(inproc, "job.cancel", id="h")
    call(inproc, "queue.rm", name="q")
    with pytest.raises(QueueNotFound):
        add(inproc, "x", "true", queue="q")


def test_status_counts_slots_running_and_busy(inproc_factory: DaemonFactory, short_root: Path) -> None:
    d = inproc_factory(workers=3)
    workers = d.status()["workers"]
    assert (workers["active"], workers["busy"]) == (3, 0)
    add(d, "g", gate(short_root / "open"))
    d.wait_state("g", "processing")
    # The claim commits a moment before the attempt joins the slots: wait for that, then look.
    workers = wait_until(lambda: (w := d.status()["workers"])["busy"] == 1 and w, what="the slot to be busy")
    assert (workers["active"], workers["busy"], workers["slots"]) == (3, 1, 3)
    (short_root / "open").touch()
    d.settle("g")


def test_listings_filter_by_queue_and_label(inproc_factory: DaemonFactory, backend: str) -> None:
    d = inproc_factory(backend=backend)
    call(d, "queue.add", name="q")
    call(d, "job.enqueue_batch", jobs=[
        {"id": "a", "command": "true", "queue": "q", "labels": ["nightly"], "hold": True},
        {"id": "b", "command": "true", "labels": ["nightly", "db"], "hold": True},
        {"id": "c", "command": "true", "queue": "q", "hold": True},
        {"id": "x", "command": "false", "queue": "q", "labels": ["db"], "max_retries": 0},
        {"id": "y", "command": "false", "max_retries": 0, "labels": ["db"]},
    ])
    d.settle("x", "y")

    def ids(method: str, **params: Any) -> list[str]:
        return [j["id"] for j in call(d, method, **params)["jobs"]]

    assert ids("job.list", queue="q") == ["a", "c", "x"]
    assert ids("job.list", label="nightly") == ["a", "b"]
    assert ids("job.list", label="db", state="pending") == ["b"]
    assert ids("dlq.list", queue="q") == ["x"] and ids("dlq.list", label="db") == ["x", "y"]
    assert call(d, "dlq.retry_all", filter={"queue": "default"})["ids"] == ["y"]
    assert d.job("a")["labels"] == ["nightly"] and d.job("b")["labels"] == ["db", "nightly"]
