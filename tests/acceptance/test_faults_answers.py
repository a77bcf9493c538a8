"""Answers that never arrive: the real queuectld and queuectl, with the answer to a COMMIT lost.

On PostgreSQL, a proxy between the daemon and the server (pgproxy.py) lets the COMMIT through and
drops the server's answer; on SQLite, the `lose-commit-answer:` fault point commits and then fails
the driver call. Either way the change is in the database and the daemon never heard so. A claim
so lost must not wedge its job; an enqueue so lost must not be reported as "nothing was changed",
nor stored twice. Jobs record their runs in a file, so a lost or repeated run is caught.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.pgproxy import PgProxy
from tests.conftest import Daemon, assert_clean_failure
from tests.store.conftest import PG_SKIP_REASON, PG_URL, pg_schema

#: What a lost answer looks like in the daemon's log on SQLite (the fault point's error text).
FAULT_TEXT = "fault point: the answer to COMMIT was lost"
CLAIM = "INSERT INTO attempts"  #: only a claim that claimed something writes an attempt row
INSERT = "INSERT INTO jobs"

Lossy = Callable[..., tuple[Daemon, Callable[[], bool]]]


@pytest.fixture(params=["sqlite", "postgresql"])
def lossy(request: pytest.FixtureRequest, daemon_factory: Callable[..., Daemon]) -> Iterator[Lossy]:
    """start(needle, *flags) -> (a started daemon, lost): the first COMMIT of a transaction that
    ran SQL containing `needle` commits and loses its answer; `lost()` says whether that happened."""
    if request.param == "sqlite":
        def start_sqlite(needle: str, *flags: str) -> tuple[Daemon, Callable[[], bool]]:
            d = daemon_factory().start("--workers", "1", *flags,
                                       env={"QUEUECTL_FAULT_POINT": f"lose-commit-answer:{needle}"})
            return d, lambda: FAULT_TEXT in d.log_text()

        yield start_sqlite
        return
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with pg_schema() as url, PgProxy() as proxy:
        def start_pg(needle: str, *flags: str) -> tuple[Daemon, Callable[[], bool]]:
            trap = proxy.lose_commit_answer(needle)
            d = daemon_factory(db_url=proxy.url(url)).start("--workers", "1", *flags)
            return d, lambda: trap.fired.wait(10) and trap.committed

        yield start_pg


def runs(path: Path) -> list[str]:
    """The lines the jobs wrote: one per run."""
    return path.read_text().split() if path.exists() else []


def test_a_claim_whose_answer_is_lost_is_put_back_and_runs_once(lossy: Lossy, short_tmp: Path) -> None:
    # Maintenance is minutes apart (lease 600 s): only the immediate put-back can free the job in time.
    d, lost = lossy(CLAIM, "--lease-seconds", "600")
    out = short_tmp / "runs"
    d.cli("enqueue", "--id", "j", "--command", f"echo $QUEUECTL_JOB_ID.$QUEUECTL_ATTEMPT >> {out}")

    job = d.wait_state("j", "completed", "failed", "dead", timeout=30)
    assert lost()
    assert job["state"] == "completed" and job["attempts"] == 0  # nothing counted against it
    assert runs(out) == ["j.2"]  # once: attempt 1 was claimed, never started
    first, second = job["attempt_history"]
    assert "never started here" in first["reason"] and "not counted" in first["reason"]
    assert second["exit_code"] == 0
    assert "returned to pending (not counted)" in d.log_text()
    assert d.json("status")["counts"]["processing"] == 0


def test_an_enqueue_whose_answer_is_lost_is_stored_once(lossy: Lossy, short_tmp: Path) -> None:
    d, lost = lossy(INSERT)
    out = short_tmp / "runs"
    r = d.cli("enqueue", "--command", f"echo $QUEUECTL_JOB_ID >> {out}", check=False)
    assert lost()
    assert "nothing was changed" not in (r.stdout + r.stderr).lower()
    # The client retried by itself with the id it had chosen; the daemon found the job stored.
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.removeprefix("enqueued ").strip()
    assert [j["id"] for j in d.json("list")] == [job_id]
    assert d.wait_state(job_id, "completed", "dead")["state"] == "completed"
    assert runs(out) == [job_id]


def test_a_batch_whose_answer_is_lost_is_stored_once(lossy: Lossy, short_tmp: Path) -> None:
    d, lost = lossy(INSERT)
    out = short_tmp / "runs"
    lines = [f"echo $QUEUECTL_JOB_ID >> {out}"] * 30 + [f'{{"id": "named", "command": "echo named >> {out}"}}']
    r = d.cli("enqueue", "--file", "-", "--json", input="\n".join(lines) + "\n", check=False)
    assert lost()
    assert r.returncode == 0, r.stderr
    import json

    answer = json.loads(r.stdout)
    assert (answer["enqueued"], answer["existing"], len(set(answer["ids"]))) == (31, 0, 31)
    listed = [j["id"] for j in d.json("list")]
    assert sorted(listed) == sorted(answer["ids"])
    d.cli("wait", *answer["ids"], "--timeout", "60")
    ran = Counter(runs(out))
    assert set(ran) == set(answer["ids"]) and max(ran.values()) == 1


def test_a_replace_whose_answer_is_lost_says_the_outcome_is_unknown(lossy: Lossy) -> None:
    d, lost = lossy(INSERT)
    d.cli("worker", "stop")
    r = d.cli("enqueue", "--id", "r", "--replace", "--command", "true", check=False)
    assert lost()
    line = assert_clean_failure(r, "may or may not", "queuectl show r")
    assert "nothing was changed" not in line.lower()
    assert d.job("r")["state"] == "pending"  # it was stored, once
    assert [j["id"] for j in d.json("list")] == ["r"]


def test_repeating_an_enqueue_is_safe_and_a_different_one_is_refused(daemon: Daemon, short_tmp: Path) -> None:
    daemon.cli("worker", "stop")
    assert daemon.cli("enqueue", "--id", "a", "--command", "echo a", "--max-retries", "1").stdout == "enqueued a\n"
    again = daemon.cli("enqueue", "--id", "a", "--command", "echo a", "--max-retries", "1", "--delay", "5", "--json")
    assert '"id": "a"' in again.stdout
    assert daemon.json("status")["counts"]["total"] == 1
    r = daemon.cli("enqueue", "--id", "a", "--command", "echo b", check=False)
    assert_clean_failure(r, "already exists", "'a'")
    jobs = short_tmp / "jobs.jsonl"
    jobs.write_text('{"id": "a", "command": "echo a", "max_retries": 1}\n{"id": "b", "command": "echo b"}\n')
    out = daemon.cli("enqueue", "--file", str(jobs)).stdout
    assert out == "enqueued 1 job(s); 1 already there with identical fields, not added again\n"
    assert sorted(j["id"] for j in daemon.json("list")) == ["a", "b"]
    assert daemon.job("a")["command"] == "echo a"
