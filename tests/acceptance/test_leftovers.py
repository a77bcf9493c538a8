"""Processes a job leaves behind, with both ways of tracking them (a cgroup per attempt, and the
daemon as child subreaper walking its process tree): whatever a job leaves is killed when it
ends, everything it started is killed on timeout, cancel and `worker stop --now`, wherever those
processes moved (a new session, a double fork), and their exits leave no zombie.

Every job writes the pids it starts to files; every check looks at /proc.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_faults import (
    alive,
    defunct_children,
    job_lines,
    job_pids,
    jobs_by_id,
    kill_leftover_jobs,
    read_pid,
    settled,
)
from tests.conftest import Daemon, wait_until

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too

MODES = ["cgroup", "subreaper"]


def start_tracked(d: Daemon, mode: str, *args: str) -> Daemon:
    """Start `d` tracking processes by `mode`; skip (with the daemon's reason) where cgroups are
    not available, except as root with a writable cgroup v2, where they must be used."""
    if mode == "subreaper":
        d.env["QUEUECTL_TEST_TRACKING"] = "subreaper"
    d.start("--workers", "2", *args)
    # The job keeper tracks the attempts; the daemon logs how ("job keeper pid N (tracking by M)").
    line = next((ln for ln in d.log_text().splitlines() if "job keeper pid" in ln), "")
    if mode == "subreaper":
        assert "tracking by subreaper" in line, line
    elif "tracking by cgroup" not in line:
        from queuectld.cgroups import cgroup_base

        if os.geteuid() == 0 and cgroup_base()[0] is not None:
            pytest.fail(f"root with a writable cgroup v2, yet the daemon did not use it: {line}")
        keeper_log = (d.state_dir / "keeper.log").read_text(errors="replace")
        why = next((ln for ln in keeper_log.splitlines() if "process tracking:" in ln), line)
        pytest.skip(f"cgroups are not usable here: {why.split('process tracking: ', 1)[-1]}")
    return d


@pytest.fixture(scope="module", params=MODES)
def tracked(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon with 2 slots tracking by each mechanism in turn, shared by this module's tests
    (each uses its own job ids and pid files; the one that stops the workers starts them again)."""
    root = Path(tempfile.mkdtemp(prefix="qctl-", dir="/tmp"))
    os.chmod(root, 0o700)
    d = Daemon(root)
    try:
        start_tracked(d, request.param)
        d.cli("config", "set", "kill-grace", "1")
        yield d
    finally:
        d.cleanup()
        for pid in job_pids(d):  # only if a test failed: a job's process that outlived it
            os.kill(pid, 9)
        shutil.rmtree(root, ignore_errors=True)


def none_alive(pids: list[int], timeout: float = 3.0) -> bool:
    """Whether every pid is dead (a zombie counts) within `timeout`; a leftover that lives on is
    alive far longer."""
    try:
        wait_until(lambda: not any(alive(p) for p in pids), timeout=timeout, what=f"{pids} to die")
    except pytest.fail.Exception:
        return False
    return True


# -- what a job leaves behind dies when it ends -------------------------------------------------


@pytest.mark.parametrize("output", ["closed", "held"])
def test_setsid_as_the_last_command_is_killed_every_time(tracked: Daemon, short_tmp: Path, output: str) -> None:
    # With its output closed, the shell exits at once and the old group kill raced the child's
    # setsid(); holding the pipe, it was never in the group by then. Neither may survive.
    if shutil.which("setsid") is None:
        pytest.skip("setsid (util-linux) is not installed")
    count = 10 if output == "closed" else 4
    redirect = "> /dev/null 2>&1 " if output == "closed" else ""
    ids = [f"setsid-{output}-{i}" for i in range(count)]
    tracked.cli("enqueue", "--file", "-", input=job_lines({i: f"setsid sleep 300 {redirect}&" for i in ids}))
    tracked.cli("wait", *ids, "--timeout", "60", timeout=90)
    survivors = [p for p in job_pids(tracked) if any(f"QUEUECTL_JOB_ID={i}\0" in environ(p) for i in ids)]
    assert not survivors or none_alive(survivors), (
        f"{len(survivors)} of {count} leftovers survived: {[(p, state(p)) for p in survivors]}\n"
        + "\n".join(ln for ln in tracked.log_text().splitlines() if "tracking" in ln or "Traceback" in ln))
    assert {jobs_by_id(tracked)[i]["state"] for i in ids} == {"completed"}


def test_a_double_forked_daemon_started_by_a_job_is_killed_when_the_job_ends(tracked: Daemon, short_tmp: Path) -> None:
    daemonize = (
        "import os, sys, time\n"
        "if os.fork(): sys.exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        f"open('{short_tmp}/daemon.pid', 'w').write(str(os.getpid()))\n"
        "fd = os.open(os.devnull, os.O_RDWR)\n"
        "[os.dup2(fd, n) for n in (0, 1, 2)]\n"
        "time.sleep(300)\n"
    )
    (short_tmp / "daemonize.py").write_text(daemonize)
    # The job waits for the pid file, so the daemon is surely running when the job ends.
    tracked.cli("enqueue", "--id", "double-fork", "--command",
                f"{sys.executable} {short_tmp}/daemonize.py; while [ ! -s {short_tmp}/daemon.pid ]; do sleep 0.01; done")
    orphan = read_pid(short_tmp / "daemon.pid")
    assert settled(tracked, "double-fork")["state"] == "completed"
    assert none_alive([orphan]), "the double-forked daemon outlived its job"


def test_orphans_of_a_job_stay_in_the_daemons_tree_and_are_reaped(tracked: Daemon, short_tmp: Path) -> None:
    # The inner shell exits at once: its sleep is orphaned, re-parented to the job keeper (a child
    # subreaper; before, to init), and exits while the job still runs. The keeper reaps it.
    tracked.cli("enqueue", "--id", "orphan", "--command",
                f"sh -c 'echo $$ > {short_tmp}/inner.pid; sleep 2 & echo $! > {short_tmp}/orphan.pid'; sleep 3")
    inner, orphan = read_pid(short_tmp / "inner.pid"), read_pid(short_tmp / "orphan.pid")
    assert tracked.proc is not None
    wait_until(lambda: not alive(inner), what="the inner shell to exit")
    [keeper] = tracked.keeper_pids()
    assert parent(orphan) == keeper, f"the orphan was re-parented to {parent(orphan)}, not the keeper {keeper}"
    assert settled(tracked, "orphan")["state"] == "completed"
    wait_until(lambda: not os.path.exists(f"/proc/{orphan}"), timeout=5, what=f"orphan {orphan} to be reaped")
    assert defunct_children(keeper) == [] and defunct_children(tracked.proc.pid) == []


def environ(pid: int) -> str:
    """A process's environment as one string of NUL-terminated entries."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read().decode(errors="replace") + "\0"
    except OSError:
        return ""


def state(pid: int) -> str:
    """A process's state letter (R, S, T, Z...), or '-' when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return "-"


def parent(pid: int) -> int | None:
    """The parent pid of a live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return None


# -- everything a job started dies on timeout, cancel and worker stop --now ----------------------


@pytest.mark.parametrize("how", ["timeout", "cancel", "stop-now"])
def test_a_grandchild_in_its_own_session_dies_when_the_job_is_killed(
    tracked: Daemon, short_tmp: Path, how: str
) -> None:
    timeout = ["--timeout", "3"] if how == "timeout" else []
    job_id = f"killed-{how}"
    # The grandchild writes its pid after setsid, so once the file is there it has left the session.
    tracked.cli("enqueue", "--id", job_id, "--max-retries", "0", *timeout, "--command",
                f"sh -c 'setsid sh -c \"echo \\$\\$ > {short_tmp}/gc.pid; exec sleep 300\" & wait' & "
                f"echo $! > {short_tmp}/child.pid; echo $$ > {short_tmp}/shell.pid; sleep 300")
    pids = [read_pid(short_tmp / f"{who}.pid") for who in ("shell", "child", "gc")]
    assert os.getsid(pids[2]) == pids[2] != os.getsid(pids[0]), "the grandchild has a session of its own"
    try:
        if how == "cancel":
            tracked.cli("cancel", job_id)
        elif how == "stop-now":
            tracked.cli("worker", "stop", "--now")
        expected = {"timeout": "dead", "cancel": "canceled", "stop-now": "pending"}[how]
        job = tracked.wait_state(job_id, expected)
        assert job["state"] == expected, job
        assert none_alive(pids, timeout=5), f"still alive: {[p for p in pids if alive(p)]}"
    finally:
        if how == "stop-now":
            tracked.cli("cancel", job_id, check=False)
            tracked.cli("worker", "start", "--count", "2")
