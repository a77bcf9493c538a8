"""Hosts sharing one PostgreSQL when the database fails them: an outage shorter than the lease,
and a COMMIT whose answer is lost. Each host reaches the server through a proxy of its own
(pgproxy.py: its route to the database), which injects the fault for real. Jobs record their
runs and hold a lock for their whole life (test_hosts.recorded_job), so a lost, repeated or
overlapping run is caught. Root and PostgreSQL only; skipped with the reason elsewhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.hosts import Host, HostedDaemon, hosts_made
from tests.acceptance.pgproxy import PgProxy
from tests.acceptance.test_hosts import recorded_job, runs_of
from tests.conftest import wait_until
from tests.store.conftest import PG_SKIP_REASON, PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)

#: Shorter than the default lease (30 s): the running jobs' leases must outlive it.
OUTAGE_S = 15
#: Only a claim that claimed something writes attempt rows (the claim's UPDATE itself runs on
#: every turn, claiming nothing when nothing is due).
CLAIM = "INSERT INTO attempts"
#: Only the end of an attempt writes its attempt row's outcome (a finish, a stray's put-back).
FINISH = "UPDATE attempts SET finished_at"
#: Why the stray release put back a claimed job that never started (store/turn.py STRAY_ERROR).
NEVER_STARTED = "never started here"


@pytest.fixture
def hosts() -> Iterator[Callable[[str], Host]]:
    with hosts_made() as make:
        yield make


@pytest.fixture
def routes() -> Iterator[Callable[[], PgProxy]]:
    """make() -> a new proxy to the test server; every one made is closed afterwards."""
    made: list[PgProxy] = []

    def make() -> PgProxy:
        made.append(PgProxy())
        return made[-1]

    try:
        yield make
    finally:
        for proxy in made:
            proxy.close()


class Pair:
    """Daemon A on host h1 and daemon B on host h2, each through its own proxy to one database."""

    def __init__(self, hosts: Callable[[str], Host], routes: Callable[[], PgProxy], shared_db: str,
                 short_tmp: Path) -> None:
        self.pa, self.pb = routes(), routes()
        roots = [short_tmp / "a", short_tmp / "b"]
        for root in roots:
            root.mkdir(mode=0o700)
        self.a = HostedDaemon(roots[0], hosts("h1"), db_url=self.pa.url(shared_db))
        self.b = HostedDaemon(roots[1], hosts("h2"), db_url=self.pb.url(shared_db))
        self.jobs = short_tmp  #: where the jobs record their runs (runs_of)

    @property
    def daemons(self) -> tuple[HostedDaemon, HostedDaemon]:
        """(A, B)."""
        return self.a, self.b

    def cleanup(self) -> None:
        """Stop both daemons."""
        for d in self.daemons:
            d.cleanup()

    def enqueue(self, d: HostedDaemon, jobs: dict[str, float]) -> None:
        """Enqueue recorded jobs (id -> seconds) in one batch through `d`."""
        import json

        lines = [json.dumps({"id": job_id, "command": recorded_job(self.jobs, job_id, seconds)})
                 for job_id, seconds in jobs.items()]
        d.cli("enqueue", "--file", "-", input="\n".join(lines) + "\n")

    def started(self, *ids: str) -> bool:
        """Whether every one of `ids` has started at least once."""
        runs = runs_of(self.jobs)
        return all(runs[("start", job_id)] for job_id in ids)

    def settle(self, ids: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
        """Wait (one `queuectl wait`, not a poll per job) until every job has finished, or at most
        `timeout` seconds; returns each job as B sees it then."""
        self.b.cli("wait", *ids, "--timeout", str(timeout), check=False, timeout=timeout + 30)
        return {job_id: self.b.job(job_id) for job_id in ids}

    def assert_each_ran_once(self, ids: list[str]) -> Counter[tuple[str, str]]:
        """Every job of `ids` started and ended exactly once, and nothing overlapped."""
        runs = runs_of(self.jobs)
        assert not [k for k in runs if k[0] == "overlap"], runs
        assert {j: (runs[("start", j)], runs[("end", j)]) for j in ids} == {j: (1, 1) for j in ids}, runs
        return runs

    def assert_alive_and_serving(self) -> None:
        """Both daemons live, see each other, report the store ok, and run new jobs, each once."""
        for d in self.daemons:
            assert d.running, d.log_text()[-3000:]
        for d in self.daemons:
            wait_until(partial(_store_is, d, "ok"), timeout=30, what=f"the store back to ok on {d.host.hostname}")
            assert d.json("status")["workers"]["daemons"] == 2, "each sees the other alive"
        after = {f"after{i}": 0.5 for i in range(4)}
        self.enqueue(self.b, after)
        for job_id, job in self.settle(list(after), timeout=60).items():
            assert job["state"] == "completed", (job_id, job.get("last_error"), job["attempt_history"])
        self.assert_each_ran_once(list(after))


def _store_is(d: HostedDaemon, state: str) -> bool:
    """Whether `status` on `d` reports its store in `state` (it answers even when the store fails)."""
    return bool(d.json("status")["store"]["state"] == state)


def _owner(d: HostedDaemon) -> str:
    return str(d.json("status")["daemon"]["owner"])


def _ran(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts of `job` that ran (all but the strays put back without ever starting)."""
    return [h for h in job["attempt_history"] if NEVER_STARTED not in (h["reason"] or "")]


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["A", "both"])
def test_a_database_outage_shorter_than_the_lease_loses_and_repeats_no_job(
    hosts: Callable[[str], Host], routes: Callable[[], PgProxy], shared_db: str, short_tmp: Path, cut: str
) -> None:
    """The database is unreachable for 15 s (A's route to it, or every host's) while four jobs
    run on A. The lease (30 s) outlives the outage, so nothing may be taken for lost: each job
    runs to its end on A with one attempt; the two that end during the outage have their results
    held and written once the database is back. B, claiming all along, never runs them. Both
    daemons live through it and serve requests and new jobs afterwards."""
    pair = Pair(hosts, routes, shared_db, short_tmp)
    a, b = pair.daemons
    a.start("--workers", "4")
    b.start("--workers", "2")
    try:
        b.cli("worker", "stop")  # until every job runs on A
        durations = {"j0": 3.0, "j1": 6.0, "j2": OUTAGE_S + 3.0, "j3": OUTAGE_S + 6.0}
        ids = list(durations)
        pair.enqueue(a, durations)
        wait_until(lambda: pair.started(*ids), timeout=30, what="the four jobs running on A")
        b.cli("worker", "start")
        owner_a = _owner(a)

        outages = [p.outage(OUTAGE_S) for p in ([pair.pa] if cut == "A" else [pair.pa, pair.pb])]
        assert outages[0].cut, "A had no connection to the database to cut"
        # The fault is real: A finds its store unreachable (status answers without it).
        wait_until(partial(_store_is, a, "unavailable"), timeout=OUTAGE_S / 2, what="A to find the database unreachable")
        for outage in outages:
            assert outage.over.wait(OUTAGE_S + 10)
        assert all(o.refused for o in outages), "a daemon never tried to reach the database during the outage"
        runs = runs_of(short_tmp)
        assert runs[("end", "j0")] and runs[("end", "j1")], f"j0 and j1 should have ended during the outage: {runs}"

        jobs = pair.settle(ids)
        for job_id, job in jobs.items():
            assert job["state"] == "completed", (job_id, job.get("last_error"), job["attempt_history"])
            history = [(h["owner"], h["outcome"], h["exit_code"]) for h in job["attempt_history"]]
            assert history == [(owner_a, "exit", 0)], (job_id, job["attempt_history"])
        pair.assert_each_ran_once(ids)
        assert "worker lost" not in a.log_text() + b.log_text()
        assert "lease lost" not in a.log_text(), "A killed a job whose lease it held"
        pair.assert_alive_and_serving()
    finally:
        pair.cleanup()


@pytest.mark.slow
def test_a_claim_whose_answer_is_lost_on_either_host_never_runs_a_job_twice(
    hosts: Callable[[str], Host], routes: Callable[[], PgProxy], shared_db: str, short_tmp: Path
) -> None:
    """Both hosts claim from one queue, and the first claim of each that takes jobs commits with
    its answer lost. The claimed rows are processing, owned by a daemon that never started them:
    that daemon puts them back at once (the stray release: uncounted, `never started here`), not
    after its lease (30 s) expires, and A or B runs each job exactly once; none overlaps, none is
    stuck in processing, and both daemons keep serving."""
    pair = Pair(hosts, routes, shared_db, short_tmp)
    a, b = pair.daemons
    traps = {"A": pair.pa.lose_commit_answer(CLAIM), "B": pair.pb.lose_commit_answer(CLAIM)}
    a.start("--workers", "2")
    b.start("--workers", "2")
    try:
        owners = {"A": _owner(a), "B": _owner(b)}
        durations = {f"c{i}": 2.0 for i in range(8)}
        ids = list(durations)
        pair.enqueue(a, durations)

        jobs = pair.settle(ids)
        for host, trap in traps.items():
            assert trap.fired.is_set() and trap.committed, f"{host}'s claim never lost its answer"
        for job_id, job in jobs.items():
            assert job["state"] == "completed", (job_id, job.get("last_error"), job["attempt_history"])
            ran = _ran(job)
            assert [(h["outcome"], h["exit_code"]) for h in ran] == [("exit", 0)], (job_id, job["attempt_history"])
            assert job["attempts"] == 0, (job_id, job)  # a put-back is not counted against the job
            strays = [h for h in job["attempt_history"] if h not in ran]
            assert all(h["outcome"] == "requeued" for h in strays), (job_id, job["attempt_history"])
        pair.assert_each_ran_once(ids)
        # Each lost claim was put back by the daemon that made it, as a stray (not as `worker lost`).
        put_back = Counter(h["owner"] for job in jobs.values() for h in job["attempt_history"] if h not in _ran(job))
        assert set(put_back) == set(owners.values()), (put_back, owners)
        assert "worker lost" not in a.log_text() + b.log_text()
        assert all(d.json("status")["counts"]["processing"] == 0 for d in pair.daemons)
        pair.assert_alive_and_serving()
    finally:
        pair.cleanup()


@pytest.mark.slow
def test_a_result_whose_answer_is_lost_is_recorded_once(
    hosts: Callable[[str], Host], routes: Callable[[], PgProxy], shared_db: str, short_tmp: Path
) -> None:
    """A's first write of an ended attempt commits with its answer lost, while B claims too.

    What the product guarantees: the result that committed is the job's result, recorded once.
    A holds the result it could not confirm and writes it again; the write is fenced on the
    attempt (job, run, owner, still processing), so the repeat matches nothing and changes
    nothing. A completed job is never run again: no retry, one attempt in its history. The same
    transaction may have claimed the next due job for the freed slot; that claim committed too
    and nothing was started for it, so it is put back as a stray and runs once, on A or B."""
    pair = Pair(hosts, routes, shared_db, short_tmp)
    a, b = pair.daemons
    trap = pair.pa.lose_commit_answer(FINISH)
    a.start("--workers", "2")
    b.start("--workers", "2")
    try:
        b.cli("worker", "stop")  # until A runs two of them: A's first result is the one lost
        owner_a = _owner(a)
        durations = {f"f{i}": 2.0 + 0.5 * i for i in range(6)}
        ids = list(durations)
        pair.enqueue(a, durations)
        wait_until(lambda: pair.started("f0", "f1"), timeout=30, what="two jobs running on A")
        b.cli("worker", "start")

        jobs = pair.settle(ids)
        assert trap.fired.is_set() and trap.committed, "A's result never lost its answer"
        for job_id, job in jobs.items():
            assert job["state"] == "completed", (job_id, job.get("last_error"), job["attempt_history"])
            ran = _ran(job)
            assert [(h["outcome"], h["exit_code"]) for h in ran] == [("exit", 0)], (job_id, job["attempt_history"])
            assert job["attempts"] == 0, (job_id, job)
        for job_id in ("f0", "f1"):  # the one whose result was lost among them: one attempt, A's
            history = [(h["owner"], h["outcome"]) for h in jobs[job_id]["attempt_history"]]
            assert history == [(owner_a, "exit")], (job_id, jobs[job_id]["attempt_history"])
        pair.assert_each_ran_once(ids)
        assert "worker lost" not in a.log_text() + b.log_text()
        assert all(d.json("status")["counts"]["processing"] == 0 for d in pair.daemons)
        pair.assert_alive_and_serving()
    finally:
        pair.cleanup()


def test_a_result_whose_answer_is_lost_is_not_logged_as_dropped(
    hosts: Callable[[str], Host], routes: Callable[[], PgProxy], shared_db: str, short_tmp: Path
) -> None:
    """The repeat of a result write that committed matches nothing; the log must not tell the
    operator that the result was dropped (nor that a lease was lost) when it is the one stored."""
    pair = Pair(hosts, routes, shared_db, short_tmp)
    a = pair.a
    trap = pair.pa.lose_commit_answer(FINISH)
    a.start("--workers", "1")
    try:
        pair.enqueue(a, {"r0": 0.5})
        job = a.wait_state("r0", "completed", "dead")
        assert trap.fired.is_set() and trap.committed, "the result never lost its answer"
        assert [(h["outcome"], h["exit_code"]) for h in job["attempt_history"]] == [("exit", 0)], job
        wait_until(lambda: "r0 attempt 1 ended" in a.log_text() or "job r0 completed" in a.log_text(),
                   what="A to write its held result again")
        assert "result dropped" not in a.log_text()
    finally:
        pair.cleanup()
