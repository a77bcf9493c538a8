"""Job output and environment: `logs --follow`, a flood that must not grow the daemon's memory,
and what a job inherits from the daemon (no descriptors, no secrets). The output cap and
`logs --attempt` are tested in process: tests/integration/test_job_lifecycle.py.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.acceptance.test_faults import kill_leftover_jobs, rss_kib, settled
from tests.conftest import Daemon, executable

__all__ = ["kill_leftover_jobs"]  # the autouse fixture, imported so it applies here too

MARKER = "\n[queuectl: output truncated at {} bytes: {} bytes left out here; the last {} bytes follow]\n"


def log_file(daemon: Daemon, job_id: str, attempt: int = 1) -> Path:
    """Where the daemon keeps an attempt's output."""
    return daemon.state_dir / "logs" / f"{job_id}.{attempt}.log"


@contextmanager
def following(daemon: Daemon, job_id: str) -> Iterator[subprocess.Popen[bytes]]:
    """`queuectl logs ID --follow` in the background; killed at the end if it is still running."""
    proc = subprocess.Popen([executable("queuectl"), "logs", job_id, "--follow"], env=daemon.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def read_until(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 20) -> bytes:
    """Read the process's stdout until `text` appears (fail after `timeout`); returns what was read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while text not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no {text!r} within {timeout}s; read so far: {got!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"stdout closed before {text!r}; read: {got!r}; stderr: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        got += chunk
    return got


# -- logs --follow --------------------------------------------------------------------------------


def test_logs_follow_streams_output_while_the_job_runs_and_stops_when_it_ends(daemon: Daemon, short_tmp: Path) -> None:
    go = short_tmp / "go"
    daemon.cli("enqueue", "--id", "live", "--command",
               f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second")
    with following(daemon, "live") as follower:
        assert read_until(follower, b"first\n") == b"first\n"
        assert daemon.job("live")["state"] == "processing", "the first line must arrive while the job runs"
        assert follower.poll() is None, "--follow keeps going while the job runs"
        go.touch()
        rest, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert rest == b"second\n"
    assert daemon.job("live")["state"] == "completed"


def test_logs_follow_on_a_job_that_has_not_started_waits_for_it(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "soon", "--delay", "2", "--command", "echo hello from soon")
    with following(daemon, "soon") as follower:
        out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert out == b"hello from soon\n", "`logs --follow` right after `enqueue` must not miss the job"


# -- a flood past the cap --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_1_gib_flood_costs_neither_memory_nor_disk(daemon_factory: Callable[..., Daemon], short_tmp: Path) -> None:
    cap = 1024 * 1024
    d = daemon_factory().start("--workers", "1")
    d.cli("config", "set", "output-max-bytes", str(cap))
    assert d.proc is not None
    # Warm up the path a flood takes (imports, buffers) before taking the idle size.
    d.cli("enqueue", "--id", "warmup", "--command", "head -c 4194304 /dev/zero")
    assert settled(d, "warmup")["state"] == "completed"
    idle = rss_kib(d.proc.pid)

    done = short_tmp / "flood-done"
    d.cli("enqueue", "--id", "flood", "--command", f"head -c 1073741824 /dev/zero && touch {done}")
    peak = idle
    deadline = time.monotonic() + 90
    while not done.exists():
        peak = max(peak, rss_kib(d.proc.pid))
        assert time.monotonic() < deadline, "the flood did not finish: is the daemon still draining the pipe?"
        time.sleep(0.05)
    job = settled(d, "flood")
    assert job["state"] == "completed", job
    peak = max(peak, rss_kib(d.proc.pid))
    assert peak - idle <= 8 * 1024, f"daemon RSS grew by {(peak - idle) / 1024:.1f} MiB (idle {idle} KiB)"
    size = log_file(d, "flood").stat().st_size
    assert size == cap + len(MARKER.format(cap, (1 << 30) - cap, cap // 2)), size
    assert len(job["output_tail"]) <= 4096


@pytest.mark.parametrize("runner", ["keeper", "no-keeper"])
def test_a_log_past_the_cap_keeps_its_head_and_its_tail(daemon_factory: Callable[..., Daemon], short_tmp: Path,
                                                        runner: str) -> None:
    """Both runner paths (the job keeper, and `--no-keeper`: the daemon's own runner) keep the first
    and the last half of the cap around one marker; `logs --follow` sees the head while the job
    runs, then the marker and the tail when it ends."""
    d = daemon_factory().start("--workers", "1", *(["--no-keeper"] if runner == "no-keeper" else []))
    d.cli("config", "set", "output-max-bytes", "1024")
    go = short_tmp / "go"
    # 2,000 numbered lines (~10 KB), a wait, then the end: the head is on disk while it waits.
    d.cli("enqueue", "--id", "loud", "--command",
          f"seq -w 1 2000; while [ ! -e {go} ]; do sleep 0.05; done; echo END")
    printed = "".join(f"{i:04d}\n" for i in range(1, 2001)) + "END\n"
    with following(d, "loud") as follower:
        head = read_until(follower, b"0102\n")  # 512 bytes: lines 1 to 102 and the start of 103
        assert d.job("loud")["state"] == "processing"
        go.touch()
        rest, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    left_out = len(printed) - 1024
    expected = printed[:512] + MARKER.format(1024, left_out, 512) + printed[-512:]
    assert (head + rest).decode() == expected
    assert log_file(d, "loud").read_text() == expected
    assert d.cli("logs", "loud").stdout == expected
    assert d.job("loud")["state"] == "completed"
    assert sorted(p.name for p in (d.state_dir / "logs").iterdir() if p.name.startswith("loud")) == ["loud.1.log"]


# -- what a job inherits ----------------------------------------------------------------------------


def test_a_job_inherits_no_descriptor_and_no_secret_of_the_daemon(daemon_factory: Callable[..., Daemon]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    d = daemon_factory()
    secrets = {
        "QUEUECTL_TOKEN": "token-secret-1",
        "PGPASSWORD": "pg-secret-2",
        "QUEUECTL_DB": f"sqlite:///{d.state_dir}/queuectl.db?secret=db-secret-3",
    }
    d.start("--workers", "1", "--tcp", f"127.0.0.1:{port}", env=secrets)
    d.cli("enqueue", "--id", "env-check", "--command",
          "ls -l /proc/$$/fd; env")
    job = settled(d, "env-check")
    assert job["state"] == "completed", job
    out = d.cli("logs", "env-check").stdout
    # `ls` runs as a child, so this lists what the job's shell holds: "... 0 -> /dev/null".
    fds = dict(m.groups() for m in re.finditer(r" (\d+) -> (.*)$", out, re.MULTILINE))
    assert fds.keys() == {"0", "1", "2"}, f"the job inherited descriptors: {fds}"
    assert fds["0"] == "/dev/null" and fds["1"] == fds["2"] and fds["1"].startswith("pipe:"), fds
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and " -> " not in line)
    for secret in ("token-secret-1", "pg-secret-2", "db-secret-3"):
        assert secret not in out, f"{secret} leaked into the job's environment"
    assert env["QUEUECTL_JOB_ID"] == "env-check" and env["QUEUECTL_ATTEMPT"] == "1"
    assert "QUEUECTL_OWNER" in env
