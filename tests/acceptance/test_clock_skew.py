"""One clock across hosts: two real daemons on one PostgreSQL database, one of them on a host whose
wall clock is an hour off (behind or ahead), by Debian's `faketime` (libfaketime preloaded; the
monotonic clock is left true, as on a real host whose wall clock is wrong).

Leases, heartbeats and due times are in the database's time, and peers are judged by it: no job
runs twice at once, none is lost or delayed, and neither daemon takes the other for dead. Each
job holds a lock for its whole life and records every start and end, so any overlap is caught.
Skipped, with the reason, without PostgreSQL or faketime.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_until
from tests.store.conftest import PG_SKIP_REASON, PG_URL

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
LEASE_S = 3  #: renewals every second: an hour's skew would break leases within seconds
JOB_S = 8  #: each job outlives two leases and many renewals

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON),
    pytest.mark.skipif(shutil.which("faketime") is None or not LIBFAKETIME.exists(),
                       reason="Debian's faketime is not installed (apt-get install -y faketime)"),
]


def skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is `offset` (e.g. -1h) off."""
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def job_command(runs: Path, job_id: str) -> str:
    """Record start and end; hold the job's lock meanwhile, and record an overlap if it is held."""
    record = runs / f"{job_id}.log"
    lock = runs / f"{job_id}.lock"
    return (f"flock -n {lock} sh -c 'echo start $QUEUECTL_OWNER >> {record}; sleep {JOB_S}; echo end >> {record}'"
            f" || echo overlap >> {record}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("offset", ["-1h", "+1h"], ids=["host-behind", "host-ahead"])
def test_a_host_an_hour_off_runs_each_job_once_and_on_time(
    daemon_factory: Callable[..., Daemon], shared_db: str, short_tmp: Path, offset: str
) -> None:
    runs = short_tmp / "runs"
    runs.mkdir()
    true_host = daemon_factory("a", db_url=shared_db).start("--workers", "2", "--lease-seconds", str(LEASE_S))
    off_host = daemon_factory("b", db_url=shared_db).start("--workers", "2", "--lease-seconds", str(LEASE_S),
                                                           env=skewed(offset))
    ids = [f"j{i}" for i in range(8)]
    for i, job_id in enumerate(ids):  # half through each daemon: due times in the database's time
        via = true_host if i % 2 else off_host
        via.cli("enqueue", "--id", job_id, "--command", job_command(runs, job_id))
    # A delay given to the skewed host means seconds from now, not an hour more or less.
    off_host.cli("enqueue", "--id", "delayed", "--delay", "4", "--command", job_command(runs, "delayed"))
    ids.append("delayed")

    def all_done() -> bool:
        return all(true_host.job(j)["state"] in ("completed", "dead") for j in ids)

    wait_until(all_done, timeout=120, interval=0.5, what="every job to end")
    owners = {}
    for job_id in ids:
        job = true_host.job(job_id)
        lines = (runs / f"{job_id}.log").read_text().split("\n")
        assert "overlap" not in lines, f"{job_id} ran twice at once: {lines}"
        starts = [line for line in lines if line.startswith("start")]
        assert len(starts) == 1 and lines.count("end") == 1, f"{job_id} ran {len(starts)} times: {lines}"
        assert (job["state"], job["attempts"]) == ("completed", 0), job
        owners[job_id] = starts[0].split()[1]
    delayed = true_host.job("delayed")
    waited_s = (datetime.fromisoformat(delayed["started_at"]) - datetime.fromisoformat(delayed["created_at"])
                ).total_seconds()
    assert 3.5 <= waited_s < 30, f"a 4 s delay given to a host an hour off waited {waited_s:.1f} s"
    assert set(owners.values()) == {true_host.json("daemon", "status")["owner"],
                                    off_host.json("daemon", "status")["owner"]}, "both daemons ran jobs"
    # Neither took the other for dead.
    for d in (true_host, off_host):
        assert d.json("status")["workers"]["daemons"] == 2
        assert "worker lost" not in d.log_text()
