"""Several hosts sharing one PostgreSQL queue, built from Linux namespaces (hosts.py): what
"never two runs of one job at once" needs beyond one machine. Each job records its start and end
and holds a lock on its own file for its whole life, so a repeated or overlapping run is caught.
Root and PostgreSQL only; skipped with the reason elsewhere (CI runs them as root). Host clocks
an hour off are test_clock_skew.py's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.hosts import Host, HostedDaemon, hosts_made
from tests.conftest import wait_until
from tests.store.conftest import PG_SKIP_REASON, PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)


@pytest.fixture
def hosts() -> Iterator[Callable[[str], Host]]:
    with hosts_made() as make:
        yield make


def recorded_job(root: Path, job_id: str, seconds: float) -> str:
    """A command that records `start ID` and `end ID` in root/runs, holding root/locks/ID while
    it lives: a second run of it while the first lives records `overlap ID`."""
    locks = root / "locks"
    locks.mkdir(exist_ok=True)
    runs = root / "runs"
    return (f"exec 9>>{locks / job_id}; flock -n 9 || echo overlap {job_id} >> {runs}; "
            f"echo start {job_id} >> {runs}; sleep {seconds}; echo end {job_id} >> {runs}")


def runs_of(root: Path) -> Counter[tuple[str, str]]:
    path = root / "runs"
    lines = path.read_text().split("\n") if path.exists() else []
    return Counter(tuple(line.split()) for line in lines if line)  # type: ignore[misc]


def test_two_hosts_with_one_hostname_never_run_a_job_twice(
    hosts: Callable[[str], Host], shared_db: str, short_tmp: Path
) -> None:
    """Containers with a fixed hostname, cloned VMs: a daemon that starts must not take its
    peer's running attempts for its own dead ones because the hostname matches (their pids are
    not in its PID namespace)."""
    first, second = hosts("twin"), hosts("twin")
    a_root, b_root = short_tmp / "a", short_tmp / "b"
    a_root.mkdir(mode=0o700)
    b_root.mkdir(mode=0o700)
    a = HostedDaemon(a_root, first, db_url=shared_db).start("--workers", "2")
    b = HostedDaemon(b_root, second, db_url=shared_db)
    try:
        ids = [f"t{i}" for i in range(4)]
        for job_id in ids:
            a.cli("enqueue", "--id", job_id, "--command", recorded_job(short_tmp, job_id, 3))
        wait_until(lambda: len(a.json("list", "--state", "processing")) == 2, timeout=30,
                   what="two jobs running on the first host")
        b.start("--workers", "2")  # while they run
        for job_id in ids:
            job = a.wait_state(job_id, "completed", "dead", timeout=90)
            assert job["state"] == "completed", (job.get("last_error"), job["attempt_history"], runs_of(short_tmp))
        runs = runs_of(short_tmp)
        assert not [k for k in runs if k[0] == "overlap"], runs
        assert all(runs[("start", j)] == 1 and runs[("end", j)] == 1 for j in ids), runs
        assert [len(a.job(j)["attempt_history"]) for j in ids] == [1, 1, 1, 1]
        for d in (a, b):
            assert d.json("status")["workers"]["daemons"] == 2, "each sees the other alive"
            assert "worker lost" not in d.log_text()
    finally:
        for d in (a, b):
            d.cleanup()




def _two_hosts(hosts: Callable[[str], Host], shared_db: str, short_tmp: Path, *,
               lease: str = "2") -> tuple[HostedDaemon, HostedDaemon]:
    """Daemon A on host h1 (started, claiming), daemon B on host h2 (started, not claiming)."""
    roots = [short_tmp / "a", short_tmp / "b"]
    for root in roots:
        root.mkdir(mode=0o700)
    a = HostedDaemon(roots[0], hosts("h1"), db_url=shared_db)
    b = HostedDaemon(roots[1], hosts("h2"), db_url=shared_db)
    a.start("--workers", "2", "--lease-seconds", lease)
    b.start("--workers", "2", "--lease-seconds", lease)
    b.cli("worker", "stop")
    return a, b


def _run_through_a_fault(a: HostedDaemon, b: HostedDaemon, short_tmp: Path, fault: Callable[[], None],
                         seconds: float = 10) -> Counter[tuple[str, str]]:
    """Two jobs start on A; `fault` happens to A; B claims; every job must end completed, and
    never run twice at once (a second run after the first was stopped is allowed)."""
    ids = ["x0", "x1"]
    for job_id in ids:
        a.cli("enqueue", "--id", job_id, "--command", recorded_job(short_tmp, job_id, seconds))
    wait_until(lambda: runs_of(short_tmp)[("start", "x0")] + runs_of(short_tmp)[("start", "x1")] == 2,
               timeout=30, what="both jobs running on A")
    fault()
    b.cli("worker", "start")
    for job_id in ids:
        job = b.wait_state(job_id, "completed", "dead", timeout=120)
        assert job["state"] == "completed", (job.get("last_error"), runs_of(short_tmp))
    return runs_of(short_tmp)


def test_a_daemon_killed_with_minus_9_never_lets_its_jobs_run_twice_at_once(
    hosts: Callable[[str], Host], shared_db: str, short_tmp: Path
) -> None:
    """Its machine lives: the jobs' processes must stop before their leases expire, so B's
    re-run never overlaps them."""
    a, b = _two_hosts(hosts, shared_db, short_tmp)
    try:
        runs = _run_through_a_fault(a, b, short_tmp, a.kill9)
        assert not [k for k in runs if k[0] == "overlap"], runs
    finally:
        for d in (a, b):
            d.cleanup()


def test_a_frozen_daemon_never_lets_its_jobs_run_twice_at_once(
    hosts: Callable[[str], Host], shared_db: str, short_tmp: Path
) -> None:
    """SIGSTOP past the lease (a paused VM, a swap storm), then SIGCONT: B re-runs the jobs only
    after A's processes stopped."""
    import signal
    import time

    a, b = _two_hosts(hosts, shared_db, short_tmp)
    try:
        def freeze() -> None:
            a.signal(signal.SIGSTOP)

        runs = _run_through_a_fault(a, b, short_tmp, freeze)
        a.signal(signal.SIGCONT)
        time.sleep(1)
        assert not [k for k in runs_of(short_tmp) if k[0] == "overlap"], runs
        assert a.running, "A lives on after it thaws"
    finally:
        for d in (a, b):
            d.cleanup()
