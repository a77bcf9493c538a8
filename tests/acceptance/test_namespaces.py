"""Identity, not hostname: two real daemons on one PostgreSQL database with one hostname (as
containers with a fixed hostname, or cloned VMs, have), the second in a PID namespace of its own
(`unshare --pid`). Neither can see the other's pids, so neither may judge the other by them: no
attempt is declared lost, no job runs twice. Each job holds a lock for its whole life and
records every start and end. Needs root and PostgreSQL (skipped, with the reason, otherwise).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.test_clock_skew import job_command
from tests.conftest import Daemon, executable, wait_until
from tests.store.conftest import PG_SKIP_REASON, PG_URL

LEASE_S = 3


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON),
    pytest.mark.skipif(not _can_unshare(), reason="needs root and `unshare --pid` (CI runs it as root)"),
]


def start_in_own_pid_namespace(d: Daemon, *args: str) -> None:
    """Start `d` as Daemon.start does, but in a new PID namespace (its own /proc)."""
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM",
           executable("queuectld"), "--state-dir", str(d.state_dir), "--socket", str(d.socket),
           "--log-level", "DEBUG", "--db", str(d.db_url), *args]
    with open(d.log_path, "ab") as log:
        d.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=d.env, start_new_session=True)
    wait_until(d._ready, timeout=30, what=f"queuectld in its own PID namespace\n{d.log_text()}")


def stop_group(d: Daemon) -> None:
    """Force-stop `d` and its namespace (unshare and the daemon share a process group)."""
    assert d.proc is not None
    if d.proc.poll() is None:
        for _ in range(2):  # the second signal kills its running jobs
            try:
                os.killpg(d.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
        d.proc.wait(30)


@pytest.mark.timeout(180)
def test_one_hostname_in_two_pid_namespaces_is_two_hosts(
    daemon_factory: Callable[..., Daemon], shared_db: str, short_tmp: Path
) -> None:
    runs = short_tmp / "runs"
    runs.mkdir()
    first = daemon_factory("a", db_url=shared_db).start("--workers", "2", "--lease-seconds", str(LEASE_S))
    early = ["a0", "a1"]
    for job_id in early:
        first.cli("enqueue", "--id", job_id, "--command", job_command(runs, job_id))
    wait_until(lambda: all(first.job(j)["state"] == "processing" for j in early), timeout=30,
               what="the first daemon to run its jobs")
    second = daemon_factory("b", db_url=shared_db)
    try:
        # It starts (and recovers) while the first one's attempts run: their pids are not in its
        # namespace, and its hostname is the same.
        start_in_own_pid_namespace(second, "--workers", "2", "--lease-seconds", str(LEASE_S))
        ids = [*early, "b0", "b1", "b2"]
        for job_id in ids[2:]:
            second.cli("enqueue", "--id", job_id, "--command", job_command(runs, job_id))
        wait_until(lambda: all(first.job(j)["state"] in ("completed", "dead") for j in ids), timeout=120,
                   interval=0.5, what="every job to end")
        for job_id in ids:
            job = first.job(job_id)
            lines = (runs / f"{job_id}.log").read_text().split("\n")
            assert "overlap" not in lines, f"{job_id} ran twice at once: {lines}"
            assert [line.split()[0] for line in lines if line] == ["start", "end"], f"{job_id}: {lines}"
            assert (job["state"], job["attempts"]) == ("completed", 0), job
        for d in (first, second):
            assert d.json("status")["workers"]["daemons"] == 2, "each sees the other alive"
            assert "worker lost" not in d.log_text()
    finally:
        stop_group(second)
