"""End to end: working through the dead-letter queue with the real `queuectld` and `queuectl`.

`dlq retry` of many ids (all or none), `--all` with filters printing how many, `--command` to fix
then retry, `dlq purge` by ids, `--older-than` and `--all` (with the output files), bad input
that changes nothing, and a bulk retry of thousands of dead jobs while `status` keeps answering.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_clean_failure, wait_until


@pytest.fixture
def shared(module_daemon: Daemon) -> Daemon:
    """The module's daemon (2 slots); tests use ids of their own and filter by them."""
    return module_daemon


def kill_jobs(d: Daemon, *ids: str, command: str = "exit 3", timeout: str | None = None) -> None:
    """Jobs that die at their first attempt (max-retries 0), dead when this returns."""
    extra = ["--timeout", timeout] if timeout else []
    for job_id in ids:
        d.cli("enqueue", "--id", job_id, "--max-retries", "0", *extra, "--command", command)
    d.cli("wait", "--timeout", "60", *ids, check=False, timeout=90)
    for job_id in ids:
        assert d.job(job_id)["state"] == "dead", d.job(job_id)


def states(d: Daemon, *ids: str) -> list[str]:
    return [d.job(job_id)["state"] for job_id in ids]


def test_retry_many_ids_all_or_none(shared: Daemon, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    command = f"test -e {fixed}"  # dies until the file exists: the fix
    kill_jobs(shared, "rm-1", "rm-2", "rm-3", command=command)
    shared.cli("enqueue", "--id", "rm-done", "--command", "true")
    shared.cli("wait", "rm-done")
    # One id that is not dead, or not there: nothing is retried.
    assert_clean_failure(shared.cli("dlq", "retry", "rm-1", "rm-done", check=False), "'rm-done'", "completed")
    assert_clean_failure(shared.cli("dlq", "retry", "rm-1", "rm-nope", check=False), "'rm-nope'")
    assert states(shared, "rm-1", "rm-2", "rm-3") == ["dead"] * 3
    fixed.touch()
    assert shared.cli("dlq", "retry", "rm-1", "rm-2").stdout.strip() == "moved 2 dead job(s) back to pending"
    assert shared.cli("dlq", "retry", "rm-3").stdout.strip() == "rm-3 moved back to pending"
    shared.cli("wait", "rm-1", "rm-2", "rm-3")  # exit 0: all completed
    job = shared.job("rm-1")
    assert job["attempts"] == 0 and [a["outcome"] for a in job["attempt_history"]] == ["exit", "exit"]


def test_retry_with_a_new_command(shared: Daemon) -> None:
    kill_jobs(shared, "fix-1", command="exit 9")
    out = shared.cli("dlq", "retry", "fix-1", "--command", "echo fixed").stdout
    assert out.strip() == "fix-1 moved back to pending with its new command"
    shared.cli("wait", "fix-1")
    job = shared.job("fix-1")
    assert job["command"] == "echo fixed" and job["state"] == "completed"
    assert shared.cli("logs", "fix-1").stdout == "fixed\n"
    assert [a["exit_code"] for a in job["attempt_history"]] == [9, 0]


def test_retry_all_with_filters_prints_how_many(daemon: Daemon) -> None:
    # A daemon of its own: --all takes every dead job there is.
    kill_jobs(daemon, "ra-exit-1", "ra-exit-2")
    kill_jobs(daemon, "ra-timeout", command="sleep 30", timeout="0.5")
    daemon.cli("worker", "stop")  # retried jobs stay pending, to be counted
    assert daemon.cli("dlq", "retry", "--all", "--outcome", "timeout", "--since", "1h").stdout.strip() == \
        "moved 1 dead job(s) back to pending"
    assert states(daemon, "ra-timeout", "ra-exit-1") == ["pending", "dead"]
    assert daemon.json("dlq", "retry", "--all", "--older-than", "1h") == {"count": 0, "ids": []}
    assert daemon.json("dlq", "retry", "--all") == {"count": 2, "ids": ["ra-exit-1", "ra-exit-2"]}
    assert daemon.json("status")["counts"]["dead"] == 0
    assert daemon.cli("dlq", "retry", "--all").stdout.strip() == "moved 0 dead job(s) back to pending"


def test_purge_by_ids_older_than_and_all(daemon: Daemon) -> None:
    kill_jobs(daemon, "pg-1", "pg-2", "pg-3", "pg-4", command="echo out; exit 4")
    kill_jobs(daemon, "pg-t", command="sleep 30", timeout="0.5")
    logs = daemon.state_dir / "logs"
    assert (logs / "pg-1.1.log").exists()
    assert daemon.cli("dlq", "purge", "pg-1", "pg-2").stdout.strip() == "purged 2 dead job(s)"
    assert_clean_failure(daemon.cli("show", "pg-1", check=False), "'pg-1'")
    assert not (logs / "pg-1.1.log").exists() and (logs / "pg-3.1.log").exists()
    # They died just now: none is older than a day.
    assert daemon.json("dlq", "purge", "--older-than", "1d") == {"count": 0, "ids": []}
    assert daemon.cli("dlq", "purge", "--all", "--outcome", "timeout").stdout.strip() == "purged 1 dead job(s)"
    assert [j["id"] for j in daemon.json("dlq", "list")] == ["pg-3", "pg-4"]
    assert daemon.json("dlq", "purge", "--all") == {"count": 2, "ids": ["pg-3", "pg-4"]}
    assert daemon.json("dlq", "list") == [] and daemon.cli("dlq", "list").stdout.strip() == "no dead jobs"
    assert not any(logs.glob("pg-*"))


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("dlq", "retry"), ("say which dead jobs",)),
        (("dlq", "purge"), ("nothing was purged",)),
        (("dlq", "retry", "bi-1", "bi-2", "--command", "true"), ("exactly one id",)),
        (("dlq", "retry", "bi-1", "--all"), ("not both",)),
        (("dlq", "purge", "bi-1", "--older-than", "1h"), ("not both",)),
        (("dlq", "retry", "--all", "--since", "a while"), ("--since",)),
        (("dlq", "purge", "--all", "--outcome", "sad"), ("--outcome",)),
        (("dlq", "retry", "bi-1", "bi-missing"), ("'bi-missing'",)),
        (("dlq", "purge", "bi-2", "bi-missing"), ("'bi-missing'",)),
    ],
)
def test_bad_input_changes_nothing(shared: Daemon, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    if shared.cli("show", "bi-1", check=False).returncode != 0:
        kill_jobs(shared, "bi-1", "bi-2")
    before = shared.json("dlq", "list")
    assert_clean_failure(shared.cli(*args, check=False), *needles)
    assert shared.json("dlq", "list") == before


def test_the_socket_protocol_refuses_a_purge_that_names_no_jobs(shared: Daemon) -> None:
    kill_jobs(shared, "sp-1")
    conn = shared.connect_raw()
    try:
        answers = call(conn, {"jsonrpc": "2.0", "id": 1, "method": "dlq.purge", "params": {}},
                       {"jsonrpc": "2.0", "id": 2, "method": "dlq.purge", "params": {"filter": {}}},
                       {"jsonrpc": "2.0", "id": 3, "method": "dlq.retry", "params": {"ids": ["sp-1", "x"],
                                                                                       "command": "true"}})
    finally:
        conn.close()
    assert [a["error"]["code"] for a in answers] == [1006, 1006, 1006]  # InvalidValue, each
    assert shared.job("sp-1")["state"] == "dead"


def call(conn: socket.socket, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send requests on a raw connection; their answers in order."""
    conn.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    reader = conn.makefile("rb")
    return [json.loads(reader.readline()) for _ in requests]


def test_a_bulk_retry_of_thousands_keeps_status_answering(daemon_factory: Callable[..., Daemon]) -> None:
    n = 3000
    d = daemon_factory().start("--workers", "4")
    d.cli("enqueue", "--file", "-", "--max-retries", "0", input="exit 1\n" * n)
    wait_until(lambda: d.json("status")["counts"]["dead"] == n, timeout=240, what=f"{n} jobs to die")
    d.cli("worker", "stop")  # the retried jobs stay pending: the counts say what was retried
    bulk = d.connect_raw()
    probe = d.connect_raw()
    try:
        bulk.sendall(b'{"jsonrpc":"2.0","id":1,"method":"dlq.retry_all","params":{}}\n')
        answered_during = 0
        statuses = 0
        probe_reader = probe.makefile("rb")
        while True:
            probe.sendall(b'{"jsonrpc":"2.0","id":2,"method":"daemon.status","params":{}}\n')
            status = json.loads(probe_reader.readline())
            statuses += 1
            assert "result" in status, status
            done, _, _ = select.select([bulk], [], [], 0)
            if done:
                break
            answered_during += 1
        answer = json.loads(bulk.makefile("rb").readline())
    finally:
        bulk.close()
        probe.close()
    assert answer["result"] == {"count": n, "ids": None}
    # The daemon answered status while the retry went on, page after page (how quickly: not asserted).
    assert answered_during >= 1, f"status was answered only after the bulk retry ({statuses} asked)"
    counts = d.json("status")["counts"]
    assert counts["dead"] == 0 and counts["pending"] == n
